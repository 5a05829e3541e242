#include "trainer/loop/sampler.h"

#include <algorithm>
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
    : size_(dataset_size),
      world_(world),
      rank_(rank),
      seed_(seed),
      per_rank_(dataset_size / world) {}

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
  for (int64_t k = 0; k < per_rank_; ++k)
    mine.push_back(perm[static_cast<size_t>(rank_ + k * world_)]);
  return mine;
}

DataParallelParts::DataParallelParts(int64_t dataset_size, int world, int rank, uint64_t seed,
                                     int64_t batch_size)
    : size_(dataset_size),
      world_(world),
      rank_(rank),
      seed_(seed),
      batch_(batch_size),
      mine_(dataset_size, world, rank, seed),
      steps_per_epoch_(std::max<int64_t>(1, (mine_.per_rank() + batch_size - 1) / batch_size)) {}

Result<std::unique_ptr<DataParallelParts>> DataParallelParts::make(int64_t dataset_size, int world,
                                                                   int rank, uint64_t seed,
                                                                   int64_t batch_size) {
  auto parts = std::make_unique<DataParallelParts>(dataset_size, world, rank, seed, batch_size);
  if (parts->per_rank() == 0) {
    return invalid_argument("data set of " + std::to_string(dataset_size) +
                            " samples is too small for " + std::to_string(world) + " workers");
  }
  return parts;
}

Result<int64_t> step_at_other_world(int64_t step, int64_t from_steps_per_epoch,
                                    int64_t from_global_batch, int64_t to_steps_per_epoch,
                                    int64_t to_global_batch) {
  if (step < 0 || from_steps_per_epoch < 1 || from_global_batch < 1 || to_steps_per_epoch < 1 ||
      to_global_batch < 1) {
    return invalid_argument("cannot map step " + std::to_string(step) + " (" +
                            std::to_string(from_steps_per_epoch) + " steps per epoch of " +
                            std::to_string(from_global_batch) + " samples) to " +
                            std::to_string(to_steps_per_epoch) + " steps per epoch of " +
                            std::to_string(to_global_batch) + " samples");
  }
  const int64_t epoch = step / from_steps_per_epoch;
  // Positions of the epoch's permutation visited (a step count per epoch bounds this well
  // inside int64).
  const int64_t visited = (step % from_steps_per_epoch) * from_global_batch;
  return epoch * to_steps_per_epoch + std::min(to_steps_per_epoch, visited / to_global_batch);
}

std::vector<int64_t> DataParallelParts::part(int64_t step, int rank) {
  const int64_t epoch = step / steps_per_epoch_;
  const int64_t pos = step % steps_per_epoch_;
  if (epoch != indices_epoch_) {
    epoch_indices_.assign(static_cast<size_t>(world_), {});
    indices_epoch_ = epoch;
  }
  auto& indices = epoch_indices_[static_cast<size_t>(rank)];
  if (indices.empty()) {
    indices = rank == rank_ ? mine_.epoch_indices(epoch)
                            : ShardedSampler(size_, world_, rank, seed_).epoch_indices(epoch);
  }
  const int64_t begin = std::min<int64_t>(pos * batch_, static_cast<int64_t>(indices.size()));
  const int64_t end = std::min<int64_t>(begin + batch_, static_cast<int64_t>(indices.size()));
  return std::vector<int64_t>(indices.begin() + begin, indices.begin() + end);
}

ElasticShare elastic_share(const std::function<std::vector<int64_t>(int)>& part, int world,
                           const std::vector<int>& members, int me) {
  ElasticShare out;
  const auto pos = std::find(members.begin(), members.end(), me);
  const int64_t g = pos - members.begin();
  const int64_t n = static_cast<int64_t>(members.size());
  std::vector<bool> is_member(static_cast<size_t>(world), false);
  for (int m : members) {
    if (m >= 0 && m < world) is_member[static_cast<size_t>(m)] = true;
  }
  int64_t vacant_seen = 0;  // position in the concatenated vacant parts
  for (int r = 0; r < world; ++r) {
    std::vector<int64_t> p = part(r);
    out.global_samples += static_cast<int64_t>(p.size());
    if (r == me) {
      out.indices.insert(out.indices.end(), p.begin(), p.end());
    } else if (!is_member[static_cast<size_t>(r)] && pos != members.end()) {
      for (int64_t k = 0; k < static_cast<int64_t>(p.size()); ++k) {
        if ((vacant_seen + k) % n == g) out.indices.push_back(p[static_cast<size_t>(k)]);
      }
      vacant_seen += static_cast<int64_t>(p.size());
    }
  }
  out.weight = out.global_samples > 0
                   ? static_cast<double>(n) / static_cast<double>(out.global_samples)
                   : 0.0;
  return out;
}

}  // namespace tern
