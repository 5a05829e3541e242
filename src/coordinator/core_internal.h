// Helpers shared by the files that implement CoordinatorCore (coordinator_core.cc: open,
// journal, client reads; core_submit.cc; core_workers.cc: registration, heartbeats, leases;
// core_events.cc: the job state machine; core_placement.cc: scheduling and regroups). Not part
// of the coordinator's interface.
#pragma once

#include <string>

#include "coordinator/types.h"

namespace tern {

// The end of a failure reason when recovery is on but used up ("" for recovery.mode none).
inline std::string no_regroup_left(const Job& job) {
  if (job.recovery_mode == RecoveryMode::kNone) return "";
  return "; no regroup left (" + std::to_string(job.recoveries) + " of recovery.max_recoveries " +
         std::to_string(job.max_recoveries) + " used)";
}

}  // namespace tern
