#include "straggler/work_split.h"

#include <gtest/gtest.h>

#include <numeric>

namespace tern {
namespace {

TEST(WorkSplit, SharesSumToTotalAndFollowTheWeights) {
  auto s = proportional_split(128, {1.0, 1.0, 1.0, 0.25});
  EXPECT_EQ(std::accumulate(s.begin(), s.end(), int64_t{0}), 128);
  EXPECT_EQ(s[0], s[1]);
  EXPECT_NEAR(static_cast<double>(s[0]) / static_cast<double>(s[3]), 4.0, 0.5);
  EXPECT_EQ(proportional_split(10, {1, 1, 1}),
            (std::vector<int64_t>{4, 3, 3}));  // ties to the lower index
}

TEST(WorkSplit, EveryRankGetsAtLeastMinEachAndMissingEstimatesCountAsSlowest) {
  auto s = proportional_split(100, {1000.0, 1.0, 0.0});
  EXPECT_GE(s[1], 1);
  EXPECT_GE(s[2], 1);
  EXPECT_EQ(s[1], s[2]);  // 0 counts as the smallest positive weight
  EXPECT_EQ(std::accumulate(s.begin(), s.end(), int64_t{0}), 100);
  auto tiny = proportional_split(2, {1.0, 1.0, 1.0});  // fewer items than ranks
  EXPECT_EQ(std::accumulate(tiny.begin(), tiny.end(), int64_t{0}), 2);
  EXPECT_EQ(share_offsets({3, 4, 5}), (std::vector<int64_t>{0, 3, 7, 12}));
}

TEST(WorkSplit, SpeedEstimatorConvergesToTheObservedRate) {
  SpeedEstimator e(0.3);
  EXPECT_FALSE(e.has_estimate());
  e.observe(0, 1.0);   // ignored
  e.observe(10, 0.0);  // ignored
  EXPECT_FALSE(e.has_estimate());
  e.observe(100, 1.0);
  EXPECT_DOUBLE_EQ(e.speed(), 100.0);
  for (int i = 0; i < 40; ++i) e.observe(100, 4.0);
  EXPECT_NEAR(e.speed(), 25.0, 0.01);
}

}  // namespace
}  // namespace tern
