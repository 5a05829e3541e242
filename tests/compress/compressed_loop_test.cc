// int4, topk and gradiveq in the training loop (issues 21 and 24): with sync.strategy dts the
// compressor carries the parameter deltas ("pseudo-gradients"), with ssgd the gradients. On 2
// ranks, a few steps: the replicas end bit-identical after the final drain, the compressor really
// ran (its name in the summary, fewer bytes than dense, parameters unlike the dense run's), nothing
// diverged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/job_spec.h"
#include "testing/gloo_group.h"
#include "testing/train_ranks.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

JobSpec spec_with(std::vector<std::string> sets) {
  auto r = load_job_spec_text(
      "name: c\nworkers: 2\nmodel: {type: mlp}\n"
      "data: {source: synthetic, train_size: 512, test_size: 128}\n"
      "train: {epochs: 1, steps: 12, batch_size: 16, lr: 0.05, momentum: 0.9, seed: 3}\n",
      "compressed_loop.yaml", sets);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

using RankResult = testing::RankRun;

std::vector<RankResult> train(const JobSpec& spec) { return testing::train_ranks(spec); }

void expect_compressed_run(const std::vector<std::string>& sync, const std::string& method,
                           const std::vector<std::string>& extra = {}) {
  const std::string what = sync[0] + " " + method;
  auto dense = train(spec_with(sync));
  auto with = sync;
  with.push_back("compress.method=" + method);
  with.insert(with.end(), extra.begin(), extra.end());
  auto runs = train(spec_with(with));
  ASSERT_EQ(runs.size(), 2u);
  ASSERT_EQ(runs[0].params.size(), runs[1].params.size());
  ASSERT_FALSE(runs[0].params.empty());
  double diff = 0;
  for (size_t i = 0; i < runs[0].params.size(); ++i) {
    EXPECT_TRUE(testing::same_bits(runs[0].params[i], runs[1].params[i]))
        << what << ": parameter " << i;
    EXPECT_TRUE(at::isfinite(runs[0].params[i]).all().item<bool>()) << what << ": parameter " << i;
    diff = std::max(diff, (runs[0].params[i] - dense[0].params[i]).abs().max().item<double>());
  }
  EXPECT_GT(diff, 0.0) << what << ": the compressor changed nothing";
  for (const auto& r : runs) {
    EXPECT_EQ(r.summary.value("compressor", ""), method) << what;
    EXPECT_GT(r.summary.value("compression_ratio", 0.0), 1.0) << what;
  }
}

TEST(CompressedLoop, DtsWithTopkEndsWithIdenticalReplicas) {
  expect_compressed_run({"sync.strategy=dts", "sync.delay=2", "sync.period=3"}, "topk");
}

TEST(CompressedLoop, DtsWithInt4EndsWithIdenticalReplicas) {
  expect_compressed_run({"sync.strategy=dts", "sync.delay=2", "sync.period=3"}, "int4");
}

TEST(CompressedLoop, SsgdWithTopkFp16AndInt4Train) {
  expect_compressed_run({"sync.strategy=ssgd"}, "topk", {"compress.value_bits=16"});
  expect_compressed_run({"sync.strategy=ssgd"}, "int4", {"compress.block_size=32"});
}

TEST(CompressedLoop, GradiveqInSsgdAndDssgdEndsWithIdenticalReplicas) {
  // Its defaults (shaped slices, each step's own basis, error feedback), the paper's periodic
  // basis on flat slices, a delayed finish (dssgd: the next start() comes first) and matrix
  // slicing.
  expect_compressed_run({"sync.strategy=ssgd"}, "gradiveq", {"compress.start_iter=2"});
  expect_compressed_run(
      {"sync.strategy=ssgd"}, "gradiveq",
      {"compress.start_iter=2", "compress.slicing=flat", "compress.refresh_every=3"});
  expect_compressed_run({"sync.strategy=dssgd", "sync.delay=2"}, "gradiveq",
                        {"compress.start_iter=2", "compress.basis_size=4"});
  // slicing matrix (the MLP's fc1 and fc2 by their columns, fc3 dense), undelayed and delayed.
  const std::vector<std::string> matrix = {"compress.start_iter=2", "compress.slicing=matrix",
                                           "compress.basis_size=16"};
  expect_compressed_run({"sync.strategy=ssgd"}, "gradiveq", matrix);
  expect_compressed_run({"sync.strategy=dssgd", "sync.delay=2"}, "gradiveq", matrix);
}

}  // namespace
}  // namespace tern
