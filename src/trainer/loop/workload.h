// Workload: what a model plus its data gives the training loop (training_loop.h). The loop owns
// everything that is the same for every model (the optimizer on the dense parameters, the sync
// strategy and compressor, straggler plans, checkpoints and their schedule, resume, elastic
// regroup, progress and summary); a workload owns the model, its data and whatever is not
// replicated (DLRM's embedding shard). Per step, on every rank:
//
//   loop: plan = strategy.plan(step, part)         part(step, r): rank r's data-parallel samples
//   workload.compute(step, plan, &grads)           forward + backward of the plan's samples
//   loop: agree on finiteness (when needed)
//   workload.finish_step(apply)                    sharded updates (DLRM: embedding rows)
//   loop: strategy.on_gradients -> optimizer -> strategy.after_step
//
// Gradient contract: compute() leaves in grads[i] (one per dense parameter) this rank's
// gradient scaled so that the MEAN over ranks is the gradient of the step's global batch (a
// plan's per-sample weights already include that scaling: the loss is sum(w_i * l_i)); the
// reducer then averages. A workload whose traits say collective_step is called on every rank
// at every step, with an empty or skip plan too, because its model runs collectives.
//
// Implementations: workloads/image (MLP, CNN), workloads/dlrm (sharded DLRM). make_workload()
// (workloads/make_workload.h) builds the one a job spec names. The loop thread only.
#pragma once

#include <ATen/ATen.h>
#include <torch/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "common/workload_traits.h"
#include "recovery/checkpoint.h"
#include "recovery/checkpoint_store.h"
#include "sync/strategy.h"

namespace tern {

struct WorkloadContext {
  const JobSpec* spec = nullptr;
  int rank = 0;
  int world = 1;
  torch::Device device = torch::kCPU;
  // The job-wide group (the loop's counting communicator: it outlives the workload and follows
  // regroups). A model-parallel workload runs its own collectives on it.
  Communicator* comm = nullptr;
};

struct StepOutput {
  double loss = 0;      // mean loss over this rank's computed samples (0 when none)
  int64_t samples = 0;  // samples this rank computed
  // The step's samples over all ranks when the workload knows them exactly (a stream's short
  // last batch); -1: the plan's count.
  int64_t global_samples = -1;
  double compute_s = 0;  // forward + backward (data loading excluded)
  bool finite = true;    // this rank's loss and gradients
};

// Named evaluation metrics in report order ("test_accuracy", "test_loss", ...), the same on
// every rank.
using Metrics = std::vector<std::pair<std::string, double>>;

// What a checkpoint takes of the sharded state: all of it, or the rows recovery.policy picks.
enum class ShardSave { kFull, kRows };
inline const char* shard_save_name(ShardSave s) { return s == ShardSave::kFull ? "full" : "rows"; }

class Workload {
 public:
  virtual ~Workload() = default;
  virtual WorkloadTraits traits() const = 0;

  // Loads the data and builds the model, seeded from train.seed (the same init on every rank).
  virtual Status setup(const WorkloadContext& ctx) = 0;
  // Training samples of the largest rank share in one epoch (steps per epoch follow from it).
  virtual int64_t samples_per_rank() const = 0;
  // The dense, replicated parameters (leaf tensors, updated in place) that SGD, the sync
  // strategy, the compressor and checkpoints see, with stable names for checkpoints.
  virtual std::vector<std::pair<std::string, at::Tensor>> named_parameters() const = 0;
  // Replicated state that is not trained by gradients (batch-norm running statistics): saved
  // in checkpoints (rank 0's, after sync_buffers()), restored on resume and rollback, and sent
  // from the furthest rank with the parameters when a group re-syncs. Default: none.
  virtual std::vector<std::pair<std::string, at::Tensor>> named_buffers() const { return {}; }
  // Makes the buffers the same on every rank (each rank's statistics come from its own
  // samples): floating-point buffers are averaged over ranks, integer ones (counters) taken
  // from rank 0. The loop calls it before every evaluation and checkpoint. Collective.
  virtual Status sync_buffers() { return Status::ok(); }
  // The samples rank `rank` trains on at `step` under plain data parallelism (the straggler
  // modes' plans reassign them). A stream workload (traits().random_access false) answers only
  // for its own rank, with positions in its share of the epoch.
  virtual std::vector<int64_t> part(int64_t step, int rank) = 0;
  // Forward and backward of the plan's samples (see the gradient contract above).
  virtual Result<StepOutput> compute(int64_t step, const StepPlan& plan,
                                     std::vector<at::Tensor>* grads) = 0;
  // After compute(): apply (true) or drop (false: a rank's step was not finite) what the step
  // changes outside the dense parameters. Called on every rank with the same `apply` when
  // traits().collective_step (then it may run collectives); default: nothing to apply.
  virtual Status finish_step(bool apply) { return Status::ok(); }
  // The learning rate of this step, for what the workload updates itself (embedding rows).
  virtual void set_lr(double lr) {}
  // Evaluation on the test split, every rank a share, reduced: the same metrics on every rank.
  // Shares follow the group (WorkloadContext::comm's rank and size, which change when an
  // elastic job shrinks or grows), not the job rank.
  virtual Result<Metrics> evaluate() = 0;

  // --- state beyond the replicated parameters (traits().sharded_state) ----------------------
  // Appends copies of this rank's sharded state to `out` (kFull: all of it; kRows: the rows
  // recovery.policy picks); returns the rows saved.
  virtual Result<int64_t> save_sharded(ShardSave kind, NamedTensors* out) { return int64_t{0}; }
  // Rebuilds this rank's sharded state from the complete saves at or before `step` in `store`
  // (resume, rollback), whatever number of ranks wrote them: saves of this world are read from
  // this rank's own file, saves of another world are re-sharded (every rank file of the step
  // is read and what this rank owns now is taken). So it also serves a world that changed
  // mid-job (N-1 elasticity: after the loop rebuilt the workload for the new world, each rank
  // takes its tables, the lost rank's included, from the newest checkpoint) and a job resumed
  // on another cluster. Errors name the file (a save of another model layout is refused).
  virtual Status restore_sharded(const CheckpointStore& store, int64_t step) {
    return Status::ok();
  }
  // recovery.mode partial, on a replacement rank: rebuilds what only the lost rank held from
  // its saves (`store` null: no checkpoints) and accounts what could not be; `global_samples`
  // is the job's sample count at the failure. Fields for the partial_restore event.
  virtual nlohmann::json restore_lost_state(const CheckpointStore* store, int64_t global_samples) {
    return nlohmann::json::object();
  }
  // Job-wide figures of the workload for the summary (DLRM: lost updates, PLS). Collective.
  virtual Result<nlohmann::json> summary(Communicator& comm, int64_t global_samples) {
    return nlohmann::json::object();
  }
  // One phrase for the setup log line ("tables=26 (this rank owns 0,2) dim=16").
  virtual std::string describe() const { return ""; }
};

}  // namespace tern
