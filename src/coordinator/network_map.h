// NetworkMap: the coordinator's view of the measured network between worker daemons
// (issue 24). Daemons probe each other (worker/net_probe.h) and report round-trip time and
// bandwidth per peer with WorkerService.ReportNetwork; placement orders a job's ranks by
// ring_order over the matrix (common/ring_order.h), and `tern workers --network` prints it.
//
// Soft state, not journaled: a restarted coordinator starts empty and places in the plain
// order until the daemons' next reports (each daemon reports at once when it registers, and
// daemons re-register with a restarted coordinator), so nothing is lost that matters for more
// than one probe interval, and the journal stays free of a churning O(workers^2) table.
//
// Not thread-safe: owned by CoordinatorCore and touched under its mutex.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/ring_order.h"
#include "common/status.h"

namespace tern {

// One measurement a daemon reports: the link from it to `peer`.
struct LinkMeasurement {
  std::string peer;           // the peer's worker id
  double rtt_ms = 0;          // round-trip time (ms); with WAN emulation, including the model's
  double bandwidth_mbps = 0;  // megabit/s measured one way (this daemon -> peer)
  bool emulated = false;      // the figures include the cluster file's emulated link
};

struct MeasuredLink {
  double rtt_ms = 0;
  double bandwidth_mbps = 0;
  bool emulated = false;
  double at = 0;  // unix seconds when the coordinator got it
};

struct NetworkMapOptions {
  // Bytes of one ring hop used to weigh latency against bandwidth in the cost matrix: a hop
  // costs rtt/2 + bytes/bandwidth. 1 MiB is one ring chunk of a 4 MiB model over 4 ranks.
  double ring_bytes = 1 << 20;
  // Measurements older than this are not used (a daemon re-probes every few minutes).
  double max_age_s = 1800;
  size_t max_links_per_report = 4096;  // ReportNetwork entries beyond it: INVALID_ARGUMENT
};

class NetworkMap {
 public:
  explicit NetworkMap(NetworkMapOptions options = {}) : options_(options) {}

  // Stores `from`'s measurements after checking all of them (none stored on an error):
  // INVALID_ARGUMENT naming links[i] for an unknown peer (`known` says false), the reporter
  // itself, a repeated peer, rtt_ms outside [0, 600000] or not finite, bandwidth_mbps
  // outside (0, 1e9] or not finite, or more than max_links_per_report entries.
  Status report(const std::string& from, const std::vector<LinkMeasurement>& links,
                const std::function<bool(const std::string&)>& known, double now);
  // Drops everything measured from or to `worker` (it is gone or re-registered elsewhere).
  void forget(const std::string& worker);
  // The link a -> b measured by a, else b -> a measured by b (links are taken as symmetric
  // when only one side reported); nullopt when neither is fresh at `now`.
  std::optional<MeasuredLink> link(const std::string& a, const std::string& b, double now) const;
  // Seconds per hop between the given workers (NetworkMapOptions::ring_bytes); the same worker
  // twice costs 0. nullopt when a pair of distinct workers has no fresh measurement.
  std::optional<CostMatrix> cost_matrix(const std::vector<std::string>& workers, double now) const;
  // Everything stored, by reporter then peer (fresh or not).
  const std::map<std::string, std::map<std::string, MeasuredLink>>& all() const { return links_; }
  const NetworkMapOptions& options() const { return options_; }

 private:
  NetworkMapOptions options_;
  std::map<std::string, std::map<std::string, MeasuredLink>> links_;  // from -> peer -> link
};

// The order to give a job's ranks: `rank_workers[r]` is the worker rank r was placed on; the
// result is a permutation p such that rank k should go to the worker of old rank p[k]
// (ring_order over the measured costs, ranks on one worker 0 apart). The identity when the
// map lacks a pair (the plain order stands until every link is measured).
std::vector<size_t> ring_permutation(const std::vector<std::string>& rank_workers,
                                     const NetworkMap& map, double now);

}  // namespace tern
