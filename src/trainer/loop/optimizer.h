// Sgd: SGD with momentum (heavy-ball or Nesterov) and weight decay, numerically identical to
// torch::optim::SGD (dampening 0) but with its momentum buffers exposed as plain tensors, so sync
// strategies can average them and checkpoints can save them.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace tern {

class Sgd {
 public:
  Sgd(std::vector<at::Tensor> params, double lr, double momentum, double weight_decay, bool nesterov = false);
  // Applies `grads` (one per parameter) to the parameters.
  void step(const std::vector<at::Tensor>& grads);
  std::vector<at::Tensor>& momentum_buffers() { return buffers_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> buffers_;  // undefined until the first step
  double lr_, momentum_, weight_decay_;
  bool nesterov_;
};

}  // namespace tern
