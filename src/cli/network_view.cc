#include "cli/network_view.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "cli/table.h"

namespace tern {

NetworkView network_view(const v1::ListWorkersReply& reply, double ring_bytes) {
  NetworkView v;
  for (const auto& w : reply.workers()) {
    if (w.state() == v1::WORKER_STATE_READY) v.workers.push_back(w.worker_id());
  }
  std::sort(v.workers.begin(), v.workers.end());
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < v.workers.size(); ++i) index[v.workers[i]] = i;
  const size_t n = v.workers.size();
  v.rtt_ms.assign(n, std::vector<double>(n, -1));
  v.bandwidth_mbps.assign(n, std::vector<double>(n, -1));
  std::vector<std::vector<bool>> own(n, std::vector<bool>(n, false));  // measured by [from]
  for (const auto& l : reply.links()) {
    auto a = index.find(l.from()), b = index.find(l.to());
    if (a == index.end() || b == index.end() || a->second == b->second) continue;
    const size_t i = a->second, j = b->second;
    v.emulated = v.emulated || l.emulated();
    v.rtt_ms[i][j] = l.rtt_ms();
    v.bandwidth_mbps[i][j] = l.bandwidth_mbps();
    own[i][j] = true;
    if (!own[j][i]) {  // the other side's own measurement wins
      v.rtt_ms[j][i] = l.rtt_ms();
      v.bandwidth_mbps[j][i] = l.bandwidth_mbps();
    }
  }
  v.complete = true;
  CostMatrix cost(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      if (v.rtt_ms[i][j] < 0 || v.bandwidth_mbps[i][j] <= 0) {
        v.complete = false;
        continue;
      }
      cost[i][j] = link_seconds(v.rtt_ms[i][j] / 2, v.bandwidth_mbps[i][j], ring_bytes);
    }
  }
  if (!v.complete || n == 0) return v;
  std::vector<int> plain(n);
  std::iota(plain.begin(), plain.end(), 0);
  auto ring = ring_order(cost);
  if (!ring.is_ok()) {
    v.complete = false;
    return v;
  }
  v.ring = *ring;
  v.plain = ring_cost(cost, plain);
  v.measured = ring_cost(cost, v.ring);
  return v;
}

void print_network(std::ostream& out, const NetworkView& v) {
  if (v.workers.empty()) {
    out << "no workers registered\n";
    return;
  }
  std::vector<std::string> header = {"FROM \\ TO"};
  for (const auto& w : v.workers) header.push_back(w);
  Table t(header);
  for (size_t i = 0; i < v.workers.size(); ++i) {
    std::vector<std::string> row = {v.workers[i]};
    for (size_t j = 0; j < v.workers.size(); ++j) {
      if (i == j) {
        row.push_back("-");
      } else if (v.rtt_ms[i][j] < 0) {
        row.push_back("?");
      } else {
        row.push_back(strf("%.1f ms / %.0f Mb/s", v.rtt_ms[i][j], v.bandwidth_mbps[i][j]));
      }
    }
    t.add_row(row);
  }
  t.print(out);
  out << "round-trip time / bandwidth; ? = not measured yet"
      << (v.emulated ? "; includes the cluster file's emulated WAN links" : "") << "\n";
  if (!v.complete) {
    out << "ring order: not every link is measured yet (placement keeps the plain order)\n";
    return;
  }
  std::string ring;
  for (int r : v.ring) ring += (ring.empty() ? "" : " -> ") + v.workers[static_cast<size_t>(r)];
  out << "ring order: " << ring << "\n"
      << strf("slowest hop %.1f ms (id order %.1f ms), ring %.1f ms (id order %.1f ms)\n",
              v.measured.max_hop * 1000, v.plain.max_hop * 1000, v.measured.total * 1000,
              v.plain.total * 1000);
}

nlohmann::json network_json(const NetworkView& v) {
  auto matrix = [](const std::vector<std::vector<double>>& m) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < m.size(); ++i) {
      nlohmann::json row = nlohmann::json::array();
      for (size_t j = 0; j < m.size(); ++j) {
        if (i == j || m[i][j] < 0) {
          row.push_back(nullptr);
        } else {
          row.push_back(m[i][j]);
        }
      }
      out.push_back(row);
    }
    return out;
  };
  nlohmann::json j = {{"workers", v.workers},
                      {"rtt_ms", matrix(v.rtt_ms)},
                      {"bandwidth_mbps", matrix(v.bandwidth_mbps)},
                      {"emulated", v.emulated},
                      {"complete", v.complete}};
  if (v.complete && !v.workers.empty()) {
    std::vector<std::string> ring;
    for (int r : v.ring) ring.push_back(v.workers[static_cast<size_t>(r)]);
    j["ring_order"] = ring;
    j["slowest_hop_ms"] = {{"plain", v.plain.max_hop * 1000}, {"ring", v.measured.max_hop * 1000}};
    j["ring_ms"] = {{"plain", v.plain.total * 1000}, {"ring", v.measured.total * 1000}};
  } else {
    j["ring_order"] = nullptr;
  }
  return j;
}

}  // namespace tern
