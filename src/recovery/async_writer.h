// AsyncCheckpointWriter: one rank's checkpoint writer. snapshot() copies the tensors into
// host buffers on the caller's thread (fast: one memcpy per tensor, buffers reused across
// snapshots when shapes match); a background thread encodes and writes the files atomically
// (checkpoint.h) and, when asked, commits the step's MANIFEST and applies retention.
//
// At most one write is in flight: a snapshot() while the previous write (or commit) is still
// running WAITS for it (up to Options::wait_timeout) before copying, and reports that wait
// as wait_s. Snapshots are never coalesced or dropped, because every rank must write the
// same steps for a manifest to complete.
//
// Errors of background work are kept and returned by the next snapshot(), commit() or
// flush() (then cleared); the destructor logs any error nobody collected. Never swallowed.
//
// The protocol per checkpoint (docs/checkpoints.md, "Writing a checkpoint"; the trainer drives it):
//   step s, every rank:          writer.snapshot(meta{step=s,...}, per_rank, rank == 0 ?
//   &replicated : nullptr) step s + lag, every rank:    Status w = writer.flush(timeout);
//                                auto m = gather_manifest(comm, w.is_ok() ? writer.last_written()
//                                                                         : std::nullopt, s, ...);
//                                if (m.is_ok() && rank == 0) writer.commit(*m, keep);
// gather_manifest (commit.h) is a collective; call it on every rank at the same step.
//
// Thread safety: the public methods are for one caller thread (the trainer loop); the
// background thread touches only the queued job and the guarded fields below.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "recovery/checkpoint.h"
#include "recovery/checkpoint_store.h"

namespace tern {

struct CheckpointWriteStats {
  int64_t step = -1;
  double snapshot_s = 0;  // caller's thread: copies to host memory
  double wait_s = 0;      // caller's thread: waiting for the previous write first
  double write_s = 0;     // background thread: encode + write + fsync + rename, all files
  uint64_t bytes = 0;     // bytes this rank wrote for the step
};

// What one rank wrote for one step: the entries it contributes to the manifest.
struct WrittenStep {
  int64_t step = -1;
  std::vector<ManifestFile> files;
  CheckpointWriteStats stats;
};

struct CheckpointTotals {
  int64_t snapshots = 0;
  int64_t writes = 0;  // completed
  int64_t commits = 0;
  double snapshot_s = 0, wait_s = 0, write_s = 0, commit_s = 0;
  uint64_t bytes = 0;
};

class AsyncCheckpointWriter {
 public:
  struct Options {
    std::chrono::milliseconds wait_timeout = std::chrono::minutes(10);
  };

  AsyncCheckpointWriter(CheckpointStore store, int64_t rank);
  AsyncCheckpointWriter(CheckpointStore store, int64_t rank, Options options);
  // Finishes queued work, then joins the thread.
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // Copies `per_rank` (and `replicated`, when non-null) to host memory and queues the write
  // of rank-<rank>.ckpt (and replicated.ckpt) for meta.step. meta.rank is set by the writer.
  // Tensors may be on any device; the caller may change them as soon as this returns.
  // Returns a pending background error instead (nothing is queued then), or
  // DEADLINE_EXCEEDED when the previous write did not finish within wait_timeout.
  Status snapshot(const CheckpointMeta& meta, const NamedTensors& per_rank,
                  const NamedTensors* replicated);
  // Queues MANIFEST + retention (keep newest `keep`) behind the queued writes. Only the one
  // rank that commits calls it.
  Status commit(Manifest manifest, int64_t keep);
  // Waits until all queued work is done; returns its error, if any.
  Status flush(std::chrono::milliseconds timeout);

  // The newest completed write (after flush(): the last snapshot's).
  std::optional<WrittenStep> last_written() const;
  CheckpointTotals totals() const;
  const CheckpointStore& store() const { return store_; }

 private:
  using Job = std::function<Status()>;
  void run();
  void enqueue(Job job);
  // Waits (lock held) until the queue is empty and nothing runs.
  bool wait_idle(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds timeout);
  Status take_error_locked();
  // Copies `src` into the reusable host buffer for `key`.
  at::Tensor host_copy(const std::string& key, const at::Tensor& src);

  const CheckpointStore store_;
  const int64_t rank_;
  const Options options_;
  // Caller thread only; the queued job reads them until it completes, and snapshot() only
  // refills them after waiting for that.
  std::map<std::string, at::Tensor> buffers_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool running_job_ = false;
  bool stopping_ = false;
  Status error_;
  std::optional<WrittenStep> last_written_;
  CheckpointTotals totals_;
  std::thread thread_;  // last: starts after the fields it uses exist
};

}  // namespace tern
