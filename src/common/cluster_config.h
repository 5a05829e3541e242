// ClusterConfig: one file that describes a tern cluster — where the coordinator listens,
// where state lives, which worker daemons exist in which region, and the network between
// regions (used by the WAN emulation). Read by `tern cluster up/down`, the coordinator and
// (for the network model) by trainers via `tern run --cluster`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

struct LinkSpec {
  double latency_ms = 0.0;      // one-way
  double jitter_ms = 0.0;       // uniform +- jitter added per message
  double bandwidth_mbps = 0.0;  // megabit/s; 0 = unlimited
};

struct RegionSpec {
  std::string name;
  int64_t workers = 1;      // worker daemons in this region (local clusters start them)
  int64_t slots = 1;        // ranks each daemon can host
  std::string host = "127.0.0.1";
  std::vector<int64_t> gpus;  // GPU ids handed out to ranks (CUDA_VISIBLE_DEVICES)
};

struct NetworkSpec {
  bool emulate = true;
  LinkSpec intra_region;               // between two ranks of the same region
  LinkSpec inter_region_default;       // between regions with no explicit link
  std::map<std::pair<std::string, std::string>, LinkSpec> links;  // key: (a, b) with a < b

  // The link between two regions (symmetric).
  const LinkSpec& link(const std::string& a, const std::string& b) const;
};

struct ClusterConfig {
  std::string name = "local";
  std::string path;               // the file it came from
  std::string listen = "127.0.0.1:7070";  // coordinator address
  std::string state_dir;          // absolute; journal/, logs/, work/ live below it
  int64_t heartbeat_ms = 500;
  int64_t lease_ms = 3000;
  int64_t max_queued_jobs = 1000;
  std::string trainer_path;       // tern-trainer binary; default: next to `tern`
  std::vector<RegionSpec> regions;
  NetworkSpec network;

  std::string journal_dir() const { return state_dir + "/journal"; }
  std::string log_dir() const { return state_dir + "/logs"; }
  std::string work_dir() const { return state_dir + "/work"; }
  int64_t total_workers() const;
};

// Loads and validates a cluster file; relative paths are resolved against the current
// directory. Errors name file:line and the field. `overrides` are "a.b=c" like --set.
Result<ClusterConfig> load_cluster_config(const std::string& path,
                                          const std::vector<std::string>& overrides = {});
// Same, from text; `name` stands for the file in messages.
Result<ClusterConfig> parse_cluster_config(const std::string& text, const std::string& name);

}  // namespace tern
