#include "coordinator/journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "common/file_util.h"
#include "coordinator/core_lock.h"

namespace tern {
namespace {

constexpr size_t kV1HeaderBytes = 8;   // u32 length | u32 CRC of the payload
constexpr size_t kV2HeaderBytes = 20;  // u32 length | u64 seq | u32 header CRC | u32 record CRC
constexpr char kHeaderPayload[] = "tern-journal-v2\n";
constexpr char kHeaderFamily[] = "tern-journal-v";
constexpr size_t kFileHeaderBytes = kV1HeaderBytes + sizeof(kHeaderPayload) - 1;  // 24
constexpr size_t kNotFound = static_cast<size_t>(-1);

void put_u32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_u64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::string errno_text() { return std::strerror(errno); }

Status read_all(int fd, const std::string& path, std::string* out) {
  out->clear();
  char buf[1 << 16];
  if (::lseek(fd, 0, SEEK_SET) < 0) return internal_error("seek " + path + ": " + errno_text());
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return internal_error("read " + path + ": " + errno_text());
    }
    if (n == 0) return Status::ok();
    out->append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

Status check_journal_payload(const std::string& payload) {
  if (payload.empty()) return invalid_argument("journal: a record cannot be empty");
  if (payload.size() > kJournalMaxRecordBytes) {
    return invalid_argument("journal: a record of " + std::to_string(payload.size()) +
                            " bytes is larger than the limit of " +
                            std::to_string(kJournalMaxRecordBytes));
  }
  return Status::ok();
}

namespace {

bool valid_length(uint32_t len) { return len >= 1 && len <= kJournalMaxRecordBytes; }

std::string length_text(uint32_t len) {
  return std::to_string(len) + " (valid: 1 to " + std::to_string(kJournalMaxRecordBytes) + ")";
}

bool all_zero(std::string_view d, size_t from) {
  for (size_t i = from; i < d.size(); ++i)
    if (d[i] != 0) return false;
  return true;
}

std::string base_name(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

Status corrupt(const std::string& path, uint64_t size, const std::string& where,
               const std::string& what) {
  return data_loss(path + ": " + where + " (of " + std::to_string(size) + " bytes) " + what +
                   ". The journal is damaged: the coordinator does not start on it, so that no "
                   "acknowledged job is lost without a word. Nothing was changed; `tern "
                   "coordinator --repair` (with the same --config or --state-dir) salvages every "
                   "intact record into a new journal and keeps this file as " +
                   base_name(path) + ".damaged-<unix time>");
}

std::string where_record(size_t record, uint64_t off) {
  return "record " + std::to_string(record) + " at byte " + std::to_string(off);
}

std::string zero_tail_text(uint64_t n) {
  return "starts a zero-filled tail: the last " + std::to_string(n) +
         " bytes of the file are zeros (what a filesystem leaves when it lost the data of the "
         "last writes but kept the file size; acknowledged records may have been there, so "
         "this is not taken for a torn append)";
}

// --- format 2 records ---

struct V2Header {
  uint32_t len = 0;
  uint64_t seq = 0;
  bool header_ok = false;  // the header CRC holds
};

V2Header parse_v2_header(const char* p) {
  V2Header h;
  h.len = get_u32(p);
  h.seq = get_u64(p + 4);
  h.header_ok = crc32_ieee(p, 12) == get_u32(p + 12);
  return h;
}

bool v2_record_crc_ok(const char* p, uint32_t len) {
  uint32_t c = crc32_ieee(p, 12);
  c = crc32_extend(c, p + kV2HeaderBytes, len);
  return c == get_u32(p + 16);
}

// Why the `n` (< kV2HeaderBytes) bytes at `p` cannot be the beginning of the record with
// sequence number `expect` ("" when they can: a torn append).
std::string v2_prefix_problem(const char* p, size_t n, uint64_t expect) {
  if (n >= 4 && !valid_length(get_u32(p))) {
    return "has a length of " + length_text(get_u32(p)) +
           " in a header cut off by the end of "
           "the file";
  }
  std::string want;
  put_u64(&want, expect);
  for (size_t i = 4; i < std::min<size_t>(n, 12); ++i) {
    if (p[i] != want[i - 4]) {
      return "has a sequence number that is not the expected " + std::to_string(expect) +
             " in a header cut off by the end of the file";
    }
  }
  if (n >= 16 && crc32_ieee(p, 12) != get_u32(p + 12)) {
    return "fails its header checksum in a header cut off by the end of the file";
  }
  return "";
}

// A complete format-2 record at `off` whose header CRC and record CRC hold (any sequence).
bool v2_record_at(std::string_view d, size_t off, JournalRecord* rec) {
  if (d.size() - off < kV2HeaderBytes) return false;
  const char* p = d.data() + off;
  V2Header h = parse_v2_header(p);
  if (!h.header_ok || !valid_length(h.len) || h.len > d.size() - off - kV2HeaderBytes) return false;
  if (!v2_record_crc_ok(p, h.len)) return false;
  *rec = JournalRecord{off, h.seq, d.substr(off + kV2HeaderBytes, h.len)};
  return true;
}

// --- format 1 records ---

// Whether the payload is a format-2 file header's (which is framed like a format-1 record).
bool header_payload(std::string_view payload) {
  return payload.substr(0, sizeof(kHeaderFamily) - 1) == kHeaderFamily;
}

// A complete format-1 record at `off` whose CRC holds (a file header is not a record).
bool v1_record_at(std::string_view d, size_t off, JournalRecord* rec) {
  if (d.size() - off < kV1HeaderBytes) return false;
  const char* p = d.data() + off;
  uint32_t len = get_u32(p);
  if (!valid_length(len) || len > d.size() - off - kV1HeaderBytes) return false;
  if (crc32_ieee(p + kV1HeaderBytes, len) != get_u32(p + 4)) return false;
  if (header_payload(d.substr(off + kV1HeaderBytes, len))) return false;
  *rec = JournalRecord{off, 0, d.substr(off + kV1HeaderBytes, len)};
  return true;
}

bool record_at(int version, std::string_view d, size_t off, JournalRecord* rec) {
  return version == 2 ? v2_record_at(d, off, rec) : v1_record_at(d, off, rec);
}

// The first offset >= from where an intact record starts, or kNotFound.
size_t next_record(int version, std::string_view d, size_t from) {
  JournalRecord rec;
  for (size_t p = from; p < d.size(); ++p)
    if (record_at(version, d, p, &rec)) return p;
  return kNotFound;
}

// Why the bytes from `off` to the end are not a torn append of the record with sequence
// number `expect` ("" when they are one). Assumes no intact record starts there.
std::string tail_problem(int version, std::string_view d, size_t off, uint64_t expect) {
  const size_t rest = d.size() - off;
  const char* p = d.data() + off;
  if (rest >= 4 && all_zero(d, off)) return zero_tail_text(rest);
  if (version == 2) {
    if (rest < kV2HeaderBytes) return v2_prefix_problem(p, rest, expect);
    V2Header h = parse_v2_header(p);
    if (!h.header_ok) return "fails its header checksum (its length or sequence number is damaged)";
    if (!valid_length(h.len)) return "has a length of " + length_text(h.len);
    if (h.seq != expect) {
      return "has sequence number " + std::to_string(h.seq) + " where " + std::to_string(expect) +
             " comes next: records were dropped, duplicated or reordered";
    }
    if (h.len <= rest - kV2HeaderBytes) return "is complete but fails its checksum";
    return "";
  }
  if (rest < kV1HeaderBytes) {
    if (rest >= 4 && !valid_length(get_u32(p))) {
      return "has a length of " + length_text(get_u32(p)) +
             " in a header cut off by the end of "
             "the file";
    }
    return "";
  }
  uint32_t len = get_u32(p);
  if (!valid_length(len)) return "has a length of " + length_text(len);
  if (len <= rest - kV1HeaderBytes) return "is complete but fails its checksum";
  return "";
}

int bit_distance(std::string_view a, std::string_view b) {
  int n = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    n += __builtin_popcount(static_cast<unsigned char>(a[i] ^ b[i]));
  return n;
}

}  // namespace

const std::string& Journal::file_header() {
  static const std::string header = frame_v1(kHeaderPayload);
  return header;
}

std::string Journal::frame(const std::string& payload, uint64_t seq) {
  std::string out;
  out.reserve(payload.size() + kV2HeaderBytes);
  put_u32(&out, static_cast<uint32_t>(payload.size()));
  put_u64(&out, seq);
  uint32_t header_crc = crc32_ieee(out.data(), 12);
  put_u32(&out, header_crc);
  put_u32(&out, crc32_extend(header_crc, payload.data(), payload.size()));
  out += payload;
  return out;
}

std::string Journal::frame_v1(const std::string& payload) {
  std::string out;
  out.reserve(payload.size() + kV1HeaderBytes);
  put_u32(&out, static_cast<uint32_t>(payload.size()));
  put_u32(&out, crc32_ieee(payload.data(), payload.size()));
  out += payload;
  return out;
}

namespace {

// Every intact record of `d` from byte `off`, resynchronising after damage (repair): damaged
// stretches and a torn tail go to `report`.
std::vector<JournalRecord> intact_records(std::string_view d, int version, size_t off,
                                          JournalRepairReport* report) {
  std::vector<JournalRecord> found;
  uint64_t max_seq = 0;
  while (off < d.size()) {
    JournalRecord rec;
    if (record_at(version, d, off, &rec)) {
      found.push_back(rec);
      max_seq = std::max(max_seq, rec.seq);
      off += rec.payload.size() + (version == 2 ? kV2HeaderBytes : kV1HeaderBytes);
      continue;
    }
    size_t next = next_record(version, d, off + 1);
    if (next == kNotFound) {
      if (tail_problem(version, d, off, max_seq + 1).empty()) {
        report->torn_bytes = d.size() - off;
      } else {
        report->damaged_ranges.emplace_back(off, d.size());
      }
      break;
    }
    report->damaged_ranges.emplace_back(off, next);
    off = next;
  }
  if (version == 2) {
    // The walk steps over what a record it found spans; damage that forged a frame in front of
    // an intact record can hide that record there. A format-2 header has its own CRC, so
    // trying every offset is cheap: no intact record is skipped.
    std::set<size_t> seen;
    for (const auto& r : found) seen.insert(r.offset);
    for (size_t p = 0; p + kV2HeaderBytes <= d.size(); ++p) {
      JournalRecord rec;
      if (seen.count(p) == 0 && v2_record_at(d, p, &rec)) found.push_back(rec);
    }
    std::stable_sort(
        found.begin(), found.end(),
        [](const JournalRecord& a, const JournalRecord& b) { return a.offset < b.offset; });
  }
  return found;
}

// A format-2 file header that damage changed: its family name is where the header keeps it,
// or at most 8 bits differ from the header, or from its first 12 bytes (length, checksum and
// "tern": damage that wiped the rest). Such a file is format 2, never format 1: a format-1
// file starts with a record's length and CRC and then its JSON, 40-odd bits from those bytes.
bool damaged_file_header(std::string_view d) {
  const std::string& header = Journal::file_header();
  if (d.size() < 12) return false;
  return bit_distance(d.substr(0, 12), std::string_view(header).substr(0, 12)) <= 8 ||
         (d.size() >= kFileHeaderBytes &&
          (d.substr(kV1HeaderBytes, sizeof(kHeaderFamily) - 1) == kHeaderFamily ||
           bit_distance(d.substr(0, kFileHeaderBytes), header) <= 8));
}

// The format of a journal from its first bytes: sets scan->version and moves *off past a file
// header. False when the file is a torn file header (it was being created: nothing to scan).
Result<bool> scan_file_header(std::string_view d, const std::string& path, JournalScan* scan,
                              size_t* off) {
  const std::string& header = Journal::file_header();
  if (d.size() < kFileHeaderBytes && header.compare(0, d.size(), d) == 0) {
    scan->version = 2;
    scan->torn_tail = true;
    return false;
  }
  if (d.substr(0, kFileHeaderBytes) == header) {
    scan->version = 2;
    *off = kFileHeaderBytes;
  } else if (damaged_file_header(d)) {
    return corrupt(path, d.size(), "the file header at byte 0",
                   "is damaged or names a journal format this coordinator does not know "
                   "(it reads formats 1 and 2)");
  } else {
    scan->version = 1;
  }
  return true;
}

}  // namespace

Result<JournalScan> scan_journal(std::string_view d, const std::string& path) {
  JournalScan scan;
  const uint64_t size = d.size();
  if (d.empty()) return scan;
  size_t off = 0;
  TERN_ASSIGN_OR_RETURN(const bool more, scan_file_header(d, path, &scan, &off));
  if (!more) return scan;

  uint64_t expect = 1;  // format 2: the next sequence number
  while (off < d.size()) {
    const size_t rest = d.size() - off;
    const char* p = d.data() + off;
    const size_t n = scan.records.size() + 1;
    const std::string where = where_record(n, off);
    JournalRecord rec;
    if (scan.version == 2) {
      if (rest >= kV2HeaderBytes) {
        V2Header h = parse_v2_header(p);
        if (h.header_ok && valid_length(h.len) && h.seq == expect &&
            h.len <= rest - kV2HeaderBytes) {
          if (!v2_record_crc_ok(p, h.len)) {
            return corrupt(path, size, where,
                           "is complete but fails its checksum (a torn append is always the "
                           "last bytes of the file; this record ends at byte " +
                               std::to_string(off + kV2HeaderBytes + h.len) + ")");
          }
          scan.records.push_back({off, h.seq, d.substr(off + kV2HeaderBytes, h.len)});
          off += kV2HeaderBytes + h.len;
          ++expect;
          continue;
        }
      }
    } else if (rest >= kV1HeaderBytes) {
      uint32_t len = get_u32(p);
      if (valid_length(len) && len <= rest - kV1HeaderBytes) {
        if (!v1_record_at(d, off, &rec)) {
          if (header_payload(d.substr(off + kV1HeaderBytes, len)) &&
              crc32_ieee(p + kV1HeaderBytes, len) == get_u32(p + 4)) {
            return corrupt(path, size, where,
                           "is a journal file header, not a record: the start of a format-2 "
                           "journal is damaged");
          }
          return corrupt(path, size, where,
                         "is complete but fails its checksum (a torn append is always the last "
                         "bytes of the file; this record ends at byte " +
                             std::to_string(off + kV1HeaderBytes + len) + ")");
        }
        scan.records.push_back(rec);
        off += kV1HeaderBytes + len;
        continue;
      }
      if (valid_length(len)) {
        // The length runs past the end: a torn append, unless intact records follow it.
        size_t next = next_record(1, d, off + 1);
        if (next != kNotFound) {
          return corrupt(path, size, where,
                         "has a length of " + std::to_string(len) +
                             " that runs past the end of the file, but an intact record starts "
                             "at byte " +
                             std::to_string(next) + ": the length is damaged");
        }
      }
    }
    // Not an intact record: the tail of a torn append, or damage.
    std::string problem = tail_problem(scan.version, d, off, expect);
    if (problem.empty() && scan.version == 1) {
      // Without a file header, only a journal that starts with intact records (what an older
      // coordinator wrote) may end in a torn append; and format-2 records after it mean a
      // format-2 journal whose header is damaged.
      size_t v2 = next_record(2, d, off);
      if (scan.records.empty()) {
        problem = "starts neither with the journal file header nor with an intact record";
      } else if (v2 != kNotFound) {
        problem =
            "does not start an intact format-1 record, but a format-2 record starts at "
            "byte " +
            std::to_string(v2);
      }
    }
    if (!problem.empty()) return corrupt(path, size, where, problem);
    scan.torn_tail = true;
    break;
  }
  scan.valid_bytes = off;
  return scan;
}

uint64_t JournalRepairReport::bytes_lost() const {
  uint64_t n = 0;
  for (const auto& [b, e] : damaged_ranges) n += e - b;
  return n;
}

uint64_t JournalRepairReport::records_known_lost() const {
  uint64_t n = refused.size();
  for (const auto& [a, b] : missing_sequences) n += b - a + 1;
  return n;
}

Result<std::unique_ptr<Journal>> Journal::open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return internal_error("cannot create journal directory " + dir + ": " + ec.message());
  std::unique_ptr<Journal> j(new Journal());
  j->dir_ = dir;
  j->path_ = dir + "/journal.log";
  std::string lock_path = dir + "/LOCK";
  j->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (j->lock_fd_ < 0) return internal_error("open " + lock_path + ": " + errno_text());
  if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return failed_precondition("journal " + dir +
                               " is locked by another coordinator; stop it first (tern cluster "
                               "down) or use another state_dir");
  }
  j->fd_ = ::open(j->path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (j->fd_ < 0) return internal_error("open " + j->path_ + ": " + errno_text());
  return j;
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Status Journal::replay(const std::function<Status(const std::string&)>& fn,
                       JournalReplayStats* stats) {
  JournalReplayStats local;
  JournalReplayStats& st = stats ? *stats : local;
  st = JournalReplayStats{};
  std::string data;
  TERN_RETURN_IF_ERROR(read_all(fd_, path_, &data));
  TERN_ASSIGN_OR_RETURN(JournalScan scan, scan_journal(data, path_));
  st.version = scan.version;
  for (size_t i = 0; i < scan.records.size(); ++i) {
    const JournalRecord& r = scan.records[i];
    Status s = fn(std::string(r.payload));
    if (!s.is_ok()) {
      return Status(s.code(), path_ + ": " + where_record(i + 1, r.offset) + ": " + s.message() +
                                  ". Nothing was changed; `tern coordinator --repair` (with the "
                                  "same --config or --state-dir) keeps every record the "
                                  "coordinator can read and keeps this file as " +
                                  base_name(path_) + ".damaged-<unix time>");
    }
    ++st.records;
  }
  st.torn_tail = scan.torn_tail;
  st.torn_bytes = data.size() - scan.valid_bytes;
  st.valid_bytes = scan.valid_bytes;
  replayed_ = true;
  if (scan.version != 2 || scan.valid_bytes == 0) {
    // Format 1 or an empty file (or a torn file header): rewrite in format 2 with a header.
    std::vector<std::string> payloads;
    payloads.reserve(scan.records.size());
    for (const auto& r : scan.records) payloads.emplace_back(r.payload);
    return write_fresh(payloads);
  }
  if (scan.torn_tail) {
    if (::ftruncate(fd_, static_cast<off_t>(scan.valid_bytes)) != 0 || ::fsync(fd_) != 0) {
      return internal_error("truncate torn tail of " + path_ + ": " + errno_text());
    }
  }
  records_ = scan.records.size();
  next_seq_ = records_ + 1;
  size_ = scan.valid_bytes;
  return Status::ok();
}

Status Journal::append(const std::string& payload) { return append_batch({payload}); }

Status Journal::append_batch(const std::vector<std::string>& payloads) {
  CoreLock::forbid_held("Journal::append_batch");
  if (!replayed_) return failed_precondition("journal: replay() before append()");
  if (!broken_.is_ok()) return broken_;
  if (payloads.empty()) return Status::ok();
  std::string recs;
  for (size_t i = 0; i < payloads.size(); ++i) {
    TERN_RETURN_IF_ERROR(check_journal_payload(payloads[i]));
    recs += frame(payloads[i], next_seq_ + i);
  }
  FileWriter file(fd_, path_);
  Status s = file.write(recs);
  if (s.is_ok() && ::fdatasync(fd_) != 0)
    s = internal_error("fdatasync " + path_ + ": " + errno_text());
  if (!s.is_ok()) {
    // Cut the failed records off again: a partial record followed by later appends would read
    // as corruption, and a record that reached the disk but was not acknowledged must not be.
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0 || ::fsync(fd_) != 0) {
      broken_ =
          internal_error(path_ + ": a failed append (" + s.message() +
                         ") could not be undone: " + errno_text() + "; restart the coordinator");
    }
    return s;
  }
  size_ += recs.size();
  next_seq_ += payloads.size();
  records_ += payloads.size();
  return Status::ok();
}

Status Journal::write_fresh(const std::vector<std::string>& payloads) {
  CoreLock::forbid_held("Journal::rewrite");
  for (const auto& p : payloads) TERN_RETURN_IF_ERROR(check_journal_payload(p));
  std::string image = journal_image(payloads);
  AtomicWriteOptions options;
  options.tmp_suffix = ".compact";
  TERN_RETURN_IF_ERROR(atomic_write_file(path_, image, options));
  int nfd = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CLOEXEC, 0644);
  if (nfd < 0) return internal_error("reopen " + path_ + ": " + errno_text());
  ::close(fd_);
  fd_ = nfd;
  records_ = payloads.size();
  next_seq_ = records_ + 1;
  size_ = image.size();
  broken_ = Status::ok();
  replayed_ = true;
  return Status::ok();
}

Status Journal::rewrite(const std::vector<std::string>& payloads) { return write_fresh(payloads); }

JournalSalvage salvage_journal(std::string_view d, const std::string& path,
                               const std::function<Status(const std::string&)>& accept) {
  JournalSalvage out;
  JournalRepairReport& report = out.report;
  report.path = path;
  report.file_bytes = d.size();

  // What a normal start would say (records refused by `accept` count as damage too).
  auto scan = scan_journal(d, path);
  if (scan.is_ok()) {
    report.version = scan->version;
    report.torn_bytes = d.size() - scan->valid_bytes;
    bool all_accepted = true;
    for (const auto& r : scan->records) {
      if (accept && !accept(std::string(r.payload)).is_ok()) all_accepted = false;
    }
    if (all_accepted) {
      out.intact = true;  // a normal start drops the torn tail, if any
      for (const auto& r : scan->records) out.payloads.emplace_back(r.payload);
      report.records_kept = out.payloads.size();
      return out;
    }
    report.problem = path + ": intact records the coordinator cannot read";
  } else {
    report.problem = scan.status().message();
  }

  // Which format: a file header (intact, damaged or elsewhere), or else any intact format-2
  // record, says 2.
  int version = 1;
  size_t off = 0;
  if (d.substr(0, kFileHeaderBytes) == Journal::file_header()) {
    version = 2;
    off = kFileHeaderBytes;
  } else if (damaged_file_header(d) || d.find(Journal::file_header()) != std::string_view::npos ||
             next_record(2, d, 0) != kNotFound) {
    version = 2;
  }
  report.version = version;

  std::vector<JournalRecord> found = intact_records(d, version, off, &report);

  // Refused records, then (format 2) sequence order without duplicates.
  std::vector<JournalRecord> kept;
  for (const auto& r : found) {
    if (accept) {
      Status s = accept(std::string(r.payload));
      if (!s.is_ok()) {
        report.refused.push_back("record at byte " + std::to_string(r.offset) + ": " + s.message());
        continue;
      }
    }
    kept.push_back(r);
  }
  if (version == 2) {
    for (size_t i = 1; i < kept.size(); ++i) report.reordered |= kept[i].seq < kept[i - 1].seq;
    std::stable_sort(kept.begin(), kept.end(),
                     [](const JournalRecord& a, const JournalRecord& b) { return a.seq < b.seq; });
    std::vector<JournalRecord> unique;
    for (const auto& r : kept) {
      if (!unique.empty() && unique.back().seq == r.seq) {
        ++report.duplicates_dropped;
        continue;
      }
      unique.push_back(r);
    }
    kept.swap(unique);
    // Sequence numbers of refused records are not "missing": they were found and reported.
    std::vector<uint64_t> seen;
    for (const auto& r : found) seen.push_back(r.seq);
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    uint64_t expect = 1;
    for (uint64_t s : seen) {
      if (s > expect) report.missing_sequences.emplace_back(expect, s - 1);
      expect = s + 1;
    }
  }
  for (const auto& r : kept) out.payloads.emplace_back(r.payload);
  report.records_kept = kept.size();
  return out;
}

std::string journal_image(const std::vector<std::string>& payloads) {
  std::string all = Journal::file_header();
  uint64_t seq = 1;
  for (const auto& p : payloads) all += Journal::frame(p, seq++);
  return all;
}

Result<JournalRepairReport> Journal::repair(const std::string& dir,
                                            const JournalRepairOptions& options) {
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<Journal> j, Journal::open(dir));
  std::string data;
  TERN_RETURN_IF_ERROR(read_all(j->fd_, j->path_, &data));
  JournalSalvage salvage = salvage_journal(data, j->path_, options.accept);
  JournalRepairReport report = std::move(salvage.report);
  if (salvage.intact) return report;

  // The damaged file is kept under another name (a hard link, so journal.log is the old file or
  // the new one at every instant), then the new journal replaces journal.log.
  std::string copy = j->path_ + ".damaged-" + std::to_string(options.unix_time);
  for (int i = 2; std::filesystem::exists(copy); ++i) {
    copy = j->path_ + ".damaged-" + std::to_string(options.unix_time) + "-" + std::to_string(i);
  }
  if (::link(j->path_.c_str(), copy.c_str()) != 0) {
    TERN_RETURN_IF_ERROR(atomic_write_file(copy, data));
  }
  TERN_RETURN_IF_ERROR(fsync_dir(j->dir_));
  AtomicWriteOptions write;
  write.tmp_suffix = ".repair";
  TERN_RETURN_IF_ERROR(atomic_write_file(j->path_, journal_image(salvage.payloads), write));
  report.changed = true;
  report.damaged_copy = copy;
  return report;
}

// ---------------------------------------------------------------- HighWaterMark

namespace {

constexpr size_t kSlotBytes = 16;
constexpr char kSlotMagic[] = "TJID";

std::string encode_slot(uint64_t v) {
  std::string s(kSlotMagic, 4);
  put_u64(&s, v);
  put_u32(&s, crc32_ieee(s.data(), 12));
  return s;
}

bool decode_slot(std::string_view b, uint64_t* v) {
  if (b.size() < kSlotBytes || b.substr(0, 4) != std::string_view(kSlotMagic, 4)) return false;
  if (crc32_ieee(b.data(), 12) != get_u32(b.data() + 12)) return false;
  *v = get_u64(b.data() + 4);
  return true;
}

struct Slots {
  bool valid[2] = {false, false};
  uint64_t value[2] = {0, 0};
  uint64_t max() const { return std::max(valid[0] ? value[0] : 0, valid[1] ? value[1] : 0); }
};

Result<Slots> parse_slots(std::string_view bytes, const std::string& path) {
  Slots s;
  for (int i = 0; i < 2; ++i) {
    if (bytes.size() >= (i + 1) * kSlotBytes)
      s.valid[i] = decode_slot(bytes.substr(i * kSlotBytes, kSlotBytes), &s.value[i]);
  }
  if (bytes.size() >= kSlotBytes && !s.valid[0] && !s.valid[1]) {
    return data_loss(path + ": neither copy of the high-water mark (bytes 0-15 and 16-31 of " +
                     std::to_string(bytes.size()) + ") is valid");
  }
  return s;
}

}  // namespace

Result<std::unique_ptr<HighWaterMark>> HighWaterMark::open(const std::string& path) {
  std::unique_ptr<HighWaterMark> m(new HighWaterMark());
  m->path_ = path;
  m->synced_dir_ = std::filesystem::exists(path);
  m->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (m->fd_ < 0) return internal_error("open " + path + ": " + errno_text());
  std::string bytes;
  TERN_RETURN_IF_ERROR(read_all(m->fd_, path, &bytes));
  TERN_ASSIGN_OR_RETURN(Slots s, parse_slots(bytes, path));
  for (int i = 0; i < 2; ++i) {
    m->slot_valid_[i] = s.valid[i];
    m->slot_value_[i] = s.value[i];
  }
  m->value_ = s.max();
  return m;
}

HighWaterMark::~HighWaterMark() {
  if (fd_ >= 0) ::close(fd_);
}

Status HighWaterMark::advance(uint64_t v) {
  if (v <= value_) return Status::ok();
  CoreLock::forbid_held("HighWaterMark::advance");
  int slot = !slot_valid_[0] ? 0 : !slot_valid_[1] ? 1 : slot_value_[0] <= slot_value_[1] ? 0 : 1;
  std::string b = encode_slot(v);
  slot_valid_[slot] = false;  // unknown until the write is durable
  ssize_t n = ::pwrite(fd_, b.data(), b.size(), static_cast<off_t>(slot * kSlotBytes));
  if (n != static_cast<ssize_t>(b.size()))
    return internal_error("write " + path_ + ": " + (n < 0 ? errno_text() : "short write"));
  if (::fdatasync(fd_) != 0) return internal_error("fdatasync " + path_ + ": " + errno_text());
  if (!synced_dir_) {
    TERN_RETURN_IF_ERROR(fsync_dir(parent_dir(path_)));
    synced_dir_ = true;
  }
  slot_valid_[slot] = true;
  slot_value_[slot] = v;
  value_ = v;
  return Status::ok();
}

Status HighWaterMark::reset(const std::string& path, uint64_t v) {
  AtomicWriteOptions options;
  options.tmp_suffix = ".tmp";
  return atomic_write_file(path, encode_slot(v) + encode_slot(v), options);
}

Result<uint64_t> HighWaterMark::read(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return uint64_t{0};
    return internal_error("open " + path + ": " + errno_text());
  }
  std::string bytes;
  Status s = read_all(fd, path, &bytes);
  ::close(fd);
  TERN_RETURN_IF_ERROR(s);
  TERN_ASSIGN_OR_RETURN(Slots slots, parse_slots(bytes, path));
  return slots.max();
}

}  // namespace tern
