// Trainer: one rank of a training job. Owns the model, optimizer, data shard, sync strategy
// and the communicator stack (counting decorator outermost). The loop per step:
//   batch → forward/backward → (injected straggler delay) → strategy.on_gradients →
//   optimizer → strategy.after_step → progress event
// then drain + distributed evaluation at the end (and every eval_every steps).
//
// Not thread-safe except request_stop(), which any thread (a signal or stdin reader) may call.
#pragma once

#include <atomic>
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
#include "trainer/events.h"
#include "trainer/models.h"
#include "trainer/optimizer.h"
#include "trainer/sampler.h"
#include "trainer/training_data.h"

namespace tern {

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
};

struct EvalResult {
  double accuracy = 0;
  double loss = 0;
  int64_t samples = 0;
};

class Trainer {
 public:
  Trainer(TrainerOptions options, std::shared_ptr<Communicator> comm, EventSink* sink);
  ~Trainer();

  // Loads data, builds the model (seeded; then broadcast from rank 0) and the strategy.
  Status setup();
  // Runs all remaining steps, drains, evaluates, emits `finished`.
  Status run();
  // Distributed evaluation on the test set (each rank a shard, counts all-reduced).
  Result<EvalResult> evaluate();

  void request_stop() { stop_.store(true); }
  Model& model() { return *model_; }
  std::vector<at::Tensor> parameters() const;
  int64_t steps_done() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  const nlohmann::json& summary() const { return summary_; }
  const ByteCounts& bytes() const { return counting_->counts(); }
  // Bytes this rank sent on every communicator it uses (job-wide, region, leaders).
  int64_t bytes_sent() const;

 private:
  Status train_step(int64_t step);
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
  int64_t global_samples_ = 0;  // samples of every step's global batch (all ranks)
  double train_wall_s_ = 0;
  std::chrono::steady_clock::time_point window_start_;
  int64_t window_samples_ = 0;
  nlohmann::json summary_;
};

}  // namespace tern
