#include <chrono>

#include "common/clock.h"
#include "sync/strategy.h"

namespace tern {
namespace {

std::vector<at::Tensor> clone_all(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.detach().clone());
  return out;
}

}  // namespace

DssgdStrategy::DssgdStrategy(Communicator& comm, GradientReducer* reducer, int64_t delay,
                             bool correction, int64_t bucket_bytes)
    : comm_(comm),
      reducer_(reducer),
      delay_(delay),
      correction_(correction),
      bucket_bytes_(bucket_bytes) {}

Status DssgdStrategy::on_gradients(int64_t step, std::vector<at::Tensor>& grads) {
  InFlight f;
  f.step = step;
  f.local = clone_all(grads);
  f.pending = reducer_->start(f.local, step);  // start() snapshots; f.local stays g(step)
  in_flight_.push_back(std::move(f));
  if (static_cast<int64_t>(in_flight_.size()) <= delay_) {
    // i < d: nothing to swap yet; apply the fresh local gradient (or, uncorrected, too).
    return Status::ok();
  }
  InFlight old = std::move(in_flight_.front());
  in_flight_.pop_front();
  std::vector<at::Tensor> global;  // G(step - d)
  global.reserve(old.local.size());
  for (const auto& t : old.local) global.push_back(at::empty_like(t));
  auto t0 = std::chrono::steady_clock::now();
  Status s = old.pending->finish(global);
  metrics_.wait_s += seconds_since(t0);
  TERN_RETURN_IF_ERROR(s);
  ++metrics_.syncs;
  staleness_sum_ += static_cast<double>(step - old.step);
  metrics_.staleness = staleness_sum_ / static_cast<double>(metrics_.syncs);
  for (size_t i = 0; i < grads.size(); ++i) {
    if (delay_ == 0) {
      grads[i].copy_(global[i]);
    } else if (correction_) {
      // g(i) + (G(i-d) - g(i-d)): with one rank G == g exactly, so this is plain SGD bit for bit.
      grads[i].add_(global[i].sub_(old.local[i]));
    } else {
      grads[i].copy_(global[i]);
    }
  }
  return Status::ok();
}

Status DssgdStrategy::drain(std::vector<at::Tensor>& params) {
  auto t0 = std::chrono::steady_clock::now();
  while (!in_flight_.empty()) {
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    TERN_RETURN_IF_ERROR(f.pending->finish(f.local));
  }
  // Replicas now differ by their last d local terms: average the parameters once.
  Status s = average_tensors(comm_, params, bucket_bytes_);
  metrics_.wait_s += seconds_since(t0);
  return s;
}

}  // namespace tern
