// Automatic delay d and period T for the periodic strategies (`sync.delay: auto`,
// `sync.period: auto`). The strategy measures, over its first syncs (delayed d = T - 1 so they
// overlap training; strategy.h):
//   t  the time of one training step without sync work (compute, optimizer, data),
//   w  the time one sync's collective takes (the part a delay can hide),
//   h  the time one sync costs the training thread whatever the delay (taking the delta,
//      encoding it, applying the average).
// With F fragments a period of T steps holds F syncs, each waiting max(0, w - d*t) once d steps
// of compute have run beside its collective, so the expected share of time lost to sync is
//   share(d, T) = F * (h + max(0, w - d*t)) / (T * t).
// The plan takes the smallest period T of a ladder (a short period keeps replicas close, which
// is what accuracy needs) for which some delay d <= max_delay_share * T brings the share under
// the target, and the smallest such d (staleness costs accuracy more than the period does;
// README, WAN section). A fixed d or T (not auto) is kept as given. When no ladder step meets
// the target the largest period with its smallest-wait delay is taken and `met` is false.
//
// Then the delay is tried, not only modelled (`sync.auto_trials`, on by default). share(d, T)
// counts a rank's wait as lost time, which holds when each rank has its own cores; where ranks
// share cores a waiting rank hands its core to the others, and a collective that runs beside
// training slows it down, so a shorter delay can train as fast as the planned one. A shorter
// delay is what accuracy wants (less staleness), so the strategy runs each delay of
// delay_trials(d) for one period, largest first, kTrialRounds rounds, adds up each delay's
// seconds, and keeps the smallest delay within kTrialTolerance of the fastest
// (choose_trial_delay).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tern {

struct AutoPlanInputs {
  double step_s = 0;      // t
  double wait_s = 0;      // w, per sync
  double overhead_s = 0;  // h, per sync
  int64_t fragments = 1;  // F
  double target_share = 0.05;
  int64_t fixed_delay = -1;      // >= 0: d is not auto
  int64_t fixed_period = -1;     // >= 1: T is not auto
  double max_delay_share = 0.5;  // d <= this * T (an auto d never takes more than half a period)
  bool outer = false;            // an outer optimizer needs d < T
};

struct AutoPlan {
  int64_t delay = 0;
  int64_t period = 1;
  double expected_share = 0;  // share(d, T) of the plan
  bool met = false;           // expected_share <= target_share
  std::string summary;        // the inputs and the choice, for the log
};

double expected_sync_share(const AutoPlanInputs& in, int64_t delay, int64_t period);
AutoPlan choose_delay_period(const AutoPlanInputs& in);

// A delay whose windows took within this share of the fastest one's counts as equally fast.
// Timing noise on a shared machine is several per cent per window: every delay gets
// kTrialRounds windows, interleaved (d, 3d/4, d/2, d, ...), so a slow spell of the machine does
// not land on one delay only.
inline constexpr double kTrialTolerance = 0.03;
inline constexpr int64_t kTrialRounds = 2;

// The delays to try after planning d: d, 3d/4 and d/2 (rounded up), distinct, largest first.
// A single entry (d <= 1) means there is nothing to try.
std::vector<int64_t> delay_trials(int64_t planned_delay);

// The smallest of `delays` whose window took at most (1 + tolerance) times the fastest one's
// seconds (`seconds[i]` for `delays[i]`; both non-empty and of the same size).
int64_t choose_trial_delay(const std::vector<int64_t>& delays, const std::vector<double>& seconds,
                           double tolerance);

}  // namespace tern
