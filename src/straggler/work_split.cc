#include "straggler/work_split.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tern {

void SpeedEstimator::observe(int64_t samples, double seconds) {
  if (samples <= 0 || !(seconds > 0)) return;
  double v = static_cast<double>(samples) / seconds;
  speed_ = have_ ? alpha_ * v + (1.0 - alpha_) * speed_ : v;
  have_ = true;
}

std::vector<int64_t> proportional_split(int64_t total, const std::vector<double>& weights,
                                        int64_t min_each) {
  size_t n = weights.size();
  std::vector<int64_t> out(n, 0);
  if (n == 0 || total <= 0) return out;
  double smallest = 0;
  for (double w : weights) {
    if (std::isfinite(w) && w > 0 && (smallest == 0 || w < smallest)) smallest = w;
  }
  if (smallest == 0) smallest = 1.0;
  std::vector<double> w(n);
  for (size_t i = 0; i < n; ++i)
    w[i] = std::isfinite(weights[i]) && weights[i] > 0 ? weights[i] : smallest;

  int64_t floor_each = std::min<int64_t>(min_each, total / static_cast<int64_t>(n));
  int64_t rest = total - floor_each * static_cast<int64_t>(n);
  double sum = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<double> remainder(n);
  int64_t given = 0;
  for (size_t i = 0; i < n; ++i) {
    double exact = static_cast<double>(rest) * w[i] / sum;
    int64_t whole = static_cast<int64_t>(std::floor(exact));
    out[i] = floor_each + whole;
    remainder[i] = exact - static_cast<double>(whole);
    given += whole;
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return remainder[a] > remainder[b]; });
  for (size_t k = 0; given < rest; k = (k + 1) % n, ++given) ++out[order[k]];
  return out;
}

std::vector<int64_t> share_offsets(const std::vector<int64_t>& shares) {
  std::vector<int64_t> off(shares.size() + 1, 0);
  for (size_t i = 0; i < shares.size(); ++i) off[i + 1] = off[i] + shares[i];
  return off;
}

}  // namespace tern
