#include "common/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace tern {

double scheduled_lr(const TrainSpec& t, int64_t step, int64_t total_steps) {
  step = std::max<int64_t>(step, 0);
  if (step < t.warmup_steps) {
    return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  }
  if (t.lr_schedule == LrScheduleKind::kCosine) {
    int64_t span = std::max<int64_t>(total_steps - t.warmup_steps, 1);
    double p =
        std::min(1.0, static_cast<double>(step - t.warmup_steps) / static_cast<double>(span));
    return t.lr_min + (t.lr - t.lr_min) * 0.5 * (1.0 + std::cos(M_PI * p));
  }
  if (t.lr_schedule == LrScheduleKind::kStep) {
    double lr = t.lr;
    for (double f : t.lr_decay_at) {
      if (static_cast<double>(step) >= f * static_cast<double>(total_steps)) lr *= t.lr_gamma;
    }
    return lr;
  }
  return t.lr;
}

}  // namespace tern
