#include "sync/auto_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace tern {

double expected_sync_share(const AutoPlanInputs& in, int64_t delay, int64_t period) {
  const double t = std::max(in.step_s, 1e-9);
  const double wait = std::max(0.0, in.wait_s - static_cast<double>(delay) * t);
  return static_cast<double>(in.fragments) * (in.overhead_s + wait) /
         (static_cast<double>(period) * t);
}

AutoPlan choose_delay_period(const AutoPlanInputs& in) {
  std::vector<int64_t> periods;
  if (in.fixed_period >= 1) {
    periods.push_back(in.fixed_period);
  } else {
    for (int64_t p : {2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024}) {
      if (p >= in.fragments) periods.push_back(p);
    }
    if (periods.empty()) periods.push_back(in.fragments);
  }
  auto delays_for = [&](int64_t period) {
    std::vector<int64_t> d;
    if (in.fixed_delay >= 0) {
      d.push_back(in.fixed_delay);
      return d;
    }
    int64_t cap =
        static_cast<int64_t>(std::floor(in.max_delay_share * static_cast<double>(period)));
    if (in.outer) cap = std::min(cap, period - 1);
    cap = std::max<int64_t>(cap, 0);
    for (int64_t x = 0; x <= cap; ++x) d.push_back(x);
    return d;
  };
  AutoPlan best;
  bool any = false;
  for (int64_t period : periods) {
    for (int64_t delay : delays_for(period)) {
      const double share = expected_sync_share(in, delay, period);
      // Not met: keep the lowest share seen (ties: the shorter period, the smaller delay).
      if (!any || share < best.expected_share - 1e-12) {
        best = {delay, period, share, false, ""};
        any = true;
      }
      if (share <= in.target_share) break;
    }
    if (best.expected_share <= in.target_share) break;
  }
  best.met = best.expected_share <= in.target_share;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "step %.4f s, collective wait %.4f s and overhead %.4f s per sync, %lld "
                "fragment(s), target wait "
                "share %.3f -> delay %lld%s, period %lld%s (expected share %.4f%s)",
                in.step_s, in.wait_s, in.overhead_s, static_cast<long long>(in.fragments),
                in.target_share, static_cast<long long>(best.delay),
                in.fixed_delay >= 0 ? " (fixed)" : "", static_cast<long long>(best.period),
                in.fixed_period >= 0 ? " (fixed)" : "", best.expected_share,
                best.met ? "" : "; the target cannot be met, taking the lowest share");
  best.summary = buf;
  return best;
}

std::vector<int64_t> delay_trials(int64_t planned_delay) {
  std::vector<int64_t> out;
  for (int64_t d : {planned_delay, (3 * planned_delay + 3) / 4, (planned_delay + 1) / 2}) {
    if (d >= 0 && (out.empty() || d < out.back())) out.push_back(d);
  }
  return out;
}

int64_t choose_trial_delay(const std::vector<int64_t>& delays, const std::vector<double>& seconds,
                           double tolerance) {
  const double fastest = *std::min_element(seconds.begin(), seconds.end());
  int64_t best = -1;
  for (size_t i = 0; i < delays.size() && i < seconds.size(); ++i) {
    if (seconds[i] <= (1.0 + tolerance) * fastest && (best < 0 || delays[i] < best))
      best = delays[i];
  }
  return best;
}

}  // namespace tern
