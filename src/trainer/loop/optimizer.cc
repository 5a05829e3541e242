#include "trainer/loop/optimizer.h"

#include <ATen/core/grad_mode.h>

namespace tern {

Sgd::Sgd(std::vector<at::Tensor> params, double lr, double momentum, double weight_decay, bool nesterov)
    : params_(std::move(params)), buffers_(params_.size()), lr_(lr), momentum_(momentum),
      weight_decay_(weight_decay), nesterov_(nesterov) {}

void Sgd::step(const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].data();
    at::Tensor d_p = grads[i].data();
    if (weight_decay_ != 0) d_p = d_p.add(p, weight_decay_);
    if (momentum_ != 0) {
      if (!buffers_[i].defined()) {
        buffers_[i] = d_p.clone().detach();
      } else {
        buffers_[i].mul_(momentum_).add_(d_p, 1.0);
      }
      // Nesterov: step along g + momentum * buf (the look-ahead), as torch::optim::SGD does.
      d_p = nesterov_ ? d_p.add(buffers_[i], momentum_) : buffers_[i];
    }
    p.add_(d_p, -1 * lr_);
  }
}

}  // namespace tern
