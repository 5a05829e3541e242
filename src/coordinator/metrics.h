// The coordinator's Prometheus metrics: jobs and workers by state, per-job training progress
// (what the trainers' progress events carry through the daemons), and the RPC counters and
// latency histograms of the CallGuard. Rendered on each scrape from a consistent copy of
// the core's tables (list_jobs/list_workers), so a scrape never blocks the core for long.
#pragma once

#include <string>

#include "coordinator/coordinator_core.h"
#include "rpc/metrics.h"

namespace tern {

// Prometheus text format 0.0.4. `rpc` may be null.
std::string render_coordinator_metrics(const CoordinatorCore& core, const RpcMetrics* rpc);

}  // namespace tern
