// Journal: the coordinator's durable, append-only log of state changes.
//
// File format (journal.log): a sequence of records, each
//     u32 payload length (little endian) | u32 CRC-32 (IEEE) of the payload | payload bytes
// Appends are followed by fdatasync before append() returns, so a mutating RPC that answers
// after append() survives a crash (kill -9, power loss). On replay, a torn last record (a
// crash in the middle of an append: short header, short payload, or a bad checksum on the
// very last record) is dropped and truncated away; a bad checksum on any earlier record is
// DATA_LOSS, because records after it can no longer be trusted. Compaction (rewrite()) writes
// a fresh file next to the old one, fsyncs it and renames it over, so a crash leaves either
// the old or the new journal, never a mix.
//
// A Journal holds an exclusive flock on <dir>/LOCK for its lifetime: two coordinators on one
// state directory refuse to start. Thread-compatible: the owner serialises calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

uint32_t crc32_ieee(const void* data, size_t size);

struct JournalReplayStats {
  size_t records = 0;        // intact records handed to the callback
  bool torn_tail = false;    // a torn last record was dropped
  uint64_t valid_bytes = 0;  // length of the intact prefix
};

class Journal {
 public:
  static Result<std::unique_ptr<Journal>> open(const std::string& dir);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Hands every intact record to `fn` in order (stops at the first error `fn` returns).
  // Must be called once, before the first append().
  Status replay(const std::function<Status(const std::string&)>& fn,
                JournalReplayStats* stats = nullptr);
  // Appends one record and syncs it to disk.
  Status append(const std::string& payload);
  // Replaces the whole journal with `payloads` (compaction), atomically.
  Status rewrite(const std::vector<std::string>& payloads);
  // Records in the file now (after replay, appends and rewrites).
  size_t record_count() const { return records_; }
  const std::string& path() const { return path_; }

  // Frames one record (exposed for tests that craft damaged journals).
  static std::string frame(const std::string& payload);

 private:
  Journal() = default;
  std::string dir_;
  std::string path_;
  int fd_ = -1;
  int lock_fd_ = -1;
  size_t records_ = 0;
  bool replayed_ = false;
};

}  // namespace tern
