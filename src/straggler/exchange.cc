#include "straggler/exchange.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace tern {
namespace {

constexpr int64_t kTagSpan = int64_t{1} << 24;

int contribution_tag(int64_t step) { return static_cast<int>(step % kTagSpan); }
int decision_tag(int64_t step) { return static_cast<int>(kTagSpan + step % kTagSpan); }

}  // namespace

struct ContributionExchange::Item {
  enum class Kind { kSend, kRecv, kDecisionRecv };
  Kind kind = Kind::kSend;
  int64_t step = 0;
  at::Tensor buffer;  // kept alive until the transfer completes
  WorkPtr work;
};

struct ContributionExchange::State {
  struct StepState {
    Arrivals arrivals;
    std::map<int, at::Tensor> payloads;
  };

  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<int64_t, StepState> steps;
  int64_t released_below = 0;  // steps below this were released (steps are decided in order)
  Status error;
  int64_t late = 0;
  int64_t outstanding = 0;  // items queued or being waited on
  bool stop = false;
  std::vector<std::deque<Item>> queues;
  std::vector<std::thread> threads;
  int64_t numel = 0;
  bool every_rank_decides = false;
  std::chrono::milliseconds timeout{60000};

  // Runs on peer `peer`'s thread: waits on its transfers in posting order.
  void serve(int peer) {
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || !queues[static_cast<size_t>(peer)].empty(); });
        auto& q = queues[static_cast<size_t>(peer)];
        if (q.empty()) return;
        item = std::move(q.front());
        q.pop_front();
      }
      Status s = item.work->wait(timeout);
      std::lock_guard<std::mutex> lock(mu);
      --outstanding;
      if (!s.is_ok()) {
        if (error.is_ok()) {
          error = s.with_context("straggler exchange with rank " + std::to_string(peer) +
                                 " at step " + std::to_string(item.step));
        }
        stop = true;
        cv.notify_all();
        return;
      }
      if (item.kind != Item::Kind::kSend) record(peer, item);
      cv.notify_all();
    }
  }

  void record(int peer, const Item& item) {  // mu held
    if (item.step < released_below) {
      if (item.kind == Item::Kind::kRecv) ++late;
      return;
    }
    auto& st = steps[item.step];
    if (item.kind == Item::Kind::kDecisionRecv) {
      const int64_t* w = item.buffer.data_ptr<int64_t>();
      if (every_rank_decides)
        st.arrivals.decisions[peer].assign(w, w + item.buffer.numel());
      else
        st.arrivals.decision = static_cast<uint64_t>(w[0]);
      return;
    }
    float flag = item.buffer.data_ptr<float>()[numel];
    if (flag > 0.5f) {
      st.arrivals.computed.push_back(peer);
      st.payloads[peer] = item.buffer.narrow(0, 0, numel);
    } else {
      st.arrivals.skipped.push_back(peer);
    }
  }
};

ContributionExchange::ContributionExchange(Communicator& comm, Options options)
    : comm_(comm), options_(options), state_(std::make_shared<State>()) {
  state_->numel = options_.numel;
  state_->every_rank_decides = options_.every_rank_decides;
  state_->timeout = comm_.timeout();
  state_->queues.resize(static_cast<size_t>(comm_.size()));
  for (int p = 0; p < comm_.size(); ++p) {
    if (p == comm_.rank()) continue;
    std::shared_ptr<State> st = state_;
    state_->threads.emplace_back([st, p] { st->serve(p); });
  }
}

ContributionExchange::~ContributionExchange() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  for (auto& t : state_->threads) {
    // After a clean drain every queue is empty and the threads exit at once; otherwise a
    // thread may sit in a transfer until its timeout: let it finish on its own (it holds
    // the state it touches).
    if (drained_)
      t.join();
    else
      t.detach();
  }
}

void ContributionExchange::push(int peer, Item item) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->queues[static_cast<size_t>(peer)].push_back(std::move(item));
    ++state_->outstanding;
  }
  state_->cv.notify_all();
}

Status ContributionExchange::post_through(int64_t step) {
  int64_t end = std::min(step + options_.window, options_.total_steps);
  for (; next_post_ < end; ++next_post_) {
    for (int p = 0; p < comm_.size(); ++p) {
      if (p == comm_.rank()) continue;
      Item item;
      item.kind = Item::Kind::kRecv;
      item.step = next_post_;
      item.buffer = at::empty({options_.numel + 1}, at::kFloat);
      item.work = comm_.recv(item.buffer, p, contribution_tag(next_post_));
      push(p, std::move(item));
      if (options_.every_rank_decides || (options_.leader >= 0 && p == options_.leader)) {
        Item d;
        d.kind = Item::Kind::kDecisionRecv;
        d.step = next_post_;
        d.buffer =
            at::zeros({options_.every_rank_decides ? options_.decision_words : 1}, at::kLong);
        d.work = comm_.recv(d.buffer, p, decision_tag(next_post_));
        push(p, std::move(d));
      }
    }
  }
  return Status::ok();
}

void ContributionExchange::send_to_peers(int64_t step, const at::Tensor& buf, int tag) {
  for (int p = 0; p < comm_.size(); ++p) {
    if (p == comm_.rank()) continue;
    Item item;
    item.kind = Item::Kind::kSend;
    item.step = step;
    item.buffer = buf;
    item.work = comm_.send(item.buffer, p, tag);
    push(p, std::move(item));
  }
}

Status ContributionExchange::contribute(int64_t step, const at::Tensor& payload) {
  at::Tensor buf = at::zeros({options_.numel + 1}, at::kFloat);
  bool computed = payload.defined();
  if (computed) {
    if (payload.numel() != options_.numel) {
      return invalid_argument("contribution has " + std::to_string(payload.numel()) +
                              " elements, expected " + std::to_string(options_.numel));
    }
    buf.narrow(0, 0, options_.numel).copy_(payload.reshape({-1}));
    buf.data_ptr<float>()[options_.numel] = 1.0f;
  }
  send_to_peers(step, buf, contribution_tag(step));
  std::lock_guard<std::mutex> lock(state_->mu);
  auto& st = state_->steps[step];
  if (computed) {
    st.arrivals.computed.push_back(comm_.rank());
    st.payloads[comm_.rank()] = buf.narrow(0, 0, options_.numel);
  } else {
    st.arrivals.skipped.push_back(comm_.rank());
  }
  state_->cv.notify_all();
  return Status::ok();
}

Status ContributionExchange::send_decision(int64_t step, uint64_t mask) {
  at::Tensor buf = at::full({1}, static_cast<int64_t>(mask), at::kLong);
  send_to_peers(step, buf, decision_tag(step));
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->steps[step].arrivals.decision = mask;
  return Status::ok();
}

Status ContributionExchange::send_decision_words(int64_t step, const std::vector<int64_t>& words) {
  if (!options_.every_rank_decides ||
      static_cast<int64_t>(words.size()) != options_.decision_words) {
    return invalid_argument("decision of " + std::to_string(words.size()) + " words, expected " +
                            std::to_string(options_.decision_words) + " (every_rank_decides)");
  }
  at::Tensor buf = at::tensor(words, at::kLong);
  send_to_peers(step, buf, decision_tag(step));
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->steps[step].arrivals.decisions[comm_.rank()] = words;
  state_->cv.notify_all();
  return Status::ok();
}

ContributionExchange::Arrivals ContributionExchange::arrivals(int64_t step) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->steps.find(step);
  return it == state_->steps.end() ? Arrivals{} : it->second.arrivals;
}

Status ContributionExchange::wait_until(int64_t step,
                                        const std::function<bool(const Arrivals&)>& pred,
                                        std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  bool ok = state_->cv.wait_for(lock, timeout, [&] {
    if (!state_->error.is_ok()) return true;
    auto it = state_->steps.find(step);
    return pred(it == state_->steps.end() ? Arrivals{} : it->second.arrivals);
  });
  if (!state_->error.is_ok()) return state_->error;
  if (!ok) {
    return deadline_exceeded("step " + std::to_string(step) + ": not enough contributions within " +
                             std::to_string(timeout.count()) + " ms");
  }
  return Status::ok();
}

at::Tensor ContributionExchange::payload(int64_t step, int sender) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->steps.find(step);
  if (it == state_->steps.end()) return {};
  auto p = it->second.payloads.find(sender);
  return p == it->second.payloads.end() ? at::Tensor() : p->second;
}

void ContributionExchange::release(int64_t step) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->released_below = std::max(state_->released_below, step + 1);
  state_->steps.erase(state_->steps.begin(), state_->steps.lower_bound(state_->released_below));
}

Status ContributionExchange::drain(std::chrono::milliseconds timeout) {
  if (drained_) return Status::ok();
  {
    std::unique_lock<std::mutex> lock(state_->mu);
    bool ok = state_->cv.wait_for(
        lock, timeout, [&] { return state_->outstanding == 0 || !state_->error.is_ok(); });
    if (!state_->error.is_ok()) return state_->error;
    if (!ok) {
      return deadline_exceeded("straggler exchange: " + std::to_string(state_->outstanding) +
                               " transfers still pending after " + std::to_string(timeout.count()) +
                               " ms");
    }
    state_->stop = true;
  }
  state_->cv.notify_all();
  drained_ = true;
  for (auto& t : state_->threads) t.join();
  state_->threads.clear();
  return Status::ok();
}

int64_t ContributionExchange::late_arrivals() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->late;
}

}  // namespace tern
