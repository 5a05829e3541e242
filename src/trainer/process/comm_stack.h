// The communicators a trainer uses, built once per generation: the job-wide one (WAN-emulated
// when the cluster file asks for it), and for hierarchical sync the rank's region group plus,
// on region leaders (the lowest rank of each region), the group of leaders.
#pragma once

#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "comm/communicator.h"
#include "comm/process_group.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/loop/regroup.h"  // CommStack

namespace tern {

struct CommStackOptions {
  int rank = 0;
  int world = 1;
  CommunicatorOptions comm;
  std::string cluster_file;          // regions + network; WAN emulation when network.emulate
  std::vector<std::string> regions;  // region of every rank (may be empty without a cluster)
  uint64_t seed = 0;                 // WAN jitter seed (same on every rank)
};

Result<CommStack> build_comm_stack(c10::intrusive_ptr<c10d::Store> generation_store,
                                   const JobSpec& spec, const CommStackOptions& options);

}  // namespace tern
