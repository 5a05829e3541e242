// DlrmWorkload: the DLRM (model.type dlrm; data.source synthetic_ctr | criteo) as a Workload of
// the one training loop (loop/training_loop.h). Its embedding tables are sharded over the ranks
// (model parallel, DlrmModel): a step's row lookups and row gradients are all-to-alls every rank
// joins (traits: collective_step), and the owners update their rows with sparse SGD inside
// finish_step(). Its MLPs are the dense parameters the loop's optimizer, sync strategy (ssgd,
// dssgd, tsu, dts, hierarchical), compressor and straggler mode (proportional) see.
//
// Data: rank r's share of an epoch is samples r, r + N, r + 2N, ... of the training split.
// synthetic_ctr reads any sample by index (straggler plans may hand a rank other ranks'
// samples); criteo is streamed, each rank reading only its share, so part() answers positions
// in this rank's share and the stream seeks when a step does not continue where the last one
// ended (resume, rollback, a replacement rank). A Criteo file is scanned whole at setup
// (criteo_format.h: scan_criteo): the malformed-line policy (data.malformed) refuses a file
// before the first step, and the summary reports its lines and malformed lines by defect.
//
// Sharded state (CPR, docs/algorithms.md §5; shard_checkpoint.h): a checkpoint's rank file holds
// the whole shard or the rows recovery.policy picks; a resume or rollback rebuilds the shard from
// the newest whole save plus the row saves after it; a replacement rank in partial recovery
// rebuilds its shard the same way and reports the updates it lost (PLS) in the summary.
// The loop thread only.
#pragma once

#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "trainer/loop/workload.h"
#include "trainer/workloads/dlrm/ctr_data.h"
#include "trainer/workloads/dlrm/dlrm_model.h"

namespace tern {

class DlrmWorkload : public Workload {
 public:
  DlrmWorkload() = default;
  ~DlrmWorkload() override;

  WorkloadTraits traits() const override { return workload_traits(*spec_); }
  Status setup(const WorkloadContext& ctx) override;
  int64_t samples_per_rank() const override { return share_; }
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const override;
  std::vector<int64_t> part(int64_t step, int rank) override;
  Result<StepOutput> compute(int64_t step, const StepPlan& plan,
                             std::vector<at::Tensor>* grads) override;
  Status finish_step(bool apply) override;
  void set_lr(double lr) override { model_->set_lr(lr); }
  Result<Metrics> evaluate() override;

  Result<int64_t> save_sharded(ShardSave kind, NamedTensors* out) override;
  Status restore_sharded(const CheckpointStore& store, int64_t step) override;
  nlohmann::json restore_lost_state(const CheckpointStore* store, int64_t global_samples) override;
  Result<nlohmann::json> summary(Communicator& comm, int64_t global_samples) override;
  std::string describe() const override;

  DlrmModel& model() { return *model_; }

 private:
  // This rank's batch of `plan`: samples by index (synthetic) or the next positions of its
  // stream (criteo).
  Result<Batch> batch_of(const StepPlan& plan);

  const JobSpec* spec_ = nullptr;
  int rank_ = 0, world_ = 1;
  std::unique_ptr<DlrmModel> model_;
  std::shared_ptr<const SyntheticCtr> synthetic_;  // synthetic_ctr: random access
  std::unique_ptr<CtrStream> train_stream_;        // criteo: this rank's share, streamed
  std::unique_ptr<CtrStream> test_;
  std::optional<CriteoScan> scan_;  // criteo: the whole file, scanned at setup
  int64_t share_ = 0;               // samples of the largest rank share
  int64_t steps_per_epoch_ = 1;
  std::mt19937_64 ssu_rng_;

  // Partial recovery (a replacement rank): the shard's updates it could not restore.
  double lost_updates_ = 0;
  double lost_samples_ = 0;   // the same in samples (lost updates / tables of the shard)
  double shard_updates_ = 0;  // the shard's updates at that failure
};

}  // namespace tern
