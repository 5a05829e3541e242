#include "common/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/job_spec.h"

namespace tern {
namespace {

TrainSpec train(const std::string& schedule) {
  TrainSpec t;
  t.lr = 0.1;
  EXPECT_TRUE(parse_spec_enum(schedule, &t.lr_schedule)) << schedule;
  return t;
}

TEST(LrSchedule, ConstantIsTheConfiguredRateAtEveryStep) {
  TrainSpec t = train("constant");
  for (int64_t s : {0, 1, 50, 99, 500}) EXPECT_DOUBLE_EQ(scheduled_lr(t, s, 100), 0.1);
}

TEST(LrSchedule, WarmUpRampsLinearlyToTheRate) {
  TrainSpec t = train("constant");
  t.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 0, 100), 0.025);
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 1, 100), 0.05);
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 3, 100), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 4, 100), 0.1);
}

TEST(LrSchedule, CosineFollowsTheFormulaAfterTheWarmUp) {
  TrainSpec t = train("cosine");
  t.warmup_steps = 10;
  t.lr_min = 0.001;
  const int64_t total = 110;
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 9, total), 0.1);                     // last warm-up step
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 10, total), 0.1);                    // p = 0
  EXPECT_NEAR(scheduled_lr(t, 60, total), 0.001 + 0.099 * 0.5, 1e-15);  // p = 1/2
  for (int64_t s : {20, 37, 85, 109}) {
    double p = static_cast<double>(s - 10) / 100.0;
    EXPECT_NEAR(scheduled_lr(t, s, total), 0.001 + 0.099 * 0.5 * (1 + std::cos(M_PI * p)), 1e-15)
        << s;
  }
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 110, total), 0.001);  // past the end: the floor, not a rise
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 400, total), 0.001);
  double prev = 1;
  for (int64_t s = 10; s < total; ++s) {  // monotone
    double lr = scheduled_lr(t, s, total);
    EXPECT_LE(lr, prev) << s;
    prev = lr;
  }
}

TEST(LrSchedule, StepDecaysAtEachFractionOfTheRun) {
  TrainSpec t = train("step");
  t.lr_decay_at = {0.5, 0.75};
  t.lr_gamma = 0.1;
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 0, 200), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 99, 200), 0.1);
  EXPECT_NEAR(scheduled_lr(t, 100, 200), 0.01, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 149, 200), 0.01, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 150, 200), 0.001, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 199, 200), 0.001, 1e-15);
}

TEST(LrSchedule, SpecFieldsParseAndBadOnesAreRefusedByName) {
  const std::string base = R"(name: t
workers: 2
model: {type: mlp}
data: {source: synthetic}
train: {lr: 0.1, lr_schedule: cosine, warmup_steps: 5, lr_min: 0.01}
)";
  auto r = load_job_spec_text(base, "job.yaml");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.train.lr_schedule, LrScheduleKind::kCosine);
  EXPECT_EQ(r->spec.train.warmup_steps, 5);
  EXPECT_DOUBLE_EQ(r->spec.train.lr_min, 0.01);

  auto bad = load_job_spec_text(base, "job.yaml", {"train.lr_schedule=linear"});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("train.lr_schedule"), std::string::npos)
      << bad.status().message();

  auto floor = load_job_spec_text(base, "job.yaml", {"train.lr_min=0.5"});
  ASSERT_FALSE(floor.is_ok());
  EXPECT_NE(floor.status().message().find("lr_min"), std::string::npos) << floor.status().message();

  auto frac = load_job_spec_text(base, "job.yaml",
                                 {"train.lr_schedule=step", "train.lr_decay_at=[0.5, 1.5]"});
  ASSERT_FALSE(frac.is_ok());
  EXPECT_NE(frac.status().message().find("lr_decay_at"), std::string::npos)
      << frac.status().message();
}

}  // namespace
}  // namespace tern
