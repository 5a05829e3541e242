// What a workload (a model plus its data; src/trainer/loop/workload.h) can and cannot do, as
// the control plane sees it before anything is built: the job spec's validation refuses a
// spec that asks a workload for what it cannot do, naming the field and the reason, so such a
// job never reaches a worker. The trainer's workloads report the same traits (one table, here).
// Torch-free, pure functions.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/job_spec.h"

namespace tern {

struct WorkloadTraits {
  std::string name;  // mlp | cnn | dlrm
  // Training samples can be read by index (straggler plans reassign samples between ranks);
  // false for a data set read as a stream (Criteo TSV).
  bool random_access = true;
  // Every rank joins every step's collectives inside the model (DLRM's embedding all-to-all):
  // a step cannot be decided without a slow rank, and a sample computed twice would update
  // the sharded state twice.
  bool collective_step = false;
  // Rank-local state beyond the replicated parameters (DLRM's embedding shard): checkpoints
  // can save rows of it (recovery.policy mfu | ssu) and a replacement rank rebuilds it.
  bool sharded_state = false;
  bool cpu_only = false;
};

// The traits of the workload spec.model.type / spec.data.source names.
WorkloadTraits workload_traits(const JobSpec& spec);

struct WorkloadRefusal {
  std::string field;   // the spec section or field ("straggler", "recovery", "device")
  std::string reason;  // one sentence: what cannot be done and why
};

// What `spec` asks of its workload that the workload cannot do; empty when nothing.
std::vector<WorkloadRefusal> workload_refusals(const JobSpec& spec);

}  // namespace tern
