#include "coordinator/network_map.h"

#include <cmath>
#include <numeric>
#include <set>

namespace tern {

Status NetworkMap::report(const std::string& from, const std::vector<LinkMeasurement>& links,
                          const std::function<bool(const std::string&)>& known, double now) {
  if (links.size() > options_.max_links_per_report) {
    return invalid_argument("links has " + std::to_string(links.size()) + " entries, at most " +
                            std::to_string(options_.max_links_per_report) + " are accepted");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < links.size(); ++i) {
    const LinkMeasurement& l = links[i];
    const std::string field = "links[" + std::to_string(i) + "]";
    if (l.peer == from) return invalid_argument(field + ".peer is the reporting worker itself");
    if (!known(l.peer)) return invalid_argument(field + ".peer: unknown worker '" + l.peer + "'");
    if (!seen.insert(l.peer).second)
      return invalid_argument(field + ".peer '" + l.peer + "' is reported twice");
    if (!std::isfinite(l.rtt_ms) || l.rtt_ms < 0 || l.rtt_ms > 600000) {
      return invalid_argument(field + ".rtt_ms must be in [0, 600000], got " +
                              std::to_string(l.rtt_ms));
    }
    if (!std::isfinite(l.bandwidth_mbps) || l.bandwidth_mbps <= 0 || l.bandwidth_mbps > 1e9) {
      return invalid_argument(field + ".bandwidth_mbps must be in (0, 1e9], got " +
                              std::to_string(l.bandwidth_mbps));
    }
  }
  auto& row = links_[from];
  for (const LinkMeasurement& l : links)
    row[l.peer] = {l.rtt_ms, l.bandwidth_mbps, l.emulated, now};
  return Status::ok();
}

void NetworkMap::forget(const std::string& worker) {
  links_.erase(worker);
  for (auto& [from, row] : links_) row.erase(worker);
}

std::optional<MeasuredLink> NetworkMap::link(const std::string& a, const std::string& b,
                                             double now) const {
  auto fresh = [&](const std::string& x, const std::string& y) -> std::optional<MeasuredLink> {
    auto row = links_.find(x);
    if (row == links_.end()) return std::nullopt;
    auto it = row->second.find(y);
    if (it == row->second.end() || now - it->second.at > options_.max_age_s) return std::nullopt;
    return it->second;
  };
  if (auto l = fresh(a, b)) return l;
  return fresh(b, a);
}

std::optional<CostMatrix> NetworkMap::cost_matrix(const std::vector<std::string>& workers,
                                                  double now) const {
  const size_t n = workers.size();
  CostMatrix cost(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i == j || workers[i] == workers[j]) continue;
      auto l = link(workers[i], workers[j], now);
      if (!l) return std::nullopt;
      cost[i][j] = link_seconds(l->rtt_ms / 2, l->bandwidth_mbps, options_.ring_bytes);
    }
  }
  return cost;
}

std::vector<size_t> ring_permutation(const std::vector<std::string>& rank_workers,
                                     const NetworkMap& map, double now) {
  std::vector<size_t> identity(rank_workers.size());
  std::iota(identity.begin(), identity.end(), size_t{0});
  auto cost = map.cost_matrix(rank_workers, now);
  if (!cost) return identity;
  auto order = ring_order(*cost);
  if (!order.is_ok()) return identity;  // the map only holds checked, finite figures
  std::vector<size_t> out;
  for (int r : *order) out.push_back(static_cast<size_t>(r));
  return out;
}

}  // namespace tern
