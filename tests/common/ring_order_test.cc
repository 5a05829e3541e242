#include "common/ring_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace tern {
namespace {

CostMatrix random_matrix(int n, uint32_t seed, bool symmetric) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> d(0.001, 1.0);
  CostMatrix c(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), 0.0));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      if (i != j) c[i][j] = d(rng);
  if (symmetric)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < i; ++j) c[i][j] = c[j][i];
  return c;
}

// The best ring by trying every permutation (no node fixed).
RingCost brute_force(const CostMatrix& c) {
  std::vector<int> order(c.size());
  std::iota(order.begin(), order.end(), 0);
  RingCost best = ring_cost(c, order);
  while (std::next_permutation(order.begin(), order.end())) {
    RingCost r = ring_cost(c, order);
    if (ring_better(r, best)) best = r;
  }
  return best;
}

bool is_permutation_of_n(const std::vector<int>& order, size_t n) {
  std::vector<int> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i)
    if (sorted[i] != static_cast<int>(i)) return false;
  return sorted.size() == n;
}

TEST(LinkSecondsTest, LatencyPlusSerialisation) {
  EXPECT_DOUBLE_EQ(link_seconds(70, 1000, 1e6), 0.070 + 8e6 / 1e9);
  EXPECT_DOUBLE_EQ(link_seconds(5, 0, 1e9), 0.005);  // unlimited bandwidth
  EXPECT_DOUBLE_EQ(link_seconds(0, 8, 1e6), 1.0);
}

TEST(ModelledCostTest, TheClusterFilesLinksPerRankPair) {
  NetworkSpec net;
  net.intra_region = {0.1, 0, 10000};
  net.inter_region_default = {200, 0, 1000};
  net.links[{"a", "b"}] = {50, 5, 0};  // bandwidth 0: unlimited
  CostMatrix c = modelled_cost(net, {"a", "b", "a", "c"}, 1e6);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_DOUBLE_EQ(c[0][0], 0);
  EXPECT_DOUBLE_EQ(c[0][1], 0.050);
  EXPECT_DOUBLE_EQ(c[1][0], 0.050);
  EXPECT_DOUBLE_EQ(c[0][2], link_seconds(0.1, 10000, 1e6));
  EXPECT_DOUBLE_EQ(c[1][3], link_seconds(200, 1000, 1e6));
}

TEST(RingCostTest, SlowestHopAndTotal) {
  CostMatrix c = {{0, 1, 5}, {2, 0, 3}, {4, 6, 0}};
  RingCost r = ring_cost(c, {0, 1, 2});  // 0->1 (1), 1->2 (3), 2->0 (4)
  EXPECT_DOUBLE_EQ(r.max_hop, 4);
  EXPECT_DOUBLE_EQ(r.total, 8);
  RingCost back = ring_cost(c, {0, 2, 1});  // 5 + 6 + 2: direction matters
  EXPECT_DOUBLE_EQ(back.max_hop, 6);
  EXPECT_DOUBLE_EQ(back.total, 13);
  EXPECT_DOUBLE_EQ(ring_cost(c, {1}).total, 0);
}

TEST(RingBetterTest, SlowestHopFirstThenTotal) {
  EXPECT_TRUE(ring_better({1, 10}, {2, 3}));
  EXPECT_FALSE(ring_better({2, 3}, {1, 10}));
  EXPECT_TRUE(ring_better({2, 3}, {2, 4}));
  EXPECT_FALSE(ring_better({2, 4}, {2, 4}));
}

TEST(RingOrderTest, ExactSearchMatchesBruteForce) {
  for (int n = 2; n <= 7; ++n) {
    for (uint32_t seed = 1; seed <= 5; ++seed) {
      for (bool sym : {true, false}) {
        CostMatrix c = random_matrix(n, seed * 31 + static_cast<uint32_t>(n), sym);
        auto order = ring_order(c);
        ASSERT_TRUE(order.is_ok()) << order.status().to_string();
        ASSERT_TRUE(is_permutation_of_n(*order, static_cast<size_t>(n)));
        EXPECT_EQ((*order)[0], 0);
        RingCost got = ring_cost(c, *order);
        RingCost want = brute_force(c);
        EXPECT_NEAR(got.max_hop, want.max_hop, 1e-12) << "n " << n << " seed " << seed;
        EXPECT_NEAR(got.total, want.total, 1e-9) << "n " << n << " seed " << seed;
      }
    }
  }
}

TEST(RingOrderTest, HeuristicNeverWorseThanInputOrder) {
  RingOrderOptions o;
  o.exact_max_n = 0;  // the heuristic even where the exact search would run
  for (int n : {3, 5, 9, 16, 40}) {
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      CostMatrix c = random_matrix(n, seed + 100 * static_cast<uint32_t>(n), seed % 2 == 0);
      std::vector<int> identity(static_cast<size_t>(n));
      std::iota(identity.begin(), identity.end(), 0);
      auto order = ring_order(c, o);
      ASSERT_TRUE(order.is_ok());
      ASSERT_TRUE(is_permutation_of_n(*order, static_cast<size_t>(n)));
      EXPECT_FALSE(ring_better(ring_cost(c, identity), ring_cost(c, *order))) << n << " " << seed;
    }
  }
  // A budget of zero evaluations still answers, with the better of the input order and the
  // nearest-neighbour ring from node 0.
  o.max_evaluations = 0;
  CostMatrix c = random_matrix(12, 7, true);
  auto order = ring_order(c, o);
  ASSERT_TRUE(order.is_ok());
  ASSERT_TRUE(is_permutation_of_n(*order, 12));
}

TEST(RingOrderTest, HeuristicNearOptimumOnSmallInputs) {
  // Against the exact answer where it can be had: the heuristic finds the optimal slowest hop
  // on these (the lexicographic objective makes 2-opt chase it first).
  RingOrderOptions heuristic;
  heuristic.exact_max_n = 0;
  int optimal = 0, cases = 0;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    CostMatrix c = random_matrix(8, seed, true);
    RingCost exact = ring_cost(c, *ring_order(c));
    RingCost got = ring_cost(c, *ring_order(c, heuristic));
    ++cases;
    if (std::abs(got.max_hop - exact.max_hop) < 1e-12) ++optimal;
    EXPECT_FALSE(ring_better(got, exact));  // never better than the optimum
  }
  EXPECT_GE(optimal, cases * 3 / 4);
}

TEST(RingOrderTest, RegionsEndUpContiguous) {
  // Two regions interleaved by index (0,2,4 in A; 1,3,5 in B): the ring crosses between them
  // exactly twice.
  const int n = 6;
  CostMatrix c(n, std::vector<double>(n, 0.0));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      if (i != j) c[i][j] = (i % 2 == j % 2) ? 0.001 : 0.1;
  std::vector<int> identity = {0, 1, 2, 3, 4, 5};
  EXPECT_DOUBLE_EQ(ring_cost(c, identity).total, 0.6);
  for (int exact : {8, 0}) {
    RingOrderOptions o;
    o.exact_max_n = exact;
    auto order = ring_order(c, o);
    ASSERT_TRUE(order.is_ok());
    EXPECT_NEAR(ring_cost(c, *order).total, 0.2 + 4 * 0.001, 1e-12) << "exact_max_n " << exact;
  }
}

TEST(RingOrderTest, DegenerateInputs) {
  EXPECT_TRUE(ring_order({})->empty());
  EXPECT_EQ(*ring_order({{0}}), std::vector<int>{0});
  EXPECT_EQ(*ring_order({{0, 1}, {1, 0}}), (std::vector<int>{0, 1}));
  // All equal: the input order (nothing is better).
  CostMatrix flat(5, std::vector<double>(5, 1.0));
  EXPECT_EQ(*ring_order(flat), (std::vector<int>{0, 1, 2, 3, 4}));
  // The diagonal is ignored, even when it is garbage.
  CostMatrix diag = {{std::nan(""), 1}, {1, -5}};
  EXPECT_TRUE(ring_order(diag).is_ok());
}

TEST(RingOrderTest, RefusesBrokenMatrices) {
  auto ragged = ring_order({{0, 1}, {1}});
  ASSERT_FALSE(ragged.is_ok());
  EXPECT_NE(ragged.status().message().find("row 1"), std::string::npos);
  auto negative = ring_order({{0, -1}, {1, 0}});
  ASSERT_FALSE(negative.is_ok());
  EXPECT_NE(negative.status().message().find("cost[0][1]"), std::string::npos);
  EXPECT_FALSE(ring_order({{0, std::numeric_limits<double>::infinity()}, {1, 0}}).is_ok());
  EXPECT_FALSE(ring_order({{0, std::nan("")}, {1, 0}}).is_ok());
  EXPECT_FALSE(cluster_by_cost({{0, -1}, {1, 0}}).is_ok());
}

TEST(ClusterByCostTest, GapSplitsRegions) {
  // wan-4region's model with two workers in ohio and oregon: 0.1 ms inside, 70+ ms between.
  const double in = 0.0001, ohio_oregon = 0.070, far = 0.210;
  CostMatrix c = {{0, in, ohio_oregon, ohio_oregon, far},
                  {in, 0, ohio_oregon, ohio_oregon, far},
                  {ohio_oregon, ohio_oregon, 0, in, far},
                  {ohio_oregon, ohio_oregon, in, 0, far},
                  {far, far, far, far, 0}};
  auto g = cluster_by_cost(c);
  ASSERT_TRUE(g.is_ok());
  EXPECT_EQ(*g, (std::vector<int>{0, 0, 1, 1, 2}));
  // An explicit threshold above the 70 ms links joins ohio and oregon.
  EXPECT_EQ(*cluster_by_cost(c, 0.1), (std::vector<int>{0, 0, 0, 0, 1}));
}

TEST(ClusterByCostTest, NoGapIsOneGroupAndAsymmetryUsesTheSlowerDirection) {
  CostMatrix even = {{0, 1, 1.5}, {1, 0, 2}, {1.5, 2, 0}};
  EXPECT_EQ(*cluster_by_cost(even), (std::vector<int>{0, 0, 0}));
  EXPECT_TRUE(cluster_by_cost({})->empty());
  EXPECT_EQ(*cluster_by_cost({{0}}), std::vector<int>{0});
  // 0->1 is fast but 1->0 slow: not one group under a threshold between the two.
  CostMatrix asym = {{0, 0.001}, {0.5, 0}};
  EXPECT_EQ(*cluster_by_cost(asym, 0.01), (std::vector<int>{0, 1}));
  // Same machine (cost 0) twice and a node 1 s away: zero costs give no scale and the positive
  // ones hold no jump, so one group (a threshold splits them).
  CostMatrix same = {{0, 0, 1}, {0, 0, 1}, {1, 1, 0}};
  EXPECT_EQ(*cluster_by_cost(same), (std::vector<int>{0, 0, 0}));
  EXPECT_EQ(*cluster_by_cost(same, 0.5), (std::vector<int>{0, 0, 1}));
}

}  // namespace
}  // namespace tern
