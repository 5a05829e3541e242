// DP-SGD's data-plane parts (Abadi et al. 2016): per-sample gradient clipping and a seeded,
// reproducible Gaussian noise stream. The accounting is rdp_accountant.h.
//
// One step over a global batch of B samples, clip C, noise multiplier sigma:
//
//   g_i   = the gradient of sample i's loss (every trained parameter, embedding rows included)
//   c_i   = min(1, C / (||g_i||_2 + 1e-6))                  (Opacus's clip factor)
//   G     = (sum_i c_i g_i + N(0, sigma^2 C^2 I)) / B        the step's (noisy) gradient
//
// so one sample changes the sum by at most C (its sensitivity) and the noise is added once to
// the global sum. Ranks share it: each of the m ranks of the group adds N(0, sigma^2 C^2 / m)
// to its own partial sum, from its own stream (seed, step, rank), and the sum over ranks of m
// independent draws is one draw of variance sigma^2 C^2. An embedding table lives on one owner
// rank only, which adds the whole N(0, sigma^2 C^2) to each of its rows (eager DP-SGD: every
// row every step; LazyDP defers the rows a step did not read, lazy_noise.h).
//
// Per-sample gradients: linear layers vectorised (Goodfellow's trick: for y = x W^T + b and
// per-sample output gradients gy_i, the per-sample weight gradient is gy_i x_i^T with squared
// norm ||gy_i||^2 ||x_i||^2, and the clipped sum is (c * gy)^T x, without materialising the
// B per-sample gradients); other models by micro-batches of one sample (clip_factor()).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace tern {

// One linear layer as a forward pass traced it: input [B, in] (detached), output [B, out]
// (retains its gradient: call output.retain_grad() before backward), its weight and bias.
struct LinearTrace {
  at::Tensor input;
  at::Tensor output;
  at::Tensor weight;
  at::Tensor bias;  // may be undefined
};

// Per-sample squared L2 norms [B] (double) of the traced layers' gradients, from the output
// gradients of a backward pass of sum_i l_i (unweighted: then output.grad()[i] is sample i's).
at::Tensor linear_per_sample_sq_norms(const std::vector<LinearTrace>& layers);

// min(1, C / (sqrt(sq_norms) + 1e-6)) [B] (double).
at::Tensor clip_factors(const at::Tensor& sq_norms, double clip);

// weight.grad = sum_i scale_i gy_i x_i^T, bias.grad = sum_i scale_i gy_i (replaced, not added).
void write_linear_grads(const std::vector<LinearTrace>& layers, const at::Tensor& scale);

// One sample's clip factor from its gradients (micro-batching).
double clip_factor(const std::vector<at::Tensor>& grads, double clip);

// The noise stream: N(0, 1) draws of `shape` that depend only on (seed, step, rank, index):
// a redone step draws the same noise, and two runs from one seed draw the same. `index`
// separates the tensors one rank draws in a step (parameter i, embedding table t).
at::Tensor dp_gaussian(at::IntArrayRef shape, uint64_t seed, int64_t step, int64_t rank,
                       int64_t index);

// The 64-bit seed dp_gaussian() uses (splitmix64 over its inputs), for streams of one's own.
uint64_t dp_seed(uint64_t seed, int64_t step, int64_t rank, int64_t index);

}  // namespace tern
