#include "common/cluster_config.h"

#include <filesystem>
#include <set>

#include "common/yaml_reader.h"

namespace tern {
namespace {

void parse_link(YamlMap& m, LinkSpec* out) {
  m.get("latency_ms", &out->latency_ms, 0.0, 60000.0);
  m.get("jitter_ms", &out->jitter_ms, 0.0, 60000.0);
  m.get("bandwidth_mbps", &out->bandwidth_mbps, 0.0, 1e9);
}

}  // namespace

const LinkSpec& NetworkSpec::link(const std::string& a, const std::string& b) const {
  if (a == b) return intra_region;
  auto it = links.find(a < b ? std::make_pair(a, b) : std::make_pair(b, a));
  return it == links.end() ? inter_region_default : it->second;
}

int64_t ClusterConfig::total_workers() const {
  int64_t n = 0;
  for (const auto& r : regions) n += r.workers;
  return n;
}

namespace {

Result<ClusterConfig> parse_cluster_node(YAML::Node root, const std::string& path);

}  // namespace

Result<ClusterConfig> load_cluster_config(const std::string& path,
                                          const std::vector<std::string>& overrides) {
  TERN_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_file(path));
  for (const auto& o : overrides) TERN_RETURN_IF_ERROR(apply_override(&root, o));
  return parse_cluster_node(root, path);
}

Result<ClusterConfig> parse_cluster_config(const std::string& text, const std::string& name) {
  TERN_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_text(text, name));
  return parse_cluster_node(root, name);
}

namespace {

Result<ClusterConfig> parse_cluster_node(YAML::Node root, const std::string& path) {
  ErrorList errors(path);
  YamlMap m(root, "", &errors);
  ClusterConfig c;
  c.path = path;
  m.get("name", &c.name);
  {
    YamlMap co = m.child("coordinator");
    co.get("listen", &c.listen);
    co.get("heartbeat_ms", &c.heartbeat_ms, 10, 600000);
    co.get("lease_ms", &c.lease_ms, 50, 3600000);
    co.get("max_queued_jobs", &c.max_queued_jobs, 1, 1000000);
    co.finish();
    if (c.listen.find(':') == std::string::npos) co.error("listen", "must be HOST:PORT, got '" + c.listen + "'");
  }
  std::string state_dir = ".tern/" + c.name;
  m.get("state_dir", &state_dir);
  m.get("trainer", &c.trainer_path);
  m.require("regions");
  std::set<std::string> names;
  for (YamlMap r : m.child_list("regions")) {
    RegionSpec rs;
    r.require("name");
    r.get("name", &rs.name);
    r.get("workers", &rs.workers, 0, 4096);
    r.get("slots", &rs.slots, 1, 1024);
    r.get("host", &rs.host);
    std::vector<double> gpus;
    r.get_list("gpus", &gpus, 0, 1024);
    for (double g : gpus) rs.gpus.push_back(static_cast<int64_t>(g));
    r.finish();
    if (!rs.name.empty() && !names.insert(rs.name).second) r.error("name", "duplicate region '" + rs.name + "'");
    c.regions.push_back(rs);
  }
  if (m.has("regions") && c.regions.empty()) m.error("regions", "must list at least one region");
  {
    YamlMap n = m.child("network");
    n.get("emulate", &c.network.emulate);
    YamlMap intra = n.child("intra_region");
    parse_link(intra, &c.network.intra_region);
    intra.finish();
    YamlMap def = n.child("default");
    parse_link(def, &c.network.inter_region_default);
    def.finish();
    for (YamlMap l : n.child_list("links")) {
      std::vector<std::string> between;
      l.require("between");
      l.get_list("between", &between);
      LinkSpec ls;
      parse_link(l, &ls);
      l.finish();
      if (between.size() != 2) {
        if (l.has("between")) l.error("between", "must name exactly two regions");
        continue;
      }
      for (const auto& b : between) {
        if (!names.count(b)) l.error("between", "names unknown region '" + b + "'");
      }
      auto key = between[0] < between[1] ? std::make_pair(between[0], between[1])
                                          : std::make_pair(between[1], between[0]);
      c.network.links[key] = ls;
    }
    n.finish();
  }
  m.finish();
  TERN_RETURN_IF_ERROR(errors.to_status());
  std::error_code ec;
  c.state_dir = std::filesystem::absolute(state_dir, ec).lexically_normal().string();
  if (!c.trainer_path.empty()) {
    c.trainer_path = std::filesystem::absolute(c.trainer_path, ec).lexically_normal().string();
  }
  return c;
}

}  // namespace
}  // namespace tern
