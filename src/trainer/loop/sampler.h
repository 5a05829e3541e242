// ShardedSampler: which samples this rank sees in each epoch. One permutation of the dataset
// per epoch, derived only from (seed, epoch) so every rank computes the same one; rank r takes
// positions r, r + world, r + 2·world, ... Every rank gets the same count (the tail that
// does not divide evenly is dropped), so all ranks run the same number of steps.
// Pure function of its inputs: no torch, no global RNG. Thread-safe (const).
#pragma once

#include <cstdint>
#include <vector>

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

// Deterministic 64-bit mixing (splitmix64): seeds derived from (seed, epoch, rank, ...).
uint64_t mix_seed(uint64_t a, uint64_t b);

}  // namespace tern
