#include "common/ring_order.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace tern {
namespace {

Status check_matrix(const CostMatrix& cost) {
  const size_t n = cost.size();
  for (size_t i = 0; i < n; ++i) {
    if (cost[i].size() != n) {
      return invalid_argument("cost matrix row " + std::to_string(i) + " has " +
                              std::to_string(cost[i].size()) + " entries, want " +
                              std::to_string(n) + " (square)");
    }
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      if (!std::isfinite(cost[i][j]) || cost[i][j] < 0) {
        return invalid_argument("cost[" + std::to_string(i) + "][" + std::to_string(j) +
                                "] must be finite and >= 0, got " + std::to_string(cost[i][j]));
      }
    }
  }
  return Status::ok();
}

// Nearest neighbour from `start`: each next node is the unvisited one behind the cheapest hop
// (ties: the lower index). Rotated so that it starts with node 0.
std::vector<int> nearest_neighbour(const CostMatrix& cost, int start) {
  const int n = static_cast<int>(cost.size());
  std::vector<bool> seen(static_cast<size_t>(n), false);
  std::vector<int> order = {start};
  seen[static_cast<size_t>(start)] = true;
  while (static_cast<int>(order.size()) < n) {
    const auto& row = cost[static_cast<size_t>(order.back())];
    int best = -1;
    for (int j = 0; j < n; ++j) {
      if (seen[static_cast<size_t>(j)]) continue;
      if (best < 0 || row[static_cast<size_t>(j)] < row[static_cast<size_t>(best)]) best = j;
    }
    seen[static_cast<size_t>(best)] = true;
    order.push_back(best);
  }
  std::rotate(order.begin(), std::find(order.begin(), order.end(), 0), order.end());
  return order;
}

// 2-opt under the lexicographic objective: reverse order[i..j] while that improves the ring
// (first improvement), within `*budget` evaluations.
void two_opt(const CostMatrix& cost, std::vector<int>* order, int64_t* budget) {
  const size_t n = order->size();
  RingCost best = ring_cost(cost, *order);
  bool improved = true;
  while (improved && *budget > 0) {
    improved = false;
    for (size_t i = 1; i + 1 < n && *budget > 0; ++i) {  // node 0 stays first
      for (size_t j = i + 1; j<n&& * budget> 0; ++j) {
        std::reverse(order->begin() + static_cast<long>(i),
                     order->begin() + static_cast<long>(j) + 1);
        --*budget;
        RingCost c = ring_cost(cost, *order);
        if (ring_better(c, best)) {
          best = c;
          improved = true;
        } else {
          std::reverse(order->begin() + static_cast<long>(i),
                       order->begin() + static_cast<long>(j) + 1);
        }
      }
    }
  }
}

}  // namespace

double link_seconds(double latency_ms, double bandwidth_mbps, double bytes) {
  double s = latency_ms / 1000.0;
  if (bandwidth_mbps > 0) s += bytes * 8.0 / (bandwidth_mbps * 1e6);
  return s;
}

CostMatrix modelled_cost(const NetworkSpec& network, const std::vector<std::string>& rank_regions,
                         double hop_bytes) {
  const size_t n = rank_regions.size();
  CostMatrix cost(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      const LinkSpec& l = network.link(rank_regions[i], rank_regions[j]);
      cost[i][j] = link_seconds(l.latency_ms, l.bandwidth_mbps, hop_bytes);
    }
  }
  return cost;
}

RingCost ring_cost(const CostMatrix& cost, const std::vector<int>& order) {
  RingCost c;
  const size_t n = order.size();
  if (n < 2) return c;
  for (size_t k = 0; k < n; ++k) {
    double hop = cost[static_cast<size_t>(order[k])][static_cast<size_t>(order[(k + 1) % n])];
    c.max_hop = std::max(c.max_hop, hop);
    c.total += hop;
  }
  return c;
}

bool ring_better(const RingCost& a, const RingCost& b) {
  const double tol = 1e-9 * std::max({std::abs(a.max_hop), std::abs(b.max_hop), 1e-300});
  if (a.max_hop < b.max_hop - tol) return true;
  if (a.max_hop > b.max_hop + tol) return false;
  const double ttol = 1e-9 * std::max({std::abs(a.total), std::abs(b.total), 1e-300});
  return a.total < b.total - ttol;
}

Result<std::vector<int>> ring_order(const CostMatrix& cost, const RingOrderOptions& options) {
  TERN_RETURN_IF_ERROR(check_matrix(cost));
  const int n = static_cast<int>(cost.size());
  std::vector<int> identity(static_cast<size_t>(n));
  std::iota(identity.begin(), identity.end(), 0);
  if (n < 3) return identity;  // one ring only
  std::vector<int> best = identity;
  RingCost best_cost = ring_cost(cost, best);
  // (n-1)! rings: 10 nodes are 362880 evaluations, the most the exact search is allowed.
  if (n <= std::min(options.exact_max_n, 10)) {
    std::vector<int> order = identity;
    while (std::next_permutation(order.begin() + 1, order.end())) {
      RingCost c = ring_cost(cost, order);
      if (ring_better(c, best_cost)) {
        best = order;
        best_cost = c;
      }
    }
    return best;
  }
  int64_t budget = options.max_evaluations;
  for (int start = 0; start < n && budget > 0; ++start) {
    std::vector<int> order = nearest_neighbour(cost, start);
    two_opt(cost, &order, &budget);
    RingCost c = ring_cost(cost, order);
    if (ring_better(c, best_cost)) {
      best = std::move(order);
      best_cost = c;
    }
  }
  return best;
}

Result<std::vector<int>> cluster_by_cost(const CostMatrix& cost, double threshold,
                                         double min_gap_ratio) {
  TERN_RETURN_IF_ERROR(check_matrix(cost));
  const size_t n = cost.size();
  auto sym = [&](size_t i, size_t j) { return std::max(cost[i][j], cost[j][i]); };
  if (threshold <= 0) {
    // The first jump by min_gap_ratio among the positive costs (a zero cost is two nodes on
    // one machine: no scale to compare with).
    std::vector<double> costs;
    for (size_t i = 0; i < n; ++i)
      for (size_t j = i + 1; j < n; ++j)
        if (sym(i, j) > 0) costs.push_back(sym(i, j));
    std::sort(costs.begin(), costs.end());
    threshold = costs.empty() ? 0 : costs.back();  // no gap: one group
    for (size_t k = 0; k + 1 < costs.size(); ++k) {
      if (costs[k + 1] >= min_gap_ratio * costs[k]) {
        threshold = costs[k];
        break;
      }
    }
  }
  // Union-find over the links at or under the threshold.
  std::vector<size_t> parent(n);
  std::iota(parent.begin(), parent.end(), size_t{0});
  auto find = [&](size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j)
      if (sym(i, j) <= threshold) {
        size_t a = find(i), b = find(j);
        parent[std::max(a, b)] = std::min(a, b);
      }
  std::vector<int> group(n, -1);
  std::vector<int> label(n, -1);
  int next = 0;
  for (size_t i = 0; i < n; ++i) {
    size_t root = find(i);
    if (label[root] < 0) label[root] = next++;
    group[i] = label[root];
  }
  return group;
}

}  // namespace tern
