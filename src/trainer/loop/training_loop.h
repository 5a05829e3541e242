// TrainingLoop: one rank of a training job, for every workload (a model plus its data,
// workload.h). It owns what is the same for every model: the optimizer on the workload's dense
// parameters, the reducer (compressor) and sync strategy or straggler mode, the communicator
// stack (counting decorators outermost), checkpoints and their schedule, resume, elastic
// regroup, progress events and the summary. Per step:
//   (fault injection) -> checkpoint point -> plan = strategy.plan -> workload.compute ->
//   (injected straggler delay) -> finiteness -> workload.finish_step -> strategy.on_gradients ->
//   optimizer -> strategy.after_step -> (replica verify, every sync.verify_every) -> progress event
// then drain + distributed evaluation at the end (and every eval_every steps).
//
// Non-finite steps (train.on_nonfinite): with skip_step, or for a workload whose step is
// collective (DLRM), the ranks agree every step whether each one's loss and gradients were
// finite; a bad step updates nothing anywhere (skip_step) or stops every rank at that step
// (fail, exit kTrainerNonFinite). Otherwise a non-finite local step is passed on as NaN
// gradients, so that peers that average every step stop at the same step.
//
// Elastic regroup (recovery.mode partial): when a collective fails because a peer died, the
// loop keeps its process and in-memory state, waits for its parent's regroup command (a new
// generation, master address), rebuilds its communicators at that generation, and re-syncs
// replicated state with the group: the rank that got furthest broadcasts parameters, optimizer
// state, the step and the job counters, so survivors never roll back and a replacement rank
// joins with their state; the replacement then rebuilds what only the lost rank held (its
// reducer's error feedback, a DLRM embedding shard) from its newest checkpoint (CPR). A loop
// started at generation > 1 joins a running job the same way. With recovery.mode full (the
// regroup command's rollback) every rank instead reloads the newest complete checkpoint,
// survivors and replacement alike: the baseline CPR compares against.
//
// Replica integrity (sync.verify_every K, replica_check.h): after every K-th step, and right
// after every regroup (survivors in recover(), a replacement in setup() after its state sync),
// the ranks compare a hash of what is bit-identical on every rank (SyncStrategy::replica_view);
// a mismatch fails the job (exit kTrainerReplicaMismatch) or, with sync.on_mismatch majority,
// gives every rank the largest group's state. debug.corrupt flips a bit at the top of a step.
//
// Checkpoints: recovery.interval fixed saves every checkpoint_every steps; cpr and young_daly
// measure the throughput over the first steps and the blocking cost of a first whole save,
// then plan_checkpoint_interval() picks the interval (logged with its inputs). At a due step
// the strategy drains (replicas identical), then parameters (replicated.ckpt, rank 0), the
// optimizer's state (SGD's `momentum/<param>` or AdamW's `adamw/...`, optimizer.h; replicated
// under SSGD, per rank otherwise), the reducer's per-rank state (error feedback,
// DGC velocities and its sampling RNG), the workload's sharded state (whole, or the rows
// recovery.policy picks) and the step and counters go to host memory and an async writer
// (checkpointer.h); a few steps later the group commits the step's MANIFEST. Resume
// (recovery.resume_from: DIR): setup() loads the newest step every rank can load with every
// checksum verified (falling back past damaged ones), restores it and run() continues to the
// same total steps (written by another number of ranks: replicated state reloads, per-rank
// state is dropped, sharded state re-shards, and the step follows from the sample position,
// sampler.h's step_at_other_world; the summary adds resumed_from_world); the data order follows
// from the step, so a resumed SSGD run ends with the same parameters as an uninterrupted one, bit
// for bit. (For delayed, periodic and hierarchical sync the drain is an extra averaging point, so
// their trajectory depends on the checkpoint interval; a resumed run still equals the same job run
// through.)
//
// Summary: the same keys with the same meaning for every workload, every figure job-wide (the
// same on every rank): wall_s (training time of the slowest rank, evaluations excluded),
// samples_per_s (the job's samples over wall_s), eval_s, recovery_s, checkpoint_s (the worst
// rank's), plus the workload's evaluation metrics and figures.
//
// Private training (train.dp, privacy/dp_sgd.h): the workload returns this rank's sum of
// clipped per-sample gradients scaled so the mean over ranks is sum_i c_i g_i / B; the loop adds
// this rank's share of the noise, N(0, (sigma C)^2 / m) * m / B from the stream (seed, step, job
// rank, parameter), m the group's size, so the group's mean carries N(0, (sigma C)^2) / B once;
// the workload noises what it updates itself (DLRM's rows, eager or LazyDP). Every completed or
// skipped step adds (q, sigma) to the RDP accountant, q = batch / samples_per_rank; epsilon at
// train.dp.delta goes into progress events and the summary, the accountant's history into
// checkpoints (counters "privacy") and into the state a regroup syncs.
//
// Not thread-safe except request_stop(), which any thread (a signal or stdin reader) may call.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/counting_communicator.h"
#include "comm/reducer.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "privacy/rdp_accountant.h"
#include "sync/strategy.h"
#include "trainer/loop/events.h"
#include "trainer/loop/optimizer.h"
#include "trainer/loop/regroup.h"
#include "trainer/loop/replica_check.h"
#include "trainer/loop/workload.h"

namespace tern {

class Checkpointer;
struct LoadedCheckpoint;

struct TrainerOptions {
  JobSpec spec;
  int rank = 0;
  int world = 1;
  int64_t generation = 0;
  std::string job_id = "local";
  std::string work_dir;
  torch::Device device = torch::kCPU;        // from resolve_device(spec.device, rank)
  std::shared_ptr<Communicator> intra_comm;  // hierarchical sync: this rank's region
  std::shared_ptr<Communicator> inter_comm;  // hierarchical sync: region leaders (leaders only)
  RegroupHooks regroup;                      // empty: a lost peer fails the trainer
  // Elastic jobs (recovery.min_workers): the job ranks of the current group in group order
  // (empty: all `world` ranks). `rank` and `world` stay the job's: the data parts, checkpoint
  // files and logs follow the job rank; the communicator's rank is the group rank.
  std::vector<int> members;
};

class TrainingLoop {
 public:
  // `workload`: the model and data (make_workload(spec) builds the one a spec names; null:
  // setup() fails).
  TrainingLoop(TrainerOptions options, std::shared_ptr<Communicator> comm, EventSink* sink,
               std::unique_ptr<Workload> workload);
  ~TrainingLoop();

  // The local part of setup(): the workload's data and seeded model, no collective. A standby
  // replacement runs it before it has a group (trainer_main), so joining costs only the state
  // transfer. setup() calls it when it has not run.
  Status prepare();
  // Sets up the workload (data, seeded model), broadcasts the initial parameters from rank 0,
  // builds the optimizer, reducer and strategy, resumes or joins when asked.
  Status setup();
  // A standby (built with a null communicator) admitted to a group: its generation, members
  // and communicator. Then setup() joins the group like any replacement.
  void attach_group(int64_t generation, std::vector<int> members,
                    std::shared_ptr<Communicator> world);
  // Runs all remaining steps, drains, evaluates, emits `finished`.
  Status run();
  // Any thread (a signal or the stdin reader).
  void request_stop() { stop_.store(true); }
  // True when run() failed because a step's loss or gradients were not finite
  // (train.on_nonfinite fail): the process exits kTrainerNonFinite.
  bool stopped_on_nonfinite() const { return nonfinite_stop_; }
  // True when run() or setup() failed because replicas differed (sync.verify_every with
  // sync.on_mismatch fail, or no majority to repair from): the process exits
  // kTrainerReplicaMismatch.
  bool stopped_on_mismatch() const { return replicas_ && replicas_->failed(); }

  Workload& workload() { return *workload_; }
  const std::vector<at::Tensor>& parameters() const { return params_; }
  // The optimizer of parameters() (after setup()): its state, for tests and tools.
  Optimizer& optimizer() { return *optimizer_; }
  int64_t steps_done() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t checkpoint_interval_steps() const { return interval_steps_; }
  const nlohmann::json& summary() const { return summary_; }
  // train.dp: the privacy spent so far (its history is job state: checkpoints, state sync).
  const RdpAccountant& privacy() const { return privacy_; }
  const ByteCounts& bytes() const { return counting_->counts(); }
  // Bytes this rank sent on every communicator it uses (job-wide, region, leaders).
  int64_t bytes_sent() const;

 private:
  // Every rank builds the model from train.seed (or loads the same file), so the parameters
  // normally agree bit for bit already: the ranks compare their hashes (replica_check.h, 16
  // bytes per rank) and rank 0's are broadcast only when some rank differs. On a WAN this saves
  // the model's size per rank at the start (2 MB of the MLP's 7.5 MB at 400x fewer bytes).
  Status share_initial_parameters(std::vector<at::Tensor>& data);
  Status train_step(int64_t step);
  // run()'s parts: the steps from step_ to total_steps_ (recovering from lost peers), the last
  // checkpoint and its commit, the job-wide figures after the final drain and evaluation, and
  // the summary the finished event carries.
  struct FinalFigures {
    double wall = 0;          // this rank's training time (evaluations left out)
    Metrics eval;             // the final evaluation
    at::Tensor max;           // job-wide maxima (wall, blocking checkpoint s, recovery, ...), CPU
    double mean_loss = 0;     // the last step's loss averaged over the ranks
    nlohmann::json workload;  // the workload's own summary figures
  };
  Status train_steps(std::chrono::steady_clock::time_point start, double* recent_loss);
  Status finish_checkpoints();
  Status final_figures(std::chrono::steady_clock::time_point start, double recent_loss,
                       FinalFigures* out);
  void write_summary(const FinalFigures& f);
  // The group is smaller than the job (elastic, after a loss): the members share the vacant
  // ranks' samples.
  bool shrunk() const {
    return !members_.empty() && static_cast<int>(members_.size()) < options_.world;
  }
  // A non-finite step agreed by all (`ranks`): skip_step leaves it out on every rank, fail
  // stops. `my_loss`: this rank's loss when it was one of them.
  Status nonfinite_step(int64_t step, const std::vector<int>& ranks, const std::string& my_loss,
                        std::vector<at::Tensor>& grads);
  // The reducer and sync strategy on the current communicators (again after a regroup).
  Status build_sync(bool first);
  // After a failed step: waits for the regroup command, reconnects, re-syncs state.
  Status recover(const Status& failure);
  // Agrees on the furthest step among ranks that have state and broadcasts parameters,
  // optimizer state, the step and the counters from that rank (joiners and survivors alike).
  Status sync_state(bool have_state);
  // recovery.mode full after a regroup (survivors) or when joining one (a replacement): every
  // rank reloads the newest checkpoint all can load; before the first one exists, the group's
  // furthest state is taken as in partial mode.
  Status rollback(bool have_state);
  // recovery.mode partial, a replacement rank: what lived only on the lost rank (its reducer's
  // error feedback, DGC velocities; the workload's sharded state) comes back from that rank's
  // newest checkpoint (CPR). Best effort: logged when there is none.
  void restore_lost_rank_state();
  // sync.verify_every (replica_check.h): compares what is identical on every rank at `point`
  // (after step `step`, or after a regroup / a join at it). Collective; OK when off.
  Status verify_replicas(int64_t step, VerifyPoint point);

  // --- checkpoints -----------------------------------------------------------------------
  // At the top of a step: plans the interval when due, commits a due pending step, saves.
  Status checkpoint_point();
  Status checkpoint(ShardSave kind);
  bool checkpoint_due(int64_t step) const;
  ShardSave save_kind(int64_t step) const;
  Status plan_interval(double probe_cost_s);
  // The optimizer's state is the same on every rank (SSGD): saved once, in replicated.ckpt.
  bool momentum_replicated() const;
  nlohmann::json counters() const;
  // Resume and rollback: parameters, step and counters before the strategy is built; the
  // optimizer's state, the reducer's state (the reducer may replace the optimizer) and the
  // sharded state after. A checkpoint of another train.optimizer is refused before anything is
  // loaded (checkpoints without the key are SGD's). `dir` names the files in errors; `event` is
  // "resumed" or "rolled_back".
  Status load_model_tensors(const Checkpoint& rep, const std::string& file);
  Status restore_replicated(const LoadedCheckpoint& c, const std::string& dir);
  Status restore_per_rank(const LoadedCheckpoint& c, const std::string& dir,
                          const std::string& event);
  // restore_per_rank for a checkpoint written by another number of ranks (resume on another
  // cluster): replicated optimizer state (SSGD) and the strategy's replicated state reload;
  // per-rank state (error feedback, per-rank optimizer state, per-rank sync state) is dropped
  // with a logged note and the event's `dropped` list; sharded state re-shards
  // (Workload::restore_sharded).
  Status restore_at_other_world(const LoadedCheckpoint& c, const std::string& dir,
                                const std::string& event);

  // train.dp: this rank's share of the step's Gaussian noise (privacy/dp_sgd.h) on `grads`,
  // whose mean over the group is the step's gradient over `global_samples` samples.
  void add_dp_noise(int64_t step, int64_t global_samples, std::vector<at::Tensor>& grads);
  // train.dp: one more step at the job's sampling rate and noise (no-op without dp).
  void account_step();
  // The job's sampling rate q = global batch / training samples (train.dp).
  double dp_sample_rate() const;
  // Adds epsilon (at train.dp.delta), the sampling rate and the accounted steps to `e`.
  void add_privacy_fields(nlohmann::json& e) const;

  double maybe_inject_delay(double compute_s);  // returns the injected seconds
  void emit_progress(int64_t step, bool force);
  Status evaluate_and_emit(int64_t step, double train_s, Metrics* out);

  TrainerOptions options_;
  const JobSpec& spec_;
  std::shared_ptr<CountingCommunicator> counting_;
  std::shared_ptr<CountingCommunicator> intra_counting_;  // hierarchical sync only
  std::shared_ptr<CountingCommunicator> inter_counting_;  // hierarchical sync, region leaders only
  EventSink* sink_;
  std::unique_ptr<Workload> workload_;
  WorkloadTraits traits_;
  std::vector<std::string> param_names_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<Optimizer> optimizer_;  // train.optimizer on params_ (DGC: SGD without momentum)
  std::unique_ptr<GradientReducer>
      reducer_;  // borrowed by strategy_: declared first, destroyed last
  std::unique_ptr<SyncStrategy> strategy_;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  int64_t step_ = 0;
  std::atomic<bool> stop_{false};
  bool nonfinite_stop_ = false;
  std::mt19937_64 straggler_rng_;

  // Metrics.
  double compute_s_ = 0;
  double injected_delay_s_ = 0;
  double window_loss_ = 0;
  int64_t window_steps_ = 0;
  double last_loss_ = 0;
  int64_t samples_ = 0;         // this rank's computed samples
  int64_t steps_computed_ = 0;  // steps this rank ran, redone ones included
  int64_t skipped_steps_ = 0;   // non-finite steps left out (train.on_nonfinite skip_step)
  int64_t global_samples_ = 0;  // samples of every step's global batch (all ranks)
  double eval_s_ = 0;           // mid-run evaluations (train.eval_every), kept out of wall_s
  std::chrono::steady_clock::time_point window_start_;
  int64_t window_samples_ = 0;
  nlohmann::json summary_;
  RdpAccountant privacy_;  // train.dp; the same history on every rank

  // Elastic regroup.
  int64_t recoveries_ = 0;
  double recovery_s_ = 0;          // time from the failed step to training again
  int64_t steps_rolled_back_ = 0;  // steps this rank lost (0 in partial mode for survivors)
  std::vector<std::shared_ptr<Communicator>>
      retired_comms_;                         // old generations, released once the new one works
  std::unique_ptr<ReplicaChecker> replicas_;  // sync.verify_every (after setup(); disabled at 0)
  bool prepared_ = false;
  std::vector<int> members_;  // the group's job ranks (TrainerOptions::members; empty: all)
  // Recovery figures: each regroup's time to training again (seconds), the smallest world
  // trained at, steps trained at a smaller world; the next progress event names the regroup.
  std::vector<double> regroup_times_;
  int64_t min_world_ = 0;
  int64_t shrunk_steps_ = 0;
  int64_t announce_regroup_ = -1;
  double announce_regroup_s_ = 0;
  bool skipped_checkpoints_logged_ = false;

  // Checkpoints: saves at first_step_ + k * interval_steps_ (k >= 0); interval 0: none (yet:
  // cpr / young_daly plan it at plan_step_).
  std::unique_ptr<Checkpointer> checkpointer_;
  int64_t interval_steps_ = 0;
  int64_t first_step_ = 0;
  int64_t plan_step_ = -1;
  int64_t last_checkpoint_step_ = -1;  // taken (or resumed from) at this step: not again
  int64_t resumed_from_ = -1;
  int64_t resumed_world_ = -1;  // ranks that wrote the resumed checkpoint, when not this world
  double failed_commit_s_ = 0;  // blocking time of commits a lost peer failed (not overhead)
  nlohmann::json plan_;
  std::chrono::steady_clock::time_point measure_start_;
  int64_t measure_samples_ = 0;
};

}  // namespace tern
