#include "common/workload_traits.h"

namespace tern {

WorkloadTraits workload_traits(const JobSpec& spec) {
  WorkloadTraits t;
  t.name = name_of(spec.model.type);
  if (spec.model.type == ModelType::kDlrm) {
    t.random_access = spec.data.source != DataSource::kCriteo;
    t.collective_step = true;
    t.sharded_state = true;
    t.cpu_only = true;
  }
  return t;
}

std::vector<WorkloadRefusal> workload_refusals(const JobSpec& spec) {
  const WorkloadTraits t = workload_traits(spec);
  std::vector<WorkloadRefusal> out;
  const StragglerMode mode = spec.straggler.mode;
  const std::string workload = "model.type " + t.name;
  if (mode != StragglerMode::kNone && !t.random_access) {
    out.push_back(
        {"straggler", "straggler.mode " + name_of(mode) +
                          " reassigns samples between ranks by index, but data.source " +
                          name_of(spec.data.source) +
                          " is read as a stream (each rank reads only its own share); use "
                          "straggler.mode none, or data.source synthetic_ctr"});
  } else if (t.collective_step &&
             (mode == StragglerMode::kGradientCoding || mode == StragglerMode::kCodedProportional ||
              mode == StragglerMode::kBackup || mode == StragglerMode::kRandomCode)) {
    out.push_back(
        {"straggler",
         "straggler.mode " + name_of(mode) + " decides a step without the slowest ranks, but " +
             workload +
             " looks up its embedding rows with an all-to-all every rank joins "
             "each step (and a sample computed by two ranks would update its rows twice); "
             "use straggler.mode proportional, which sizes each rank's share by its speed"});
  }
  if (!t.sharded_state && spec.recovery.policy != RowPolicy::kFull) {
    out.push_back(
        {"recovery", "policy " + name_of(spec.recovery.policy) +
                         " saves rows of an embedding shard, but " + workload +
                         " has no sharded state (they need model.type dlrm); use policy full"});
  }
  if (t.cpu_only && spec.device == DeviceKind::kCuda) {
    out.push_back(
        {"device",
         workload + " runs on the CPU (its embedding all-to-all and sparse updates are CPU code); "
                    "use device cpu or auto"});
  }
  return out;
}

}  // namespace tern
