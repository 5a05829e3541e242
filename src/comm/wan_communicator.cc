#include "comm/wan_communicator.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "comm/counting_communicator.h"

namespace tern {
namespace {

// Completes when the inner work has completed and the modelled time has passed.
class WanWork : public Work {
 public:
  WanWork(WorkPtr inner, std::chrono::steady_clock::time_point ready,
          std::shared_ptr<const WanClock> clock)
      : inner_(std::move(inner)), ready_(ready), clock_(std::move(clock)) {}
  Status wait(std::chrono::milliseconds timeout) override {
    auto deadline = clock_->now() + timeout;
    TERN_RETURN_IF_ERROR(inner_->wait(timeout));
    if (ready_ > deadline) {
      clock_->sleep_until(deadline);
      return deadline_exceeded("modelled WAN completion is later than the wait's timeout");
    }
    clock_->sleep_until(ready_);
    return Status::ok();
  }
  bool is_completed() override { return clock_->now() >= ready_ && inner_->is_completed(); }
  int source_rank() const override { return inner_->source_rank(); }

 private:
  WorkPtr inner_;
  std::chrono::steady_clock::time_point ready_;
  std::shared_ptr<const WanClock> clock_;
};

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

void SteadyWanClock::sleep_until(std::chrono::steady_clock::time_point t) const {
  std::this_thread::sleep_until(t);
}

WanModel::WanModel(std::vector<std::string> rank_regions, NetworkSpec network, uint64_t seed)
    : regions_(std::move(rank_regions)), network_(std::move(network)), seed_(seed) {}

double WanModel::jitter_draw(int64_t index) const {
  uint64_t h = mix(seed_, static_cast<uint64_t>(index));
  return static_cast<double>(h >> 11) / static_cast<double>(1ULL << 53) * 2.0 - 1.0;
}

double WanModel::step(int a, int b, double bytes, double u) const {
  const LinkSpec& l = link(a, b);
  double t = (l.latency_ms + u * l.jitter_ms) / 1000.0;
  if (l.bandwidth_mbps > 0) t += bytes / (kWirePayloadShare * l.bandwidth_mbps * 1e6 / 8.0);
  return std::max(0.0, t);
}

double WanModel::seconds(CollectiveKind kind, int64_t bytes, double u, int root, int peer_a,
                         int peer_b) const {
  const int n = size();
  if (n <= 1 && kind != CollectiveKind::kPointToPoint) return 0.0;
  auto slowest_ring = [&](double step_bytes) {
    double worst = 0;
    for (int r = 0; r < n; ++r) worst = std::max(worst, step(r, (r + 1) % n, step_bytes, u));
    return worst;
  };
  auto slowest_any = [&](double step_bytes) {
    double worst = 0;
    for (int a = 0; a < n; ++a) {
      for (int b = 0; b < n; ++b) {
        if (a != b) worst = std::max(worst, step(a, b, step_bytes, u));
      }
    }
    return worst;
  };
  double s = static_cast<double>(bytes);
  switch (kind) {
    case CollectiveKind::kAllReduce:
      return 2.0 * (n - 1) * slowest_ring(s / n);
    case CollectiveKind::kBarrier:
      return 2.0 * (n - 1) * slowest_ring(0);
    case CollectiveKind::kAllGather:
      return (n - 1) * slowest_ring(s);
    case CollectiveKind::kAllToAll:
      return (n - 1) * slowest_any(s / n);
    case CollectiveKind::kBroadcast: {
      double worst = 0;
      for (int r = 0; r < n; ++r) {
        if (r != root) worst = std::max(worst, step(root, r, s, u));
      }
      return std::ceil(std::log2(static_cast<double>(n))) * worst;
    }
    case CollectiveKind::kPointToPoint:
      return step(peer_a, peer_b, s, u);
  }
  return 0.0;
}

WanCommunicator::WanCommunicator(std::shared_ptr<Communicator> inner, WanModel model,
                                 std::shared_ptr<const WanClock> clock)
    : ForwardingCommunicator(std::move(inner)),
      model_(std::move(model)),
      clock_(std::move(clock)) {}

double WanCommunicator::next_jitter() { return model_.jitter_draw(index_++); }

WorkPtr WanCommunicator::delay(WorkPtr inner, double seconds) {
  modelled_s_ += seconds;
  auto ready = clock_->now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                   std::chrono::duration<double>(seconds));
  return std::make_shared<WanWork>(std::move(inner), ready, clock_);
}

WorkPtr WanCommunicator::all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) {
  double t = model_.seconds(CollectiveKind::kAllReduce, tensors_bytes(tensors), next_jitter());
  return delay(inner_->all_reduce(tensors, op), t);
}

WorkPtr WanCommunicator::all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input) {
  double t = model_.seconds(CollectiveKind::kAllGather, tensor_bytes(input), next_jitter());
  return delay(inner_->all_gather(outputs, input), t);
}

WorkPtr WanCommunicator::broadcast(std::vector<at::Tensor>& tensors, int root) {
  double t =
      model_.seconds(CollectiveKind::kBroadcast, tensors_bytes(tensors), next_jitter(), root);
  return delay(inner_->broadcast(tensors, root), t);
}

WorkPtr WanCommunicator::all_to_all(at::Tensor& output, at::Tensor& input,
                                    const std::vector<int64_t>& os,
                                    const std::vector<int64_t>& is) {
  double t = model_.seconds(CollectiveKind::kAllToAll, tensor_bytes(input), next_jitter());
  return delay(inner_->all_to_all(output, input, os, is), t);
}

WorkPtr WanCommunicator::barrier() {
  double t = model_.seconds(CollectiveKind::kBarrier, 0, next_jitter());
  return delay(inner_->barrier(), t);
}

// Point-to-point operations are not collective, so they do not advance the shared jitter
// index (peers would disagree on it); they use the link's mean latency.
WorkPtr WanCommunicator::send(at::Tensor& tensor, int dst, int tag) {
  double t =
      model_.seconds(CollectiveKind::kPointToPoint, tensor_bytes(tensor), 0.0, 0, rank(), dst);
  return delay(inner_->send(tensor, dst, tag), t);
}

WorkPtr WanCommunicator::recv(at::Tensor& tensor, int src, int tag) {
  double t =
      model_.seconds(CollectiveKind::kPointToPoint, tensor_bytes(tensor), 0.0, 0, src, rank());
  return delay(inner_->recv(tensor, src, tag), t);
}

WorkPtr WanCommunicator::recv_any(at::Tensor& tensor, int tag) {
  double worst = 0;
  for (int r = 0; r < size(); ++r) {
    if (r != rank()) {
      worst = std::max(worst, model_.seconds(CollectiveKind::kPointToPoint, tensor_bytes(tensor),
                                             0.0, 0, r, rank()));
    }
  }
  return delay(inner_->recv_any(tensor, tag), worst);
}

Result<std::shared_ptr<Communicator>> maybe_wrap_wan(std::shared_ptr<Communicator> comm,
                                                     const ClusterConfig& cluster,
                                                     const std::vector<std::string>& rank_regions,
                                                     uint64_t seed) {
  if (!cluster.network.emulate) return comm;
  if (static_cast<int>(rank_regions.size()) != comm->size()) {
    return invalid_argument("--regions names " + std::to_string(rank_regions.size()) +
                            " regions for " + std::to_string(comm->size()) + " ranks");
  }
  for (const auto& r : rank_regions) {
    bool known = false;
    for (const auto& spec : cluster.regions) known = known || spec.name == r;
    if (!known)
      return invalid_argument("rank region '" + r + "' is not in cluster file " + cluster.path);
  }
  return std::shared_ptr<Communicator>(std::make_shared<WanCommunicator>(
      std::move(comm), WanModel(rank_regions, cluster.network, seed)));
}

}  // namespace tern
