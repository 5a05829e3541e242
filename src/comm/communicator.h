// Communicator: tern's collective-communication interface over c10d process groups (Gloo on
// CPU, NCCL on GPU). Strategies and compressors talk only to this interface, so decorators
// (byte counting, WAN emulation, fault injection) can wrap any backend.
//
// Contract: every rank issues the same collectives in the same order. Calls are made from
// one thread (the trainer loop); returned Work handles may be waited on from that thread.
// Tensors may live on any device the backend supports (no CPU-only assumption here).
// Collectives are non-blocking; every wait takes a timeout, so nothing waits forever.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

enum class ReduceOp { kSum, kMax, kMin };

// Handle of one in-flight collective.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks up to `timeout`. OK when the collective completed; DEADLINE_EXCEEDED when it did
  // not complete in time; UNAVAILABLE when a peer was lost. After a non-OK result the
  // communicator is dead and must be rebuilt at a new generation.
  virtual Status wait(std::chrono::milliseconds timeout) = 0;
  virtual bool is_completed() = 0;
  // The sender of a completed recv_any, else -1.
  virtual int source_rank() const { return -1; }
};
using WorkPtr = std::shared_ptr<Work>;

// A Work that is already complete (e.g. a collective of a world of one).
class CompletedWork : public Work {
 public:
  explicit CompletedWork(Status status = Status::ok(), int source = -1)
      : status_(std::move(status)), source_(source) {}
  Status wait(std::chrono::milliseconds) override { return status_; }
  bool is_completed() override { return true; }
  int source_rank() const override { return source_; }

 private:
  Status status_;
  int source_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  // The timeout strategies use when they wait (from the job's sync.timeout_s).
  virtual std::chrono::milliseconds timeout() const = 0;

  // In place: every tensor becomes the elementwise reduction over ranks.
  virtual WorkPtr all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op = ReduceOp::kSum) = 0;
  // outputs[r] receives rank r's `input`; outputs has size() tensors shaped like input.
  virtual WorkPtr all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input) = 0;
  // In place from `root`.
  virtual WorkPtr broadcast(std::vector<at::Tensor>& tensors, int root) = 0;
  // Rows of `input` split by input_splits go to each rank; output filled by output_splits
  // (both lists have size() entries, counts along dim 0).
  virtual WorkPtr all_to_all(at::Tensor& output, at::Tensor& input,
                             const std::vector<int64_t>& output_splits,
                             const std::vector<int64_t>& input_splits) = 0;
  virtual WorkPtr send(at::Tensor& tensor, int dst, int tag) = 0;
  virtual WorkPtr recv(at::Tensor& tensor, int src, int tag) = 0;
  // Receives from whichever rank sends first; Work::source_rank() tells which.
  virtual WorkPtr recv_any(at::Tensor& tensor, int tag) = 0;
  virtual WorkPtr barrier() = 0;
};

// Blocking helpers: issue and wait with the communicator's timeout.
Status all_reduce_sync(Communicator& comm, std::vector<at::Tensor>& tensors,
                       ReduceOp op = ReduceOp::kSum);
Status broadcast_sync(Communicator& comm, std::vector<at::Tensor>& tensors, int root);
Status all_gather_sync(Communicator& comm, std::vector<at::Tensor>& outputs, at::Tensor& input);
Status barrier_sync(Communicator& comm);

// Decorator base: forwards everything to the wrapped communicator.
class ForwardingCommunicator : public Communicator {
 public:
  explicit ForwardingCommunicator(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend(); }
  std::chrono::milliseconds timeout() const override { return inner_->timeout(); }
  WorkPtr all_reduce(std::vector<at::Tensor>& t, ReduceOp op) override {
    return inner_->all_reduce(t, op);
  }
  WorkPtr all_gather(std::vector<at::Tensor>& o, at::Tensor& i) override {
    return inner_->all_gather(o, i);
  }
  WorkPtr broadcast(std::vector<at::Tensor>& t, int root) override {
    return inner_->broadcast(t, root);
  }
  WorkPtr all_to_all(at::Tensor& o, at::Tensor& i, const std::vector<int64_t>& os,
                     const std::vector<int64_t>& is) override {
    return inner_->all_to_all(o, i, os, is);
  }
  WorkPtr send(at::Tensor& t, int dst, int tag) override { return inner_->send(t, dst, tag); }
  WorkPtr recv(at::Tensor& t, int src, int tag) override { return inner_->recv(t, src, tag); }
  WorkPtr recv_any(at::Tensor& t, int tag) override { return inner_->recv_any(t, tag); }
  WorkPtr barrier() override { return inner_->barrier(); }
  Communicator& inner() { return *inner_; }
  // Points the decorator at another group (elastic regroup: a new generation's communicator).
  // Only between operations: nothing may be in flight on the old one.
  // Returns the old one.
  std::shared_ptr<Communicator> replace_inner(std::shared_ptr<Communicator> inner) {
    std::swap(inner_, inner);
    return inner;
  }

 protected:
  std::shared_ptr<Communicator> inner_;
};

}  // namespace tern
