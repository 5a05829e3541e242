// Checkpointer: one trainer rank's side of periodic checkpoints (docs/algorithms.md §5) over the
// recovery library. It owns the rank's AsyncCheckpointWriter and drives the protocol that
// async_writer.h describes:
//
//   steps_done = s, every rank:  save(meta, per_rank, rank 0 ? &replicated : nullptr)
//                                (host snapshot on the caller's thread, write in the background)
//   steps_done = s + lag:        commit_due(): flush, gather_manifest (one all-gather), rank 0
//                                queues the MANIFEST + retention; every rank learns whether
//                                step s is complete
//
// The commit waits `commit_lag` steps so the background write overlaps training. Every rank
// runs the same calls at the same steps (the trainer loop is in lockstep at these points), so
// the collective always matches. A failed snapshot or write on one rank never fails the job:
// that rank contributes nothing, gather_manifest then refuses the step on every rank alike
// (ABORTED), the step stays without MANIFEST (loaders skip it, retention deletes it), and the
// failure is logged and counted. Only a failed collective (a lost peer) is returned, so the
// trainer's regroup path handles it like any other step failure.
//
// Trainer-loop thread only (the writer's own thread is internal).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "comm/communicator.h"
#include "common/status.h"
#include "recovery/async_writer.h"
#include "recovery/checkpoint.h"
#include "recovery/checkpoint_store.h"
#include "trainer/loop/events.h"

namespace tern {

struct CheckpointerOptions {
  std::string dir;    // the store (every rank must reach the same directory)
  int64_t every = 0;  // steps between checkpoints (the loop schedules them); bounds the commit lag
  int64_t keep = 3;   // complete steps kept by retention
  int64_t commit_lag = 4;  // steps between a snapshot and its collective commit (clamped to every)
  int rank = 0;
  std::string job_id;
};

class Checkpointer {
 public:
  Checkpointer(CheckpointerOptions options, EventSink* sink);
  ~Checkpointer();

  const CheckpointStore& store() const { return writer_->store(); }
  bool pending() const { return pending_.has_value(); }
  // Steps between a snapshot and its commit, for a loop that plans its interval at run time.
  void set_commit_lag(int64_t lag) { options_.commit_lag = lag; }

  // Snapshots and queues the write of meta.step. `blocking_s` is time the caller already
  // spent for this checkpoint on the training thread (the strategy's drain), added to the
  // reported blocking time. Never fails the job (see the header comment).
  void save(const CheckpointMeta& meta, const NamedTensors& per_rank,
            const NamedTensors* replicated, double blocking_s);
  // Collective when a commit is due: the pending step once `steps_done` reaches it + lag, or
  // at once with `force` (before the next save, at the end of the run). A no-op otherwise, on
  // every rank alike. Returns only the collective's failure.
  // `device`: where the collective's tensors live (the trainer's device).
  Status commit_due(Communicator& comm, int64_t steps_done, int64_t generation, bool force,
                    const at::Device& device);
  // Forgets the pending step without committing it (after a regroup the group may not agree
  // on it; a replacement rank never wrote it).
  void abandon_pending();
  // Waits for queued background work (the last MANIFEST) and reports its error.
  Status flush();

  // checkpoints (committed steps), checkpoint_s (blocking: drain + snapshot + waits + commit
  // collective), checkpoint_background_s (encode + write + fsync + MANIFEST, writer thread),
  // checkpoint_bytes (this rank), checkpoint_failures.
  nlohmann::json summary() const;
  int64_t committed() const { return committed_; }
  double blocking_s() const { return blocking_s_; }

 private:
  CheckpointerOptions options_;
  EventSink* sink_;
  std::unique_ptr<AsyncCheckpointWriter> writer_;
  std::optional<int64_t> pending_;  // saved, not yet committed
  int64_t committed_ = 0;
  int64_t failures_ = 0;
  double blocking_s_ = 0;
};

// Collective: the newest checkpoint step in `dir` that every rank of `comm` can load, each
// rank reading replicated.ckpt and its own rank file with every checksum verified. A step
// that is incomplete, truncated or corrupt for any rank is skipped on all ranks (logged as a
// warning naming the file, and listed in `skipped`), and the next older one tried; nothing
// that fails a check is returned. NOT_FOUND naming the directory (and, on the rank that
// found nothing, why) when no step qualifies; FAILED_PRECONDITION when the step was written
// by a different number of ranks, unless `any_world`. Steps after `max_step` are not considered.
// `any_world` (resume on another cluster, issue 22): a step written by another number of ranks
// is loaded too; then every rank reads only replicated.ckpt (its `ranks` stays empty: the
// per-rank files belong to the old world's ranks; sharded state re-shards through
// Workload::restore_sharded, which reads every rank file of the step).
Result<LoadedCheckpoint> load_agreed_checkpoint(
    Communicator& comm, const std::string& dir, const at::Device& device = at::kCPU,
    bool any_world = false, int64_t max_step = std::numeric_limits<int64_t>::max());

}  // namespace tern
