#include "trainer/workloads/dlrm/criteo_format.h"

#include <spdlog/spdlog.h>
#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace tern {
namespace {

// A field quoted in a message is cut to this many bytes (a malformed line may be long).
constexpr size_t kQuotedBytes = 48;

// 'value' with bytes outside printable ASCII escaped (\t, \r, \0, \xNN), cut to its first
// kQuotedBytes bytes and its length when longer: log lines and error reasons stay one line of
// valid UTF-8 whatever the file holds.
std::string quote(std::string_view value) {
  std::string out = "'";
  const size_t n = std::min(value.size(), kQuotedBytes);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\0') {
      out += "\\0";
    } else if (c == '\\' || c < 0x20 || c > 0x7e) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += n < value.size() ? "...' (" + std::to_string(value.size()) + " bytes)" : "'";
  return out;
}

CriteoLineResult defect(CriteoDefect d, std::string message) { return {d, std::move(message)}; }

// -?[0-9]+ within int64; false for anything else (whitespace and '+' included).
bool parse_int64(std::string_view s, int64_t* out, bool* overflow) {
  *overflow = false;
  size_t i = 0;
  const bool negative = !s.empty() && s[0] == '-';
  if (negative) i = 1;
  if (i == s.size()) return false;
  const uint64_t limit =
      negative ? uint64_t{1} << 63 : static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t v = 0;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (limit - d) / 10) {
      // Still digits to the end? Then it is an integer, just too large.
      bool digits = true;
      for (size_t j = i; j < s.size(); ++j) digits = digits && s[j] >= '0' && s[j] <= '9';
      *overflow = digits;
      return false;
    }
    v = v * 10 + d;
  }
  *out = negative ? static_cast<int64_t>(~v + 1) : static_cast<int64_t>(v);
  return true;
}

// 1 to 16 hex digits.
bool parse_hex64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return false;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

}  // namespace

const char* criteo_defect_name(CriteoDefect d) {
  switch (d) {
    case CriteoDefect::kNone:
      return "none";
    case CriteoDefect::kOverlong:
      return "overlong";
    case CriteoDefect::kNul:
      return "nul";
    case CriteoDefect::kFieldCount:
      return "field_count";
    case CriteoDefect::kLabel:
      return "label";
    case CriteoDefect::kInteger:
      return "integer";
    case CriteoDefect::kCategory:
      return "category";
  }
  return "unknown";
}

CriteoLineResult parse_criteo_line(std::string_view line, CriteoRow* row) {
  if (static_cast<int64_t>(line.size()) > kCriteoMaxLineBytes) {
    return defect(CriteoDefect::kOverlong,
                  "a line of " + std::to_string(line.size()) +
                      " bytes is longer than a well-formed Criteo line can be (" +
                      std::to_string(kCriteoMaxLineBytes) + " bytes)");
  }
  if (const void* nul = std::memchr(line.data(), '\0', line.size()); nul != nullptr) {
    const size_t at = static_cast<size_t>(static_cast<const char*>(nul) - line.data());
    return defect(CriteoDefect::kNul,
                  "a NUL byte at byte " + std::to_string(at + 1) + " of the line");
  }
  if (line.empty()) {
    return defect(
        CriteoDefect::kFieldCount,
        "an empty line (expected " + std::to_string(kCriteoFields) + " tab-separated fields)");
  }
  int fields = 1;
  for (char c : line) fields += c == '\t';
  if (fields != kCriteoFields) {
    return defect(CriteoDefect::kFieldCount, "expected " + std::to_string(kCriteoFields) +
                                                 " tab-separated fields, got " +
                                                 std::to_string(fields));
  }
  CriteoRow r;
  size_t begin = 0;
  for (int field = 0; field < kCriteoFields; ++field) {
    size_t end = line.find('\t', begin);
    if (end == std::string_view::npos) end = line.size();
    const std::string_view value = line.substr(begin, end - begin);
    begin = end + 1;
    if (field == 0) {
      if (value != "0" && value != "1")
        return defect(CriteoDefect::kLabel, "label must be 0 or 1, got " + quote(value));
      r.label = value == "1";
    } else if (field <= kCriteoIntFields) {
      const int i = field - 1;
      if (value.empty()) continue;
      bool overflow = false;
      if (!parse_int64(value, &r.ints[i], &overflow)) {
        return defect(CriteoDefect::kInteger,
                      "integer feature I" + std::to_string(i + 1) +
                          (overflow ? " is outside the int64 range: " : " is not an integer: ") +
                          quote(value));
      }
      r.int_present[i] = true;
    } else {
      const int t = field - 1 - kCriteoIntFields;
      r.cats[t] = kCriteoMissingCategory;
      if (value.empty()) continue;
      if (!parse_hex64(value, &r.cats[t])) {
        return defect(CriteoDefect::kCategory, "categorical feature C" + std::to_string(t + 1) +
                                                   " is not 1 to 16 hex digits: " + quote(value));
      }
    }
  }
  *row = r;
  return {};
}

CriteoLineResult parse_criteo_line(const CriteoLineSplitter::Line& line, CriteoRow* row) {
  if (line.overlong) {
    return defect(CriteoDefect::kOverlong,
                  "a line of " + std::to_string(line.bytes) +
                      " bytes is longer than a well-formed Criteo line can be (" +
                      std::to_string(kCriteoMaxLineBytes) + " bytes)");
  }
  return parse_criteo_line(line.text, row);
}

float criteo_dense_value(int64_t raw, bool present) {
  if (!present || raw <= 0) return 0.0f;
  return static_cast<float>(std::log1p(static_cast<double>(raw)));
}

std::string format_criteo_line(const CriteoRow& row) {
  std::string s = row.label ? "1" : "0";
  for (int i = 0; i < kCriteoIntFields; ++i) {
    s += '\t';
    if (row.int_present[i]) s += std::to_string(row.ints[i]);
  }
  for (int t = 0; t < kCriteoCatFields; ++t) {
    s += '\t';
    if (row.cats[t] == kCriteoMissingCategory) continue;
    char hex[24];
    std::snprintf(hex, sizeof hex, row.cats[t] >> 32 ? "%016llx" : "%08llx",
                  static_cast<unsigned long long>(row.cats[t]));
    s += hex;
  }
  return s;
}

// --- Lines -----------------------------------------------------------------------------------

CriteoLineSplitter::CriteoLineSplitter(ReadFn read, size_t chunk_bytes, int64_t max_line_bytes)
    : read_(std::move(read)), max_line_bytes_(std::max<int64_t>(max_line_bytes, 0)) {
  chunk_.resize(std::max<size_t>(chunk_bytes, 1));
}

Result<bool> CriteoLineSplitter::next(Line* out) {
  line_.clear();
  // The line is kept up to max + 1 bytes: one more than allowed, so that a line of exactly max
  // bytes plus its '\r' is still recognised; beyond that only its length is counted.
  const size_t keep = static_cast<size_t>(max_line_bytes_) + 1;
  int64_t bytes = 0;
  char last = 0;
  bool started = false;
  for (;;) {
    if (pos_ == len_) {
      if (eof_) break;
      TERN_ASSIGN_OR_RETURN(size_t n, read_(chunk_.data(), chunk_.size()));
      if (n == 0) {
        eof_ = true;
        break;
      }
      pos_ = 0;
      len_ = std::min(n, chunk_.size());
    }
    const char* begin = chunk_.data() + pos_;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', len_ - pos_));
    const size_t n = nl != nullptr ? static_cast<size_t>(nl - begin) : len_ - pos_;
    if (line_.size() < keep) line_.append(begin, std::min(n, keep - line_.size()));
    if (n > 0) last = begin[n - 1];
    bytes += static_cast<int64_t>(n);
    started = true;
    pos_ += n + (nl != nullptr ? 1 : 0);
    if (nl != nullptr) break;
  }
  // (A segment without '\n' is never empty, so a started line without one has bytes.)
  if (!started) return false;
  if (last == '\r') {  // CRLF, or a '\r' before the end of the stream
    --bytes;
    if (static_cast<int64_t>(line_.size()) > bytes) line_.resize(static_cast<size_t>(bytes));
  }
  ++number_;
  out->number = number_;
  out->bytes = bytes;
  out->overlong = bytes > max_line_bytes_;
  out->text = out->overlong ? std::string_view() : std::string_view(line_);
  return true;
}

// --- Files -----------------------------------------------------------------------------------

CriteoFile::CriteoFile(std::string path, void* file, size_t chunk_bytes)
    : path_(std::move(path)),
      file_(file),
      splitter_(
          [this](char* buffer, size_t capacity) -> Result<size_t> {
            const unsigned ask = static_cast<unsigned>(std::min<size_t>(capacity, 1u << 30));
            const int n = gzread(static_cast<gzFile>(file_), buffer, ask);
            if (n < 0) {
              int err = 0;
              const char* msg = gzerror(static_cast<gzFile>(file_), &err);
              return data_loss(path_ + ":" + std::to_string(splitter_.lines() + 1) +
                               ": read error: " + (err == Z_ERRNO ? std::strerror(errno) : msg));
            }
            return static_cast<size_t>(n);
          },
          chunk_bytes) {}

Result<std::unique_ptr<CriteoFile>> CriteoFile::open(const std::string& path, size_t chunk_bytes) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr)
    return not_found("cannot open Criteo data " + path + ": " + std::strerror(errno));
  gzbuffer(f, 1 << 17);
  return std::unique_ptr<CriteoFile>(new CriteoFile(path, f, chunk_bytes));
}

CriteoFile::~CriteoFile() {
  if (file_ != nullptr) gzclose(static_cast<gzFile>(file_));
}

// --- Policy ----------------------------------------------------------------------------------

Status MalformedTally::record(int64_t line_number, const CriteoLineResult& d) {
  ++total_;
  ++by_defect_[static_cast<int>(d.defect)];
  const std::string msg = path_ + ":" + std::to_string(line_number) + ": " + d.message;
  if (static_cast<int>(messages_.size()) < kKeptMessages) messages_.push_back(msg);
  if (options_.policy == MalformedPolicy::kFail) {
    return data_loss(msg + " (data.malformed is fail; skip counts and skips such lines)");
  }
  if (total_ > options_.max_count) {
    return data_loss(msg + " (more than data.max_malformed " + std::to_string(options_.max_count) +
                     " malformed lines; is this a Criteo TSV?)");
  }
  if (options_.log) {
    if (total_ <= kKeptMessages) {
      spdlog::warn("skipping malformed line {}{}", msg,
                   total_ == kKeptMessages ? " (further ones are counted, one in " +
                                                 std::to_string(kLogEvery) + " logged)"
                                           : std::string());
    } else if (total_ % kLogEvery == 0) {
      spdlog::warn("skipped {} malformed lines so far; latest {}", total_, msg);
    }
  }
  return Status::ok();
}

std::string MalformedTally::breakdown() const {
  std::string out;
  for (int k = 1; k < kCriteoDefectKinds; ++k) {
    if (by_defect_[k] == 0) continue;
    out += (out.empty() ? "" : ", ") +
           std::string(criteo_defect_name(static_cast<CriteoDefect>(k))) + " " +
           std::to_string(by_defect_[k]);
  }
  return out.empty() ? "none" : out;
}

void MalformedTally::reset() {
  total_ = 0;
  by_defect_.fill(0);
  messages_.clear();
}

Result<CriteoScan> scan_criteo(const std::string& path, int64_t holdout_every,
                               const MalformedOptions& options, size_t chunk_bytes) {
  TERN_ASSIGN_OR_RETURN(auto file, CriteoFile::open(path, chunk_bytes));
  MalformedTally tally(path, options);
  CriteoScan scan;
  CriteoRow row;
  CriteoLineSplitter::Line line;
  for (;;) {
    TERN_ASSIGN_OR_RETURN(bool got, file->next(&line));
    if (!got) break;
    CriteoLineResult r = parse_criteo_line(line, &row);
    if (!r.ok()) {
      TERN_RETURN_IF_ERROR(tally.record(line.number, r));
      continue;
    }
    const bool test = holdout_every > 0 && line.number % holdout_every == 0;
    ++(test ? scan.test_valid : scan.train_valid);
  }
  scan.lines = line.number;
  scan.malformed = tally.count();
  for (int k = 0; k < kCriteoDefectKinds; ++k)
    scan.by_defect[k] = tally.count(static_cast<CriteoDefect>(k));
  scan.messages = tally.messages();
  scan.breakdown = tally.breakdown();
  if (scan.malformed > 0 && scan.train_valid + scan.test_valid == 0) {
    return data_loss(path + ": no valid line in " + std::to_string(scan.lines) + " lines (" +
                     std::to_string(scan.malformed) + " malformed: " + scan.breakdown +
                     "; first: " + scan.messages.front() + ")");
  }
  if (scan.malformed > 0 && static_cast<double>(scan.malformed) >
                                options.max_fraction * static_cast<double>(scan.lines)) {
    char share[32];
    std::snprintf(share, sizeof share, "%.4g %%",
                  100.0 * static_cast<double>(scan.malformed) / static_cast<double>(scan.lines));
    return data_loss(path + ": " + std::to_string(scan.malformed) + " of " +
                     std::to_string(scan.lines) + " lines are malformed (" + share +
                     ", more than data.max_malformed_fraction " +
                     std::to_string(options.max_fraction) + "; " + scan.breakdown +
                     "; first: " + scan.messages.front() + ")");
  }
  return scan;
}

}  // namespace tern
