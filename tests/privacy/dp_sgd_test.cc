// Per-sample clipping (vectorised linear layers vs micro-batches of one sample), the bound
// clipping puts on one sample's contribution, and the seeded noise stream.
#include "privacy/dp_sgd.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace tern {
namespace {

// A 2-layer MLP on raw tensors, traced for the vectorised path.
struct TinyMlp {
  at::Tensor w1, b1, w2, b2;
  TinyMlp() {
    torch::manual_seed(3);
    w1 = torch::randn({5, 4}).requires_grad_(true);
    b1 = torch::randn({5}).requires_grad_(true);
    w2 = torch::randn({3, 5}).requires_grad_(true);
    b2 = torch::randn({3}).requires_grad_(true);
  }
  std::vector<at::Tensor> params() const { return {w1, b1, w2, b2}; }
  at::Tensor forward(const at::Tensor& x, std::vector<LinearTrace>* trace) {
    at::Tensor h = torch::linear(x, w1, b1);
    if (trace) {
      h.retain_grad();
      trace->push_back({x.detach(), h, w1, b1});
    }
    at::Tensor a = torch::relu(h);
    at::Tensor y = torch::linear(a, w2, b2);
    if (trace) {
      y.retain_grad();
      trace->push_back({a.detach(), y, w2, b2});
    }
    return y;
  }
  void zero() {
    for (auto& p : params()) p.mutable_grad() = at::Tensor();
  }
};

at::Tensor per_sample_loss(const at::Tensor& logits, const at::Tensor& y) {
  return torch::nn::functional::cross_entropy(
      logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
}

// Micro-batching: the reference.
std::vector<at::Tensor> clipped_sum_by_samples(TinyMlp& m, const at::Tensor& x, const at::Tensor& y,
                                               double clip, std::vector<double>* norms) {
  std::vector<at::Tensor> sum;
  for (const auto& p : m.params()) sum.push_back(at::zeros_like(p));
  for (int64_t i = 0; i < x.size(0); ++i) {
    m.zero();
    per_sample_loss(m.forward(x.narrow(0, i, 1), nullptr), y.narrow(0, i, 1)).sum().backward();
    std::vector<at::Tensor> g;
    double sq = 0;
    for (const auto& p : m.params()) {
      g.push_back(p.grad().clone());
      sq += p.grad().pow(2).sum().item<double>();
    }
    norms->push_back(std::sqrt(sq));
    const double c = clip_factor(g, clip);
    for (size_t k = 0; k < g.size(); ++k) sum[k] += g[k] * c;
  }
  return sum;
}

TEST(DpSgd, VectorisedLinearClippingEqualsMicroBatches) {
  TinyMlp m;
  torch::manual_seed(7);
  at::Tensor x = torch::randn({6, 4});
  at::Tensor y = torch::randint(0, 3, {6}, at::kLong);
  x[2] *= 50;  // one sample well over the clip
  const double clip = 1.0;
  std::vector<double> ref_norms;
  std::vector<at::Tensor> ref = clipped_sum_by_samples(m, x, y, clip, &ref_norms);

  m.zero();
  std::vector<LinearTrace> trace;
  per_sample_loss(m.forward(x, &trace), y).sum().backward();
  at::Tensor sq = linear_per_sample_sq_norms(trace);
  ASSERT_EQ(sq.size(0), 6);
  for (int64_t i = 0; i < 6; ++i)
    EXPECT_NEAR(std::sqrt(sq[i].item<double>()), ref_norms[i], 1e-4 * (1 + ref_norms[i]));
  write_linear_grads(trace, clip_factors(sq, clip));
  auto params = m.params();
  for (size_t k = 0; k < params.size(); ++k) {
    EXPECT_TRUE(at::allclose(params[k].grad(), ref[k], 1e-4, 1e-5)) << "parameter " << k;
  }
}

TEST(DpSgd, ClippingBoundsOneHugeSample) {
  // Two batches differing only in sample 0, whose gradient is ~1e6 times the others': the
  // clipped sums differ by at most `clip` (the sensitivity the noise is calibrated to).
  TinyMlp m;
  torch::manual_seed(11);
  at::Tensor x = torch::randn({8, 4});
  at::Tensor y = torch::randint(0, 3, {8}, at::kLong);
  at::Tensor x_huge = x.clone();
  x_huge[0] *= 1e6;
  const double clip = 0.5;
  auto clipped_sum = [&](const at::Tensor& input) {
    m.zero();
    std::vector<LinearTrace> trace;
    per_sample_loss(m.forward(input, &trace), y).sum().backward();
    at::Tensor sq = linear_per_sample_sq_norms(trace);
    write_linear_grads(trace, clip_factors(sq, clip));
    std::vector<at::Tensor> out;
    for (const auto& p : m.params()) out.push_back(p.grad().clone());
    return std::make_pair(out, sq);
  };
  auto [base, base_sq] = clipped_sum(x);
  auto [huge, huge_sq] = clipped_sum(x_huge);
  EXPECT_GT(std::sqrt(huge_sq[0].item<double>()), 1e5);  // unclipped it would dominate
  double diff_sq = 0;
  for (size_t k = 0; k < base.size(); ++k)
    diff_sq += (huge[k] - base[k]).to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_LE(std::sqrt(diff_sq),
            2 * clip * (1 + 1e-5));  // each of the two versions contributes <= clip
  // And the huge sample alone contributes exactly clip (its factor scales it to norm C).
  m.zero();
  std::vector<LinearTrace> trace;
  per_sample_loss(m.forward(x_huge.narrow(0, 0, 1), &trace), y.narrow(0, 0, 1)).sum().backward();
  at::Tensor sq = linear_per_sample_sq_norms(trace);
  write_linear_grads(trace, clip_factors(sq, clip));
  double one_sq = 0;
  for (const auto& p : m.params()) one_sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(std::sqrt(one_sq), clip, 1e-3 * clip);
}

TEST(DpSgd, NoiseStreamIsSeededAndIndependent) {
  at::Tensor a = dp_gaussian({1000}, 5, 3, 1, 0);
  EXPECT_TRUE(at::equal(a, dp_gaussian({1000}, 5, 3, 1, 0)));  // reproducible
  for (auto other : {dp_gaussian({1000}, 6, 3, 1, 0), dp_gaussian({1000}, 5, 4, 1, 0),
                     dp_gaussian({1000}, 5, 3, 2, 0), dp_gaussian({1000}, 5, 3, 1, 1)}) {
    EXPECT_FALSE(at::equal(a, other));
    // Independent draws: near-zero correlation.
    EXPECT_LT(std::abs((a * other).mean().item<double>()), 0.15);
  }
  at::Tensor big = dp_gaussian({200000}, 9, 0, 0, 0);
  EXPECT_NEAR(big.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(big.std().item<double>(), 1.0, 0.01);
}

}  // namespace
}  // namespace tern
