#include "sync/outer.h"

namespace tern {

void outer_step(const OuterSpec& spec, std::vector<at::Tensor>& theta, std::vector<at::Tensor>& m,
                const std::vector<at::Tensor>& mean_delta) {
  at::NoGradGuard no_grad;
  const double mu = spec.momentum;
  for (size_t i = 0; i < theta.size(); ++i) {
    at::Tensor pseudo = mean_delta[i].neg();  // Delta = theta - mean(theta_j)
    if (mu == 0) {
      theta[i].sub_(pseudo, spec.lr);
      continue;
    }
    m[i].mul_(mu).add_(pseudo);
    if (spec.nesterov) {
      theta[i].sub_(pseudo.add(m[i], mu), spec.lr);
    } else {
      theta[i].sub_(m[i], spec.lr);
    }
  }
}

}  // namespace tern
