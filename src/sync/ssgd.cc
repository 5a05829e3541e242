#include <chrono>

#include "sync/strategy.h"

namespace tern {

SsgdStrategy::SsgdStrategy(Communicator& comm, GradientReducer* reducer)
    : comm_(comm), reducer_(reducer) {}

Status SsgdStrategy::on_gradients(int64_t step, std::vector<at::Tensor>& grads) {
  auto t0 = std::chrono::steady_clock::now();
  auto pending = reducer_->start(grads, step);
  Status s = pending->finish(grads);
  metrics_.wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (s.is_ok()) ++metrics_.syncs;
  return s;
}

}  // namespace tern
