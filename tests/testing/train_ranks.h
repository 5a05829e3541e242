// Test helper: trains a job spec with one thread per rank over a real Gloo group (the training
// loop and workload a trainer process would run) and returns every rank's final parameters and
// summary. A setup or run failure is a test failure.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "common/job_spec.h"
#include "testing/gloo_group.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/make_workload.h"

namespace tern::testing {

struct RankRun {
  std::vector<at::Tensor> params;
  nlohmann::json summary;
};

inline std::vector<RankRun> train_ranks(const JobSpec& spec) {
  const int world = static_cast<int>(spec.workers);
  std::vector<RankRun> out(static_cast<size_t>(world));
  run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = world;
    MemorySink sink;
    TrainingLoop t(o, comm, &sink, make_workload(o.spec));
    Status s = t.setup();
    ASSERT_TRUE(s.is_ok()) << "rank " << rank << ": " << s.to_string();
    s = t.run();
    ASSERT_TRUE(s.is_ok()) << "rank " << rank << ": " << s.to_string();
    RankRun& r = out[static_cast<size_t>(rank)];
    for (auto& p : t.parameters()) r.params.push_back(p.detach().clone());
    r.summary = t.summary();
  });
  return out;
}

}  // namespace tern::testing
