// LogStore: the coordinator's copy of every rank's trainer log, one file per job and rank
// (<dir>/<job id>/rank-<r>.log), fed by the log chunks worker daemons report (offset-addressed,
// so a retried batch is not written twice) and read by `tern logs` (GetLogs).
//
// Split in two so that no file is touched under CoordinatorCore's mutex:
//   - append() and size() decide in memory, under the core's mutex: what of a chunk is new
//     (from the sizes the store tracks), the per-chunk cap and the per-job quota (with one
//     marker line each), and queue the bytes to write. No I/O.
//   - flush() writes everything queued, in the order append() queued it, and must be called
//     without the core's mutex (it aborts when CoreLock::held()). CoordinatorCore calls it
//     after unlocking in every call that may have queued bytes, so when ReportEvents answers
//     its chunks are in the files, as before the split.
// Memory is bounded by what the calls under way carry: each caller drains the queue before it
// returns, and each chunk is capped (max_chunk_bytes).
//
// load() reads the sizes of the files already there once, before the store is shared (the
// coordinator holds the state directory's lock, so nobody else writes them).
//
// Thread-safe: append/size/bytes_dropped take a small in-memory mutex; flush() serialises
// writers on a second one (writes keep the queue order across threads).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>

namespace tern {

struct LogStoreOptions {
  std::string dir;                                // <state_dir>/logs/jobs
  int64_t max_bytes_per_job = int64_t{64} << 20;  // all ranks together; then a marker, drop
  int64_t max_chunk_bytes = int64_t{1} << 20;     // one chunk keeps at most this (>= 256)
};

class LogStore {
 public:
  explicit LogStore(LogStoreOptions options) : options_(std::move(options)) {}

  // Learns the sizes of the log files already under options.dir (file I/O; call before the
  // store is shared).
  void load();

  // Takes the bytes of `data` (a chunk of rank `rank`'s log starting at byte `offset` of the
  // file) that the file does not have yet, within the chunk cap and the job's quota, and
  // queues them. No I/O.
  void append(const std::string& job_id, int rank, int64_t offset, const std::string& data);

  // The size the rank's file has once the queue is written (where a new trainer of the rank
  // continues it). No I/O.
  int64_t size(const std::string& job_id, int rank) const;

  // Writes the queued bytes, in order. Never under the core's mutex (aborts if so).
  void flush();

  // Bytes refused by the chunk cap or a job's quota, since start.
  uint64_t bytes_dropped() const;

  std::string path(const std::string& job_id, int rank) const;

 private:
  struct Pending {
    std::string path;
    std::string bytes;
  };
  const LogStoreOptions options_;
  mutable std::mutex mu_;                                 // guards the members below
  std::map<std::pair<std::string, int>, int64_t> sizes_;  // (job, rank) -> file size
  std::map<std::string, int64_t> job_bytes_;              // job -> bytes of all its ranks
  std::set<std::pair<std::string, int>> capped_;          // ranks whose log has the quota marker
  std::deque<Pending> queue_;
  uint64_t dropped_ = 0;
  std::mutex io_mu_;  // one writer at a time, so the files get the queue order
};

}  // namespace tern
