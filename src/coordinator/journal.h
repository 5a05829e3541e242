// Journal: the coordinator's durable, append-only log of state changes.
//
// File format 2 (journal.log, what this code writes):
//     file header: the 24 bytes of a format-1 record whose payload is "tern-journal-v2\n"
//         (u32 16 | u32 CRC-32 of the payload | payload), so that an older coordinator
//         refuses the file ("not a journal entry") instead of taking it for a torn tail
//     records:     u32 payload length (1 .. kJournalMaxRecordBytes)
//                  u64 sequence number (1 for the first record of the file, then +1 each)
//                  u32 header CRC: CRC-32 (IEEE) of the 12 bytes above
//                  u32 record CRC: CRC-32 of those 12 bytes followed by the payload
//                  payload bytes
// All integers are little endian. Empty records do not exist (a zero header is never valid).
// Format 1 (no file header; u32 length | u32 CRC-32 of the payload | payload) is still read,
// and a journal replayed in format 1 is rewritten in format 2 at once.
//
// Appends are followed by fdatasync before append() returns, so a mutating RPC that answers
// after append() survives a crash (kill -9, power loss). Replay checks the whole file before
// it hands over a single record, and tells two things apart:
//   - a torn tail: the file ends inside the last record, and the bytes that are there are a
//     prefix of a record an append could have written (fewer than 20 header bytes that agree
//     with the expected length range and sequence number, or a header whose own CRC holds
//     but whose length runs past the end of the file). That is what a crash in the middle of
//     one append leaves, and that append was never acknowledged: it is dropped and truncated
//     away, with a warning.
//   - corruption: anything else. A complete record whose checksum fails (anywhere, the last
//     one included), a header whose CRC fails (a damaged length or sequence number, wherever
//     the damaged length points), a sequence number out of order (records dropped,
//     duplicated or reordered), a damaged file header, and a zero-filled tail of 4 bytes or
//     more (what a filesystem that lost the data of the last writes but kept the file size
//     leaves: acknowledged records may have been there). Replay then returns DATA_LOSS naming
//     the file, the record number and the byte offset, changes nothing, and says the way out:
//     `tern coordinator --repair`.
// In format 1 a record header has no CRC: a length that runs past the end of the file is a
// torn tail unless an intact record (of either format) starts after it, and a format-1 file
// must start with an intact record (else it is a format-2 journal with a damaged header, or
// damage). A damaged length in the very last format-1 record can still pass for a torn
// append, and dropped or reordered whole records cannot be seen: format 2 closes both, and a
// format-1 journal is rewritten in format 2 the first time it is replayed.
//
// Repair (Journal::repair, behind `tern coordinator --repair`) salvages every record whose
// own checksums hold, also after a damaged stretch (it resynchronises by scanning for the
// next offset where a record with a valid header CRC and record CRC starts), puts format-2
// records back in sequence order (dropping duplicates), writes them to a new journal, keeps
// the damaged file as journal.log.damaged-<unix time> and reports what it kept and lost.
//
// Compaction (rewrite()) writes a fresh file (sequence numbers from 1) next to the old one,
// fsyncs it and renames it over, so a crash leaves either the old or the new journal.
//
// A Journal holds an exclusive flock on <dir>/LOCK for its lifetime: two coordinators on one
// state directory refuse to start (and repair refuses while a coordinator runs).
// Thread-compatible: the owner serialises calls. Appends and rewrites abort when the calling
// thread holds the coordinator's mutex (CoreLock::forbid_held): the coordinator hands records
// to a JournalWriter (journal_writer.h), which writes them off the lock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/crc32.h"
#include "common/status.h"

namespace tern {

inline constexpr uint32_t kJournalMaxRecordBytes = 64u << 20;

// The journal's CRC-32 (IEEE; common/crc32.h, zlib's). Journals written with the hand-written
// table of earlier versions read the same: it is the same polynomial (journal_compat_test).
inline uint32_t crc32_ieee(const void* data, size_t size) { return crc32(0, data, size); }
// Continues a CRC-32: crc32_extend(crc32_ieee(a), b) is the CRC of a followed by b.
inline uint32_t crc32_extend(uint32_t crc, const void* data, size_t size) {
  return crc32(crc, data, size);
}

// OK for a payload append() takes: 1 .. kJournalMaxRecordBytes bytes (else INVALID_ARGUMENT).
Status check_journal_payload(const std::string& payload);

struct JournalRecord {
  uint64_t offset = 0;  // where the record starts in the file
  uint64_t seq = 0;     // its sequence number (0 in format 1)
  std::string_view payload;
};

// What scan_journal() found in an intact journal image.
struct JournalScan {
  int version = 0;                     // 1 or 2; 0 for an empty file
  std::vector<JournalRecord> records;  // in file order (views into the scanned bytes)
  bool torn_tail = false;              // bytes after the last record (or a torn file header)
  uint64_t valid_bytes = 0;            // length of the intact prefix
};

// Checks a whole journal image without touching any file. DATA_LOSS (see the file comment)
// names `path`, the record number and the byte offset and is never empty.
Result<JournalScan> scan_journal(std::string_view data, const std::string& path);

struct JournalReplayStats {
  size_t records = 0;        // intact records handed to the callback
  bool torn_tail = false;    // a torn last record was dropped
  uint64_t torn_bytes = 0;   // how many bytes it had
  uint64_t valid_bytes = 0;  // length of the intact prefix
  int version = 0;           // the format found on disk (1 is rewritten in format 2)
};

struct JournalRepairOptions {
  // Called on each record whose checksums hold; a record it refuses is dropped (and reported)
  // like a damaged one. Unset: every intact record is kept.
  std::function<Status(const std::string&)> accept;
  // Names the kept damaged file journal.log.damaged-<unix_time>.
  int64_t unix_time = 0;
};

struct JournalRepairReport {
  std::string path;          // the journal
  std::string problem;       // what a normal start says about it ("" when it is intact)
  bool changed = false;      // a new journal was written
  std::string damaged_copy;  // where the damaged file was kept (when changed)
  int version = 0;           // the format found (the new journal is format 2)
  uint64_t file_bytes = 0;
  size_t records_kept = 0;
  size_t duplicates_dropped = 0;  // format 2: a second record with the same sequence number
  bool reordered = false;         // format 2: records were put back in sequence order
  // Intact records `accept` refused: "record at byte N: why".
  std::vector<std::string> refused;
  // Byte ranges [begin, end) no intact record could be read from: what they held is lost.
  std::vector<std::pair<uint64_t, uint64_t>> damaged_ranges;
  uint64_t torn_bytes = 0;  // a torn tail (an unacknowledged append), dropped
  // Format 2: sequence numbers [first, last] below the highest kept one that were not found.
  std::vector<std::pair<uint64_t, uint64_t>> missing_sequences;

  uint64_t bytes_lost() const;
  // Records known to be lost (missing sequence numbers and refused records); damaged bytes
  // after the last kept record may have held more.
  uint64_t records_known_lost() const;
};

// What salvage_journal() made of a journal image.
struct JournalSalvage {
  JournalRepairReport report;         // changed and damaged_copy are left unset
  std::vector<std::string> payloads;  // the records to keep, in order
  bool intact = false;                // scan_journal accepts it and `accept` every record
};

// The salvage behind Journal::repair, without touching any file: every record whose
// checksums hold (resynchronising after damage), refused ones dropped, format-2 records in
// sequence order without duplicates.
JournalSalvage salvage_journal(std::string_view data, const std::string& path,
                               const std::function<Status(const std::string&)>& accept);

// A format-2 journal image of `payloads` (sequence numbers from 1): what rewrite() writes.
std::string journal_image(const std::vector<std::string>& payloads);

class Journal {
 public:
  static Result<std::unique_ptr<Journal>> open(const std::string& dir);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Checks the whole file (scan_journal), then hands every record to `fn` in order. On
  // DATA_LOSS, or when `fn` fails (its error gets the record number and offset), nothing is
  // changed on disk. Then a torn tail is truncated away and a format-1 (or empty) file is
  // rewritten in format 2. Must be called once, before the first append().
  Status replay(const std::function<Status(const std::string&)>& fn,
                JournalReplayStats* stats = nullptr);
  // Appends one record (1 .. kJournalMaxRecordBytes bytes) and syncs it to disk. A failed
  // append is cut off again, so it never leaves a partial record before later ones.
  Status append(const std::string& payload);
  // Appends records in order with one write and one fdatasync (group commit); all or none.
  Status append_batch(const std::vector<std::string>& payloads);
  // Replaces the whole journal with `payloads` (compaction), atomically.
  Status rewrite(const std::vector<std::string>& payloads);
  // Records in the file now (after replay, appends and rewrites).
  size_t record_count() const { return records_; }
  const std::string& path() const { return path_; }

  // Salvages the journal in `dir` (see the file comment); takes the lock like open(). When the
  // journal is intact (a torn tail at most) it changes nothing and says so.
  static Result<JournalRepairReport> repair(const std::string& dir,
                                            const JournalRepairOptions& options);

  // The encoding (exposed for tests and fuzzers that craft damaged journals).
  static const std::string& file_header();
  static std::string frame(const std::string& payload, uint64_t seq);
  static std::string frame_v1(const std::string& payload);

 private:
  Journal() = default;
  Status write_fresh(const std::vector<std::string>& payloads);
  std::string dir_;
  std::string path_;
  int fd_ = -1;
  int lock_fd_ = -1;
  size_t records_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t size_ = 0;  // bytes in the file
  bool replayed_ = false;
  Status broken_;  // set when a failed append could not be undone: appends refuse from then on
};

// A durable high-water mark: the largest value ever handed out (the coordinator's job ids).
// The file holds two 16-byte slots, each "TJID" | u64 value | u32 CRC-32 of the 12 bytes
// before it; advance() overwrites the older (or a damaged) slot and fdatasyncs, so a torn
// write leaves the other. value() is the larger valid slot; a missing file or one shorter
// than a slot (a torn first write) reads 0; a file with bytes but no valid slot is DATA_LOSS.
// Thread-compatible.
class HighWaterMark {
 public:
  static Result<std::unique_ptr<HighWaterMark>> open(const std::string& path);
  ~HighWaterMark();
  HighWaterMark(const HighWaterMark&) = delete;
  HighWaterMark& operator=(const HighWaterMark&) = delete;

  uint64_t value() const { return value_; }
  // Makes value() >= v durable before it returns (no write when it already is).
  Status advance(uint64_t v);
  // Rewrites `path` with both slots set to `v` (repair), whatever it held.
  static Status reset(const std::string& path, uint64_t v);
  // Reads `path` without opening it for writing.
  static Result<uint64_t> read(const std::string& path);

 private:
  HighWaterMark() = default;
  std::string path_;
  int fd_ = -1;
  uint64_t value_ = 0;
  uint64_t slot_value_[2] = {0, 0};
  bool slot_valid_[2] = {false, false};
  bool synced_dir_ = false;
};

}  // namespace tern
