// What the workloads' data sources share: a Batch (what a data source hands its model for one
// step or one evaluation slice) and TrainingData (a data set with random access by sample
// index, which the sampler and the straggler modes' plans need). The training loop never looks
// inside a batch: it hands a workload sample indices and gets gradients back.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Device.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace tern {

struct Batch {
  at::Tensor x;       // images [B,1,28,28] or dense features [B,13]
  at::Tensor sparse;  // categorical indices [B, tables] (DLRM), undefined otherwise
  at::Tensor y;       // class labels int64 [B] or click labels float [B]
  int64_t size() const { return y.defined() ? y.size(0) : 0; }
};

// The batch on `device` (a no-op on the CPU).
inline Batch batch_to(Batch b, const c10::Device& device) {
  if (device.is_cpu()) return b;
  if (b.x.defined()) b.x = b.x.to(device, /*non_blocking=*/true);
  if (b.sparse.defined()) b.sparse = b.sparse.to(device, true);
  if (b.y.defined()) b.y = b.y.to(device, true);
  return b;
}

// [begin, end) of the test split that rank `rank` of `world` evaluates: contiguous slices.
inline std::pair<int64_t, int64_t> eval_slice(int64_t n, int rank, int world) {
  const int64_t per = (n + world - 1) / world;
  const int64_t begin = std::min(n, per * rank);
  return {begin, std::min(n, begin + per)};
}

class TrainingData {
 public:
  virtual ~TrainingData() = default;
  virtual int64_t train_size() const = 0;
  virtual int64_t test_size() const = 0;
  virtual Batch train_batch(const std::vector<int64_t>& indices) = 0;
  virtual Batch test_batch(int64_t begin, int64_t end) = 0;
};

}  // namespace tern
