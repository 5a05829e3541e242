// C10dCommunicator: the Communicator over a c10d::ProcessGroup (Gloo or NCCL). Converts c10d's
// exceptions into Status at the wait boundary. A wait returns ABORTED as soon as
// abandon_collectives() is called after the communicator was created (comm/abandon.h).
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "comm/communicator.h"

namespace tern {

class C10dCommunicator : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::ProcessGroup> pg, std::string backend,
                   std::chrono::milliseconds timeout);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return backend_; }
  std::chrono::milliseconds timeout() const override { return timeout_; }

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

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  std::string backend_;
  std::chrono::milliseconds timeout_;
  int rank_;
  int size_;
  uint64_t epoch_;  // collective_epoch() at creation
};

}  // namespace tern
