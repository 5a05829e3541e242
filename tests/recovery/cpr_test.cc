// CPR interval math against hand-computed values (docs/algorithms.md §5).
#include "recovery/cpr.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tern {
namespace {

TEST(Cpr, IntervalAndExpectedPlsByHand) {
  // N = 8 shards, PLS target 1 %, one failure per 10^6 samples:
  // tau = 2 * 8 * 0.01 / 1e-6 = 160,000 samples.
  EXPECT_NEAR(cpr_interval_samples(8, 0.01, 1e-6), 160000.0, 1e-6);
  // And back: 1e-6 * 160,000 / (2 * 8) = 0.01.
  EXPECT_NEAR(expected_pls(160000.0, 8, 1e-6), 0.01, 1e-12);
  // Half the interval halves the PLS; twice the shards halves it too.
  EXPECT_NEAR(expected_pls(80000.0, 8, 1e-6), 0.005, 1e-12);
  EXPECT_NEAR(expected_pls(160000.0, 16, 1e-6), 0.005, 1e-12);
  // One shard, PLS 0.1, lambda 0.001: 2 * 1 * 0.1 / 0.001 = 200 samples.
  EXPECT_NEAR(cpr_interval_samples(1, 0.1, 1e-3), 200.0, 1e-9);
}

TEST(Cpr, YoungDalyByHand) {
  // C = 10 s, MTBF 1 h: sqrt(2 * 10 * 3600) = sqrt(72000) = 268.328 s.
  EXPECT_NEAR(young_daly_interval_s(10.0, 1.0 / 3600), 268.3282, 1e-3);
  // C = 2 s, lambda = 1/50 s: sqrt(2 * 2 * 50) = sqrt(200) = 14.1421 s.
  EXPECT_NEAR(young_daly_interval_s(2.0, 0.02), 14.1421, 1e-3);
  // Overhead at tau: C/tau + lambda (tau / 2 + R) = 10/268.33 + (268.33/2 + 30)/3600
  //   = 0.037268 + 0.045602 = 0.082870; Young/Daly minimises it (R aside).
  double at_opt = full_recovery_overhead(268.3282, 10.0, 1.0 / 3600, 30.0);
  EXPECT_NEAR(at_opt, 0.08287, 1e-4);
  EXPECT_LT(at_opt, full_recovery_overhead(200.0, 10.0, 1.0 / 3600, 30.0));
  EXPECT_LT(at_opt, full_recovery_overhead(350.0, 10.0, 1.0 / 3600, 30.0));
}

TEST(Cpr, PlanConvertsUnitsAndLogsBothFormulas) {
  CheckpointPlanInputs in;
  in.n_shards = 4;
  in.pls_target = 0.02;
  in.mtbf_s = 1000;         // lambda_t = 1e-3 / s
  in.samples_per_s = 2000;  // lambda_s = 5e-7 / sample
  in.checkpoint_cost_s = 0.5;
  in.samples_per_step = 256;
  auto p = plan_checkpoint_interval(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_NEAR(p->failures_per_sample, 5e-7, 1e-15);
  // 2 * 4 * 0.02 / 5e-7 = 320,000 samples = 1250 steps of 256.
  EXPECT_NEAR(p->cpr_interval_samples, 320000.0, 1e-6);
  EXPECT_EQ(p->cpr_interval_steps, 1250);
  EXPECT_NEAR(p->cpr_expected_pls, 0.02, 1e-12);
  // sqrt(2 * 0.5 / 1e-3) = sqrt(1000) = 31.623 s = 63,246 samples = 247.05 -> 247 steps.
  EXPECT_NEAR(p->young_daly_interval_s, 31.6228, 1e-3);
  EXPECT_EQ(p->young_daly_interval_steps, 247);
  EXPECT_NE(p->summary.find("2*N*PLS/lambda"), std::string::npos) << p->summary;
  EXPECT_NE(p->summary.find("sqrt(2*C/lambda)"), std::string::npos) << p->summary;

  // An interval shorter than one step clamps to 1 and PLS stays reported honestly.
  in.pls_target = 1e-6;
  p = plan_checkpoint_interval(in);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->cpr_interval_steps, 1);
  EXPECT_GT(p->cpr_expected_pls, in.pls_target);
}

TEST(Cpr, PlanRefusesBadInputsNamingThem) {
  CheckpointPlanInputs in;
  in.mtbf_s = 100;
  in.samples_per_s = 10;
  ASSERT_TRUE(plan_checkpoint_interval(in).is_ok());
  auto bad = in;
  bad.pls_target = 0;
  EXPECT_NE(plan_checkpoint_interval(bad).status().message().find("pls_target"), std::string::npos);
  bad = in;
  bad.mtbf_s = -1;
  EXPECT_NE(plan_checkpoint_interval(bad).status().message().find("mtbf_s"), std::string::npos);
  bad = in;
  bad.n_shards = 0;
  EXPECT_NE(plan_checkpoint_interval(bad).status().message().find("n_shards"), std::string::npos);
  bad = in;
  bad.samples_per_s = std::nan("");
  EXPECT_FALSE(plan_checkpoint_interval(bad).is_ok());
}

}  // namespace
}  // namespace tern
