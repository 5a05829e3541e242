// SyncStrategy: when and how replicas exchange information — every step (SSGD), d steps late
// (DSSGD), every T steps (TSU), both (DTS), or per network tier (hierarchical). The trainer
// loop calls it at fixed points of every step; the strategy owns its in-flight collectives.
//
// Called from the trainer loop thread only. Every rank makes the same calls in the same order.
#pragma once

#include <ATen/ATen.h>

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

class SyncStrategy {
 public:
  virtual ~SyncStrategy() = default;
  virtual std::string name() const = 0;

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
  std::unique_ptr<GradientReducer> reducer; // how gradients cross the wire
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
  SsgdStrategy(Communicator& comm, std::unique_ptr<GradientReducer> reducer);
  std::string name() const override { return "ssgd"; }
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override;
  Status drain(std::vector<at::Tensor>& params) override { return Status::ok(); }
  SyncMetrics metrics() const override { return metrics_; }

 private:
  Communicator& comm_;
  std::unique_ptr<GradientReducer> reducer_;
  SyncMetrics metrics_;
};

}  // namespace tern
