// Fuzz target: the coordinator's journal under damage. The first byte picks the mode:
//  - structured (even): the input describes K acknowledged records (known payloads) and up to
//    4 damage operations at any offset (flip a bit, truncate, zero a range, swap two records,
//    duplicate a record, delete a record, append zeros or bytes, overwrite a range, move a
//    range, insert zeros). Replay must fail loudly (DATA_LOSS naming the file, a byte offset
//    and the way out) or return every acknowledged record whose bytes are intact, in order,
//    with nothing extra or altered; only records cut off by the end of the file (a torn
//    append) may go missing. Salvage (`tern coordinator --repair`) must keep every intact
//    record. See journal_invariant.h. Some inputs also take the real file path: open, replay
//    (nothing changed on error; the torn tail truncated on success), append, replay again,
//    and Journal::repair.
//  - raw (odd): the rest is a journal file image in any format. Scan and salvage must not
//    crash, hang or throw; errors follow the same rules; what replay keeps replays again; a
//    salvaged image replays.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "coordinator/journal.h"
#include "journal_invariant.h"

namespace fs = std::filesystem;
using namespace tern;

namespace {

const char kPath[] = "fuzz/journal.log";

struct Input {
  const uint8_t* data;
  size_t size;
  size_t at = 0;
  uint8_t byte() { return at < size ? data[at++] : 0; }
  size_t u16() { return byte() | (size_t{byte()} << 8); }
  std::string bytes(size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(byte()));
    return s;
  }
};

void fail(const std::string& what, const std::string& bytes) {
  std::fprintf(stderr, "journal invariant violated: %s (journal of %zu bytes:", what.c_str(),
               bytes.size());
  for (size_t i = 0; i < bytes.size() && i < 512; ++i)
    std::fprintf(stderr, "%s%02x", i % 32 == 0 ? "\n  " : " ",
                 static_cast<unsigned char>(bytes[i]));
  std::fprintf(stderr, ")\n");
  std::abort();
}

// Applies one damage operation chosen by the input.
void damage(Input& in, const journal_check::Built& orig, std::string* b) {
  const size_t k = orig.frames.size();
  auto record_range = [&](size_t i, size_t* begin, size_t* end) {
    *begin = orig.ranges[i % k].first;
    *end = orig.ranges[i % k].second;
    return *end <= b->size();
  };
  size_t s1, e1, s2, e2;
  switch (in.byte() % 11) {
    case 0:  // flip a bit
      if (!b->empty()) (*b)[in.u16() % b->size()] ^= static_cast<char>(1u << (in.byte() % 8));
      break;
    case 1:  // truncate
      b->resize(in.u16() % (b->size() + 1));
      break;
    case 2:  // zero a range
      if (!b->empty()) {
        size_t a = in.u16() % b->size();
        size_t n = std::min<size_t>(1 + in.byte(), b->size() - a);
        b->replace(a, n, std::string(n, '\0'));
      }
      break;
    case 3: {  // swap two records
      size_t i = in.byte(), j = in.byte();
      if (record_range(i, &s1, &e1) && record_range(j, &s2, &e2) && s1 != s2) {
        if (s1 > s2) std::swap(s1, s2), std::swap(e1, e2);
        *b = b->substr(0, s1) + b->substr(s2, e2 - s2) + b->substr(e1, s2 - e1) +
             b->substr(s1, e1 - s1) + b->substr(e2);
      }
      break;
    }
    case 4: {  // duplicate a record at any offset
      size_t i = in.byte();
      size_t at = in.u16() % (b->size() + 1);
      if (record_range(i, &s1, &e1)) b->insert(at, b->substr(s1, e1 - s1));
      break;
    }
    case 5:  // delete a record
      if (record_range(in.byte(), &s1, &e1)) b->erase(s1, e1 - s1);
      break;
    case 6:  // a zero-filled tail
      b->append(1 + in.byte() % 64, '\0');
      break;
    case 7:  // bytes after the end
      *b += in.bytes(in.byte() % 24);
      break;
    case 8:  // overwrite a range
      if (!b->empty()) {
        size_t a = in.u16() % b->size();
        std::string w = in.bytes(1 + in.byte() % 16);
        b->replace(a, std::min(w.size(), b->size() - a), w.substr(0, b->size() - a));
      }
      break;
    case 9:  // move a range elsewhere
      if (!b->empty()) {
        size_t a = in.u16() % b->size();
        size_t n = std::min<size_t>(1 + in.byte() % 64, b->size() - a);
        std::string cut = b->substr(a, n);
        b->erase(a, n);
        b->insert(in.u16() % (b->size() + 1), cut);
      }
      break;
    case 10:  // a zero-filled hole that shifts the rest
      b->insert(in.u16() % (b->size() + 1), std::string(1 + in.byte() % 32, '\0'));
      break;
  }
}

// On tmpfs when there is one: the journal fsyncs, and the file path is checked for its logic.
fs::path work_dir() {
  static const fs::path dir =
      (fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path()) /
      ("tern-journal-fuzz-" + std::to_string(::getpid()));
  return dir;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The real file path: open + replay must agree with scan_journal, change nothing on error,
// truncate a torn tail, accept an append and replay it; repair must keep the damaged file.
void check_on_disk(const std::string& bytes, const Result<JournalScan>& scan) {
  const fs::path dir = work_dir();
  fs::remove_all(dir);
  fs::create_directories(dir);
  write_file(dir / "journal.log", bytes);
  std::vector<std::string> got;
  {
    auto j = Journal::open(dir.string());
    if (!j.is_ok()) fail("open: " + j.status().message(), bytes);
    Status s = (*j)->replay([&](const std::string& p) {
      got.push_back(p);
      return Status::ok();
    });
    if (s.is_ok() != scan.is_ok()) fail("replay and scan_journal disagree", bytes);
    if (!s.is_ok()) {
      if (read_file(dir / "journal.log") != bytes) fail("a failed replay changed the file", bytes);
    } else {
      if (got.size() != scan->records.size()) fail("replay and scan_journal disagree", bytes);
      if (!(*j)->append("appended").is_ok()) fail("append after replay", bytes);
    }
  }
  if (!scan.is_ok()) {
    auto r = Journal::repair(dir.string(), JournalRepairOptions{nullptr, 7});
    if (!r.is_ok()) fail("repair: " + r.status().message(), bytes);
    if (!r->changed || read_file(r->damaged_copy) != bytes)
      fail("repair lost the damaged file", bytes);
    got.clear();
    auto j = Journal::open(dir.string());
    if (!j.is_ok() || !(*j)->replay([&](const std::string& p) {
                             got.push_back(p);
                             return Status::ok();
                           })
                           .is_ok()) {
      fail("the repaired journal does not replay", bytes);
    }
    if (got.size() != r->records_kept) fail("repair reports another count", bytes);
    return;
  }
  std::vector<std::string> again;
  auto j = Journal::open(dir.string());
  JournalReplayStats st;
  if (!j.is_ok() || !(*j)->replay(
                             [&](const std::string& p) {
                               again.push_back(p);
                               return Status::ok();
                             },
                             &st)
                         .is_ok()) {
    fail("the journal does not replay after a replay and an append", bytes);
  }
  got.push_back("appended");
  if (again != got || st.torn_tail) fail("the second replay differs", bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in{data, size};
  const uint8_t mode = in.byte();
  if (mode & 1) {  // raw: any bytes as a journal file
    std::string bytes(reinterpret_cast<const char*>(data) + 1, size - (size > 0 ? 1 : 0));
    auto scan = scan_journal(bytes, kPath);
    if (!scan.is_ok()) {
      const std::string& m = scan.status().message();
      if (scan.status().code() != StatusCode::kDataLoss ||
          m.rfind(std::string(kPath) + ": ", 0) != 0 || !journal_check::names_offset(m)) {
        fail("a raw journal error is not DATA_LOSS naming the file and an offset: " + m, bytes);
      }
    } else {
      auto again = scan_journal(std::string_view(bytes).substr(0, scan->valid_bytes), kPath);
      if (!again.is_ok() || again->torn_tail || again->records.size() != scan->records.size())
        fail("what replay keeps does not replay again", bytes);
    }
    JournalSalvage salvage = salvage_journal(bytes, kPath, nullptr);
    auto rescan = scan_journal(journal_image(salvage.payloads), kPath);
    if (!rescan.is_ok() || rescan->records.size() != salvage.payloads.size())
      fail("a salvaged journal does not replay", bytes);
    if (mode & 2) check_on_disk(bytes, scan);
    return 0;
  }

  // Structured: K acknowledged records of letters, then damage.
  const size_t k = 1 + in.byte() % 8;
  std::vector<std::string> payloads;
  for (size_t i = 0; i < k; ++i) {
    std::string p(1 + in.byte() % 40, 'a');
    for (char& c : p) c = static_cast<char>('a' + in.byte() % 26);
    payloads.push_back(p);
  }
  const journal_check::Built orig = journal_check::build(payloads);
  std::string bytes = orig.bytes;
  const size_t ops = 1 + in.byte() % 4;
  for (size_t i = 0; i < ops; ++i) damage(in, orig, &bytes);

  auto scan = scan_journal(bytes, kPath);
  std::string v = journal_check::check_replay(orig, bytes, scan, kPath);
  if (!v.empty()) fail(v, bytes);
  v = journal_check::check_salvage(orig, bytes, salvage_journal(bytes, kPath, nullptr), kPath);
  if (!v.empty()) fail(v, bytes);
  if (mode & 2) check_on_disk(bytes, scan);
  return 0;
}
