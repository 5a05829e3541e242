#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "sync/auto_plan.h"
#include "sync/strategy.h"

namespace tern {
namespace {

using SteadyClock = std::chrono::steady_clock;

std::string piece_name(size_t fragment, size_t piece) {
  return std::to_string(fragment) + "/" + std::to_string(piece);
}

}  // namespace

PeriodicAveragingStrategy::PeriodicAveragingStrategy(
    Communicator& comm, PeriodicOptions options, std::vector<at::Tensor>* momentum,
    GradientReducer* reducer,
    std::function<Result<std::unique_ptr<GradientReducer>>()> make_reducer)
    : comm_(comm),
      options_(std::move(options)),
      period_(options_.period),
      delay_(options_.kind == StrategyKind::kTsu ? 0 : options_.delay),
      planned_(!options_.delay_auto && !options_.period_auto),
      momentum_(momentum),
      dense_(comm, options_.bucket_bytes),
      reducer_(reducer != nullptr ? *reducer : dense_),
      make_reducer_(std::move(make_reducer)) {
  if (!planned_) {
    // The probe: syncs at the given period, or the probe period when T is auto, delayed so
    // their collectives run beside training (probe_delay()).
    if (options_.period_auto) period_ = std::max(kProbePeriod, options_.fragments);
    delay_ = probe_delay();
  }
  plan_state_ =
      at::tensor({planned_ ? 1.0 : 0.0, static_cast<double>(delay_), static_cast<double>(period_)},
                 at::kDouble);
}

int64_t PeriodicAveragingStrategy::probe_delay() const {
  if (options_.kind == StrategyKind::kTsu) return 0;
  const int64_t longest = std::max<int64_t>(0, period_ - 1);  // one sync in flight per fragment
  return options_.delay_auto ? longest
                             : (identity() ? options_.delay : std::min(options_.delay, longest));
}

void PeriodicAveragingStrategy::poll_probe_syncs() {
  for (auto& f : frags_) {
    for (auto& in : f.in_flight) {
      if (in.ready_s < 0 && in.pending->ready()) in.ready_s = seconds_since(in.started);
    }
  }
}

void PeriodicAveragingStrategy::set_phases() {
  const int64_t n = static_cast<int64_t>(frags_.size());
  for (int64_t f = 0; f < n; ++f)
    frags_[static_cast<size_t>(f)].phase = (f * period_ / n) % period_;
}

Status PeriodicAveragingStrategy::begin(std::vector<at::Tensor>& params) {
  if (frags_.empty()) {
    TERN_ASSIGN_OR_RETURN(std::vector<Fragment> layout,
                          split_fragments(params, options_.fragments));
    frags_.resize(layout.size());
    for (size_t f = 0; f < layout.size(); ++f) {
      frags_[f].pieces = std::move(layout[f]);
      if (f == 0) {
        frags_[f].reducer = &reducer_;
      } else {
        if (!make_reducer_) {
          return failed_precondition("sync.fragments " + std::to_string(options_.fragments) +
                                     ": no reducer factory to give each fragment its own reducer");
        }
        TERN_ASSIGN_OR_RETURN(frags_[f].owned, make_reducer_());
        frags_[f].reducer = frags_[f].owned.get();
      }
      if (!identity()) {
        for (const auto& v : fragment_views(params, frags_[f].pieces))
          frags_[f].outer_m.push_back(at::zeros_like(v));
      }
    }
    set_phases();
  }
  // (Re)start from `params`: the outer momentum and the plan are kept, in-flight syncs dropped.
  for (auto& f : frags_) {
    f.in_flight.clear();
    f.last.clear();
    for (const auto& v : fragment_views(params, f.pieces)) f.last.push_back(v.clone());
    f.last_start = -1;
  }
  last_step_ = -1;
  have_step_end_ = false;
  if (!trials_.empty()) {  // the trial windows start over
    trial_window_ = -1;
    trial_s_.assign(trials_.size(), 0.0);
    delay_ = trials_[0];
  }
  return Status::ok();
}

int64_t PeriodicAveragingStrategy::wire_bytes() const {
  int64_t n = 0;
  for (const auto& f : frags_) n += f.reducer->stats().wire_bytes;
  return n;
}

Status PeriodicAveragingStrategy::average_momentum(const Frag& f) {
  if (!options_.average_momentum || momentum_ == nullptr) return Status::ok();
  std::vector<at::Tensor> defined;
  for (const auto& piece : f.pieces) {
    if (piece.param < momentum_->size() && (*momentum_)[piece.param].defined()) {
      defined.push_back(piece_view(*momentum_, piece));
    }
  }
  auto t0 = SteadyClock::now();
  Status s = average_tensors(comm_, defined, options_.bucket_bytes);
  metrics_.wait_s += seconds_since(t0);
  return s;
}

Status PeriodicAveragingStrategy::start_sync(Frag& f, int64_t step,
                                             std::vector<at::Tensor>& params) {
  auto t0 = SteadyClock::now();
  const int64_t bytes0 = wire_bytes();
  InFlight in;
  in.step = step;
  in.started = t0;
  std::vector<at::Tensor> views = fragment_views(params, f.pieces);
  for (size_t i = 0; i < views.size(); ++i) {
    in.local.push_back(views[i] - f.last[i]);
    // Plain averaging tracks this rank's own parameters; the outer model stays put until the
    // outer step.
    if (identity()) f.last[i].copy_(views[i]);
  }
  in.pending = f.reducer->start(in.local, step);
  in.start_bytes = wire_bytes() - bytes0;
  f.last_start = step;
  TERN_RETURN_IF_ERROR(average_momentum(f));
  if (!planned_) probe_overhead_s_ += probe_syncs_ > 0 ? seconds_since(t0) : 0;
  f.in_flight.push_back(std::move(in));
  return Status::ok();
}

Status PeriodicAveragingStrategy::apply(Frag& f, InFlight& in, std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> mean;
  for (const auto& t : in.local) mean.push_back(at::empty_like(t));
  const int64_t bytes0 = wire_bytes();
  auto t0 = SteadyClock::now();
  Status s = in.pending->finish(mean);
  const double waited = seconds_since(t0);
  metrics_.wait_s += waited;
  TERN_RETURN_IF_ERROR(s);
  peak_sync_bytes_ = std::max(peak_sync_bytes_, in.start_bytes + wire_bytes() - bytes0);
  auto t1 = SteadyClock::now();
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> views = fragment_views(params, f.pieces);
  if (identity()) {
    for (size_t i = 0; i < views.size(); ++i) {
      at::Tensor correction = mean[i].sub_(in.local[i]);  // mean(delta) - delta_j
      views[i].add_(correction);
      f.last[i].add_(correction);
    }
  } else {
    // Local progress since the sync started (exactly 0 when nothing ran in between).
    std::vector<at::Tensor> progress;
    for (size_t i = 0; i < views.size(); ++i)
      progress.push_back(views[i].sub(f.last[i]).sub_(in.local[i]));
    outer_step(options_.outer, f.last, f.outer_m, mean);
    for (size_t i = 0; i < views.size(); ++i) views[i].copy_(f.last[i] + progress[i]);
  }
  ++metrics_.syncs;
  if (!planned_) {
    // The first probe sync warms up connections and buffers: measured from the second on. The
    // collective's time: from its start to the first step end that saw it complete, or to now
    // when it was still running (then the wait above covered the rest).
    if (probe_syncs_ > 0) {
      probe_wait_s_ += in.ready_s >= 0 ? in.ready_s : seconds_since(in.started);
      probe_overhead_s_ += seconds_since(t1);
    }
    ++probe_syncs_;
  }
  return Status::ok();
}

Status PeriodicAveragingStrategy::apply_oldest(Frag& f, int64_t step,
                                               std::vector<at::Tensor>& params) {
  InFlight in = std::move(f.in_flight.front());
  f.in_flight.pop_front();
  staleness_sum_ += static_cast<double>(step - in.step);
  TERN_RETURN_IF_ERROR(apply(f, in, params));
  metrics_.staleness = staleness_sum_ / static_cast<double>(metrics_.syncs);
  return Status::ok();
}

Status PeriodicAveragingStrategy::after_step(int64_t step, std::vector<at::Tensor>& params) {
  if (frags_.empty() || frags_[0].last.empty()) {
    return failed_precondition(name() + ": begin() was not called before the first step");
  }
  if (have_step_end_ && !planned_) {
    probe_step_s_ += seconds_since(step_end_);
    ++probe_steps_;
  }
  last_step_ = step;
  if (!planned_) poll_probe_syncs();
  for (auto& f : frags_) {
    // Finish the sync started d steps ago (at most one per step and fragment when d > 0).
    while (!f.in_flight.empty() && step - f.in_flight.front().step >= delay_) {
      TERN_RETURN_IF_ERROR(apply_oldest(f, step, params));
      if (delay_ > 0) break;
    }
    if ((step + 1) % period_ != f.phase) continue;
    // An outer step needs the previous one applied (its delta is taken against the outer model).
    // Only a new plan can leave one in flight here: a probe sync whose delay outlasts the period.
    while (!identity() && !f.in_flight.empty()) TERN_RETURN_IF_ERROR(apply_oldest(f, step, params));
    TERN_RETURN_IF_ERROR(start_sync(f, step, params));
    if (delay_ == 0) TERN_RETURN_IF_ERROR(apply_oldest(f, step, params));
  }
  TERN_RETURN_IF_ERROR(advance_trials(step));
  TERN_RETURN_IF_ERROR(plan_if_due(step));
  step_end_ = SteadyClock::now();
  have_step_end_ = true;
  return Status::ok();
}

Status PeriodicAveragingStrategy::plan_if_due(int64_t step) {
  const int64_t n = static_cast<int64_t>(frags_.size());
  if (planned_ || probe_syncs_ < kProbeSyncsPerFragment * n) return Status::ok();
  // The slowest rank's figures, so every rank plans the same d and T.
  const double measured_syncs = static_cast<double>(std::max<int64_t>(1, probe_syncs_ - 1));
  std::vector<at::Tensor> t{
      at::tensor({probe_step_s_ / static_cast<double>(std::max<int64_t>(1, probe_steps_)),
                  probe_wait_s_ / measured_syncs, probe_overhead_s_ / measured_syncs},
                 at::kDouble)};
  auto t0 = SteadyClock::now();
  TERN_RETURN_IF_ERROR(
      all_reduce_sync(comm_, t, ReduceOp::kMax).with_context("automatic sync plan"));
  metrics_.wait_s += seconds_since(t0);
  AutoPlanInputs in;
  in.step_s = t[0][0].item<double>();
  in.wait_s = t[0][1].item<double>();
  in.overhead_s = t[0][2].item<double>();
  in.fragments = n;
  in.target_share = options_.auto_wait_share;
  in.fixed_delay =
      options_.kind == StrategyKind::kTsu ? 0 : (options_.delay_auto ? -1 : options_.delay);
  in.fixed_period = options_.period_auto ? -1 : options_.period;
  in.outer = !identity();
  AutoPlan plan = choose_delay_period(in);
  delay_ = plan.delay;
  period_ = plan.period;
  planned_ = true;
  set_phases();
  plan_state_.copy_(
      at::tensor({1.0, static_cast<double>(delay_), static_cast<double>(period_)}, at::kDouble));
  metrics_.extra["auto_step_s"] = in.step_s;
  metrics_.extra["auto_wait_s"] = in.wait_s;
  metrics_.extra["auto_overhead_s"] = in.overhead_s;
  metrics_.extra["auto_expected_share"] = plan.expected_share;
  metrics_.extra["auto_planned_at_step"] = static_cast<double>(step);
  spdlog::info("sync plan at step {} ({} probe syncs over {} steps): {}", step, probe_syncs_,
               probe_steps_, plan.summary);
  if (options_.delay_auto && options_.auto_trials) {
    trials_ = delay_trials(delay_);
    if (trials_.size() < 2) trials_.clear();
    trial_s_.assign(trials_.size(), 0.0);
    trial_window_ = -1;
    if (!trials_.empty()) {
      spdlog::info("sync plan: trying delays {} for one period ({} steps) each, {} rounds",
                   fmt::join(trials_, ", "), period_, kTrialRounds);
    }
  }
  return Status::ok();
}

Status PeriodicAveragingStrategy::advance_trials(int64_t step) {
  if (trials_.empty() || (step + 1) % period_ != frags_[0].phase) return Status::ok();
  const auto now = SteadyClock::now();
  const auto n = static_cast<int64_t>(trials_.size());
  if (trial_window_ >= 0) {
    trial_s_[static_cast<size_t>(trial_window_ % n)] +=
        std::chrono::duration<double>(now - window_start_).count();
  }
  ++trial_window_;
  if (trial_window_ < n * kTrialRounds) {  // round after round, the largest delay first
    delay_ = trials_[static_cast<size_t>(trial_window_ % n)];
    window_start_ = now;
    return Status::ok();
  }
  // Every window measured: the slowest rank's time of each, so every rank keeps the same delay.
  std::vector<at::Tensor> t{at::tensor(trial_s_, at::kDouble)};
  TERN_RETURN_IF_ERROR(
      all_reduce_sync(comm_, t, ReduceOp::kMax).with_context("automatic delay trials"));
  metrics_.wait_s += seconds_since(now);
  const std::vector<double> seconds(t[0].data_ptr<double>(), t[0].data_ptr<double>() + n);
  delay_ = choose_trial_delay(trials_, seconds, kTrialTolerance);
  plan_state_[1] = static_cast<double>(delay_);
  metrics_.extra["auto_model_delay"] = static_cast<double>(trials_[0]);
  metrics_.extra["auto_tried_at_step"] = static_cast<double>(step);
  std::string tried;
  for (int64_t i = 0; i < n; ++i) {
    tried += fmt::format("{}d {}: {:.3f} s", i == 0 ? "" : ", ", trials_[static_cast<size_t>(i)],
                         seconds[static_cast<size_t>(i)]);
  }
  spdlog::info(
      "sync plan at step {}: delay {} ({} windows of {} steps each, the slowest rank's time: {}; "
      "the smallest delay within {:.0f} % of the fastest)",
      step, delay_, kTrialRounds, period_, tried, 100 * kTrialTolerance);
  trials_.clear();
  return Status::ok();
}

void PeriodicAveragingStrategy::exclude_time(double seconds) {
  const auto skip =
      std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(seconds));
  step_end_ += skip;
  window_start_ += skip;
}

Status PeriodicAveragingStrategy::drain(std::vector<at::Tensor>& params) {
  for (auto& f : frags_) {
    while (!f.in_flight.empty()) {
      InFlight in = std::move(f.in_flight.front());
      f.in_flight.pop_front();
      TERN_RETURN_IF_ERROR(apply(f, in, params));
    }
  }
  auto t0 = SteadyClock::now();
  if (identity()) {
    std::vector<at::Tensor> data;
    for (auto& p : params) data.push_back(p.data());
    Status s = average_tensors(comm_, data, options_.bucket_bytes);
    metrics_.wait_s += seconds_since(t0);
    for (auto& f : frags_) {
      std::vector<at::Tensor> views = fragment_views(params, f.pieces);
      for (size_t i = 0; i < views.size(); ++i) f.last[i].copy_(views[i]);
    }
    return s;
  }
  // Outer model: what each rank trained since its fragment's newest sync started (none when it
  // started after the last step) is averaged through the fragment's reducer onto the outer model,
  // which every rank holds identically, so the replicas end identical.
  at::NoGradGuard no_grad;
  for (auto& f : frags_) {
    if (last_step_ <= f.last_start) continue;
    std::vector<at::Tensor> views = fragment_views(params, f.pieces);
    std::vector<at::Tensor> residual, mean;
    for (size_t i = 0; i < views.size(); ++i) {
      residual.push_back(views[i] - f.last[i]);
      mean.push_back(at::empty_like(residual.back()));
    }
    TERN_RETURN_IF_ERROR(
        f.reducer->start(residual, last_step_)->finish(mean).with_context("drain"));
    for (size_t i = 0; i < views.size(); ++i) {
      f.last[i].add_(mean[i]);
      views[i].copy_(f.last[i]);
    }
    f.last_start = last_step_;
  }
  metrics_.wait_s += seconds_since(t0);
  return Status::ok();
}

SyncMetrics PeriodicAveragingStrategy::metrics() const {
  SyncMetrics m = metrics_;
  m.extra["delay"] = static_cast<double>(delay_);
  m.extra["period"] = static_cast<double>(period_);
  m.extra["fragments"] = static_cast<double>(frags_.size());
  m.extra["peak_sync_bytes"] = static_cast<double>(peak_sync_bytes_);
  return m;
}

NamedState PeriodicAveragingStrategy::replicated_state() {
  NamedState out;
  for (size_t f = 0; f < frags_.size(); ++f) {
    for (size_t i = 0; i < frags_[f].outer_m.size(); ++i) {
      out.emplace_back("outer_momentum/" + piece_name(f, i), frags_[f].outer_m[i]);
    }
  }
  if (options_.delay_auto || options_.period_auto) out.emplace_back(kAutoPlanState, plan_state_);
  return out;
}

Status PeriodicAveragingStrategy::load_replicated_state(const NamedState& state) {
  // Without a plan in `state` (not planned yet, or a regroup): plan again.
  TERN_RETURN_IF_ERROR(load_named_state(state, replicated_state(), {kAutoPlanState}));
  if ((options_.delay_auto || options_.period_auto) && plan_state_[0].item<double>() > 0.5) {
    planned_ = true;
    trials_.clear();
    delay_ = static_cast<int64_t>(plan_state_[1].item<double>());
    period_ = static_cast<int64_t>(plan_state_[2].item<double>());
    set_phases();
  }
  return Status::ok();
}

ReplicaView PeriodicAveragingStrategy::replica_view() {
  ReplicaView v;
  // The outer model moves only by outer steps on the all-reduced (identical) pseudo-gradient; plain
  // averaging's sync point is w_j + (mean - delta_j), equal on every rank only up to rounding.
  if (!identity()) {
    for (size_t f = 0; f < frags_.size(); ++f) {
      for (size_t i = 0; i < frags_[f].last.size(); ++i) {
        v.sync_point.emplace_back("sync_point/" + piece_name(f, i), frags_[f].last[i]);
      }
    }
  }
  v.state = replicated_state();
  return v;
}

NamedState PeriodicAveragingStrategy::rank_state() {
  NamedState out;
  for (size_t f = 1; f < frags_.size(); ++f) {
    for (auto& [name, t] : frags_[f].reducer->state()) {
      out.emplace_back("fragment" + std::to_string(f) + "/" + name, t);
    }
  }
  return out;
}

Status PeriodicAveragingStrategy::load_rank_state(const NamedState& state) {
  for (size_t f = 1; f < frags_.size(); ++f) {
    const std::string prefix = "fragment" + std::to_string(f) + "/";
    NamedState mine;
    for (const auto& [name, t] : state) {
      if (name.rfind(prefix, 0) == 0) mine.emplace_back(name.substr(prefix.size()), t);
    }
    TERN_RETURN_IF_ERROR(
        frags_[f].reducer->load_state(mine).with_context("fragment " + std::to_string(f)));
  }
  return Status::ok();
}

}  // namespace tern
