// GradientReducer: how a list of gradient tensors is averaged across ranks — dense bucketed
// all-reduce, or a compressor (compress → wire payload → collective → decompress). Sync
// strategies drive a reducer; they decide *when* to reduce and what to do with the result.
//
// start() snapshots its inputs (the caller may overwrite them right after), issues the
// collectives non-blocking and returns a handle; the averaged result is written out by
// PendingReduction::finish(). Every rank must call start() with the same tensor shapes in the
// same order. Called from the trainer loop thread only.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "common/status.h"

namespace tern {

class PendingReduction {
 public:
  virtual ~PendingReduction() = default;
  // Waits (up to the communicator's timeout) and writes the global average into `out`
  // (same shapes as the inputs to start()).
  virtual Status finish(std::vector<at::Tensor>& out) = 0;
  // True when finish() would not block.
  virtual bool ready() = 0;
};

struct ReducerStats {
  double compress_s = 0;    // time spent compressing / decompressing
  int64_t dense_bytes = 0;  // what dense fp32 all-reduce of the same tensors would send
  int64_t reductions = 0;
  // Bytes this rank put on the wire for reductions, measured by a CountingCommunicator around
  // the reducer's collectives (filled in by compress/factory's metering decorator).
  int64_t wire_bytes = 0;
  // Dense fp32 ring all-reduce bytes of the same tensors (2(N-1)/N * dense_bytes, which is what
  // CountingCommunicator counts for DenseReducer) / measured wire_bytes: 1 for dense, > 1 when
  // compressed. Warm-up, indices and scales are all in wire_bytes. 1 when nothing was sent.
  double compression_ratio(int world) const {
    if (world <= 1 || wire_bytes <= 0) return 1.0;
    double dense = 2.0 * (world - 1) * static_cast<double>(dense_bytes) / world;
    return dense / static_cast<double>(wire_bytes);
  }
};

class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                                  int64_t step) = 0;
  virtual std::string name() const = 0;
  virtual const ReducerStats& stats() const = 0;
  // True when the reducer applies momentum itself (DGC's momentum correction): the optimizer
  // must then run with momentum 0.
  virtual bool owns_momentum() const { return false; }
  // Per-rank state to persist in checkpoints (error-feedback memories, velocities). Names are
  // stable across runs. Dense reduction has none.
  virtual std::vector<std::pair<std::string, at::Tensor>> state() { return {}; }
  virtual Status load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
    return Status::ok();
  }
};

// Dense all-reduce of gradients grouped into buckets of about `bucket_bytes` (reverse
// creation order, as DDP does), each bucket one flat tensor and one collective.
class DenseReducer : public GradientReducer {
 public:
  DenseReducer(Communicator& comm, int64_t bucket_bytes);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;
  std::string name() const override { return "dense"; }
  const ReducerStats& stats() const override { return stats_; }

 private:
  Communicator& comm_;
  int64_t bucket_bytes_;
  ReducerStats stats_;
};

// Averages whole tensors across ranks (blocking), in buckets: used for parameter averaging
// at sync points and drains.
Status average_tensors(Communicator& comm, std::vector<at::Tensor>& tensors, int64_t bucket_bytes);

}  // namespace tern

namespace tern {
// One flat copy of all `tensors` (same dtype), and the inverse (copies back into `out`).
at::Tensor flatten_all(const std::vector<at::Tensor>& tensors);
void unflatten_all(const at::Tensor& flat, std::vector<at::Tensor>& out);
// Copies consecutive pieces of `flat` back into out[idx[0]], out[idx[1]], ... (their shapes).
void unflatten_parts(const at::Tensor& flat, std::vector<at::Tensor>& out,
                     const std::vector<size_t>& idx);
// Broadcasts `tensors` from `root` as one flat buffer (one collective, any tensor count).
Status broadcast_tensors(Communicator& comm, std::vector<at::Tensor>& tensors, int root);
}  // namespace tern
