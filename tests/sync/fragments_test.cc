// Streaming fragments (sync/fragments.h) and the automatic d/T choice (sync/auto_plan.h): pure
// functions, checked by hand.
#include "sync/fragments.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sync/auto_plan.h"

namespace tern {
namespace {

std::vector<at::Tensor> model() {
  // An MLP's shapes, a 0-dim scalar and a 3-D tensor.
  return {at::zeros({64, 20}), at::zeros({64}), at::zeros({10, 64}),
          at::zeros({10}),     at::zeros({}),   at::zeros({3, 4, 5})};
}

TEST(Fragments, EveryElementIsInExactlyOneFragment) {
  for (int64_t count : {1, 2, 3, 4, 7, 16}) {
    auto params = model();
    auto frags = split_fragments(params, count);
    ASSERT_TRUE(frags.is_ok()) << frags.status().to_string();
    ASSERT_EQ(frags->size(), static_cast<size_t>(count));
    for (const auto& f : *frags) {
      EXPECT_FALSE(f.empty());
      for (auto& v : fragment_views(params, f)) v.add_(1);  // views write through
    }
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(at::equal(params[i], at::ones_like(params[i])))
          << "F=" << count << " parameter " << i;
    }
  }
}

TEST(Fragments, SizesDifferByAtMostARowAndOneFragmentIsTheWholeModel) {
  auto params = model();
  int64_t total = 0;
  for (auto& p : params) total += p.numel();
  auto one = split_fragments(params, 1);
  ASSERT_TRUE(one.is_ok());
  ASSERT_EQ((*one)[0].size(), params.size());  // whole tensors, in order
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(piece_view(params, (*one)[0][i]).is_same(params[i].detach()) ||
                piece_view(params, (*one)[0][i]).data_ptr() == params[i].data_ptr());
  }
  auto four = split_fragments(params, 4);
  ASSERT_TRUE(four.is_ok());
  int64_t widest_row = 64;  // the largest row of the model
  int64_t sum = 0;
  for (const auto& f : *four) {
    sum += fragment_numel(f);
    EXPECT_LE(std::abs(fragment_numel(f) - total / 4), widest_row + 1) << fragment_numel(f);
  }
  EXPECT_EQ(sum, total);
}

TEST(Fragments, MoreFragmentsThanRowsIsRefusedNamingTheField) {
  std::vector<at::Tensor> params{at::zeros({2, 100})};
  auto r = split_fragments(params, 3);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("sync.fragments"), std::string::npos)
      << r.status().to_string();
  EXPECT_FALSE(split_fragments(params, 0).is_ok());
}

TEST(AutoPlan, ShareFollowsTheFormula) {
  AutoPlanInputs in;
  in.step_s = 0.05;
  in.wait_s = 1.0;
  in.overhead_s = 0.01;
  in.fragments = 2;
  // 2 * (0.01 + max(0, 1.0 - 10 * 0.05)) / (32 * 0.05)
  EXPECT_DOUBLE_EQ(expected_sync_share(in, 10, 32), 2 * (0.01 + 0.5) / (32 * 0.05));
  EXPECT_DOUBLE_EQ(expected_sync_share(in, 30, 32), 2 * 0.01 / (32 * 0.05));
}

TEST(AutoPlan, PicksTheShortestPeriodThenTheSmallestDelayThatMeetTheTarget) {
  AutoPlanInputs in;
  in.step_s = 0.05;
  in.wait_s = 1.3;
  in.overhead_s = 0.02;
  in.target_share = 0.05;
  AutoPlan p = choose_delay_period(in);
  ASSERT_TRUE(p.met) << p.summary;
  EXPECT_LE(p.expected_share, 0.05);
  EXPECT_LE(p.delay, p.period / 2);
  // Nothing shorter on the ladder works with any allowed delay, and no smaller delay works.
  for (int64_t t : {2, 4, 8, 12, 16, 24, 32, 48, 64}) {
    if (t >= p.period) break;
    for (int64_t d = 0; d <= t / 2; ++d)
      EXPECT_GT(expected_sync_share(in, d, t), 0.05) << d << " " << t;
  }
  if (p.delay > 0) {
    EXPECT_GT(expected_sync_share(in, p.delay - 1, p.period), 0.05);
  }
  EXPECT_NE(p.summary.find("delay"), std::string::npos);
}

TEST(AutoPlan, KeepsFixedValuesAndSaysWhenTheTargetCannotBeMet) {
  AutoPlanInputs in;
  in.step_s = 0.01;
  in.wait_s = 2.0;
  in.overhead_s = 0.001;
  in.fixed_period = 8;  // only d is free, and at most half the period: the target is out of reach
  AutoPlan p = choose_delay_period(in);
  EXPECT_EQ(p.period, 8);
  EXPECT_EQ(p.delay, 4);
  EXPECT_FALSE(p.met);
  EXPECT_NE(p.summary.find("cannot be met"), std::string::npos);
  in.fixed_period = -1;
  in.fixed_delay = 0;  // tsu: only T is free
  in.wait_s = 0.2;
  p = choose_delay_period(in);
  EXPECT_EQ(p.delay, 0);
  EXPECT_LE(expected_sync_share(in, 0, p.period), in.target_share);
  // An outer optimizer needs d < T even where half the period would allow more.
  in = AutoPlanInputs{};
  in.step_s = 0.01;
  in.wait_s = 0.5;
  in.fragments = 4;
  in.outer = true;
  in.max_delay_share = 1.0;
  p = choose_delay_period(in);
  EXPECT_LT(p.delay, p.period);
  EXPECT_GE(p.period, 4);
}

TEST(AutoPlan, TrialDelaysRunFromThePlannedOneDownToHalfOfIt) {
  EXPECT_EQ(delay_trials(18), (std::vector<int64_t>{18, 14, 9}));
  EXPECT_EQ(delay_trials(16), (std::vector<int64_t>{16, 12, 8}));
  EXPECT_EQ(delay_trials(3), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(delay_trials(2), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(delay_trials(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(delay_trials(0), (std::vector<int64_t>{0}));
}

TEST(AutoPlan, TheSmallestDelayWithinTheToleranceOfTheFastestWindowIsKept) {
  const std::vector<int64_t> d{18, 14, 9};
  EXPECT_EQ(choose_trial_delay(d, {4.0, 4.1, 4.5}, 0.03), 14);
  EXPECT_EQ(choose_trial_delay(d, {4.4, 4.2, 4.25}, 0.03), 9);
  EXPECT_EQ(choose_trial_delay(d, {4.0, 4.5, 4.11}, 0.03), 9);  // not monotone in d
  EXPECT_EQ(choose_trial_delay(d, {4.0, 4.5, 4.13}, 0.03), 18);
  EXPECT_EQ(choose_trial_delay(d, {5.0, 5.0, 5.0}, 0.0), 9);  // a tie: the smaller delay
  EXPECT_EQ(choose_trial_delay({6}, {1.0}, 0.03), 6);
}

}  // namespace
}  // namespace tern
