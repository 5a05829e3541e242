// Builds the GradientReducer a job's `compress:` section asks for: dense bucketed all-reduce
// for method none, else the compressor (compress/compressor.h), each wrapped so that its own
// wire bytes are measured (ReducerStats::wire_bytes).
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "common/job_spec.h"
#include "common/status.h"

namespace tern {

struct ReducerContext {
  int64_t steps_per_epoch = 1;  // for warm-up schedules given in epochs
  int64_t seed = 0;             // per-rank seed for sampled thresholds
};

Result<std::unique_ptr<GradientReducer>> make_gradient_reducer(const JobSpec& spec,
                                                               Communicator& comm,
                                                               const ReducerContext& ctx);

}  // namespace tern
