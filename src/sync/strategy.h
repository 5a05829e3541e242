// SyncStrategy: when and how replicas exchange information — every step (SSGD), d steps late
// (DSSGD), every T steps (TSU), both (DTS), or per network tier (hierarchical). The trainer
// loop calls it at fixed points of every step; the strategy owns its in-flight collectives.
//
// Called from the trainer loop thread only. Every rank makes the same calls in the same order.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "common/job_spec.h"
#include "sync/fragments.h"
#include "sync/outer.h"

namespace tern {

using NamedState = std::vector<std::pair<std::string, at::Tensor>>;

// The replicated-state entry of an automatic d/T plan (periodic sync). A regroup does not carry
// it: the new group plans again.
inline constexpr const char* kAutoPlanState = "auto_plan";
// `strategy_state` without the automatic plan: what a regroup carries over and broadcasts.
NamedState without_auto_plan(const NamedState& strategy_state);

// Copies `given` into the tensors of `live` by name (the live state a strategy returns), checking
// every name is there with the live tensor's shape; a name in `optional` may be missing (its
// tensor is left as it is). FAILED_PRECONDITION names the entry.
Status load_named_state(const NamedState& given, const NamedState& live,
                        const std::vector<std::string>& optional = {});

// What the strategy learns about communication, for metrics and `tern status`.
struct SyncMetrics {
  double wait_s = 0;     // time blocked waiting on communication (cumulative)
  double staleness = 0;  // steps between a gradient and the use of its global average
  int64_t syncs = 0;     // global synchronisations completed
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

// What is bit-identical on every rank right after after_step(), for replica verification
// (sync.verify_every, trainer/loop/replica_check.h). Only what the arithmetic keeps identical to
// the bit belongs here: a hash comparison has no tolerance. Never per-rank state (error
// feedback, DGC velocities, an embedding shard).
struct ReplicaView {
  // The live parameters are the same on every rank after every step (the same averaged update
  // applied everywhere: ssgd, dssgd with delay 0), and so is the optimizer's whole state.
  bool parameters = false;
  bool optimizer = false;
  // The strategy's replicated copies of the parameters (its sync point, when that is identical
  // on every rank: the outer model of tsu/dts/hierarchical with an outer optimizer), as live
  // tensors a repair may overwrite in place.
  NamedState sync_point;
  // Its other replicated tensors (replicated_state(): outer momentum, the automatic plan).
  NamedState state;
  bool empty() const { return !parameters && !optimizer && sync_point.empty() && state.empty(); }
};

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

  // The loop spent `seconds` since the last after_step() on something that is not training (an
  // evaluation); strategies that time the steps leave it out. Default: nothing.
  virtual void exclude_time(double seconds) {}

  // Completes every in-flight collective and leaves all replicas with identical parameters
  // (averaging them once if they may differ). Called at the end and before checkpoints.
  virtual Status drain(std::vector<at::Tensor>& params) = 0;

  virtual SyncMetrics metrics() const = 0;

  // State that must outlive a step, for checkpoints and regroups. Replicated state is identical on
  // every rank (an outer optimizer's momentum, the automatic plan): checkpoints keep rank 0's and a
  // regroup broadcasts the furthest rank's, in place, into the returned tensors (they are the live
  // state, defined after begin()). Per-rank state is this rank's own (the error feedback of
  // per-fragment reducers). Names are stable; loading checks shapes and names the mismatch.
  virtual NamedState replicated_state() { return {}; }
  virtual NamedState rank_state() { return {}; }
  virtual Status load_replicated_state(const NamedState& state) { return Status::ok(); }
  virtual Status load_rank_state(const NamedState& state) { return Status::ok(); }

  // What is identical on every rank now (after after_step(); also right after begin(), when the
  // parameters it started from were). Default: nothing known (straggler modes: their ranks may
  // apply different decoded gradients), so only the state a regroup broadcasts is verified.
  //   ssgd, dssgd d = 0     parameters and optimizer state
  //   dssgd d > 0           nothing: replicas differ by their last d local gradients until drain()
  //   tsu, dts              outer optimizer: the outer model (sync point) and its momentum; plain
  //                         averaging: only the plan (w_j + (mean - delta_j) rounds differently on
  //                         each rank: the sync point is equal up to rounding, not bit for bit)
  //   hierarchical          outer optimizer: the outer model and momentum; plain: nothing job-wide
  virtual ReplicaView replica_view() { return {}; }
};

struct StrategyContext {
  Communicator& comm;                  // the whole job's group
  GradientReducer* reducer = nullptr;  // how gradients cross the wire (owned by the trainer)
  const JobSpec& spec;
  // Optional optimizer state hooks (momentum buffers) for strategies that average them.
  std::vector<at::Tensor>* momentum_buffers = nullptr;
  // Hierarchical sync: the rank's region group and the leaders' group (may be null).
  std::shared_ptr<Communicator> intra_comm;
  std::shared_ptr<Communicator> inter_comm;
  // Builds another reducer like `reducer` (streaming fragments give each fragment its own, so each
  // has its own error feedback). Empty: sync.fragments > 1 is refused.
  std::function<Result<std::unique_ptr<GradientReducer>>()> make_reducer;
};

// Builds the strategy named by spec.sync.strategy.
Result<std::unique_ptr<SyncStrategy>> make_sync_strategy(StrategyContext ctx);

// Plain synchronous SGD: every step, average gradients and wait (docs/algorithms.md §1).
class SsgdStrategy : public SyncStrategy {
 public:
  SsgdStrategy(Communicator& comm, GradientReducer* reducer);
  std::string name() const override { return "ssgd"; }
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override;
  Status drain(std::vector<at::Tensor>& params) override { return Status::ok(); }
  SyncMetrics metrics() const override { return metrics_; }
  ReplicaView replica_view() override { return {true, true, {}, {}}; }

 private:
  Communicator& comm_;
  GradientReducer* reducer_;
  SyncMetrics metrics_;
};

// Delayed synchronous SGD (docs/algorithms.md §2): apply the fresh local gradient now, start its
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
  // d = 0 applies the global average G(i) everywhere; d > 0 leaves each rank its last d local
  // terms.
  ReplicaView replica_view() override { return {delay_ == 0, delay_ == 0, {}, {}}; }

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

// Temporally sparse updates with optional delay (docs/algorithms.md §3; TSU when d = 0, DTS when
// d > 0): ranks step locally and every T steps contribute the update since the last sync,
// delta_j = w_j - w_last. Its reduction runs in the background; d steps later each rank applies
// it. Momentum buffers stay local unless average_momentum.
//
// Plain averaging (outer lr 1, momentum 0): w_j += mean(delta) - delta_j (swap its part for the
// average), and the same correction is added to w_last so the next delta does not count it twice.
// Outer optimizer (sync/outer.h, DiLoCo): w_last is the outer model, identical on every rank; the
// outer step moves it by the pseudo-gradient -mean(delta), and each rank keeps the local progress
// it made while the reduction was in flight: w_j = w_last' + (w_j - w_last - delta_j) (Streaming
// DiLoCo's overlapped outer step; 0 progress when d = 0, so replicas are then identical).
//
// Streaming fragments (sync/fragments.h): the parameters are cut into F fragments; fragment f
// syncs after step s when (s + 1) mod T == f*T/F mod T, with its own reducer (so its own error
// feedback) and its own in-flight reduction, so each sync carries about 1/F of the model.
//
// Automatic d and T (sync/auto_plan.h): until planned, syncs run every `period` steps (the probe
// period when T is auto) with the delay d = T - 1 when d is auto (the given d otherwise), so the
// probe does not stall training on the WAN it measures; each probe sync's collective time is
// taken from its start to the first step end at which its reduction is seen complete (an upper
// bound, by at most one step; the full wait when it is still running when applied). Which step
// applies a sync depends only on steps, never on timing, so every rank applies it at the same
// step and the plan's agreement (a MAX all-reduce of the slowest rank's step time, collective
// time and per-sync overhead) runs at the same step everywhere. The plan is logged with its
// inputs and kept in the replicated state (a resumed run keeps its plan; a rebuilt strategy, as
// after a regroup, chooses again). With `auto_trials`, an automatic delay is then tried: each of
// delay_trials(d) runs for windows of T steps from one start of fragment 0's sync to the next
// (largest first, kTrialRounds rounds; evaluations excluded, exclude_time()); at the last
// window's end, again the same step everywhere, the ranks take each delay's slowest total
// (MAX) and keep the smallest delay within kTrialTolerance of the fastest (sync/auto_plan.h).
struct PeriodicOptions {
  StrategyKind kind = StrategyKind::kDts;  // kTsu | kDts
  int64_t period = 1;
  int64_t delay = 0;
  bool average_momentum = false;
  int64_t bucket_bytes = 25 << 20;
  OuterSpec outer;
  int64_t fragments = 1;
  bool delay_auto = false;
  bool period_auto = false;
  double auto_wait_share = 0.05;
  bool auto_trials = true;
};

class PeriodicAveragingStrategy : public SyncStrategy {
 public:
  // `reducer` carries the deltas of fragment 0 (a compressor compresses them, with its error
  // feedback); null: a dense all-reduce in buckets of `bucket_bytes`. `make_reducer` builds the
  // reducers of fragments 1..F-1.
  PeriodicAveragingStrategy(
      Communicator& comm, PeriodicOptions options, std::vector<at::Tensor>* momentum,
      GradientReducer* reducer = nullptr,
      std::function<Result<std::unique_ptr<GradientReducer>>()> make_reducer = {});
  std::string name() const override { return name_of(options_.kind); }
  Status begin(std::vector<at::Tensor>& params) override;
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override {
    return Status::ok();
  }
  Status after_step(int64_t step, std::vector<at::Tensor>& params) override;
  void exclude_time(double seconds) override;
  Status drain(std::vector<at::Tensor>& params) override;
  SyncMetrics metrics() const override;
  NamedState replicated_state() override;
  NamedState rank_state() override;
  Status load_replicated_state(const NamedState& state) override;
  Status load_rank_state(const NamedState& state) override;
  ReplicaView replica_view() override;

  int64_t period() const { return period_; }
  int64_t delay() const { return delay_; }
  bool planned() const { return planned_; }
  bool trying_delays() const { return !trials_.empty(); }
  size_t fragment_count() const { return frags_.size(); }

  // Syncs of the probe before an automatic plan, and the probe's period when T is auto.
  static constexpr int64_t kProbeSyncsPerFragment = 2;
  static constexpr int64_t kProbePeriod = 16;

 private:
  struct InFlight {
    int64_t step;                   // the step the sync started after
    std::vector<at::Tensor> local;  // copy of this rank's delta (one per piece)
    std::unique_ptr<PendingReduction> pending;
    int64_t start_bytes = 0;  // wire bytes start() sent
    std::chrono::steady_clock::time_point started;
    double ready_s = -1;  // probe: seconds from start to first seen complete (-1: not yet)
  };
  struct Frag {
    Fragment pieces;
    int64_t phase = 0;  // syncs after step s when (s + 1) % period == phase
    GradientReducer* reducer = nullptr;
    std::unique_ptr<GradientReducer> owned;
    std::vector<at::Tensor> last;     // w at the last sync point (outer: the outer model)
    std::vector<at::Tensor> outer_m;  // the outer optimizer's momentum (replicated)
    std::deque<InFlight> in_flight;
    int64_t last_start = -1;  // step after which its newest sync started
  };
  Status start_sync(Frag& f, int64_t step, std::vector<at::Tensor>& params);
  Status apply(Frag& f, InFlight& in, std::vector<at::Tensor>& params);
  // Pops f's oldest in-flight sync and applies it after `step`, counting its staleness.
  Status apply_oldest(Frag& f, int64_t step, std::vector<at::Tensor>& params);
  Status average_momentum(const Frag& f);
  void set_phases();
  bool identity() const { return options_.outer.identity(); }
  Status plan_if_due(int64_t step);
  // At each start of fragment 0's sync while delays are tried: closes the window that ends here,
  // opens the next one with its delay, or chooses once every window is measured.
  Status advance_trials(int64_t step);
  int64_t probe_delay() const;
  void poll_probe_syncs();
  int64_t wire_bytes() const;

  Communicator& comm_;
  PeriodicOptions options_;
  int64_t period_;
  int64_t delay_;
  bool planned_;
  std::vector<at::Tensor>* momentum_;
  DenseReducer dense_;
  GradientReducer& reducer_;  // fragment 0's: dense_ or the job's compressor
  std::function<Result<std::unique_ptr<GradientReducer>>()> make_reducer_;
  std::vector<Frag> frags_;
  at::Tensor plan_state_;  // double [planned, delay, period]
  SyncMetrics metrics_;
  double staleness_sum_ = 0;
  int64_t last_step_ = -1;       // the newest step after_step saw
  int64_t peak_sync_bytes_ = 0;  // the most wire bytes one sync sent
  // Probe (automatic plan).
  std::chrono::steady_clock::time_point step_end_;
  bool have_step_end_ = false;
  double probe_step_s_ = 0;
  int64_t probe_steps_ = 0;
  double probe_wait_s_ = 0;
  double probe_overhead_s_ = 0;
  int64_t probe_syncs_ = 0;
  // Delay trials (after an automatic plan of d): the delays, each window's seconds, the window
  // open now (-1: none yet) and when it opened.
  std::vector<int64_t> trials_;
  std::vector<double> trial_s_;
  int64_t trial_window_ = -1;
  std::chrono::steady_clock::time_point window_start_;
};

// Hierarchical sync (tern's per-tier T): gradients are averaged inside the region every step
// (fast links), so a region's replicas stay identical; between regions the region leaders run
// delayed periodic averaging (inter_delay, inter_period) weighted by region size, and
// broadcast the resulting correction inside their region.
class HierarchicalStrategy : public SyncStrategy {
 public:
  // `outer`: the outer optimizer between regions (sync/outer.h); the leader hands its region the
  // averaged delta, and every rank runs the same outer step, so its momentum is replicated.
  HierarchicalStrategy(std::shared_ptr<Communicator> intra, std::shared_ptr<Communicator> inter,
                       int64_t period, int64_t delay, int64_t bucket_bytes, OuterSpec outer = {});
  std::string name() const override { return "hierarchical"; }
  Status begin(std::vector<at::Tensor>& params) override;
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override;
  Status after_step(int64_t step, std::vector<at::Tensor>& params) override;
  Status drain(std::vector<at::Tensor>& params) override;
  SyncMetrics metrics() const override { return metrics_; }
  NamedState replicated_state() override;
  Status load_replicated_state(const NamedState& state) override;
  ReplicaView replica_view() override;

 private:
  struct InFlight {
    int64_t step;
    at::Tensor flat;   // leader: [delta * region_size, region_size], summed across leaders
    at::Tensor local;  // this region's flat delta (leaders; every rank with an outer optimizer)
    WorkPtr work;
  };
  Status finish_oldest(std::vector<at::Tensor>& params);
  Status finish_outer(InFlight& f, std::vector<at::Tensor>& params,
                      std::chrono::steady_clock::time_point t0);
  bool leader() const { return inter_ != nullptr; }

  std::shared_ptr<Communicator> intra_;
  std::shared_ptr<Communicator> inter_;  // null on non-leaders
  int64_t period_;
  int64_t delay_;
  OuterSpec outer_;
  std::vector<at::Tensor> outer_m_;  // per parameter, when outer_ is not plain averaging
  DenseReducer intra_reducer_;
  std::vector<at::Tensor> last_;
  std::deque<InFlight> in_flight_;
  SyncMetrics metrics_;
  double staleness_sum_ = 0;
};

}  // namespace tern
