#include "recovery/cpr.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace tern {

double cpr_interval_samples(int64_t n_shards, double pls_target, double failures_per_sample) {
  return 2.0 * static_cast<double>(n_shards) * pls_target / failures_per_sample;
}

double expected_pls(double interval_samples, int64_t n_shards, double failures_per_sample) {
  return failures_per_sample * interval_samples / (2.0 * static_cast<double>(n_shards));
}

double young_daly_interval_s(double checkpoint_cost_s, double failures_per_second) {
  return std::sqrt(2.0 * checkpoint_cost_s / failures_per_second);
}

double full_recovery_overhead(double interval_s, double checkpoint_cost_s,
                              double failures_per_second, double restart_s) {
  return checkpoint_cost_s / interval_s + failures_per_second * (interval_s / 2.0 + restart_s);
}

Result<CheckpointPlan> plan_checkpoint_interval(const CheckpointPlanInputs& in) {
  auto positive = [](double v) { return std::isfinite(v) && v > 0; };
  if (in.n_shards < 1)
    return invalid_argument("cpr: n_shards must be >= 1, got " + std::to_string(in.n_shards));
  if (!positive(in.pls_target) || in.pls_target > 1) {
    return invalid_argument("cpr: recovery.pls_target must be in (0, 1], got " +
                            std::to_string(in.pls_target));
  }
  if (!positive(in.mtbf_s))
    return invalid_argument("cpr: mtbf_s must be > 0, got " + std::to_string(in.mtbf_s));
  if (!positive(in.samples_per_s)) {
    return invalid_argument("cpr: samples_per_s must be > 0, got " +
                            std::to_string(in.samples_per_s));
  }
  if (!(in.checkpoint_cost_s >= 0) || !std::isfinite(in.checkpoint_cost_s)) {
    return invalid_argument("cpr: checkpoint_cost_s must be >= 0, got " +
                            std::to_string(in.checkpoint_cost_s));
  }
  if (in.samples_per_step < 1) {
    return invalid_argument("cpr: samples_per_step must be >= 1, got " +
                            std::to_string(in.samples_per_step));
  }
  CheckpointPlan p;
  p.failures_per_second = 1.0 / in.mtbf_s;
  p.failures_per_sample = p.failures_per_second / in.samples_per_s;
  p.cpr_interval_samples = cpr_interval_samples(in.n_shards, in.pls_target, p.failures_per_sample);
  double steps = std::floor(p.cpr_interval_samples / static_cast<double>(in.samples_per_step));
  p.cpr_interval_steps = static_cast<int64_t>(std::clamp(steps, 1.0, 9.0e18));
  p.cpr_expected_pls = expected_pls(static_cast<double>(p.cpr_interval_steps * in.samples_per_step),
                                    in.n_shards, p.failures_per_sample);
  p.young_daly_interval_s = young_daly_interval_s(in.checkpoint_cost_s, p.failures_per_second);
  double yd_steps = std::round(p.young_daly_interval_s * in.samples_per_s /
                               static_cast<double>(in.samples_per_step));
  p.young_daly_interval_steps = static_cast<int64_t>(std::clamp(yd_steps, 1.0, 9.0e18));
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "CPR interval = 2*N*PLS/lambda = 2*%lld*%g/%.3g per sample = %.0f samples = %lld "
                "steps (expected PLS %.4g); Young/Daly = sqrt(2*C/lambda) = sqrt(2*%.3gs*%.3gs) = "
                "%.1f s = %lld steps",
                static_cast<long long>(in.n_shards), in.pls_target, p.failures_per_sample,
                p.cpr_interval_samples, static_cast<long long>(p.cpr_interval_steps),
                p.cpr_expected_pls, in.checkpoint_cost_s, in.mtbf_s, p.young_daly_interval_s,
                static_cast<long long>(p.young_daly_interval_steps));
  p.summary = buf;
  return p;
}

}  // namespace tern
