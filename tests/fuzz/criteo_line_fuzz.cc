// Fuzz target: arbitrary bytes as a Criteo TSV (what data.source criteo reads, from anywhere).
// The first byte picks the read size (1 to 256 bytes), so lines straddle chunk boundaries in
// every way; the rest is the file. Splitting and parsing must never crash, hang or hold more
// than one chunk plus the longest well-formed line, and:
//   - lines come numbered 1, 2, ...; their count is the number of '\n' plus one for a
//     non-empty unterminated tail; a line's bytes never exceed the limit unless it is overlong;
//   - a malformed line has exactly one defect and a short, printable-ASCII message;
//   - a well-formed line formats back to a line that parses to the same row;
//   - the policy counts every malformed line, by defect, and a fail policy refuses the first.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "trainer/workloads/dlrm/criteo_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0];
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t at = 0;
  tern::CriteoLineSplitter splitter(
      [&](char* buffer, size_t capacity) -> tern::Result<size_t> {
        if (capacity > chunk) std::abort();  // never asks for more than one chunk
        const size_t n = std::min(capacity, bytes.size() - at);
        std::memcpy(buffer, bytes.data() + at, n);
        at += n;
        return n;
      },
      chunk);
  tern::MalformedOptions skip;
  skip.max_count = INT64_MAX;
  skip.log = false;
  tern::MalformedTally tally("fuzz.tsv", skip);
  tern::MalformedOptions fail;
  fail.policy = tern::MalformedPolicy::kFail;
  fail.log = false;
  tern::MalformedTally strict("fuzz.tsv", fail);
  bool refused = false;
  int64_t lines = 0, malformed = 0;
  tern::CriteoLineSplitter::Line line;
  for (;;) {
    auto got = splitter.next(&line);
    if (!got.is_ok()) std::abort();  // memory reads never fail
    if (!*got) break;
    ++lines;
    if (line.number != lines) std::abort();
    if (line.overlong != (line.bytes > tern::kCriteoMaxLineBytes)) std::abort();
    if (!line.overlong && static_cast<int64_t>(line.text.size()) != line.bytes) std::abort();
    tern::CriteoRow row;
    tern::CriteoLineResult r = tern::parse_criteo_line(line, &row);
    if (r.ok()) {
      const std::string again = tern::format_criteo_line(row);
      if (static_cast<int64_t>(again.size()) > tern::kCriteoMaxLineBytes) std::abort();
      tern::CriteoRow back;
      if (!tern::parse_criteo_line(again, &back).ok() || !(back == row)) std::abort();
      continue;
    }
    ++malformed;
    if (r.message.empty() || r.message.size() > 256) std::abort();
    for (char c : r.message) {
      if (c < 0x20 || c > 0x7e) std::abort();
    }
    if (!tally.record(line.number, r).is_ok()) std::abort();
    tern::Status s = strict.record(line.number, r);
    if (s.is_ok() || s.code() != tern::StatusCode::kDataLoss) std::abort();
    const std::string where = "fuzz.tsv:" + std::to_string(line.number) + ": ";
    if (!refused && s.message().rfind(where, 0) != 0) std::abort();
    refused = true;
  }
  // The line count: one per '\n', plus a non-empty tail without one.
  int64_t newlines = 0;
  for (char c : bytes) newlines += c == '\n';
  const bool tail = !bytes.empty() && bytes.back() != '\n';
  if (lines != newlines + (tail ? 1 : 0)) std::abort();
  if (tally.count() != malformed) std::abort();
  int64_t by_defect = 0;
  for (int k = 1; k < tern::kCriteoDefectKinds; ++k)
    by_defect += tally.count(static_cast<tern::CriteoDefect>(k));
  if (by_defect != malformed || tally.count(tern::CriteoDefect::kNone) != 0) std::abort();
  return 0;
}
