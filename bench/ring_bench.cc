// bench/ring_order.sh's tool: the plain rank order against the measured ring order
// (common/ring_order.h) on a cluster file's WAN model. One rank per worker slot; the plain
// order is the coordinator's without measurements (regions by name, in file order within a
// region); the measured one is ring_order over the matrix the daemons report under emulation
// (one-way latency + hop bytes / bandwidth of the modelled link). For each order: the slowest
// ring hop, the ring's total, and the modelled ring all-reduce of --bytes from the trainers'
// own WAN model (comm/wan_communicator.h, no jitter). Prints one JSON line per order.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "comm/wan_communicator.h"
#include "common/cluster_config.h"
#include "common/ring_order.h"

int main(int argc, char** argv) {
  std::string cluster_file;
  int64_t bytes = 4 << 20;
  CLI::App app{"plain vs measured ring order on a cluster's WAN model"};
  app.add_option("--cluster", cluster_file, "cluster file")->required();
  app.add_option("--bytes", bytes, "all-reduce payload in bytes")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto cluster = tern::load_cluster_config(cluster_file);
  if (!cluster.is_ok()) {
    std::cerr << cluster.status().message() << "\n";
    return 2;
  }
  std::vector<std::string> plain;
  std::vector<tern::RegionSpec> regions = cluster->regions;
  std::stable_sort(regions.begin(), regions.end(),
                   [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& r : regions)
    for (int64_t i = 0; i < r.workers * r.slots; ++i) plain.push_back(r.name);
  const size_t n = plain.size();
  if (n < 2) {
    std::cerr << cluster_file << ": fewer than 2 ranks\n";
    return 2;
  }
  // What the daemons would report: rtt/2 = the modelled one-way latency (the loopback part is
  // left out), bandwidth = the model's; the hop carries one ring chunk of the payload.
  const double hop_bytes =
      static_cast<double>(bytes) / static_cast<double>(n) / tern::kWirePayloadShare;
  const tern::CostMatrix cost = tern::modelled_cost(cluster->network, plain, hop_bytes);
  auto t0 = std::chrono::steady_clock::now();
  auto order = tern::ring_order(cost);
  const double search_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!order.is_ok()) {
    std::cerr << order.status().message() << "\n";
    return 3;
  }
  auto groups = tern::cluster_by_cost(cost);
  std::vector<int> identity(n);
  for (size_t i = 0; i < n; ++i) identity[i] = static_cast<int>(i);
  for (const auto& [name, perm] : {std::make_pair(std::string("plain"), identity),
                                   std::make_pair(std::string("measured"), *order)}) {
    std::vector<std::string> rank_regions;
    for (int r : perm) rank_regions.push_back(plain[static_cast<size_t>(r)]);
    tern::RingCost rc = tern::ring_cost(cost, perm);
    tern::WanModel model(rank_regions, cluster->network);
    nlohmann::json j = {
        {"cluster", cluster->name},
        {"order", name},
        {"ranks", n},
        {"bytes", bytes},
        {"rank_regions", rank_regions},
        {"slowest_hop_ms", rc.max_hop * 1000},
        {"ring_ms", rc.total * 1000},
        {"allreduce_ms", model.seconds(tern::CollectiveKind::kAllReduce, bytes) * 1000},
        {"search_ms", name == "plain" ? 0.0 : search_ms},
        {"measured_groups", groups.is_ok() ? *groups : std::vector<int>{}}};
    std::cout << j.dump() << "\n";
  }
  return 0;
}
