#include "trainer/loop/sampler.h"

#include <numeric>
#include <random>

namespace tern {

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

ShardedSampler::ShardedSampler(int64_t dataset_size, int world, int rank, uint64_t seed)
    : size_(dataset_size), world_(world), rank_(rank), seed_(seed), per_rank_(dataset_size / world) {}

std::vector<int64_t> ShardedSampler::permutation(int64_t epoch) const {
  std::vector<int64_t> perm(static_cast<size_t>(size_));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(mix_seed(seed_, static_cast<uint64_t>(epoch)));
  // Fisher-Yates with our own bounded draw: std::shuffle's algorithm is unspecified.
  for (int64_t i = size_ - 1; i > 0; --i) {
    uint64_t j = rng() % static_cast<uint64_t>(i + 1);
    std::swap(perm[static_cast<size_t>(i)], perm[j]);
  }
  return perm;
}

std::vector<int64_t> ShardedSampler::epoch_indices(int64_t epoch) const {
  std::vector<int64_t> perm = permutation(epoch);
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(per_rank_));
  for (int64_t k = 0; k < per_rank_; ++k) mine.push_back(perm[static_cast<size_t>(rank_ + k * world_)]);
  return mine;
}

}  // namespace tern
