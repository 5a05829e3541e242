// TorchScriptWorkload: the user's own model (model.type torchscript) as a Workload of the one
// training loop (loop/training_loop.h). The model is a TorchScript module (torch.jit.save,
// model.path) loaded on every rank; its parameters are the dense parameters the loop's
// optimizer, sync strategy, compressor, straggler mode and checkpoints see. Data: a
// random-access data set (data.source tensors, tokens, fashion_mnist or synthetic), dealt to
// the ranks by the sampler as for the built-in models.
//
// Loss (model.loss): forward(inputs) returns outputs and the loop's loss takes them:
//   cross_entropy    outputs [B, C] or [B, ..., C] (classes last), targets int64 [B] / [B, ...]:
//                    the mean over every target element (a language model's tokens);
//   mse              outputs and targets with the same elements per sample;
//   bce_with_logits  logits and 0/1 targets with the same elements per sample;
// or `returned`: forward(inputs, targets) returns the scalar mean loss itself. A straggler
// plan's per-sample weights weight each sample's mean loss (returned: each run of equally
// weighted samples is one forward).
// Evaluation (model.metrics): test_loss (mean per target element: nats per token for a
// language model), test_accuracy (argmax over classes, or logit > 0), test_perplexity
// (exp of test_loss) and test_auc (exact, over every rank's logits), every rank a contiguous
// slice of the test split, sums all-reduced.
// Buffers (batch-norm running statistics): each rank updates its own from its samples; before
// every evaluation and checkpoint the loop has them averaged over ranks (integer counters taken
// from rank 0), checkpoints save rank 0's afterwards (replicated.ckpt, buffer/<name>), resume
// and rollback restore them, and a re-syncing group takes the furthest rank's.
//
// Bad input is INVALID_ARGUMENT (the trainer exits 2) naming the field and the file: a missing
// or unreadable model.path, a file that is not a TorchScript archive, a module without
// parameters, a forward that fails on a probe batch of the training data or returns what the
// loss cannot take (checked in setup, before training), and a forward that fails later (naming
// the step). The loop thread only.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

#include "trainer/loop/sampler.h"
#include "trainer/loop/workload.h"
#include "trainer/workloads/data.h"

namespace tern {

class TorchScriptWorkload : public Workload {
 public:
  TorchScriptWorkload();
  ~TorchScriptWorkload() override;

  WorkloadTraits traits() const override { return workload_traits(*spec_); }
  Status setup(const WorkloadContext& ctx) override;
  int64_t samples_per_rank() const override { return parts_->per_rank(); }
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const override;
  std::vector<std::pair<std::string, at::Tensor>> named_buffers() const override;
  Status sync_buffers() override;
  std::vector<int64_t> part(int64_t step, int rank) override { return parts_->part(step, rank); }
  Result<StepOutput> compute(int64_t step, const StepPlan& plan,
                             std::vector<at::Tensor>* grads) override;
  Result<Metrics> evaluate() override;
  std::string describe() const override;

 private:
  // The mean loss of a batch and, when `per_sample`, each sample's mean loss [B] (not for
  // loss returned). Throws what the module or the loss throws.
  at::Tensor loss_of(const Batch& batch, at::Tensor* per_sample, at::Tensor* outputs);
  at::Tensor forward(const at::Tensor& inputs);
  // Runs one probe batch through the module and the loss (setup).
  Status probe();
  std::string model_file() const;

  const JobSpec* spec_ = nullptr;
  int rank_ = 0, world_ = 1;
  torch::Device device_ = torch::kCPU;
  Communicator* comm_ = nullptr;
  std::unique_ptr<TrainingData> data_;
  torch::jit::Module module_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<std::pair<std::string, at::Tensor>> buffers_;
  std::unique_ptr<DataParallelParts> parts_;
  std::vector<EvalMetric> metrics_;  // of model.metrics, in report order
};

// The data a user's model trains on: data.source tensors, tokens, fashion_mnist or synthetic.
Result<std::unique_ptr<TrainingData>> make_user_data(const JobSpec& spec);

}  // namespace tern
