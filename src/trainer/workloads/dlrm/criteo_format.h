// The Criteo Kaggle TSV format without Torch: one line's fields, a line splitter whose memory
// is bounded on any input, the malformed-line policy, and a scan of a whole file. ctr_data.h's
// CriteoReader builds its batches on these; tests/fuzz/criteo_line_fuzz.cc fuzzes them.
//
// A line is `label \t I1 .. I13 \t C1 .. C26`: the label 0 or 1, 13 decimal integers
// (-?[0-9]+, within int64; negative values occur in real data), 26 categories of 1 to 16 hex
// digits (either case). Any integer or category may be empty (missing). Lines end in '\n'; one
// '\r' before it (CRLF) is dropped, and a last line without '\n' is a line like any other.
//
// A malformed line has one defect, the first of: longer than the longest well-formed line
// (overlong), a NUL byte (nul), not 40 tab-separated fields (field_count; an empty line is
// one), a label other than 0/1 (label), an integer field that is not -?[0-9]+ within int64
// (integer), a category that is not 1-16 hex digits (category). Fields are checked in order.
// Everything here is a pure function of its input or owned by one thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tern {

constexpr int kCriteoIntFields = 13;
constexpr int kCriteoCatFields = 26;
constexpr int kCriteoFields = 1 + kCriteoIntFields + kCriteoCatFields;
// The longest well-formed line: a 1-byte label, 13 integers of at most 20 bytes
// ("-9223372036854775808"), 26 categories of at most 16 hex digits and 39 tabs. Anything
// longer is malformed whatever its content, so a line is never buffered beyond this.
constexpr int64_t kCriteoMaxLineBytes =
    1 + kCriteoIntFields * 20 + kCriteoCatFields * 16 + (kCriteoFields - 1);
// The category value of an empty categorical field: outside the 32-bit range of Criteo's
// values, hashed like any other value.
constexpr uint64_t kCriteoMissingCategory = 0x1'0000'0000ULL;

enum class CriteoDefect : int {
  kNone = 0,
  kOverlong,
  kNul,
  kFieldCount,
  kLabel,
  kInteger,
  kCategory
};
constexpr int kCriteoDefectKinds = 7;  // including kNone
// "overlong", "nul", "field_count", "label", "integer", "category" ("none" for kNone): the
// summary's malformed_<name> keys and data.malformed's documentation use these names.
const char* criteo_defect_name(CriteoDefect defect);

// One well-formed line's raw values.
struct CriteoRow {
  bool label = false;
  std::array<int64_t, kCriteoIntFields> ints{};  // 0 where missing
  std::array<bool, kCriteoIntFields> int_present{};
  std::array<uint64_t, kCriteoCatFields> cats{};  // kCriteoMissingCategory where missing
  bool operator==(const CriteoRow& o) const {
    return label == o.label && ints == o.ints && int_present == o.int_present && cats == o.cats;
  }
};

struct CriteoLineResult {
  CriteoDefect defect = CriteoDefect::kNone;
  std::string message;  // why, without the file and line ("label must be 0 or 1, got '7'")
  bool ok() const { return defect == CriteoDefect::kNone; }
};

// Parses one line without its terminator (a '\r' here is data, hence malformed). Quotes from
// the line in the message are cut to their first bytes and escaped (printable ASCII only).
CriteoLineResult parse_criteo_line(std::string_view line, CriteoRow* row);

// The dense feature of a raw integer: log(1 + max(x, 0)), the DLRM reference's transform
// (negative counts are clamped to 0); a missing integer is 0 too.
float criteo_dense_value(int64_t raw, bool present);

// The line that parses back to `row` (categories as 8 hex digits, or 16 when wider).
std::string format_criteo_line(const CriteoRow& row);

// Splits a byte stream into lines ('\n' ends a line; one '\r' right before it, or before the
// end of the stream, is dropped; a non-empty tail without '\n' is the last line). A line longer
// than max_line_bytes is not kept: only its length is counted and it comes back overlong with
// an empty text. Memory: one chunk plus max_line_bytes + 1, whatever the input.
class CriteoLineSplitter {
 public:
  // Reads up to `capacity` bytes into `buffer`: the count, 0 at the end of the stream.
  using ReadFn = std::function<Result<size_t>(char* buffer, size_t capacity)>;
  struct Line {
    std::string_view text;  // valid until the next call; empty when overlong
    int64_t number = 0;     // 1-based
    int64_t bytes = 0;      // without the terminator (and the dropped '\r')
    bool overlong = false;
  };
  CriteoLineSplitter(ReadFn read, size_t chunk_bytes, int64_t max_line_bytes = kCriteoMaxLineBytes);
  // The next line; false at the end of the stream. Errors are the read function's.
  Result<bool> next(Line* line);
  int64_t lines() const { return number_; }

 private:
  ReadFn read_;
  int64_t max_line_bytes_;
  std::vector<char> chunk_;
  size_t pos_ = 0, len_ = 0;
  bool eof_ = false;
  std::string line_;
  int64_t number_ = 0;
};

// A split line: overlong when the splitter said so, else parse_criteo_line of its text.
CriteoLineResult parse_criteo_line(const CriteoLineSplitter::Line& line, CriteoRow* row);

// A gzip or plain file (zlib reads both) as a CriteoLineSplitter. Errors name the file and
// the line being read.
class CriteoFile {
 public:
  static Result<std::unique_ptr<CriteoFile>> open(const std::string& path, size_t chunk_bytes);
  ~CriteoFile();
  CriteoFile(const CriteoFile&) = delete;
  CriteoFile& operator=(const CriteoFile&) = delete;
  Result<bool> next(CriteoLineSplitter::Line* line) { return splitter_.next(line); }
  const std::string& path() const { return path_; }

 private:
  CriteoFile(std::string path, void* file, size_t chunk_bytes);
  std::string path_;
  void* file_;  // gzFile
  CriteoLineSplitter splitter_;
};

// What to do with malformed lines (data.malformed, data.max_malformed,
// data.max_malformed_fraction in the job spec).
enum class MalformedPolicy { kSkip, kFail };
struct MalformedOptions {
  MalformedPolicy policy = MalformedPolicy::kSkip;
  // skip: more than this many malformed lines is a data error (at the line that exceeds it).
  int64_t max_count = 1000;
  // skip: a whole-file scan with more than this fraction of malformed lines is a data error.
  double max_fraction = 1.0;
  // Log the first few malformed lines (and then one in kMalformedLogEvery) as warnings.
  bool log = true;
};

// Counts malformed lines by defect, keeps the first few messages ("x.tsv:12: label must be 0
// or 1, got '7'") and applies the policy. One per pass over a file.
class MalformedTally {
 public:
  static constexpr int kKeptMessages = 10;
  static constexpr int64_t kLogEvery = 10000;
  MalformedTally(std::string path, MalformedOptions options)
      : path_(std::move(path)), options_(options) {}
  // A malformed line: counted (and kept, and logged); DATA_LOSS when the policy refuses it
  // (malformed: fail, or more than max_count), naming the file and line.
  Status record(int64_t line_number, const CriteoLineResult& defect);
  int64_t count() const { return total_; }
  int64_t count(CriteoDefect defect) const { return by_defect_[static_cast<int>(defect)]; }
  const std::vector<std::string>& messages() const { return messages_; }
  // "field_count 3, label 1" over the defects seen ("none" when there were none).
  std::string breakdown() const;
  void reset();

 private:
  std::string path_;
  MalformedOptions options_;
  int64_t total_ = 0;
  std::array<int64_t, kCriteoDefectKinds> by_defect_{};
  std::vector<std::string> messages_;
};

// One pass over a whole file: what the trainer checks before it trains (every rank does it
// alike, so every rank fails alike), and the figures the summary reports.
struct CriteoScan {
  int64_t lines = 0;        // physical lines
  int64_t train_valid = 0;  // well-formed lines of the train split
  int64_t test_valid = 0;   // well-formed lines of the test split (every holdout_every-th line)
  int64_t malformed = 0;
  std::array<int64_t, kCriteoDefectKinds> by_defect{};
  std::vector<std::string> messages;  // the first few malformed lines
  std::string breakdown;              // MalformedTally::breakdown()
};

// Scans `path` with `options`: DATA_LOSS (naming the file and a line) when the policy refuses a
// malformed line, when no line is well-formed (and some are not), or when the malformed share
// exceeds max_fraction; NOT_FOUND when the file cannot be opened.
Result<CriteoScan> scan_criteo(const std::string& path, int64_t holdout_every,
                               const MalformedOptions& options, size_t chunk_bytes = 1 << 20);

}  // namespace tern
