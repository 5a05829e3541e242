// WAN emulation (docs/algorithms.md §7): a Communicator decorator that lets each collective
// complete no earlier than the time the same algorithm would take over the configured
// inter-region links. Real bytes still move through the wrapped backend; only the completion is
// held back. Non-blocking collectives stay non-blocking: their Work::wait()
// returns at max(real completion, issue time + modelled time), which is what lets delayed
// strategies hide latency honestly.
//
// The model (S = payload bytes, N = ranks, link(a,b) = latency + wire bytes/bandwidth, with
// wire bytes = payload / kWirePayloadShare):
//   all_reduce (ring)   2(N-1) steps of link(S/N) on the slowest ring link
//   all_gather (ring)   (N-1) steps of link(S_in) on the slowest ring link
//   all_to_all          (N-1) steps of link(S_in/N) on the slowest link of any pair
//   broadcast (tree)    ceil(log2 N) steps of link(S) on the slowest link from the root
//   barrier             2(N-1) steps of link(0) on the slowest ring link
//   send / recv         one step of link(S) between the two ranks (recv_any: slowest link in)
// Jitter: each collective draws one u in [-1, 1] from an RNG seeded by (seed, collective
// index), identical on every rank, and adds u * jitter_ms per step.
//
// Called from one thread (the trainer loop), like every Communicator.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "common/cluster_config.h"

namespace tern {

// A link's bandwidth is its line rate (what tc, a NIC or a provider's shaper counts), not TCP
// goodput: each 1500-byte IP packet carries 1448 payload bytes (IPv4 20 + TCP 20 + timestamps
// 12) and takes 1514 bytes with its Ethernet header, and the receiver's delayed ACKs (a
// 66-byte frame per two segments) share the link's other direction, which in a ring carries
// the other neighbour's data. So payload moves at 1448 / (1514 + 33) = 0.936 of the rate.
// Measured on tc tbf links (bench/netns-bandwidth.sh): without this share the modelled ring
// all-reduce was 17 % under the real one; with it within 12 % (the rest: the ring's per-step
// hand-offs).
inline constexpr double kWirePayloadShare = 1448.0 / (1514.0 + 33.0);

// Time source of the emulation; tests substitute a fake one.
class WanClock {
 public:
  virtual ~WanClock() = default;
  virtual std::chrono::steady_clock::time_point now() const = 0;
  virtual void sleep_until(std::chrono::steady_clock::time_point t) const = 0;
};

class SteadyWanClock : public WanClock {
 public:
  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::now();
  }
  void sleep_until(std::chrono::steady_clock::time_point t) const override;
};

enum class CollectiveKind {
  kAllReduce,
  kAllGather,
  kAllToAll,
  kBroadcast,
  kBarrier,
  kPointToPoint
};

// The pure model: rank regions + network → seconds for one collective.
class WanModel {
 public:
  WanModel(std::vector<std::string> rank_regions, NetworkSpec network, uint64_t seed = 0);
  // Modelled seconds for a collective over all ranks (peer_a/peer_b for point-to-point).
  // `u` in [-1, 1] scales the jitter (0 = no jitter).
  double seconds(CollectiveKind kind, int64_t bytes, double u = 0.0, int root = 0, int peer_a = 0,
                 int peer_b = 0) const;
  // The jitter draw of the collective with this index (identical on every rank).
  double jitter_draw(int64_t index) const;
  int size() const { return static_cast<int>(regions_.size()); }
  const LinkSpec& link(int a, int b) const { return network_.link(regions_[a], regions_[b]); }

 private:
  // One step over link(a,b) carrying `bytes`, in seconds, with jitter u.
  double step(int a, int b, double bytes, double u) const;
  std::vector<std::string> regions_;
  NetworkSpec network_;
  uint64_t seed_;
};

class WanCommunicator : public ForwardingCommunicator {
 public:
  WanCommunicator(std::shared_ptr<Communicator> inner, WanModel model,
                  std::shared_ptr<const WanClock> clock = std::make_shared<SteadyWanClock>());

  WorkPtr all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) override;
  WorkPtr all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input) override;
  WorkPtr broadcast(std::vector<at::Tensor>& tensors, int root) override;
  WorkPtr all_to_all(at::Tensor& output, at::Tensor& input,
                     const std::vector<int64_t>& output_splits,
                     const std::vector<int64_t>& input_splits) override;
  WorkPtr send(at::Tensor& tensor, int dst, int tag) override;
  WorkPtr recv(at::Tensor& tensor, int src, int tag) override;
  WorkPtr recv_any(at::Tensor& tensor, int tag) override;
  WorkPtr barrier() override;

  // Total modelled seconds of every collective issued so far.
  double modelled_s() const { return modelled_s_; }
  const WanModel& model() const { return model_; }

 private:
  WorkPtr delay(WorkPtr inner, double seconds);
  double next_jitter();

  WanModel model_;
  std::shared_ptr<const WanClock> clock_;
  int64_t index_ = 0;
  double modelled_s_ = 0;
};

// Wraps `comm` when the cluster file asks for emulation; `rank_regions` has one entry per rank.
Result<std::shared_ptr<Communicator>> maybe_wrap_wan(std::shared_ptr<Communicator> comm,
                                                     const ClusterConfig& cluster,
                                                     const std::vector<std::string>& rank_regions,
                                                     uint64_t seed);

}  // namespace tern
