// The workload a job spec names: model.type mlp | cnn -> ImageWorkload, dlrm -> DlrmWorkload.
// The only place that knows every workload (the loop knows none of them).
#pragma once

#include <memory>

#include "common/job_spec.h"
#include "trainer/loop/workload.h"

namespace tern {

// Null for a model.type no workload trains (the loop's setup() then refuses the job).
std::unique_ptr<Workload> make_workload(const JobSpec& spec);

}  // namespace tern
