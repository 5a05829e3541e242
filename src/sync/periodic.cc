#include <chrono>

#include "sync/strategy.h"

namespace tern {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

PeriodicAveragingStrategy::PeriodicAveragingStrategy(Communicator& comm, std::string name, int64_t period,
                                                     int64_t delay, bool average_momentum,
                                                     std::vector<at::Tensor>* momentum, int64_t bucket_bytes,
                                                     GradientReducer* reducer)
    : comm_(comm), name_(std::move(name)), period_(period), delay_(delay), average_momentum_(average_momentum),
      momentum_(momentum), bucket_bytes_(bucket_bytes), dense_(comm, bucket_bytes),
      reducer_(reducer != nullptr ? *reducer : dense_) {}

Status PeriodicAveragingStrategy::apply(InFlight& f, std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> mean;
  for (const auto& t : f.local) mean.push_back(at::empty_like(t));
  auto t0 = std::chrono::steady_clock::now();
  Status s = f.pending->finish(mean);
  metrics_.wait_s += seconds_since(t0);
  TERN_RETURN_IF_ERROR(s);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor correction = mean[i].sub_(f.local[i]);  // mean(delta) - delta_j
    params[i].data().add_(correction);
    last_[i].add_(correction);
  }
  ++metrics_.syncs;
  return Status::ok();
}

Status PeriodicAveragingStrategy::begin(std::vector<at::Tensor>& params) {
  last_.clear();
  for (const auto& p : params) last_.push_back(p.detach().clone());
  return Status::ok();
}

Status PeriodicAveragingStrategy::after_step(int64_t step, std::vector<at::Tensor>& params) {
  if (last_.empty()) return failed_precondition(name_ + ": begin() was not called before the first step");
  // Finish the sync started d steps ago (at most one per step).
  while (!in_flight_.empty() && step - in_flight_.front().step >= delay_) {
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    staleness_sum_ += static_cast<double>(step - f.step);
    TERN_RETURN_IF_ERROR(apply(f, params));
    metrics_.staleness = staleness_sum_ / static_cast<double>(metrics_.syncs);
    if (delay_ > 0) break;
  }
  if ((step + 1) % period_ != 0) return Status::ok();
  InFlight f;
  f.step = step;
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor delta = params[i].detach() - last_[i];
    last_[i].copy_(params[i].detach());
    f.local.push_back(delta);
  }
  f.pending = reducer_.start(f.local, step);
  if (average_momentum_ && momentum_ != nullptr) {
    std::vector<at::Tensor> defined;
    for (auto& b : *momentum_) {
      if (b.defined()) defined.push_back(b);
    }
    auto t0 = std::chrono::steady_clock::now();
    TERN_RETURN_IF_ERROR(average_tensors(comm_, defined, bucket_bytes_));
    metrics_.wait_s += seconds_since(t0);
  }
  in_flight_.push_back(std::move(f));
  if (delay_ == 0) {
    InFlight now = std::move(in_flight_.front());
    in_flight_.pop_front();
    TERN_RETURN_IF_ERROR(apply(now, params));
    metrics_.staleness = staleness_sum_ / static_cast<double>(metrics_.syncs);
  }
  return Status::ok();
}

Status PeriodicAveragingStrategy::drain(std::vector<at::Tensor>& params) {
  while (!in_flight_.empty()) {
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    TERN_RETURN_IF_ERROR(apply(f, params));
  }
  auto t0 = std::chrono::steady_clock::now();
  std::vector<at::Tensor> data;
  for (auto& p : params) data.push_back(p.data());
  Status s = average_tensors(comm_, data, bucket_bytes_);
  metrics_.wait_s += seconds_since(t0);
  for (size_t i = 0; i < params.size() && i < last_.size(); ++i) last_[i].copy_(params[i].detach());
  return s;
}

}  // namespace tern
