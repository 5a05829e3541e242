// The journal's invariant, shared by the journal fuzzer (tests/fuzz/journal_fuzz.cc) and the
// exhaustive damage test (tests/coordinator/journal_test.cc): build a journal of acknowledged
// records, damage it, and check that replay either fails loudly or returns every
// acknowledged record whose bytes are intact, in order, with nothing extra or altered; only
// records that the end of the file cuts off (a torn append) may go missing without an error.
// Salvage (what `tern coordinator --repair` keeps) must keep every record found intact.
//
// Payloads are letters only: a frame header always holds zero bytes (length < 2^24, small
// sequence numbers), so no payload can contain or end in a frame, and any intact frame found
// in the damaged bytes is either a copy of an original one or forged by the damage itself.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/journal.h"

namespace tern::journal_check {

struct Built {
  std::vector<std::string> payloads;
  std::vector<std::string> frames;
  std::vector<std::pair<size_t, size_t>> ranges;  // [begin, end) of each frame in `bytes`
  std::string bytes;
};

inline Built build(const std::vector<std::string>& payloads) {
  Built b;
  b.payloads = payloads;
  b.bytes = Journal::file_header();
  uint64_t seq = 1;
  for (const auto& p : payloads) {
    b.frames.push_back(Journal::frame(p, seq++));
    b.ranges.emplace_back(b.bytes.size(), b.bytes.size() + b.frames.back().size());
    b.bytes += b.frames.back();
  }
  return b;
}

inline uint32_t le32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(s[at + i])} << (8 * i);
  return v;
}

// An oracle written from the format description, independent of journal.cc's parser: every
// complete format-2 frame with a valid header CRC and record CRC in `b`.
inline std::vector<std::string> valid_frames(const std::string& b) {
  std::vector<std::string> out;
  for (size_t p = 0; p + 20 <= b.size(); ++p) {
    uint32_t len = le32(b, p);
    if (len == 0 || len > kJournalMaxRecordBytes || len > b.size() - p - 20) continue;
    uint32_t hcrc = crc32_ieee(b.data() + p, 12);
    if (hcrc != le32(b, p + 12)) continue;
    if (crc32_extend(hcrc, b.data() + p + 20, len) != le32(b, p + 16)) continue;
    out.push_back(b.substr(p, 20 + len));
  }
  return out;
}

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Whether `m` says "byte N" somewhere.
inline bool names_offset(const std::string& m) {
  for (size_t at = m.find("byte "); at != std::string::npos; at = m.find("byte ", at + 1)) {
    if (at + 5 < m.size() && m[at + 5] >= '0' && m[at + 5] <= '9') return true;
  }
  return false;
}

// "" when the replay result of `damaged` keeps the invariant, else what is wrong.
inline std::string check_replay(const Built& orig, const std::string& damaged,
                                const Result<JournalScan>& scan, const std::string& path) {
  const bool prefix =
      damaged.size() <= orig.bytes.size() && orig.bytes.compare(0, damaged.size(), damaged) == 0;
  if (!scan.is_ok()) {
    const std::string& m = scan.status().message();
    if (m.empty()) return "an error with an empty message";
    if (scan.status().code() != StatusCode::kDataLoss) return "not DATA_LOSS: " + m;
    if (m.rfind(path + ": ", 0) != 0) return "the error does not start with the file: " + m;
    if (!names_offset(m)) return "the error names no byte offset: " + m;
    if (!contains(m, "tern coordinator --repair")) return "the error gives no way out: " + m;
    if (prefix) return "a truncated journal (a torn append) must replay, got: " + m;
    return "";
  }
  const auto& recs = scan->records;
  if (recs.size() > orig.payloads.size()) return "more records than were written";
  for (size_t i = 0; i < recs.size(); ++i) {
    if (recs[i].payload != orig.payloads[i]) {
      return "record " + std::to_string(i + 1) + " is altered or out of order";
    }
  }
  for (size_t j = recs.size(); j < orig.payloads.size(); ++j) {
    if (orig.ranges[j].second <= damaged.size()) {
      return "record " + std::to_string(j + 1) + " (bytes " + std::to_string(orig.ranges[j].first) +
             "-" + std::to_string(orig.ranges[j].second) + ") is lost silently: the file goes on " +
             "to byte " + std::to_string(damaged.size());
    }
    if (contains(damaged, orig.frames[j])) {
      return "record " + std::to_string(j + 1) + " is intact in the file but lost silently";
    }
  }
  if (scan->valid_bytes > damaged.size()) return "valid_bytes beyond the end";
  if (scan->torn_tail != (scan->valid_bytes < damaged.size())) {
    return "torn_tail disagrees with valid_bytes";
  }
  // What replay truncates the file to must replay to the same records with nothing torn.
  auto again = scan_journal(std::string_view(damaged).substr(0, scan->valid_bytes), path);
  if (!again.is_ok()) return "the truncated journal fails: " + again.status().message();
  if (again->torn_tail || again->records.size() != recs.size()) {
    return "the truncated journal replays differently";
  }
  return "";
}

// "" when salvaging `damaged` keeps every record found intact (see the file comment).
inline std::string check_salvage(const Built& orig, const std::string& damaged,
                                 const JournalSalvage& salvage, const std::string& path) {
  std::string image = journal_image(salvage.payloads);
  auto rescan = scan_journal(image, path);
  if (!rescan.is_ok()) return "the salvaged journal fails: " + rescan.status().message();
  if (rescan->records.size() != salvage.payloads.size() || rescan->torn_tail) {
    return "the salvaged journal replays differently";
  }
  for (const auto& f : valid_frames(damaged)) {
    if (std::find(orig.frames.begin(), orig.frames.end(), f) == orig.frames.end()) {
      return "";  // the damage forged a frame: nothing more to expect
    }
  }
  std::vector<std::string> expected;
  for (size_t i = 0; i < orig.frames.size(); ++i) {
    if (contains(damaged, orig.frames[i])) expected.push_back(orig.payloads[i]);
  }
  if (salvage.payloads != expected) {
    return "salvage kept " + std::to_string(salvage.payloads.size()) + " records, expected the " +
           std::to_string(expected.size()) + " intact ones in sequence order";
  }
  return "";
}

}  // namespace tern::journal_check
