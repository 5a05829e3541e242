#include "privacy/dp_sgd.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "common/splitmix.h"

namespace tern {
namespace {

constexpr double kClipEps = 1e-6;

}  // namespace

at::Tensor linear_per_sample_sq_norms(const std::vector<LinearTrace>& layers) {
  at::Tensor total;
  for (const auto& l : layers) {
    at::Tensor gy = l.output.grad();
    if (!gy.defined()) continue;
    gy = gy.detach().to(at::kDouble);
    at::Tensor x = l.input.detach().to(at::kDouble);
    at::Tensor gy2 = gy.pow(2).sum(1);
    at::Tensor sq = gy2 * x.pow(2).sum(1);
    if (l.bias.defined()) sq = sq + gy2;
    total = total.defined() ? total + sq : sq;
  }
  return total;
}

at::Tensor clip_factors(const at::Tensor& sq_norms, double clip) {
  return (clip / (sq_norms.to(at::kDouble).sqrt() + kClipEps)).clamp_max(1.0);
}

void write_linear_grads(const std::vector<LinearTrace>& layers, const at::Tensor& scale) {
  at::NoGradGuard no_grad;
  for (const auto& l : layers) {
    at::Tensor gy = l.output.grad();
    if (!gy.defined()) gy = at::zeros_like(l.output);
    gy = gy.detach() * scale.to(gy.scalar_type()).unsqueeze(1);
    l.weight.mutable_grad() = gy.t().mm(l.input.detach());
    if (l.bias.defined()) l.bias.mutable_grad() = gy.sum(0);
  }
}

double clip_factor(const std::vector<at::Tensor>& grads, double clip) {
  double sq = 0;
  for (const auto& g : grads) {
    if (g.defined()) sq += g.to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::min(1.0, clip / (std::sqrt(sq) + kClipEps));
}

uint64_t dp_seed(uint64_t seed, int64_t step, int64_t rank, int64_t index) {
  uint64_t h = splitmix64(seed ^ 0x6470u);  // "dp"
  h = splitmix64(h ^ static_cast<uint64_t>(step));
  h = splitmix64(h ^ static_cast<uint64_t>(rank));
  return splitmix64(h ^ static_cast<uint64_t>(index));
}

at::Tensor dp_gaussian(at::IntArrayRef shape, uint64_t seed, int64_t step, int64_t rank,
                       int64_t index) {
  auto gen = at::detail::createCPUGenerator(dp_seed(seed, step, rank, index));
  return at::normal(0.0, 1.0, shape, gen, at::TensorOptions().dtype(at::kFloat));
}

}  // namespace tern
