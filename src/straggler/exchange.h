// ContributionExchange: the any-k-of-n aggregation path that straggler mitigation needs. A
// plain all-reduce waits for every rank; here each rank sends its step contribution to every
// peer point to point and a step can be decided as soon as enough contributions are in. A
// late contribution is still received (every send has a matching receive, so nothing leaks
// and Gloo never blocks), and discarded.
//
// Messages: one flat fp32 tensor per (step, sender) of numel + 1 elements, the last one a flag
// (1: computed contribution, 0: skip marker from a rank that is behind and did not compute
// the step). Optional "decision" messages (int64 words; backup workers: one, a bitmask of
// senders) go from a leader to everyone, or (every_rank_decides) from every rank to every peer
// once per step. Receives are posted `window` steps ahead so a rank that
// falls behind finds its peers' contributions already delivered and can catch up.
//
// Threading: post/contribute/send_decision are called from the trainer loop thread only (the
// Communicator contract); one thread per peer waits on that peer's sends and receives in
// order (a Gloo receive only completes inside wait()), records arrivals and wakes the trainer
// thread. The state is shared with those threads, so an abandoned exchange (error path) can
// detach them safely.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "comm/communicator.h"
#include "common/status.h"

namespace tern {

class ContributionExchange {
 public:
  struct Options {
    int64_t numel = 0;                // payload elements (without the flag)
    int64_t window = 8;               // steps of receives posted ahead
    int64_t total_steps = 0;          // no receives are posted at or past this step
    int leader = -1;                  // >= 0: that rank sends a decision message per step
    bool every_rank_decides = false;  // every rank sends one decision message per step
    int64_t decision_words = 1;       // int64 words per decision message (every_rank_decides)
  };
  // What has arrived for one step, in arrival order.
  struct Arrivals {
    std::vector<int>
        computed;  // senders whose computed contribution is here (own included once contributed)
    std::vector<int> skipped;                       // senders that sent a skip marker
    std::optional<uint64_t> decision;               // the leader's decision bitmask, when received
    std::map<int, std::vector<int64_t>> decisions;  // every_rank_decides: each sender's words
  };

  ContributionExchange(Communicator& comm, Options options);
  ~ContributionExchange();
  ContributionExchange(const ContributionExchange&) = delete;
  ContributionExchange& operator=(const ContributionExchange&) = delete;

  // Posts the receives of every step in [next unposted, min(step + window, total_steps)).
  Status post_through(int64_t step);
  // Sends this rank's contribution for `step` (flat fp32, numel elements) to every peer and
  // records it as arrived locally. An undefined tensor sends a skip marker.
  Status contribute(int64_t step, const at::Tensor& payload);
  // Leader only: sends the decision bitmask for `step` to every peer (and records it).
  Status send_decision(int64_t step, uint64_t mask);
  // every_rank_decides: sends this rank's decision words (decision_words of them) for `step`
  // to every peer (and records them). Exactly once per step on every rank.
  Status send_decision_words(int64_t step, const std::vector<int64_t>& words);

  // A copy of the arrivals of `step` now.
  Arrivals arrivals(int64_t step) const;
  // Blocks until pred(arrivals(step)) holds; DEADLINE_EXCEEDED after `timeout`, or the first
  // transport error of any peer thread.
  Status wait_until(int64_t step, const std::function<bool(const Arrivals&)>& pred,
                    std::chrono::milliseconds timeout);
  // The payload (numel elements, a view) `sender` contributed for `step`; undefined when it
  // has not arrived or was a skip marker.
  at::Tensor payload(int64_t step, int sender) const;
  // Forgets `step`: its buffers are freed; contributions still in flight are discarded on arrival.
  void release(int64_t step);

  // Waits for every posted send and receive to finish and stops the peer threads. Every rank
  // must have contributed to every step below total_steps. Idempotent.
  Status drain(std::chrono::milliseconds timeout);

  int64_t late_arrivals() const;  // contributions that arrived after their step was released

 private:
  struct State;
  struct Item;
  void push(int peer, Item item);
  // Sends `buf` to every other rank under `tag` (queued per peer, like every send).
  void send_to_peers(int64_t step, const at::Tensor& buf, int tag);

  Communicator& comm_;
  Options options_;
  int64_t next_post_ = 0;
  std::shared_ptr<State> state_;
  bool drained_ = false;
};

}  // namespace tern
