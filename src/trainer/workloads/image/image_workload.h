// ImageWorkload: the image classifiers (model.type mlp | cnn; data.source fashion_mnist |
// synthetic) as a Workload of the one training loop (loop/training_loop.h). Replicated model,
// random-access data: every rank holds the whole data set, a ShardedSampler deals each epoch's
// permutation to the ranks, and a straggler plan may hand a rank any samples. Evaluation: every
// rank a contiguous slice of the test split, correct counts and loss sums all-reduced.
// The loop thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "trainer/loop/sampler.h"
#include "trainer/loop/workload.h"
#include "trainer/workloads/image/models.h"
#include "trainer/workloads/image/training_data.h"

namespace tern {

class ImageWorkload : public Workload {
 public:
  WorkloadTraits traits() const override { return workload_traits(*spec_); }
  Status setup(const WorkloadContext& ctx) override;
  int64_t samples_per_rank() const override { return parts_->per_rank(); }
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const override;
  std::vector<int64_t> part(int64_t step, int rank) override;
  Result<StepOutput> compute(int64_t step, const StepPlan& plan,
                             std::vector<at::Tensor>* grads) override;
  Result<Metrics> evaluate() override;
  std::string describe() const override;

  Model& model() { return *model_; }

 private:
  // train.dp: this rank's sum of clipped per-sample gradients, each weighted as the plan says
  // (1 / local batch without weights); the loop adds the noise.
  Result<StepOutput> compute_private(const Batch& batch, const StepPlan& plan,
                                     std::vector<at::Tensor>* grads);

  const JobSpec* spec_ = nullptr;
  int rank_ = 0, world_ = 1;
  torch::Device device_ = torch::kCPU;
  Communicator* comm_ = nullptr;
  std::unique_ptr<TrainingData> data_;
  std::shared_ptr<Model> model_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<DataParallelParts> parts_;
};

}  // namespace tern
