// CountingCommunicator: a decorator that counts the bytes this rank puts on the wire, per
// collective kind, as the standard algorithms would send them (ring all-reduce:
// 2(N-1)/N * S; all-gather: (N-1) * S_in; broadcast: S at the root (tree), per-peer S else;
// point-to-point: S). These are the figures `bytes_sent_per_rank` and compression ratios
// report, comparable across compressors and strategies.
//
// Thread-compatible (called from the trainer loop thread only).
#pragma once

#include <cstdint>

#include "comm/communicator.h"

namespace tern {

struct ByteCounts {
  int64_t all_reduce = 0;
  int64_t all_gather = 0;
  int64_t broadcast = 0;
  int64_t all_to_all = 0;
  int64_t point_to_point = 0;
  int64_t collectives = 0;
  int64_t total() const {
    return all_reduce + all_gather + broadcast + all_to_all + point_to_point;
  }
};

class CountingCommunicator : public ForwardingCommunicator {
 public:
  using ForwardingCommunicator::ForwardingCommunicator;
  WorkPtr all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) override;
  WorkPtr all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input) override;
  WorkPtr broadcast(std::vector<at::Tensor>& tensors, int root) override;
  WorkPtr all_to_all(at::Tensor& output, at::Tensor& input,
                     const std::vector<int64_t>& output_splits,
                     const std::vector<int64_t>& input_splits) override;
  WorkPtr send(at::Tensor& tensor, int dst, int tag) override;

  const ByteCounts& counts() const { return counts_; }
  void reset() { counts_ = ByteCounts(); }

 private:
  ByteCounts counts_;
};

int64_t tensor_bytes(const at::Tensor& t);
int64_t tensors_bytes(const std::vector<at::Tensor>& ts);

}  // namespace tern
