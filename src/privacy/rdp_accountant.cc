#include "privacy/rdp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tern {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)).
double log_add(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi + std::log1p(std::exp(lo - hi));
}

// log(exp(a) - exp(b)), a >= b.
double log_sub(double a, double b) {
  if (b == -kInf) return a;
  if (a == b) return -kInf;
  if (a < b) return std::numeric_limits<double>::quiet_NaN();
  return a + std::log1p(-std::exp(b - a));
}

// log(erfc(x)), with the asymptotic series where erfc underflows.
double log_erfc(double x) {
  const double r = std::erfc(x);
  if (r > 0) return std::log(r);
  const double x2 = x * x;
  return -std::log(M_PI) / 2 - std::log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) -
         37.0 / 24.0 / (x2 * x2 * x2) + 353.0 / 64.0 / (x2 * x2 * x2 * x2);
}

double log_binom_int(int64_t n, int64_t k) {
  return std::lgamma(static_cast<double>(n) + 1) - std::lgamma(static_cast<double>(k) + 1) -
         std::lgamma(static_cast<double>(n - k) + 1);
}

double log_a_int(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  for (int64_t i = 0; i <= alpha; ++i) {
    const double di = static_cast<double>(i);
    const double log_coef = log_binom_int(alpha, i) + di * std::log(q) +
                            static_cast<double>(alpha - i) * std::log1p(-q);
    log_a = log_add(log_a, log_coef + (di * di - di) / (2 * sigma * sigma));
  }
  return log_a;
}

double log_a_frac(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  // binom(alpha, i) for real alpha, by its recurrence: |coef| in logs, the sign apart.
  double log_abs_coef = 0;
  bool positive = true;
  for (int64_t i = 0;; ++i) {
    if (i > 0) {
      const double factor = (alpha - static_cast<double>(i - 1)) / static_cast<double>(i);
      if (factor < 0) positive = !positive;
      log_abs_coef += std::log(std::abs(factor));
    }
    const double di = static_cast<double>(i);
    const double j = alpha - di;
    const double log_t0 = log_abs_coef + di * std::log(q) + j * std::log1p(-q);
    const double log_t1 = log_abs_coef + j * std::log(q) + di * std::log1p(-q);
    const double log_e0 = std::log(0.5) + log_erfc((di - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + log_erfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (di * di - di) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (positive) {
      log_a0 = log_add(log_a0, log_s0);
      log_a1 = log_add(log_a1, log_s1);
    } else {
      log_a0 = log_sub(log_a0, log_s0);
      log_a1 = log_sub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30 || i > 100000) break;
  }
  return log_add(log_a0, log_a1);
}

double rdp_one(double q, double sigma, double alpha) {
  if (q == 0) return 0;
  if (sigma == 0 || std::isinf(alpha)) return kInf;
  if (q == 1.0) return alpha / (2 * sigma * sigma);
  const double log_a = (alpha == std::floor(alpha))
                           ? log_a_int(q, sigma, static_cast<int64_t>(alpha))
                           : log_a_frac(q, sigma, alpha);
  return log_a / (alpha - 1);
}

}  // namespace

std::vector<double> default_rdp_orders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

std::vector<double> compute_rdp(double q, double sigma, int64_t steps,
                                const std::vector<double>& orders) {
  std::vector<double> out;
  out.reserve(orders.size());
  for (double a : orders) out.push_back(rdp_one(q, sigma, a) * static_cast<double>(steps));
  return out;
}

PrivacySpent privacy_spent(const std::vector<double>& orders, const std::vector<double>& rdp,
                           double delta) {
  PrivacySpent best{kInf, 0};
  for (size_t i = 0; i < orders.size() && i < rdp.size(); ++i) {
    const double a = orders[i];
    const double eps = rdp[i] - (std::log(delta) + std::log(a)) / (a - 1) + std::log((a - 1) / a);
    if (std::isnan(eps)) continue;
    if (eps < best.epsilon) best = {eps, a};
  }
  if (best.epsilon < 0) best.epsilon = 0;  // delta >= 1-ish: nothing spent that matters
  return best;
}

void RdpAccountant::step(double q, double sigma, int64_t steps) {
  if (steps <= 0) return;
  if (!history_.empty() && history_.back().q == q && history_.back().sigma == sigma) {
    history_.back().steps += steps;
  } else {
    history_.push_back({q, sigma, steps});
  }
}

int64_t RdpAccountant::steps() const {
  int64_t n = 0;
  for (const auto& s : history_) n += s.steps;
  return n;
}

std::vector<double> RdpAccountant::rdp() const {
  std::vector<double> total(orders_.size(), 0.0);
  for (const auto& s : history_) {
    std::vector<double> r = compute_rdp(s.q, s.sigma, s.steps, orders_);
    for (size_t i = 0; i < total.size(); ++i) total[i] += r[i];
  }
  return total;
}

PrivacySpent RdpAccountant::spent(double delta) const {
  if (history_.empty()) return {0, 0};
  return privacy_spent(orders_, rdp(), delta);
}

nlohmann::json RdpAccountant::to_json() const {
  nlohmann::json h = nlohmann::json::array();
  for (const auto& s : history_) h.push_back({{"q", s.q}, {"sigma", s.sigma}, {"steps", s.steps}});
  return {{"history", h}};
}

Result<RdpAccountant> RdpAccountant::from_json(const nlohmann::json& j, const std::string& what) {
  RdpAccountant a;
  if (!j.is_object() || !j.contains("history") || !j["history"].is_array()) {
    return invalid_argument(what +
                            ": privacy accountant: 'history' must be a list of {q, sigma, steps}");
  }
  int i = 0;
  for (const auto& s : j["history"]) {
    const std::string at = what + ": privacy accountant history[" + std::to_string(i++) + "]";
    if (!s.is_object() || !s.contains("q") || !s.contains("sigma") || !s.contains("steps") ||
        !s["q"].is_number() || !s["sigma"].is_number() || !s["steps"].is_number_integer()) {
      return invalid_argument(at + " must be {q: number, sigma: number, steps: integer}");
    }
    const double q = s["q"].get<double>(), sigma = s["sigma"].get<double>();
    const int64_t steps = s["steps"].get<int64_t>();
    if (!(q >= 0 && q <= 1))
      return invalid_argument(at + ".q must be in [0, 1], got " + std::to_string(q));
    if (!(sigma >= 0) || std::isinf(sigma))
      return invalid_argument(at + ".sigma must be >= 0, got " + std::to_string(sigma));
    if (steps < 0)
      return invalid_argument(at + ".steps must be >= 0, got " + std::to_string(steps));
    a.step(q, sigma, steps);
  }
  return a;
}

}  // namespace tern
