#include "comm/c10d_communicator.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "comm/abandon.h"

namespace tern {
namespace {

// Status from whatever c10d threw. "Timed out" / "timeout" -> DEADLINE_EXCEEDED, anything
// else (connection closed by peer, ...) -> UNAVAILABLE: the peer is gone.
Status status_from_exception(const std::exception& e) {
  std::string what = e.what();
  auto nl = what.find('\n');
  std::string first = nl == std::string::npos ? what : what.substr(0, nl);
  if (what.find("imed out") != std::string::npos || what.find("timeout") != std::string::npos) {
    return deadline_exceeded("collective timed out: " + first);
  }
  return unavailable("collective failed (peer lost?): " + first);
}

// How often a blocked wait looks at the abandon epoch. c10d's wait returns as soon as the
// work completes, so the slice adds no latency to a collective, only to noticing an abandon.
constexpr std::chrono::milliseconds kAbandonCheck{25};

class C10dWork : public Work {
 public:
  // `sliced`: wait in short slices, looking at the abandon epoch between them. Only for Gloo
  // collectives, whose c10d wait may time out and be retried; Gloo's send/recv works finish
  // (failed) on their first timeout, and NCCL's wait only orders streams and returns at once.
  C10dWork(c10::intrusive_ptr<c10d::Work> work, uint64_t epoch, bool sliced)
      : work_(std::move(work)), epoch_(epoch), sliced_(sliced) {}
  Status wait(std::chrono::milliseconds timeout) override {
    if (!status_.is_ok() || done_) return status_;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (std::string why = abandoned_reason(epoch_); !why.empty()) {
        status_ = aborted("collective abandoned: " + why);
        return status_;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto slice =
          sliced_ ? std::clamp(left, std::chrono::milliseconds(1), kAbandonCheck) : timeout;
      try {
        work_->wait(slice);
        done_ = true;
        return status_;
      } catch (const std::exception& e) {
        // c10d's "Operation timed out!" means our slice ran out with the work still running (a
        // failed work rethrows its own error instead): keep waiting while time is left. The
        // work may complete right after the throw; the next wait then returns at once.
        const bool slice_over =
            sliced_ && std::string(e.what()).find("Operation timed out") != std::string::npos;
        if (slice_over && std::chrono::steady_clock::now() < deadline) continue;
        status_ = status_from_exception(e);
        return status_;
      }
    }
  }
  bool is_completed() override {
    try {
      return work_->isCompleted();
    } catch (const std::exception&) {
      return true;
    }
  }
  int source_rank() const override {
    try {
      return work_->sourceRank();
    } catch (const std::exception&) {
      return -1;
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  uint64_t epoch_;
  bool sliced_;
  Status status_;
  bool done_ = false;
};

// Issues a c10d call, turning a synchronous throw (e.g. on an already-broken group) into a
// failed Work so callers see one error path.
template <typename F>
WorkPtr issue(uint64_t epoch, bool sliced, F&& f) {
  if (std::string why = abandoned_reason(epoch); !why.empty()) {
    return std::make_shared<CompletedWork>(aborted("collective abandoned: " + why));
  }
  try {
    return std::make_shared<C10dWork>(f(), epoch, sliced);
  } catch (const std::exception& e) {
    return std::make_shared<CompletedWork>(status_from_exception(e));
  }
}

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return c10d::ReduceOp::SUM;
    case ReduceOp::kMax:
      return c10d::ReduceOp::MAX;
    case ReduceOp::kMin:
      return c10d::ReduceOp::MIN;
  }
  return c10d::ReduceOp::SUM;
}

}  // namespace

C10dCommunicator::C10dCommunicator(c10::intrusive_ptr<c10d::ProcessGroup> pg, std::string backend,
                                   std::chrono::milliseconds timeout)
    : pg_(std::move(pg)),
      backend_(std::move(backend)),
      timeout_(timeout),
      rank_(pg_->getRank()),
      size_(pg_->getSize()),
      epoch_(collective_epoch()) {}

WorkPtr C10dCommunicator::all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) {
  c10d::AllreduceOptions o;
  o.reduceOp = to_c10d(op);
  return issue(epoch_, backend_ == "gloo", [&] { return pg_->allreduce(tensors, o); });
}

WorkPtr C10dCommunicator::all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input) {
  std::vector<std::vector<at::Tensor>> out{outputs};
  std::vector<at::Tensor> in{input};
  // c10d writes into the tensors of `out`, which share storage with `outputs`.
  return issue(epoch_, backend_ == "gloo", [&] { return pg_->allgather(out, in); });
}

WorkPtr C10dCommunicator::broadcast(std::vector<at::Tensor>& tensors, int root) {
  c10d::BroadcastOptions o;
  o.rootRank = root;
  return issue(epoch_, backend_ == "gloo", [&] { return pg_->broadcast(tensors, o); });
}

WorkPtr C10dCommunicator::all_to_all(at::Tensor& output, at::Tensor& input,
                                     const std::vector<int64_t>& output_splits,
                                     const std::vector<int64_t>& input_splits) {
  std::vector<int64_t> os = output_splits, is = input_splits;
  return issue(epoch_, backend_ == "gloo",
               [&] { return pg_->alltoall_base(output, input, os, is); });
}

WorkPtr C10dCommunicator::send(at::Tensor& tensor, int dst, int tag) {
  std::vector<at::Tensor> t{tensor};
  return issue(epoch_, /*sliced=*/false, [&] { return pg_->send(t, dst, tag); });
}

WorkPtr C10dCommunicator::recv(at::Tensor& tensor, int src, int tag) {
  std::vector<at::Tensor> t{tensor};
  return issue(epoch_, /*sliced=*/false, [&] { return pg_->recv(t, src, tag); });
}

WorkPtr C10dCommunicator::recv_any(at::Tensor& tensor, int tag) {
  std::vector<at::Tensor> t{tensor};
  return issue(epoch_, /*sliced=*/false, [&] { return pg_->recvAnysource(t, tag); });
}

WorkPtr C10dCommunicator::barrier() {
  return issue(epoch_, backend_ == "gloo", [&] { return pg_->barrier(); });
}

}  // namespace tern
