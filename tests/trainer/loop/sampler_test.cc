#include "trainer/loop/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
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

// Resuming at another world size (issue 22): the samples the old world visited in the epoch
// before the step, plus those the new world visits from the mapped step to the epoch's end,
// cover every sample both worlds' epochs hold; fewer than one new global batch is seen twice;
// and the same world maps a step to itself.
TEST(StepAtOtherWorld, NoSampleOfTheEpochIsSkippedAndFewerThanOneBatchIsSeenTwice) {
  const int64_t size = 1000, batch = 16;
  const uint64_t seed = 9;
  for (int from : {1, 2, 3, 4}) {
    for (int to : {1, 2, 3, 4, 5}) {
      std::vector<std::unique_ptr<DataParallelParts>> old_parts, new_parts;
      for (int r = 0; r < from; ++r)
        old_parts.push_back(DataParallelParts::make(size, from, r, seed, batch).value());
      for (int r = 0; r < to; ++r)
        new_parts.push_back(DataParallelParts::make(size, to, r, seed, batch).value());
      const int64_t from_spe = old_parts[0]->steps_per_epoch(),
                    to_spe = new_parts[0]->steps_per_epoch();
      for (int64_t step :
           {int64_t{0}, int64_t{1}, int64_t{5}, from_spe - 1, from_spe, from_spe + 3}) {
        SCOPED_TRACE(std::to_string(from) + " -> " + std::to_string(to) + " ranks at step " +
                     std::to_string(step));
        auto mapped = step_at_other_world(step, from_spe, batch * from, to_spe, batch * to);
        ASSERT_TRUE(mapped.is_ok()) << mapped.status().to_string();
        if (from == to) {
          EXPECT_EQ(*mapped, step);
        }
        const int64_t epoch = step / from_spe;
        EXPECT_GE(*mapped, epoch * to_spe);  // the same epoch (or its very end)
        EXPECT_LE(*mapped, (epoch + 1) * to_spe);
        std::multiset<int64_t> seen;
        std::set<int64_t> epoch_samples;
        for (int64_t s = epoch * from_spe; s < step; ++s) {
          for (int r = 0; r < from; ++r) {
            for (int64_t i : old_parts[r]->part(s, r)) seen.insert(i);
          }
        }
        for (int64_t s = *mapped; s < (epoch + 1) * to_spe; ++s) {
          for (int r = 0; r < to; ++r) {
            for (int64_t i : new_parts[r]->part(s, r)) seen.insert(i);
          }
        }
        // What both worlds hold of the epoch (each drops its own tail of size mod world).
        for (int64_t s = epoch * to_spe; s < (epoch + 1) * to_spe; ++s) {
          for (int r = 0; r < to; ++r) {
            for (int64_t i : new_parts[r]->part(s, r)) epoch_samples.insert(i);
          }
        }
        std::set<int64_t> old_epoch;
        for (int64_t s = epoch * from_spe; s < (epoch + 1) * from_spe; ++s) {
          for (int r = 0; r < from; ++r) {
            for (int64_t i : old_parts[r]->part(s, r)) old_epoch.insert(i);
          }
        }
        int64_t twice = 0;
        for (int64_t i : epoch_samples) {
          if (!old_epoch.count(i)) continue;
          EXPECT_GE(seen.count(i), 1u) << "sample " << i << " skipped";
          twice += seen.count(i) > 1 ? 1 : 0;
        }
        EXPECT_LT(twice, batch * to);
      }
    }
  }
  EXPECT_FALSE(step_at_other_world(-1, 10, 16, 10, 16).is_ok());
  EXPECT_FALSE(step_at_other_world(3, 0, 16, 10, 16).is_ok());
  EXPECT_FALSE(step_at_other_world(3, 10, 16, 10, 0).is_ok());
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

// --- elastic shares (recovery.min_workers) ---

// One epoch of a 4-rank job whose group shrinks to {0, 1, 3} at step 5, to {1, 3} at step 9
// and grows back to all at step 14: every sample of the epoch is computed exactly once, by a
// member, and the weights make the group mean the mean over the step's global batch.
TEST(ElasticShare, NoSampleLostOrSeenTwiceInAnEpochAcrossShrinkAndGrow) {
  const int world = 4;
  const int64_t batch = 7;
  const int64_t size = 4 * 7 * 20 + 3;  // 20 steps; the tail is dropped as without elasticity
  std::vector<std::unique_ptr<DataParallelParts>> parts;
  for (int r = 0; r < world; ++r)
    parts.push_back(std::make_unique<DataParallelParts>(size, world, r, 11, batch));
  const int64_t steps = parts[0]->steps_per_epoch();
  ASSERT_EQ(steps, 20);
  auto group_at = [](int64_t s) -> std::vector<int> {
    if (s >= 5 && s < 9) return {0, 1, 3};
    if (s >= 9 && s < 14) return {1, 3};
    return {0, 1, 2, 3};
  };
  std::map<int64_t, int> seen;
  for (int64_t s = 0; s < steps; ++s) {
    const std::vector<int> members = group_at(s);
    double weight_sum = 0;
    int64_t step_samples = 0;
    for (int me : members) {
      ElasticShare share = elastic_share(
          [&](int r) { return parts[static_cast<size_t>(me)]->part(s, r); }, world, members, me);
      EXPECT_EQ(share.global_samples, 4 * batch) << "step " << s;
      if (members.size() == static_cast<size_t>(world)) {
        EXPECT_EQ(share.indices, parts[static_cast<size_t>(me)]->part(s, me))
            << "a whole group: its own part";
      }
      for (int64_t i : share.indices) ++seen[i];
      weight_sum += share.weight * static_cast<double>(share.indices.size());
      step_samples += static_cast<int64_t>(share.indices.size());
      // Shares differ by at most one sample of the vacant parts.
      EXPECT_LE(static_cast<int64_t>(share.indices.size()),
                batch +
                    (4 - static_cast<int64_t>(members.size())) * batch /
                        static_cast<int64_t>(members.size()) +
                    1);
    }
    EXPECT_EQ(step_samples, 4 * batch);
    // mean over members of sum(w) = 1: the group mean of the weighted losses is the batch mean.
    EXPECT_NEAR(weight_sum / static_cast<double>(members.size()), 1.0, 1e-12) << "step " << s;
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), 4 * batch * steps) << "none lost";
  for (const auto& [i, n] : seen) ASSERT_EQ(n, 1) << "sample " << i << " seen " << n << " times";
  std::set<int64_t> epoch;
  for (int r = 0; r < world; ++r) {
    for (int64_t i : ShardedSampler(size, world, r, 11).epoch_indices(0)) epoch.insert(i);
  }
  for (const auto& [i, n] : seen)
    EXPECT_TRUE(epoch.count(i)) << "sample " << i << " is not in the epoch";
}

TEST(ElasticShare, ANonMemberTakesNothingButItsOwnPart) {
  auto part = [](int r) { return std::vector<int64_t>{r * 10, r * 10 + 1}; };
  ElasticShare s = elastic_share(part, 3, {0, 1}, 2);
  EXPECT_EQ(s.indices, (std::vector<int64_t>{20, 21}));
  EXPECT_EQ(s.global_samples, 6);
}

}  // namespace
}  // namespace tern
