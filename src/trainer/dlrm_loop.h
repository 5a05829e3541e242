// DlrmLoop: one rank of a DLRM job (model.type dlrm; data.source synthetic_ctr | criteo) in
// the tern-trainer process. It drives DlrmTrainer (embedding tables sharded over ranks, MLPs
// replicated and averaged by SSGD) over this rank's share of the CTR stream, with the same
// events, summary, communicator stack and elastic regroup as the MLP/CNN Trainer:
//   per step: (fault injection) → checkpoint point → forward/backward (all-to-all lookups,
//   sparse embedding update on the owners) → MLP all-reduce → progress event
// then evaluation on the test split (logloss, exact AUC, accuracy) and `finished`.
//
// Checkpoints (CPR, ALGORITHMS.md §5; dlrm_state.h): rank 0 writes the MLPs and counters to
// replicated.ckpt, every rank its embedding shard (whole, or the rows recovery.policy picks)
// to rank-K.ckpt, through the shared Checkpointer (async writer, collective MANIFEST).
// recovery.interval fixed saves every checkpoint_every steps; cpr / young_daly measure the
// throughput over the first steps and the blocking cost of a first whole-shard save, then
// plan_checkpoint_interval() picks the interval (logged with its inputs).
//
// Recovery after a lost rank (regroup.h): recovery.mode partial: survivors keep everything;
// the replacement takes the MLPs, the step and the counters from a survivor and rebuilds only
// its own shard from its saves; the updates the shard lost are reported as PLS.
// recovery.mode full: every rank reloads the newest complete checkpoint (MLPs, its shard,
// step) and redoes the steps since.
//
// Not thread-safe except request_stop().
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "recovery/cpr.h"
#include "trainer/dlrm.h"
#include "trainer/dlrm_state.h"
#include "trainer/trainer.h"

namespace tern {

class Checkpointer;
struct LoadedCheckpoint;

class DlrmLoop : public TrainingLoop {
 public:
  DlrmLoop(TrainerOptions options, std::shared_ptr<Communicator> comm, EventSink* sink);
  ~DlrmLoop() override;

  Status setup() override;
  Status run() override;
  void request_stop() override { stop_.store(true); }
  const nlohmann::json& summary() const override { return summary_; }

  DlrmTrainer& model() { return *model_; }
  int64_t steps_done() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t checkpoint_interval_steps() const { return interval_steps_; }

 private:
  Status train_step();
  // Positions the training stream at `step`'s first sample (epoch from the step).
  Status seek(int64_t step);
  Result<DlrmMetrics> evaluate();
  // At the top of a step: plans the interval when due, commits a due pending step, saves.
  Status checkpoint_point();
  Status save(ShardSave kind);
  Status plan_interval(double probe_cost_s);
  ShardSave save_kind(int64_t step) const;
  bool checkpoint_due(int64_t step) const;
  Status recover(const Status& failure);
  // The furthest rank's MLPs, step and counters to every rank (a replacement joins with them).
  Status sync_state(bool have_state);
  // recovery.mode full: everybody reloads the newest complete checkpoint.
  Status rollback(bool have_state);
  // recovery.mode partial, the replacement: its own shard from its saves; PLS accounting.
  void restore_lost_shard();
  nlohmann::json counters() const;
  void load_counters(const nlohmann::json& c);
  void emit_progress(bool force);

  TrainerOptions options_;
  const JobSpec& spec_;
  std::shared_ptr<CountingCommunicator> counting_;
  EventSink* sink_;
  std::unique_ptr<DlrmTrainer> model_;
  std::unique_ptr<CtrStream> train_;
  std::unique_ptr<CtrStream> test_;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  int64_t step_ = 0;
  std::atomic<bool> stop_{false};

  // Metrics.
  double compute_s_ = 0;
  double eval_s_ = 0;  // mid-run evaluations (train.eval_every), kept out of wall_s
  double last_loss_ = 0, window_loss_ = 0;
  int64_t window_steps_ = 0, window_samples_ = 0;
  int64_t skipped_steps_ = 0;  // non-finite steps left out (train.on_nonfinite skip_step)
  int64_t samples_ = 0, global_samples_ = 0;
  int64_t steps_computed_ = 0;  // steps this rank ran, redone ones included
  std::chrono::steady_clock::time_point window_start_;
  nlohmann::json summary_;

  // Checkpoint schedule: saves at first_step_ + k * interval_steps_ (k >= 0); interval 0: none
  // (yet: cpr / young_daly plan it at plan_step_).
  std::unique_ptr<Checkpointer> checkpointer_;
  int64_t interval_steps_ = 0;
  int64_t first_step_ = 0;
  int64_t plan_step_ = -1;
  int64_t last_checkpoint_step_ = -1;
  double failed_commit_s_ = 0;  // blocking time of commits a lost peer failed (not overhead)
  std::mt19937_64 ssu_rng_;
  nlohmann::json plan_;
  std::chrono::steady_clock::time_point measure_start_;
  int64_t measure_samples_ = 0;

  // Recovery.
  int64_t recoveries_ = 0;
  double recovery_s_ = 0;
  int64_t steps_rolled_back_ = 0;
  double lost_updates_ = 0;   // this rank's shard updates a partial recovery could not restore
  double lost_samples_ = 0;   // the same in samples (lost updates / tables of the shard)
  double shard_updates_ = 0;  // the shard's updates at that failure
  std::vector<std::shared_ptr<Communicator>> retired_comms_;
};

}  // namespace tern
