#include <chrono>

#include "comm/counting_communicator.h"
#include "common/clock.h"
#include "sync/strategy.h"

namespace tern {
namespace {

at::Tensor flat_delta(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& last) {
  std::vector<at::Tensor> d;
  for (size_t i = 0; i < params.size(); ++i) d.push_back(params[i].detach() - last[i]);
  return flatten_all(d);
}

}  // namespace

HierarchicalStrategy::HierarchicalStrategy(std::shared_ptr<Communicator> intra,
                                           std::shared_ptr<Communicator> inter, int64_t period,
                                           int64_t delay, int64_t bucket_bytes, OuterSpec outer)
    : intra_(std::move(intra)),
      inter_(std::move(inter)),
      period_(period),
      delay_(delay),
      outer_(outer),
      intra_reducer_(*intra_, bucket_bytes) {}

Status HierarchicalStrategy::begin(std::vector<at::Tensor>& params) {
  last_.clear();
  in_flight_.clear();
  for (const auto& p : params) last_.push_back(p.detach().clone());
  if (!outer_.identity() && outer_m_.empty()) {
    for (const auto& p : params) outer_m_.push_back(at::zeros_like(p.detach()));
  }
  return Status::ok();
}

NamedState HierarchicalStrategy::replicated_state() {
  NamedState out;
  for (size_t i = 0; i < outer_m_.size(); ++i)
    out.emplace_back("outer_momentum/" + std::to_string(i), outer_m_[i]);
  return out;
}

ReplicaView HierarchicalStrategy::replica_view() {
  ReplicaView v;
  // With an outer optimizer every rank runs the same outer step on the leaders' all-reduced delta;
  // plain averaging leaves each region its own rounding (regions agree up to it, not bit for bit).
  if (!outer_.identity()) {
    for (size_t i = 0; i < last_.size(); ++i)
      v.sync_point.emplace_back("sync_point/" + std::to_string(i), last_[i]);
  }
  v.state = replicated_state();
  return v;
}

Status HierarchicalStrategy::load_replicated_state(const NamedState& state) {
  return load_named_state(state, replicated_state());
}

Status HierarchicalStrategy::on_gradients(int64_t step, std::vector<at::Tensor>& grads) {
  auto t0 = std::chrono::steady_clock::now();
  auto pending = intra_reducer_.start(grads, step);
  Status s = pending->finish(grads);
  metrics_.wait_s += seconds_since(t0);
  metrics_.extra["intra_wait_s"] += seconds_since(t0);
  return s;
}

Status HierarchicalStrategy::finish_oldest(std::vector<at::Tensor>& params) {
  InFlight f = std::move(in_flight_.front());
  in_flight_.pop_front();
  auto t0 = std::chrono::steady_clock::now();
  if (!outer_.identity()) return finish_outer(f, params, t0);
  at::Tensor correction;
  if (leader()) {
    TERN_RETURN_IF_ERROR(f.work->wait(inter_->timeout()));
    int64_t n = f.local.numel();
    at::Tensor mean = f.flat.narrow(0, 0, n) / f.flat[n];
    correction = mean - f.local;
  } else {
    int64_t n = 0;
    for (const auto& p : params) n += p.numel();
    correction = at::empty({n}, params[0].options());
  }
  metrics_.extra["inter_wait_s"] += seconds_since(t0);
  // The leader is rank 0 of its region: it hands the region's correction to its members.
  std::vector<at::Tensor> c{correction};
  TERN_RETURN_IF_ERROR(broadcast_sync(*intra_, c, 0));
  metrics_.wait_s += seconds_since(t0);
  std::vector<at::Tensor> parts;
  for (const auto& p : params) parts.push_back(at::empty_like(p));
  unflatten_all(c[0], parts);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].data().add_(parts[i]);
    last_[i].add_(parts[i]);
  }
  ++metrics_.syncs;
  return Status::ok();
}

Status HierarchicalStrategy::finish_outer(InFlight& f, std::vector<at::Tensor>& params,
                                          std::chrono::steady_clock::time_point t0) {
  // The leader hands its region the averaged delta; every rank (all hold the region's delta)
  // runs the same outer step on the same input.
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  at::Tensor mean;
  if (leader()) {
    TERN_RETURN_IF_ERROR(f.work->wait(inter_->timeout()));
    mean = f.flat.narrow(0, 0, n) / f.flat[n];
  } else {
    mean = at::empty({n}, params[0].options());
  }
  metrics_.extra["inter_wait_s"] += seconds_since(t0);
  std::vector<at::Tensor> m{mean};
  TERN_RETURN_IF_ERROR(broadcast_sync(*intra_, m, 0));
  metrics_.wait_s += seconds_since(t0);
  std::vector<at::Tensor> mean_parts, local_parts;
  for (const auto& p : params) {
    mean_parts.push_back(at::empty_like(p));
    local_parts.push_back(at::empty_like(p));
  }
  unflatten_all(m[0], mean_parts);
  unflatten_all(f.local, local_parts);
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> progress;
  for (size_t i = 0; i < params.size(); ++i) {
    progress.push_back(params[i].detach().sub(last_[i]).sub_(local_parts[i]));
  }
  outer_step(outer_, last_, outer_m_, mean_parts);
  for (size_t i = 0; i < params.size(); ++i) params[i].data().copy_(last_[i] + progress[i]);
  ++metrics_.syncs;
  return Status::ok();
}

Status HierarchicalStrategy::after_step(int64_t step, std::vector<at::Tensor>& params) {
  if (last_.empty())
    return failed_precondition("hierarchical: begin() was not called before the first step");
  while (!in_flight_.empty() && step - in_flight_.front().step >= delay_) {
    staleness_sum_ += static_cast<double>(step - in_flight_.front().step);
    TERN_RETURN_IF_ERROR(finish_oldest(params));
    metrics_.staleness = staleness_sum_ / static_cast<double>(metrics_.syncs);
    if (delay_ > 0) break;
  }
  if ((step + 1) % period_ != 0) return Status::ok();
  InFlight f;
  f.step = step;
  if (!outer_.identity()) f.local = flat_delta(params, last_);  // every rank: its region's delta
  if (leader()) {
    if (!f.local.defined()) f.local = flat_delta(params, last_);
    double members = static_cast<double>(intra_->size());
    f.flat = at::cat({f.local * members, at::full({1}, members, f.local.options())});
    std::vector<at::Tensor> t{f.flat};
    f.work = inter_->all_reduce(t, ReduceOp::kSum);
  }
  // Plain averaging tracks this rank's own parameters; the outer model stays put until its step.
  if (outer_.identity()) {
    for (size_t i = 0; i < params.size(); ++i) last_[i].copy_(params[i].detach());
  }
  in_flight_.push_back(std::move(f));
  if (delay_ == 0) {
    TERN_RETURN_IF_ERROR(finish_oldest(params));
    metrics_.staleness = staleness_sum_ / static_cast<double>(metrics_.syncs);
  }
  return Status::ok();
}

Status HierarchicalStrategy::drain(std::vector<at::Tensor>& params) {
  while (!in_flight_.empty()) TERN_RETURN_IF_ERROR(finish_oldest(params));
  // Average the parameters across regions (weighted by region size), then within the region.
  auto t0 = std::chrono::steady_clock::now();
  std::vector<at::Tensor> data;
  for (auto& p : params) data.push_back(p.detach());
  at::Tensor flat = flatten_all(data);
  if (leader()) {
    double members = static_cast<double>(intra_->size());
    at::Tensor buf = at::cat({flat * members, at::full({1}, members, flat.options())});
    std::vector<at::Tensor> t{buf};
    TERN_RETURN_IF_ERROR(all_reduce_sync(*inter_, t));
    flat = buf.narrow(0, 0, flat.numel()) / buf[flat.numel()];
  }
  std::vector<at::Tensor> b{flat};
  TERN_RETURN_IF_ERROR(broadcast_sync(*intra_, b, 0));
  at::NoGradGuard no_grad;
  unflatten_all(b[0], data);
  for (size_t i = 0; i < params.size(); ++i) last_[i].copy_(params[i].detach());
  metrics_.wait_s += seconds_since(t0);
  return Status::ok();
}

}  // namespace tern
