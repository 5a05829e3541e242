// The image models (ImageWorkload, image_workload.h): torch::nn::Modules whose forward takes a
// Batch of images and returns class logits.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "common/job_spec.h"
#include "common/status.h"
#include "privacy/dp_sgd.h"
#include "trainer/workloads/data.h"

namespace tern {

class Model : public torch::nn::Module {
 public:
  // Logits: [B, classes] for classifiers, [B] for CTR models.
  virtual at::Tensor forward(const Batch& batch) = 0;
  // Mean loss of a batch given forward's output.
  virtual at::Tensor loss(const at::Tensor& out, const Batch& batch);
  // Per-sample losses [B] (work reassignment weights them individually).
  virtual at::Tensor loss_per_sample(const at::Tensor& out, const Batch& batch);
  // Number of correct predictions in the batch.
  virtual int64_t correct(const at::Tensor& out, const Batch& batch);
  // train.dp's vectorised per-sample gradients: forward() that also records every linear
  // layer (input, output with its gradient retained, weight, bias) in `trace`, for a model
  // made of linear layers and parameter-free functions only. Default: undefined (the model
  // has other parameterised layers: DP-SGD takes micro-batches of one sample instead).
  virtual at::Tensor forward_traced(const Batch& batch, std::vector<LinearTrace>* trace) {
    return {};
  }
};

// MLP 784-512-256-10 with ReLU.
class Mlp : public Model {
 public:
  Mlp();
  at::Tensor forward(const Batch& batch) override;
  at::Tensor forward_traced(const Batch& batch, std::vector<LinearTrace>* trace) override;

 private:
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr}, fc3_{nullptr};
};

// conv5x5 1→32, maxpool, conv5x5 32→64, maxpool, fc 3136→512, fc 512→10.
class Cnn : public Model {
 public:
  Cnn();
  at::Tensor forward(const Batch& batch) override;

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

// Builds model.type (mlp | cnn); the DLRM is built by its own factory (needs the sharding).
Result<std::shared_ptr<Model>> make_image_model(const ModelSpec& spec);

}  // namespace tern
