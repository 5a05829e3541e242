// The outer optimizer of DiLoCo (Douillard et al. 2023) for the temporally sparse strategies.
// At a sync every rank holds the same outer model theta (the parameters at the previous outer
// step) and the averaged update of the replicas, mean_j(theta_j - theta). The pseudo-gradient is
//   Delta = theta - mean_j(theta_j) = -mean(delta)
// and the outer step is SGD with momentum mu on it:
//   m = mu*m + Delta;   u = Delta + mu*m (Nesterov) or m;   theta -= lr*u.
// Every rank runs the same step on the same (all-reduced) input, so theta and m stay bit-identical
// across ranks: the momentum is replicated state (checkpoints keep one copy). lr 1, mu 0 is
// plain averaging (theta = mean_j theta_j); the strategies keep their original arithmetic for
// that case, so such runs are bit-identical to runs without an outer optimizer.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "common/job_spec.h"

namespace tern {

// One outer step on `theta` (the outer model, updated in place) with `mean_delta` (the average of
// theta_j - theta over ranks) and the momentum buffers `m` (zeros at first; unused when
// spec.momentum is 0), one tensor per piece, all of the same shapes.
void outer_step(const OuterSpec& spec, std::vector<at::Tensor>& theta, std::vector<at::Tensor>& m,
                const std::vector<at::Tensor>& mean_delta);

}  // namespace tern
