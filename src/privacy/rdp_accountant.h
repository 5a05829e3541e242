// RdpAccountant: the privacy spent by DP-SGD, by Renyi differential privacy (RDP) of the
// sampled Gaussian mechanism (Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the
// Sampled Gaussian Mechanism"), as Opacus and TF Privacy compute it. Torch-free.
//
// One DP-SGD step samples each example with probability q (the global batch over the training
// set), clips each example's gradient to L2 norm C and adds N(0, (sigma*C)^2) to the sum. At
// order alpha its RDP is log(A_alpha) / (alpha - 1), with mu0 = N(0, sigma^2), mu1 = N(1, sigma^2):
//
//   A_alpha = E_{z~mu0}[((1 - q) + q * mu1(z) / mu0(z))^alpha]
//   integer alpha:    A = sum_{i=0..alpha} C(alpha,i) (1-q)^(alpha-i) q^i exp((i^2 - i) / (2
//   sigma^2)) fractional alpha: the two-sided series of Mironov et al. (section 3.3), split at
//                     z0 = sigma^2 log(1/q - 1) + 1/2, with erfc tails, summed until both terms
//                     fall below e^-30;
//   q = 1: alpha / (2 sigma^2);  q = 0: 0.
//
// RDP composes by addition over steps (and over segments of different q or sigma: a resumed
// job on another batch size). Epsilon at delta (the conversion Opacus uses, Balle et al. 2020):
//
//   eps = min_alpha [ rdp(alpha) - (log(delta) + log(alpha)) / (alpha - 1) + log((alpha - 1) /
//   alpha) ]
//
// Orders: Opacus's default, 1.1, 1.2, ..., 10.9 and 12, 13, ..., 63.
//
// State: the history of (q, sigma, steps) segments, which is what checkpoints and progress
// events carry (to_json / from_json); RDP is recomputed from it. Plain data, not thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

// RDP at each order in `orders` of `steps` compositions of the sampled Gaussian mechanism
// with sampling rate q in [0, 1] and noise multiplier sigma >= 0 (+inf where unbounded).
std::vector<double> compute_rdp(double q, double sigma, int64_t steps,
                                const std::vector<double>& orders);

struct PrivacySpent {
  double epsilon = 0;
  double order = 0;  // the optimal alpha
};

// The (epsilon, delta) guarantee of an RDP curve (formula above); epsilon +inf when unbounded.
PrivacySpent privacy_spent(const std::vector<double>& orders, const std::vector<double>& rdp,
                           double delta);

// Opacus's default orders.
std::vector<double> default_rdp_orders();

class RdpAccountant {
 public:
  struct Segment {
    double q = 0;
    double sigma = 0;
    int64_t steps = 0;
  };

  RdpAccountant() : orders_(default_rdp_orders()) {}

  // Records `steps` more steps at (q, sigma); consecutive steps at the same (q, sigma) share
  // one segment.
  void step(double q, double sigma, int64_t steps = 1);
  int64_t steps() const;
  const std::vector<Segment>& history() const { return history_; }
  std::vector<double> rdp() const;
  PrivacySpent spent(double delta) const;
  double epsilon(double delta) const { return spent(delta).epsilon; }

  // {"history": [{"q":..,"sigma":..,"steps":..}, ...]}.
  nlohmann::json to_json() const;
  // Errors name `what` (a checkpoint file) and the bad field.
  static Result<RdpAccountant> from_json(const nlohmann::json& j, const std::string& what);

 private:
  std::vector<double> orders_;
  std::vector<Segment> history_;
};

}  // namespace tern
