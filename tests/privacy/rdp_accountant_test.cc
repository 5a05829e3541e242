// The accountant against published reference points: TF Privacy's rdp_accountant_test.py
// (compute_rdp, get_privacy_spent) and Opacus's accountants_test.py (epsilon after a run).
#include "privacy/rdp_accountant.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tern {
namespace {

TEST(RdpAccountant, ComputeRdpScalarTfPrivacy) {
  // compute_rdp(0.1, 2, 10, 5) == 0.07737 (5 places).
  EXPECT_NEAR(compute_rdp(0.1, 2, 10, {5})[0], 0.07737, 1e-5);
}

TEST(RdpAccountant, ComputeRdpSequenceTfPrivacy) {
  // Fractional (1.5, 2.5) and integer orders; compute_rdp(0.01, 2.5, 50, ...).
  const std::vector<double> orders = {1.5, 2.5, 5, 50, 100};
  const std::vector<double> expect = {0.00065, 0.001085, 0.00218075, 0.023846, 167.416307};
  std::vector<double> got = compute_rdp(0.01, 2.5, 50, orders);
  for (size_t i = 0; i < orders.size(); ++i)
    EXPECT_NEAR(got[i], expect[i], 1e-5) << "order " << orders[i];
  EXPECT_TRUE(std::isinf(compute_rdp(0.01, 2.5, 50, {INFINITY})[0]));
}

TEST(RdpAccountant, EdgeCases) {
  EXPECT_EQ(compute_rdp(0, 10, 1, {20})[0], 0.0);           // no data
  EXPECT_DOUBLE_EQ(compute_rdp(1, 10, 1, {20})[0], 0.1);    // no sampling: alpha / (2 sigma^2)
  EXPECT_TRUE(std::isinf(compute_rdp(0.1, 0, 1, {2})[0]));  // no noise
}

TEST(RdpAccountant, PrivacySpentConstantRdpTfPrivacy) {
  std::vector<double> orders, rdp;
  for (int a = 2; a <= 32; ++a) {
    orders.push_back(a);
    rdp.push_back(1.1);
  }
  PrivacySpent s = privacy_spent(orders, rdp, 1e-5);
  EXPECT_NEAR(s.epsilon, 1.32783806176, 1e-9);
  EXPECT_EQ(s.order, 32);
}

TEST(RdpAccountant, GaussianWithoutSamplingIsExactlyOneEpsilon) {
  // sigma 4.530877117 gives exactly (1, 1e-6)-DP (TF Privacy), on a fine grid of orders.
  std::vector<double> orders;
  for (int i = 1000; i < 100000; ++i) orders.push_back(0.001 * i);
  orders.erase(orders.begin());  // alpha 1 is not an order
  PrivacySpent s = privacy_spent(orders, compute_rdp(1, 4.530877117, 1, orders), 1e-6);
  EXPECT_NEAR(s.epsilon, 1.0, 1e-6);
}

TEST(RdpAccountant, CompositionTfPrivacy) {
  const std::vector<double> orders = {1.25, 1.5, 1.75, 2.,  2.5, 3.,  4.,  5.,  6.,  7.,  8.,
                                      10.,  12., 14.,  16., 20., 24., 28., 32., 64., 256.};
  std::vector<double> rdp = compute_rdp(1e-4, 0.4, 40000, orders);
  std::vector<double> more = compute_rdp(0.1, 2, 100, orders);
  for (size_t i = 0; i < rdp.size(); ++i) rdp[i] += more[i];
  const double eps = privacy_spent(orders, rdp, 1e-5).epsilon;
  EXPECT_LE(eps, 8.509656);  // the old conversion's value, an upper bound of the new one
  EXPECT_GT(eps, 7.0);
}

TEST(RdpAccountant, OpacusRunEpsilon) {
  // Opacus accountants_test: sigma 1.5, q 0.04, 90 epochs (2250 steps), delta 1e-5.
  RdpAccountant a;
  for (int i = 0; i < 2250; ++i) a.step(0.04, 1.5);
  EXPECT_EQ(a.steps(), 2250);
  EXPECT_EQ(a.history().size(), 1u);
  EXPECT_NEAR(a.epsilon(1e-5), 7.32911117143, 1e-6);
  // get_noise_multiplier(eps 8, delta 1e-5, q 0.04, 2000 steps) == 1.3562: just under 8.
  RdpAccountant b;
  b.step(0.04, 1.3562, 2000);
  EXPECT_LT(b.epsilon(1e-5), 8.0);
  EXPECT_GT(b.epsilon(1e-5), 7.95);
}

TEST(RdpAccountant, SegmentsComposeAndSurviveJson) {
  RdpAccountant a;
  a.step(0.01, 1.0, 100);
  a.step(0.02, 1.2, 50);
  a.step(0.02, 1.2, 50);
  ASSERT_EQ(a.history().size(), 2u);
  std::vector<double> r1 = compute_rdp(0.01, 1.0, 100, default_rdp_orders());
  std::vector<double> r2 = compute_rdp(0.02, 1.2, 100, default_rdp_orders());
  std::vector<double> r = a.rdp();
  for (size_t i = 0; i < r.size(); ++i) EXPECT_NEAR(r[i], r1[i] + r2[i], 1e-12);
  auto back = RdpAccountant::from_json(nlohmann::json::parse(a.to_json().dump()), "ckpt");
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->steps(), 200);
  EXPECT_DOUBLE_EQ(back->epsilon(1e-5), a.epsilon(1e-5));
  EXPECT_GT(a.epsilon(1e-5), 0);
  RdpAccountant none;
  EXPECT_EQ(none.epsilon(1e-5), 0);
}

TEST(RdpAccountant, FromJsonNamesTheBadField) {
  const char* bad[] = {R"({})",
                       R"({"history": 3})",
                       R"({"history": [{"q": 2, "sigma": 1, "steps": 1}]})",
                       R"({"history": [{"q": 0.1, "sigma": -1, "steps": 1}]})",
                       R"({"history": [{"q": 0.1, "sigma": 1, "steps": -4}]})",
                       R"({"history": [{"q": 0.1, "sigma": 1}]})",
                       R"({"history": [{"q": 0.1, "sigma": 1, "steps": 1.5}]})"};
  for (const char* text : bad) {
    auto r = RdpAccountant::from_json(nlohmann::json::parse(text), "dir/replicated.ckpt");
    ASSERT_FALSE(r.is_ok()) << text;
    EXPECT_NE(r.status().message().find("dir/replicated.ckpt"), std::string::npos)
        << r.status().message();
  }
}

}  // namespace
}  // namespace tern
