// ShardedSampler: which samples this rank sees in each epoch. One permutation of the dataset
// per epoch, derived only from (seed, epoch) so every rank computes the same one; rank r takes
// positions r, r + world, r + 2·world, ... Every rank gets the same count (the tail that
// does not divide evenly is dropped), so all ranks run the same number of steps.
// Pure function of its inputs: no torch, no global RNG. Thread-safe (const).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "common/status.h"

namespace tern {

class ShardedSampler {
 public:
  ShardedSampler(int64_t dataset_size, int world, int rank, uint64_t seed);

  int64_t per_rank() const { return per_rank_; }
  // This rank's sample indices for `epoch`, in visiting order.
  std::vector<int64_t> epoch_indices(int64_t epoch) const;
  // The whole epoch permutation (all ranks' samples).
  std::vector<int64_t> permutation(int64_t epoch) const;

 private:
  int64_t size_;
  int world_;
  int rank_;
  uint64_t seed_;
  int64_t per_rank_;
};

// The data-parallel parts of a random-access data set (what a Workload's part() answers): each
// epoch's ShardedSampler permutation cut into batches, rank r's batch of step s. Other ranks'
// parts (the straggler modes' plans) are computed on demand and cached for the epoch.
class DataParallelParts {
 public:
  DataParallelParts(int64_t dataset_size, int world, int rank, uint64_t seed, int64_t batch_size);
  // INVALID_ARGUMENT when the data set leaves a rank no sample.
  static Result<std::unique_ptr<DataParallelParts>> make(int64_t dataset_size, int world, int rank,
                                                         uint64_t seed, int64_t batch_size);
  int64_t per_rank() const { return mine_.per_rank(); }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  std::vector<int64_t> part(int64_t step, int rank);

 private:
  int64_t size_;
  int world_, rank_;
  uint64_t seed_;
  int64_t batch_;
  ShardedSampler mine_;
  int64_t steps_per_epoch_;
  std::vector<std::vector<int64_t>>
      epoch_indices_;  // per rank, filled on demand for indices_epoch_
  int64_t indices_epoch_ = -1;
};

// Elastic data parallelism (recovery.min_workers): the step's samples of all `world` ranks
// (part(r), r < world) shared by the members of a smaller group. Member `me` keeps its own part
// and takes every |members|-th sample of the vacant ranks' parts (concatenated in rank order),
// starting at its position in `members`: within a step no sample is lost or taken twice, and a
// full group takes exactly its own parts. Each sample weighs |members| / global_samples, so the
// mean over the group of sum(w_i * l_i) is the mean loss of the step's global batch (the
// gradient contract of workload.h with uneven shares).
struct ElasticShare {
  std::vector<int64_t> indices;
  int64_t global_samples = 0;  // the step's samples over all ranks
  double weight = 0;           // per-sample loss weight
};
ElasticShare elastic_share(const std::function<std::vector<int64_t>(int)>& part, int world,
                           const std::vector<int>& members, int me);

// Where a job continues when it resumes at another world size or global batch (issue 22):
// step `step` of a job with `from_steps_per_epoch` steps per epoch and `from_global_batch`
// samples per step maps to the step of a job with `to_steps_per_epoch` and `to_global_batch`
// that starts at the same place of the same data order. Every epoch's permutation depends on
// (seed, epoch) only and step s of an epoch covers its positions [s·G, (s+1)·G) whatever the
// world, so the resumed job stays in the same epoch, at the batch that holds the first position
// not visited yet: rounding down, no sample of the epoch is skipped and fewer than
// `to_global_batch` are seen twice. The same arguments on both sides return `step`.
// INVALID_ARGUMENT for a negative step or a count < 1.
Result<int64_t> step_at_other_world(int64_t step, int64_t from_steps_per_epoch,
                                    int64_t from_global_batch, int64_t to_steps_per_epoch,
                                    int64_t to_global_batch);

// Deterministic 64-bit mixing (splitmix64): seeds derived from (seed, epoch, rank, ...).
uint64_t mix_seed(uint64_t a, uint64_t b);

}  // namespace tern
