// StragglerSync: synchronous SGD whose steps do not wait for the slowest worker
// (docs/algorithms.md §6). Selected by the job spec's `straggler.mode`:
//
//   gradient_coding     each rank computes s + 1 of the n parts of the global batch and sends
//                       one coded combination to every peer; a step is decided by the first
//                       decodable set of contributions (any n - s), late ones are dropped.
//   proportional        S2C2-style: the global batch is split in shares proportional to the
//                       ranks' measured speeds (EWMA, exchanged every report_every steps);
//                       gradients are weighted by sample counts, reduced by all-reduce.
//   coded_proportional  both: coded parts sized by the speed of their fastest holder.
//   backup              Chen et al. 2016 baseline: a leader (rank 0) takes the first n - b
//                       contributions, tells everyone which, and all average those.
//   random_code         gradient coding with a fresh random linear code every step (RLNC-style,
//                       GradientCode::make_random from the job seed and the step): any n - s
//                       contributions decode with high probability; when they do not, the step
//                       waits for one more (counted in straggler_decode_failures).
//
// Every mode yields the same unbiased estimate as SSGD: the mean gradient of the global
// batch (or, for backup, of the parts that made it). A rank that falls behind does not fall
// further: when its peers have already decided a step it skips computing it (sends a skip
// marker) and applies the decided gradient, so all replicas apply the same updates in the
// same order. Replicas stay bit-identical in every mode. Cyclic and random codes decode with
// least-squares weights that depend on the sender set, and each contribution comes from its
// sender's own replica: ranks that each decoded their own first decodable set applied different
// updates, the replicas drifted apart and the decode amplified the drift (random_code s = 2
// lost up to 10 accuracy points on Fashion-MNIST). So for these codes one rank, the step's
// decider, picks the senders and the weights, and every rank applies exactly those
// (decide_agreed); the decider of a step is the lowest-ranked sender of the previous one.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "common/job_spec.h"
#include "straggler/exchange.h"
#include "straggler/gradient_code.h"
#include "straggler/work_split.h"
#include "sync/strategy.h"

namespace tern {

class StragglerSync : public SyncStrategy {
 public:
  // `reducer` (dense) is used by proportional mode; `total_steps` bounds posted receives.
  static Result<std::unique_ptr<StragglerSync>> make(Communicator& comm, GradientReducer* reducer,
                                                     const JobSpec& spec, int64_t total_steps);

  std::string name() const override { return "ssgd+" + name_of(mode_); }
  Status begin(std::vector<at::Tensor>& params) override;
  Result<StepPlan> plan(int64_t step, int rank, int world, const PartIndices& part) override;
  void record_compute(int64_t samples, double seconds) override;
  Status on_gradients(int64_t step, std::vector<at::Tensor>& grads) override;
  Status drain(std::vector<at::Tensor>& params) override;
  SyncMetrics metrics() const override;
  // Every mode applies the same update on every rank (decide_agreed for cyclic and random
  // codes), so the parameters are bit-identical after every step; the optimizer state is kept
  // per rank (docs/algorithms.md: what is replicated).
  ReplicaView replica_view() override { return {true, false, {}, {}}; }

  // Agreed speeds (samples/s per rank) the current shares come from; empty before the first
  // exchange.
  const std::vector<double>& speeds() const { return speeds_; }

 private:
  StragglerSync(Communicator& comm, GradientReducer* reducer, const JobSpec& spec,
                int64_t total_steps);
  bool coded() const { return code_.has_value() || random_code_; }
  // The code of `step`: the job's fixed code, or random_code's code of that step (cached).
  Result<const GradientCode*> code_at(int64_t step);
  bool uses_speeds() const {
    return mode_ == StragglerMode::kProportional || mode_ == StragglerMode::kCodedProportional;
  }
  Status update_speeds(int64_t step);
  // Whether the step of `arr` was decided without `rank`: the decider's choice arrived (agreed
  // decoding), enough contributions decode (`code`), or backup's leader decided.
  bool decided_without(const ContributionExchange::Arrivals& arr, const GradientCode* code,
                       int rank) const;
  Status decide_coded(int64_t step, std::vector<at::Tensor>& grads);
  Status decide_agreed(int64_t step, const GradientCode& code, std::vector<at::Tensor>& grads);
  Status decide_backup(int64_t step, std::vector<at::Tensor>& grads);
  Status apply_sum(int64_t step, const std::vector<int>& senders, const std::vector<double>& coeffs,
                   std::vector<at::Tensor>& grads);

  Communicator& comm_;
  GradientReducer* reducer_;
  StragglerMode mode_;
  int64_t s_;
  int64_t backup_;
  int64_t report_every_;
  int64_t total_steps_;
  int64_t bucket_bytes_;
  std::optional<GradientCode> code_;
  bool random_code_ = false;
  uint64_t code_seed_ = 0;
  std::map<int64_t, GradientCode> step_codes_;  // random_code: recent steps' codes
  bool agree_ = false;  // cyclic and random codes: every rank decodes the decider's choice
  int decider_ = 0;     // agree_: the rank that decides the next step
  std::unique_ptr<ContributionExchange> exchange_;
  int64_t numel_ = 0;

  SpeedEstimator estimator_;
  std::vector<double> speeds_;
  struct PendingGather {
    int64_t step;
    std::vector<at::Tensor> outputs;
    at::Tensor input;
    WorkPtr work;
  };
  std::optional<PendingGather> gather_;
  static constexpr int64_t kGatherLag = 4;  // steps between issuing a speed exchange and using it

  bool skip_ = false;  // the current step was skipped (peers decided it already)
  SyncMetrics metrics_;
  int64_t steps_ = 0;
  int64_t skipped_ = 0;
  int64_t late_ = 0;             // computed, but the step was decidable without this rank
  int64_t decode_failures_ = 0;  // steps whose first n - s contributions did not decode
  double decode_s_ = 0;          // solving for the weights and summing the contributions
  double share_ = 0;             // this rank's share of the last step's global batch
  std::vector<int64_t> waited_for_;
};

}  // namespace tern
