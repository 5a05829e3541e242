// Ring order from a cost matrix (network-aware placement, issue 24).
//
// A ring all-reduce sends every chunk around the ranks in rank order: rank k sends to rank
// k+1 (mod n). Its step time is set by the slowest hop and its latency by the sum of the hops,
// so the ranks of a job are ordered to minimise (slowest hop, then total ring time)
// lexicographically. Pure functions, no I/O; the coordinator feeds them the measured
// matrix (coordinator/network_map.h) and the WAN bench the modelled one.
//
// Heuristic (ring_order):
//   - n <= RingOrderOptions::exact_max_n: exact, by trying every ring (rank 0 fixed, (n-1)!
//     orders; 8 nodes = 5040 rings);
//   - larger n: nearest neighbour from every start node (the next node is the one behind the
//     cheapest hop), each improved by 2-opt (segment reversals) under the same
//     lexicographic objective until no move improves or the evaluation budget is spent;
//   - the result is never worse than the input order (0, 1, ..., n-1): it is a candidate too.
#pragma once

#include <cstdint>
#include <vector>

#include "common/cluster_config.h"
#include "common/status.h"

namespace tern {

// cost[i][j]: seconds for one hop from node i to node j (need not be symmetric); the diagonal
// is ignored. Every entry finite and >= 0.
using CostMatrix = std::vector<std::vector<double>>;

// Seconds to move `bytes` over a link: one-way latency plus serialisation at the bandwidth
// (0 = unlimited). The cost model shared by the coordinator's measured matrix and the WAN
// emulation's modelled one.
double link_seconds(double latency_ms, double bandwidth_mbps, double bytes);

// The matrix daemons report under WAN emulation, for ranks in the regions `rank_regions`:
// hop i -> j costs the modelled link's one-way latency plus `hop_bytes` at its bandwidth
// (the loopback part of a real probe left out).
CostMatrix modelled_cost(const NetworkSpec& network, const std::vector<std::string>& rank_regions,
                         double hop_bytes);

struct RingCost {
  double max_hop = 0;  // the slowest hop of the ring (s)
  double total = 0;    // the sum of the hops (s)
};

// The ring's cost in `order` (a permutation of 0..n-1; n < 2: zero).
RingCost ring_cost(const CostMatrix& cost, const std::vector<int>& order);

// True when `a` is strictly better than `b`: a smaller slowest hop, or (within a relative
// 1e-9) the same slowest hop and a smaller total.
bool ring_better(const RingCost& a, const RingCost& b);

struct RingOrderOptions {
  int exact_max_n = 8;                // exhaustive search up to this many nodes (at most 10)
  int64_t max_evaluations = 2000000;  // ring evaluations the 2-opt phase may spend (bounds time)
};

// A ring order of the n nodes (a permutation of 0..n-1, starting with 0); INVALID_ARGUMENT
// when `cost` is not square or holds a negative or non-finite entry off the diagonal.
Result<std::vector<int>> ring_order(const CostMatrix& cost, const RingOrderOptions& options = {});

// Groups nodes whose symmetric cost (max of both directions) is small: single linkage under a
// threshold. threshold <= 0 picks it from the largest gap: the off-diagonal costs sorted, the
// threshold sits below the first jump by at least `min_gap_ratio` (and one group when there is
// none). Returns the group of each node, groups numbered 0.. in order of their first node.
// INVALID_ARGUMENT as ring_order.
Result<std::vector<int>> cluster_by_cost(const CostMatrix& cost, double threshold = 0,
                                         double min_gap_ratio = 4.0);

}  // namespace tern
