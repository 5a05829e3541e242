#include "trainer/loop/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace tern {
namespace {

TEST(ShardedSampler, DeterministicFromSeedAndEpoch) {
  ShardedSampler a(1000, 4, 2, 7), b(1000, 4, 2, 7);
  EXPECT_EQ(a.epoch_indices(3), b.epoch_indices(3));
  EXPECT_NE(a.epoch_indices(3), a.epoch_indices(4));  // reshuffled every epoch
  ShardedSampler c(1000, 4, 2, 8);
  EXPECT_NE(a.epoch_indices(3), c.epoch_indices(3));  // the seed matters
}

TEST(ShardedSampler, ShardsAreDisjointAndEqualSized) {
  const int world = 3;
  std::set<int64_t> seen;
  for (int r = 0; r < world; ++r) {
    ShardedSampler s(1001, world, r, 1);
    auto idx = s.epoch_indices(0);
    EXPECT_EQ(static_cast<int64_t>(idx.size()), 1001 / world);
    for (int64_t i : idx) {
      EXPECT_GE(i, 0);
      EXPECT_LT(i, 1001);
      EXPECT_TRUE(seen.insert(i).second) << "sample " << i << " given to two ranks";
    }
  }
  EXPECT_EQ(seen.size(), 1001u - 1001u % world);
}

TEST(ShardedSampler, PermutationIsAPermutation) {
  ShardedSampler s(500, 1, 0, 3);
  auto p = s.permutation(2);
  std::sort(p.begin(), p.end());
  for (int64_t i = 0; i < 500; ++i) EXPECT_EQ(p[static_cast<size_t>(i)], i);
  // and is actually shuffled
  auto q = s.permutation(2);
  int fixed = 0;
  for (int64_t i = 0; i < 500; ++i) fixed += q[static_cast<size_t>(i)] == i;
  EXPECT_LT(fixed, 20);
}

}  // namespace
}  // namespace tern
