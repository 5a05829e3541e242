// Speed-proportional work (S2C2-style, docs/algorithms.md §6.2): per-rank speed estimates from
// recent step times and the split of a global batch into shares proportional to them.
// Pure functions and a small value type: no communication, thread-compatible.
#pragma once

#include <cstdint>
#include <vector>

namespace tern {

// EWMA of a rank's throughput (samples per second of compute, injected delay included).
class SpeedEstimator {
 public:
  explicit SpeedEstimator(double alpha) : alpha_(alpha) {}
  // One computed step: `samples` processed in `seconds`. Ignored when either is not positive.
  void observe(int64_t samples, double seconds);
  bool has_estimate() const { return have_; }
  // Samples per second; 0 before the first observation.
  double speed() const { return have_ ? speed_ : 0.0; }

 private:
  double alpha_;
  double speed_ = 0;
  bool have_ = false;
};

// Splits `total` items into weights.size() integer shares proportional to `weights`
// (largest remainder; ties to the lower index), each at least `min_each` when total allows.
// Non-positive or non-finite weights count as the smallest positive weight (a rank never
// silently gets nothing because its estimate is missing). Deterministic: every rank that
// passes the same inputs gets the same split.
std::vector<int64_t> proportional_split(int64_t total, const std::vector<double>& weights,
                                        int64_t min_each = 1);

// Offsets of consecutive shares: offsets[i] = sum of shares[0..i), size shares.size() + 1.
std::vector<int64_t> share_offsets(const std::vector<int64_t>& shares);

}  // namespace tern
