#include "trainer/process/comm_stack.h"

#include <algorithm>
#include <optional>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "comm/wan_communicator.h"
#include "common/cluster_config.h"

namespace tern {

Result<CommStack> build_comm_stack(c10::intrusive_ptr<c10d::Store> store, const JobSpec& spec,
                                   const CommStackOptions& o) {
  std::optional<ClusterConfig> cluster;
  if (!o.cluster_file.empty()) {
    TERN_ASSIGN_OR_RETURN(ClusterConfig c, load_cluster_config(o.cluster_file));
    cluster = std::move(c);
  }
  if (!o.regions.empty() && static_cast<int>(o.regions.size()) != o.world) {
    return invalid_argument("--regions lists " + std::to_string(o.regions.size()) +
                            " regions for " + std::to_string(o.world) + " ranks");
  }
  auto wrap = [&](std::shared_ptr<Communicator> c, const std::vector<std::string>& regions,
                  uint64_t salt) -> Result<std::shared_ptr<Communicator>> {
    if (!cluster || regions.empty()) return c;
    return maybe_wrap_wan(std::move(c), *cluster, regions, o.seed + salt);
  };
  CommStack stack;
  TERN_ASSIGN_OR_RETURN(auto world, make_communicator(store, o.rank, o.world, o.comm));
  TERN_ASSIGN_OR_RETURN(stack.world, wrap(world, o.regions, 0));
  if (spec.sync.strategy != StrategyKind::kHierarchical) return stack;
  if (o.regions.empty()) {
    return invalid_argument(
        "sync.strategy hierarchical needs each rank's region (--cluster FILE with --regions)");
  }
  std::vector<std::string> order;  // regions in order of first appearance
  for (const auto& r : o.regions) {
    if (std::find(order.begin(), order.end(), r) == order.end()) order.push_back(r);
  }
  const std::string& mine = o.regions[static_cast<size_t>(o.rank)];
  std::vector<int> members;
  for (int r = 0; r < o.world; ++r) {
    if (o.regions[static_cast<size_t>(r)] == mine) members.push_back(r);
  }
  int index = static_cast<int>(std::find(members.begin(), members.end(), o.rank) - members.begin());
  auto intra_store = c10::make_intrusive<c10d::PrefixStore>("intra-" + mine, store);
  TERN_ASSIGN_OR_RETURN(
      auto intra, make_communicator(intra_store, index, static_cast<int>(members.size()), o.comm));
  TERN_ASSIGN_OR_RETURN(stack.intra,
                        wrap(intra, std::vector<std::string>(members.size(), mine), 1));
  if (index == 0) {
    int region_index =
        static_cast<int>(std::find(order.begin(), order.end(), mine) - order.begin());
    auto inter_store = c10::make_intrusive<c10d::PrefixStore>("inter", store);
    TERN_ASSIGN_OR_RETURN(auto inter, make_communicator(inter_store, region_index,
                                                        static_cast<int>(order.size()), o.comm));
    TERN_ASSIGN_OR_RETURN(stack.inter, wrap(inter, order, 2));
  }
  return stack;
}

}  // namespace tern
