// Trainer: one rank of a training job. Owns the model, optimizer, data shard, sync strategy
// and the communicator stack (counting decorator outermost). The loop per step:
//   batch → forward/backward → (injected straggler delay) → strategy.on_gradients →
//   optimizer → strategy.after_step → progress event
// then drain + distributed evaluation at the end (and every eval_every steps).
//
// Elastic regroup (recovery.mode partial): when a collective fails because a peer died, the
// trainer keeps its process and in-memory state, waits for its parent's regroup command (a new
// generation, master address), rebuilds its communicators at that generation, and re-syncs
// replicated state with the group: the rank that got furthest broadcasts parameters, optimizer
// state and the step, so survivors never roll back and a replacement rank joins with their
// state. A trainer started at generation > 1 joins a running job the same way. With
// recovery.mode full (the regroup command's rollback) every rank instead reloads the newest
// complete checkpoint, survivors and replacement alike: the baseline CPR compares against.
//
// Checkpoints (recovery.checkpoint_every = k > 0): at the top of every k-th step the
// strategy drains (replicas identical), then parameters (replicated.ckpt, rank 0), momentum
// (replicated under SSGD, per rank otherwise), the reducer's per-rank state (error feedback,
// DGC velocities and its sampling RNG) and the step/epoch/sampler position go to host memory
// and an async writer (trainer/checkpointer.h); a few steps later the group commits the
// step's MANIFEST. Resume (recovery.resume_from: DIR): setup() loads the newest step every
// rank can load with every checksum verified (falling back past damaged ones), restores it
// and run() continues to the same total steps; the data order follows from the step, so a
// resumed SSGD run ends with the same parameters as an uninterrupted one, bit for bit. (For
// delayed, periodic and hierarchical sync the drain is an extra averaging point, so their
// trajectory depends on checkpoint_every; a resumed run still equals the same job run through.)
//
// Not thread-safe except request_stop(), which any thread (a signal or stdin reader) may call.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "comm/counting_communicator.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "sync/strategy.h"
#include "trainer/comm_stack.h"
#include "trainer/events.h"
#include "trainer/models.h"
#include "trainer/optimizer.h"
#include "trainer/regroup.h"
#include "trainer/sampler.h"
#include "trainer/training_data.h"

namespace tern {

class Checkpointer;
struct LoadedCheckpoint;

// One rank's training loop as trainer_main drives it: Trainer (MLP/CNN) or DlrmLoop.
class TrainingLoop {
 public:
  virtual ~TrainingLoop() = default;
  virtual Status setup() = 0;
  virtual Status run() = 0;
  // Any thread (a signal or the stdin reader).
  virtual void request_stop() = 0;
  virtual const nlohmann::json& summary() const = 0;
  // True when run() failed because a step's loss or gradients were not finite
  // (train.on_nonfinite fail): the process exits kTrainerNonFinite.
  bool stopped_on_nonfinite() const { return nonfinite_stop_; }

 protected:
  bool nonfinite_stop_ = false;
};

struct TrainerOptions {
  JobSpec spec;
  int rank = 0;
  int world = 1;
  int64_t generation = 0;
  std::string job_id = "local";
  std::string work_dir;
  torch::Device device = torch::kCPU;  // from resolve_device(spec.device, rank)
  std::shared_ptr<Communicator> intra_comm;  // hierarchical sync: this rank's region
  std::shared_ptr<Communicator> inter_comm;  // hierarchical sync: region leaders (leaders only)
  RegroupHooks regroup;  // empty: a lost peer fails the trainer
};

struct EvalResult {
  double accuracy = 0;
  double loss = 0;
  int64_t samples = 0;
};

class Trainer : public TrainingLoop {
 public:
  Trainer(TrainerOptions options, std::shared_ptr<Communicator> comm, EventSink* sink);
  ~Trainer();

  // Loads data, builds the model (seeded; then broadcast from rank 0) and the strategy.
  Status setup() override;
  // Runs all remaining steps, drains, evaluates, emits `finished`.
  Status run() override;
  // Distributed evaluation on the test set (each rank a shard, counts all-reduced).
  Result<EvalResult> evaluate();

  void request_stop() override { stop_.store(true); }
  Model& model() { return *model_; }
  std::vector<at::Tensor> parameters() const;
  int64_t steps_done() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  const nlohmann::json& summary() const override { return summary_; }
  const ByteCounts& bytes() const { return counting_->counts(); }
  // Bytes this rank sent on every communicator it uses (job-wide, region, leaders).
  int64_t bytes_sent() const;

 private:
  Status train_step(int64_t step);
  // train.on_nonfinite skip_step, when `ranks` (agreed by all) had a non-finite step: the same
  // on every rank, no update from this step. `my_loss` is this rank's loss when it was one.
  Status skip_step(int64_t step, const std::vector<int>& ranks, const std::string& my_loss,
                   std::vector<at::Tensor>& grads);
  // The reducer and sync strategy on the current communicators (again after a regroup).
  Status build_sync(bool first);
  // After a failed step: waits for the regroup command, reconnects, re-syncs state.
  Status recover(const Status& failure);
  // Agrees on the furthest step among ranks that have state and broadcasts parameters,
  // optimizer state and the step from that rank (joiners and survivors alike).
  Status sync_state(bool have_state);
  // Checkpoints: at the top of a step, commits a due pending step and takes a due one.
  Status checkpoint_point();
  Status checkpoint(int64_t steps_done);
  bool momentum_replicated() const;
  // Resume: parameters, step and counters before the strategy is built; momentum and the
  // reducer's state after (the reducer may replace the optimizer).
  // `dir` names the files in errors; `event` is "resumed" or "rolled_back".
  Status restore_replicated(const LoadedCheckpoint& c, const std::string& dir);
  Status restore_per_rank(const LoadedCheckpoint& c, const std::string& dir, const std::string& event);
  // recovery.mode full after a regroup (survivors) or when joining one (a replacement): every
  // rank reloads the newest checkpoint all can load; before the first one exists, the group's
  // furthest state is taken as in partial mode.
  Status rollback(bool have_state);
  // recovery.mode partial, a replacement rank: what lived only on the lost rank (its reducer's
  // error feedback, DGC velocities) comes back from that rank's newest checkpoint (CPR); the
  // replicated state came from the survivors. Best effort: logged when there is none.
  void restore_lost_rank_state();
  double maybe_inject_delay(double compute_s);  // returns the injected seconds
  void emit_progress(int64_t step, bool force);
  // Rank `rank`'s data-parallel batch at `step` (straggler modes reassign other ranks' parts).
  std::vector<int64_t> batch_indices(int64_t step, int rank);

  TrainerOptions options_;
  const JobSpec& spec_;
  std::shared_ptr<CountingCommunicator> counting_;
  std::shared_ptr<CountingCommunicator> intra_counting_;  // hierarchical sync only
  std::shared_ptr<CountingCommunicator> inter_counting_;  // hierarchical sync, region leaders only
  EventSink* sink_;
  std::unique_ptr<TrainingData> data_;
  std::shared_ptr<Model> model_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<Sgd> optimizer_;
  std::unique_ptr<GradientReducer> reducer_;  // borrowed by strategy_: declared first, destroyed last
  std::unique_ptr<SyncStrategy> strategy_;
  std::unique_ptr<ShardedSampler> sampler_;
  std::vector<std::vector<int64_t>> epoch_indices_;  // per rank, filled on demand for indices_epoch_
  int64_t indices_epoch_ = -1;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  int64_t step_ = 0;
  std::atomic<bool> stop_{false};
  std::mt19937_64 straggler_rng_;

  // Metrics.
  double compute_s_ = 0;
  double injected_delay_s_ = 0;
  double window_loss_ = 0;
  int64_t window_steps_ = 0;
  double last_loss_ = 0;
  int64_t samples_ = 0;  // this rank's computed samples
  int64_t skipped_steps_ = 0;  // non-finite steps left out (train.on_nonfinite skip_step)
  int64_t global_samples_ = 0;  // samples of every step's global batch (all ranks)
  double train_wall_s_ = 0;  // training only: mid-run evaluations excluded
  double eval_s_ = 0;        // mid-run evaluations (train.eval_every)
  std::chrono::steady_clock::time_point window_start_;
  int64_t window_samples_ = 0;
  nlohmann::json summary_;

  // Elastic regroup.
  int64_t recoveries_ = 0;
  double recovery_s_ = 0;         // time from the failed step to training again
  int64_t steps_rolled_back_ = 0;  // steps this rank lost (0 in partial mode for survivors)
  std::vector<std::shared_ptr<Communicator>> retired_comms_;  // old generations, never torn down mid-error

  // Checkpoints and resume.
  std::unique_ptr<Checkpointer> checkpointer_;  // null without recovery.checkpoint_every
  int64_t last_checkpoint_step_ = -1;  // taken (or resumed from) at this step: not again
  int64_t resumed_from_ = -1;
};

}  // namespace tern
