// train.dp in the training loop (issue 25), ranks as threads over real Gloo:
//   - the MLP's vectorised and micro-batched per-sample gradients end a run alike, and the
//     summary's and progress events' epsilon is the accountant's for (q, sigma, steps);
//   - with a clip no gradient reaches and almost no noise, DP-SGD is plain SGD (the MLP, and
//     DLRM eager and lazy): the clipped sums are scaled like the non-private gradients;
//   - a DLRM run with LazyDP resumed from a checkpoint ends with the uninterrupted run's
//     parameters bit for bit and the same epsilon (the accountant and the LazyDP bookkeeping
//     come back from the checkpoint).
#include <gtest/gtest.h>

#include <filesystem>

#include "common/job_spec.h"
#include "privacy/rdp_accountant.h"
#include "testing/gloo_group.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
constexpr int kWorld = 2;

struct RankRun {
  Status setup, run;
  std::vector<at::Tensor> params;
  nlohmann::json summary;
  std::vector<nlohmann::json> events;
};

std::vector<RankRun> run_job(const JobSpec& spec) {
  std::vector<RankRun> out(kWorld);
  testing::run_ranks(kWorld, [&](int rank, std::shared_ptr<Communicator> comm) {
    MemorySink sink;
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = kWorld;
    o.job_id = "dp-test";
    TrainingLoop t(o, comm, &sink, make_workload(o.spec));
    RankRun& r = out[static_cast<size_t>(rank)];
    r.setup = t.setup();
    if (r.setup.is_ok()) r.run = t.run();
    for (auto& p : t.parameters()) r.params.push_back(p.detach().clone());
    r.summary = t.summary();
    r.events = sink.events;
  });
  for (size_t r = 0; r < out.size(); ++r) {
    EXPECT_TRUE(out[r].setup.is_ok()) << "rank " << r << ": " << out[r].setup.to_string();
    EXPECT_TRUE(out[r].run.is_ok()) << "rank " << r << ": " << out[r].run.to_string();
  }
  return out;
}

// 2 ranks x 192 samples, batch 16: q = 16 / 192.
JobSpec mlp(std::vector<std::string> overrides) {
  auto r = load_job_spec_text(
      "name: dp\nworkers: 2\nmodel: {type: mlp}\n"
      "data: {source: synthetic, train_size: 384, test_size: 64}\n"
      "train: {steps: 10, batch_size: 16, lr: 0.05, momentum: 0.9, seed: 5, log_every: 5}\n",
      "dp.yaml", overrides);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

JobSpec dlrm(std::vector<std::string> overrides) {
  auto r = load_job_spec_text(
      "name: dp-dlrm\nworkers: 2\nmodel: {type: dlrm, embedding_dim: 4, bottom_mlp: [8, 4], "
      "top_mlp: [8, 1]}\n"
      "data: {source: synthetic_ctr, num_tables: 4, table_size: 200, train_size: 2048, test_size: "
      "256}\n"
      "train: {steps: 20, batch_size: 32, lr: 0.2, seed: 3, log_every: 5}\n",
      "dp-dlrm.yaml", overrides);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

void expect_close(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, double rtol,
                  double atol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::allclose(a[i], b[i], rtol, atol))
        << "parameter " << i << " max abs diff " << (a[i] - b[i]).abs().max().item<double>();
  }
}

TEST(TrainerDp, MlpVectorisedEqualsMicrobatchAndEpsilonIsTheAccountants) {
  const std::vector<std::string> dp = {"train.dp.clip=0.1", "train.dp.noise_multiplier=1.1",
                                       "train.dp.delta=1e-5"};
  auto with = [&](const std::string& mode) {
    std::vector<std::string> o = dp;
    o.push_back("train.dp.per_sample=" + mode);
    return run_job(mlp(o));
  };
  auto vec = with("vectorized");
  auto micro = with("microbatch");
  RdpAccountant expect;
  expect.step(16.0 / 192.0, 1.1, 10);
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    expect_close(vec[r].params, micro[r].params, 1e-4, 1e-5);
    EXPECT_NEAR(vec[r].summary.value("epsilon", -1.0), expect.epsilon(1e-5), 1e-9);
    EXPECT_EQ(vec[r].summary.value("dp_steps", -1), 10);
    EXPECT_DOUBLE_EQ(vec[r].summary.value("dp_delta", -1.0), 1e-5);
    double last = 0;
    int progress = 0;
    for (const auto& e : vec[r].events) {
      if (e.value("event", "") != "progress") continue;
      ++progress;
      ASSERT_TRUE(e.contains("epsilon")) << e.dump();
      EXPECT_GT(e["epsilon"].get<double>(), last);
      last = e["epsilon"].get<double>();
    }
    EXPECT_EQ(progress, 2);
  }
  // And the noise is there: a run without it ends elsewhere.
  auto plain = run_job(mlp({}));
  EXPECT_FALSE(at::allclose(plain[0].params[0], vec[0].params[0], 1e-3, 1e-4));
  EXPECT_FALSE(plain[0].summary.contains("epsilon"));
}

TEST(TrainerDp, WithAnUnreachableClipAndNoNoiseDpSgdIsSgd) {
  const std::vector<std::string> off = {"train.dp.clip=1e5", "train.dp.noise_multiplier=1e-12"};
  {
    SCOPED_TRACE("mlp");
    auto plain = run_job(mlp({}));
    auto priv = run_job(mlp(off));
    expect_close(plain[0].params, priv[0].params, 1e-4, 1e-6);
  }
  auto plain = run_job(dlrm({"train.steps=8"}));
  for (const char* noise : {"eager", "lazy"}) {
    SCOPED_TRACE(std::string("dlrm ") + noise);
    std::vector<std::string> o = off;
    o.push_back("train.steps=8");
    o.push_back(std::string("train.dp.embedding_noise=") + noise);
    auto priv = run_job(dlrm(o));
    for (int r = 0; r < kWorld; ++r) expect_close(plain[r].params, priv[r].params, 1e-4, 1e-6);
    EXPECT_NEAR(priv[0].summary.value("test_auc", 0.0), plain[0].summary.value("test_auc", 1.0),
                1e-4);
  }
}

TEST(TrainerDp, LazyDlrmResumedEqualsUninterruptedWithTheSameEpsilon) {
  fs::path dir = testing::scratch_dir("tern_dp_test", "lazy_resume");
  fs::path full_dir = testing::scratch_dir("tern_dp_test", "lazy_full");
  const std::vector<std::string> dp = {"train.dp.clip=1.0", "train.dp.noise_multiplier=0.8",
                                       "train.dp.embedding_noise=lazy",
                                       "recovery.checkpoint_every=5"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> o = dp;
    o.insert(o.end(), more.begin(), more.end());
    return dlrm(o);
  };
  auto uninterrupted = run_job(with({"recovery.dir=" + full_dir.string()}));
  auto first = run_job(with({"train.steps=12", "recovery.dir=" + dir.string()}));
  auto resumed =
      run_job(with({"recovery.resume_from=" + dir.string(), "recovery.dir=" + dir.string()}));
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    ASSERT_EQ(resumed[r].params.size(), uninterrupted[r].params.size());
    for (size_t i = 0; i < resumed[r].params.size(); ++i) {
      EXPECT_TRUE(testing::same_bits(resumed[r].params[i], uninterrupted[r].params[i]))
          << "parameter " << i;
    }
    EXPECT_EQ(resumed[r].summary.value("resumed_from_step", -1), 10);
    EXPECT_EQ(resumed[r].summary.value("dp_steps", -1), 20);
    EXPECT_DOUBLE_EQ(resumed[r].summary.value("epsilon", -1.0),
                     uninterrupted[r].summary.value("epsilon", -2.0));
    EXPECT_DOUBLE_EQ(resumed[r].summary.value("test_auc", -1.0),
                     uninterrupted[r].summary.value("test_auc", -2.0));
    EXPECT_LT(first[r].summary.value("epsilon", 1e9), resumed[r].summary.value("epsilon", 0.0));
  }
}

}  // namespace
}  // namespace tern
