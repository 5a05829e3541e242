// SyncStrategy: when and how replicas exchange information — every step (SSGD), d steps late
// (DSSGD), every T steps (TSU), both (DTS), or per network tier (hierarchical). The trainer
// loop calls it at fixed points of every step; the strategy owns its in-flight collectives.
//
// Called from the trainer loop thread only. Every rank makes the same calls in the same order.
#pragma once

#include <ATen/ATen.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "common/job_spec.h"
#include "comm/reducer.h"

namespace tern {

// What the strategy learns about communication, for metrics and `tern status`.
struct SyncMetrics {
  double wait_s = 0;          // time blocked waiting on communication (cumulative)
  double staleness = 0;       // steps between a gradient and the use of its global average
  int64_t syncs = 0;          // global synchronisations completed
  std::map<std::string, double> extra;  // strategy-specific (e.g. inter-region wait)
};

// Which samples of a step this rank computes, and how its loss is weighted. The default is
// data parallel SGD: this rank's own batch, mean loss. Straggler mitigation (src/straggler)
// reassigns work: coded parts, speed-proportional shares, or nothing at all when the rank is
// behind and its peers already decided the step.
struct StepPlan {
  std::vector<int64_t> indices;  // sample indices to compute, in order
  std::vector<double> weights;   // per-sample loss weights (same length); empty = mean loss
  bool skip = false;             // compute nothing; on_gradients still runs (with zero grads)
  int64_t global_samples = 0;    // samples of the whole step (all ranks), for throughput
};
// The sample indices rank `rank` would train on at this step under plain data parallelism.
using PartIndices = std::function<std::vector<int64_t>(int rank)>;

class SyncStrategy {
 public:
  virtual ~SyncStrategy() = default;
  virtual std::string name() const = 0;

  // Once, before the first step, with the (identical, broadcast) initial parameters.
  virtual Status begin(std::vector<at::Tensor>& params) { return Status::ok(); }

  // Before step `step`'s compute: which samples this rank computes (default: its own part).
  virtual Result<StepPlan> plan(int64_t step, int rank, int world, const PartIndices& part) {
    StepPlan p;
    p.indices = part(rank);
    p.global_samples = static_cast<int64_t>(p.indices.size()) * world;
    return p;
  }
  // After a computed step: how many samples took how long (compute and any slowdown).
  virtual void record_compute(int64_t samples, double seconds) {}

  // After backward of step `step`: `grads` hold this rank's local gradients (one per
  // parameter); on return they hold what the optimizer must apply.
  virtual Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) = 0;

  // After the optimizer step (parameter-space strategies act here). Default: nothing.
  virtual Status after_step(int64_t step, std::vector<at::Tensor>& params) { return Status::ok(); }

  // Completes every in-flight collective and leaves all replicas with identical parameters
  // (averaging them once if they may differ). Called at the end and before checkpoints.
  virtual Status drain(std::vector<at::Tensor>& params) = 0;

  virtual SyncMetrics metrics() const = 0;
};

struct StrategyContext {
  Communicator& comm;                       // the whole job's group
  GradientReducer* reducer = nullptr;       // how gradients cross the wire (owned by the trainer)
  const JobSpec& spec;
  // Optional optimizer state hooks (momentum buffers) for strategies that average them.
  std::vector<at::Tensor>* momentum_buffers = nullptr;
  // Hierarchical sync: the rank's region group and the leaders' group (may be null).
  std::shared_ptr<Communicator> intra_comm;
  std::shared_ptr<Communicator> inter_comm;
};

// Builds the strategy named by spec.sync.strategy.
Result<std::unique_ptr<SyncStrategy>> make_sync_strategy(StrategyContext ctx);

// Plain synchronous SGD: every step, average gradients and wait (ALGORITHMS.md §1).
class SsgdStrategy : public SyncStrategy {
 public:
  SsgdStrategy(Communicator& comm, GradientReducer* reducer);
  std::string name() const override { return "ssgd"; }
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override;
  Status drain(std::vector<at::Tensor>& params) override { return Status::ok(); }
  SyncMetrics metrics() const override { return metrics_; }

 private:
  Communicator& comm_;
  GradientReducer* reducer_;
  SyncMetrics metrics_;
};

// Delayed synchronous SGD (ALGORITHMS.md §2): apply the fresh local gradient now, start its
// all-reduce, and d steps later swap the stale local contribution for the global average:
//   applied(i) = g(i) + (G(i-d) - g(i-d))        (correction on, the default)
//   applied(i) = G(i-d), or g(i) while i < d     (correction off: plain stale gradients, ablation)
// Keeps a ring of d local gradients and d in-flight reductions (d x model size of memory);
// waits on step i-d's reduction at step i, never earlier. d = 0 is SSGD.
class DssgdStrategy : public SyncStrategy {
 public:
  DssgdStrategy(Communicator& comm, GradientReducer* reducer, int64_t delay, bool correction,
                int64_t bucket_bytes);
  std::string name() const override { return "dssgd"; }
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override;
  Status drain(std::vector<at::Tensor>& params) override;
  SyncMetrics metrics() const override { return metrics_; }

 private:
  struct InFlight {
    int64_t step;
    std::vector<at::Tensor> local;  // g(step), kept for the correction
    std::unique_ptr<PendingReduction> pending;
  };
  Communicator& comm_;
  GradientReducer* reducer_;
  int64_t delay_;
  bool correction_;
  int64_t bucket_bytes_;
  std::deque<InFlight> in_flight_;
  SyncMetrics metrics_;
  double staleness_sum_ = 0;
};

// Temporally sparse updates with optional delay (ALGORITHMS.md §3; TSU when d = 0, DTS when
// d > 0): ranks step locally and every T steps contribute the update since the last sync,
// delta_j = w_j - w_last. Its all-reduce runs in the background; d steps later each rank
// applies w_j += mean(delta) - delta_j (swap its part for the average). The correction is
// also added to w_last, so the next period's delta does not count it twice. Momentum buffers
// stay local unless average_momentum.
class PeriodicAveragingStrategy : public SyncStrategy {
 public:
  // `reducer` carries the parameter deltas (a compressor compresses them, with its error
  // feedback); null: a dense all-reduce in buckets of `bucket_bytes`.
  PeriodicAveragingStrategy(Communicator& comm, std::string name, int64_t period, int64_t delay,
                            bool average_momentum, std::vector<at::Tensor>* momentum, int64_t bucket_bytes,
                            GradientReducer* reducer = nullptr);
  std::string name() const override { return name_; }
  Status begin(std::vector<at::Tensor>& params) override;
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override { return Status::ok(); }
  Status after_step(int64_t step, std::vector<at::Tensor>& params) override;
  Status drain(std::vector<at::Tensor>& params) override;
  SyncMetrics metrics() const override { return metrics_; }

 private:
  struct InFlight {
    int64_t step;   // this rank's delta; averaged in place by the reduction
    std::vector<at::Tensor> local;   // copy of this rank's delta
    std::unique_ptr<PendingReduction> pending;
  };
  Status apply(InFlight& f, std::vector<at::Tensor>& params);

  Communicator& comm_;
  std::string name_;
  int64_t period_;
  int64_t delay_;
  bool average_momentum_;
  std::vector<at::Tensor>* momentum_;
  int64_t bucket_bytes_;
  DenseReducer dense_;
  GradientReducer& reducer_;         // dense_ or the job's compressor
  std::vector<at::Tensor> last_;     // w at the last sync point (+ corrections since)
  std::deque<InFlight> in_flight_;
  SyncMetrics metrics_;
  double staleness_sum_ = 0;
};

// Hierarchical sync (tern's per-tier T): gradients are averaged inside the region every step
// (fast links), so a region's replicas stay identical; between regions the region leaders run
// delayed periodic averaging (inter_delay, inter_period) weighted by region size, and
// broadcast the resulting correction inside their region.
class HierarchicalStrategy : public SyncStrategy {
 public:
  HierarchicalStrategy(std::shared_ptr<Communicator> intra, std::shared_ptr<Communicator> inter,
                       int64_t period, int64_t delay, int64_t bucket_bytes);
  std::string name() const override { return "hierarchical"; }
  Status begin(std::vector<at::Tensor>& params) override;
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override;
  Status after_step(int64_t step, std::vector<at::Tensor>& params) override;
  Status drain(std::vector<at::Tensor>& params) override;
  SyncMetrics metrics() const override { return metrics_; }

 private:
  struct InFlight {
    int64_t step;
    at::Tensor flat;   // leader: [delta * region_size, region_size], summed across leaders
    at::Tensor local;  // leader: this region's flat delta
    WorkPtr work;
  };
  Status finish_oldest(std::vector<at::Tensor>& params);
  bool leader() const { return inter_ != nullptr; }

  std::shared_ptr<Communicator> intra_;
  std::shared_ptr<Communicator> inter_;  // null on non-leaders
  int64_t period_;
  int64_t delay_;
  DenseReducer intra_reducer_;
  std::vector<at::Tensor> last_;
  std::deque<InFlight> in_flight_;
  SyncMetrics metrics_;
  double staleness_sum_ = 0;
};

}  // namespace tern
