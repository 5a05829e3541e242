#include "trainer/loop/optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace tern {
namespace {

TEST(Sgd, MatchesTorchSgdBitForBit) {
  torch::manual_seed(0);
  auto a = torch::randn({5, 3}, torch::requires_grad());
  auto b = a.detach().clone().requires_grad_(true);
  torch::optim::SGD ref({b}, torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.01));
  Sgd ours({a}, 0.1, 0.9, 0.01);
  for (int step = 0; step < 5; ++step) {
    auto g = torch::randn({5, 3});
    b.mutable_grad() = g.clone();
    ref.step();
    ours.step({g});
    ASSERT_TRUE(torch::equal(a, b)) << "step " << step;
  }
  EXPECT_TRUE(ours.momentum_buffers()[0].defined());
}

TEST(Sgd, NesterovMatchesTorchSgdBitForBit) {
  torch::manual_seed(1);
  auto a = torch::randn({4, 6}, torch::requires_grad());
  auto b = a.detach().clone().requires_grad_(true);
  torch::optim::SGD ref(
      {b}, torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(0.001).nesterov(true));
  Sgd ours({a}, 0.05, 0.9, 0.001, /*nesterov=*/true);
  Sgd heavy({a.detach().clone()}, 0.05, 0.9, 0.001);
  for (int step = 0; step < 5; ++step) {
    auto g = torch::randn({4, 6});
    b.mutable_grad() = g.clone();
    ref.step();
    ours.step({g});
    heavy.step({g});
    ASSERT_TRUE(torch::equal(a, b)) << "step " << step;
  }
  EXPECT_FALSE(torch::allclose(heavy.params()[0], a)) << "nesterov changed nothing";
}

TEST(Sgd, NoMomentumIsPlainSgd) {
  auto p = torch::ones({3});
  Sgd sgd({p}, 0.5, 0.0, 0.0);
  sgd.step({torch::full({3}, 2.0)});
  EXPECT_TRUE(torch::allclose(p, torch::zeros({3})));
  EXPECT_FALSE(sgd.momentum_buffers()[0].defined());
}

TEST(Sgd, StateRoundTripContinuesIdentically) {
  torch::manual_seed(2);
  auto a = torch::randn({3, 4});
  auto b = a.clone();
  Sgd first({a}, 0.1, 0.9, 0.01, /*nesterov=*/true);
  std::vector<std::string> names = {"w"};
  EXPECT_TRUE(first.state(names, false).empty()) << "no momentum before the first step";
  first.step({torch::randn({3, 4})});
  b.copy_(a);
  auto saved = first.state(names, false);
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0].first, "momentum/w");
  Optimizer::NamedTensors copy = {{saved[0].first, saved[0].second.clone()}};
  Sgd second({b}, 0.1, 0.9, 0.01, /*nesterov=*/true);
  ASSERT_TRUE(second.load_state(copy, names, "x.ckpt").is_ok());
  for (int step = 0; step < 3; ++step) {
    auto g = torch::randn({3, 4});
    first.step({g});
    second.step({g});
    ASSERT_TRUE(torch::equal(a, b)) << "step " << step;
  }
  // A state without the entry starts fresh (no momentum yet), as before the first step.
  ASSERT_TRUE(second.load_state({}, names, "x.ckpt").is_ok());
  EXPECT_FALSE(second.momentum_buffers()[0].defined());
}

// torch::optim::AdamW over `params` with per-step lrs and gradients (undefined: no gradient for
// that parameter at that step), against ours over copies: equal bit for bit after every step.
void expect_adamw_matches_torch(std::vector<at::Tensor> params, const AdamWOptions& o,
                                const std::vector<double>& lrs, bool skip_some) {
  std::vector<at::Tensor> ref_params;
  for (auto& p : params) ref_params.push_back(p.detach().clone().requires_grad_(true));
  torch::optim::AdamW ref(ref_params, torch::optim::AdamWOptions(o.lr)
                                          .betas({o.beta1, o.beta2})
                                          .eps(o.eps)
                                          .weight_decay(o.weight_decay));
  AdamW ours(params, o);
  for (size_t step = 0; step < lrs.size(); ++step) {
    std::vector<at::Tensor> grads;
    for (size_t i = 0; i < params.size(); ++i) {
      // Parameter 1 gets no gradient at step 1 (torch skips it: no decay, no step count).
      const bool none = skip_some && i == 1 && step == 1;
      grads.push_back(none ? at::Tensor()
                           : torch::randn(params[i].sizes()) * (1.0 + static_cast<double>(i)));
      ref_params[i].mutable_grad() = none ? at::Tensor() : grads.back().clone();
    }
    ref.param_groups()[0].options().set_lr(lrs[step]);
    ours.set_lr(lrs[step]);
    ref.step();
    ours.step(grads);
    for (size_t i = 0; i < params.size(); ++i) {
      ASSERT_TRUE(torch::equal(params[i], ref_params[i]))
          << "parameter " << i << " after step " << step << ", max abs diff "
          << (params[i] - ref_params[i]).abs().max().item<double>();
    }
  }
  // The state is torch's too.
  for (size_t i = 0; i < params.size(); ++i) {
    auto& st = static_cast<torch::optim::AdamWParamState&>(
        *ref.state().at(c10::guts::to_string(ref_params[i].unsafeGetTensorImpl())));
    EXPECT_EQ(ours.steps()[i], st.step()) << "parameter " << i;
    EXPECT_TRUE(torch::equal(ours.exp_avg()[i], st.exp_avg())) << "parameter " << i;
    EXPECT_TRUE(torch::equal(ours.exp_avg_sq()[i], st.exp_avg_sq())) << "parameter " << i;
  }
}

TEST(AdamW, MatchesTorchAdamWBitForBitWithDecayAndAChangingLr) {
  torch::manual_seed(3);
  AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.05;
  // Warm-up, then a decay: every step a different rate.
  expect_adamw_matches_torch({torch::randn({5, 3}), torch::randn({7}), torch::randn({2, 3, 4})}, o,
                             {0.002, 0.006, 0.01, 0.008, 0.005, 0.002, 0.0005, 0.01},
                             /*skip_some=*/false);
}

TEST(AdamW, MatchesTorchWithOtherBetasEpsAndNoDecay) {
  torch::manual_seed(4);
  AdamWOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = 0.0;
  expect_adamw_matches_torch({torch::randn({4, 4}), torch::randn({9})}, o,
                             {0.1, 0.05, 0.02, 0.01, 0.3},
                             /*skip_some=*/false);
}

TEST(AdamW, AParameterWithoutAGradientIsSkippedAsTorchSkipsIt) {
  torch::manual_seed(5);
  AdamWOptions o;
  o.weight_decay = 0.1;
  expect_adamw_matches_torch({torch::randn({3, 2}), torch::randn({6})}, o, {0.01, 0.01, 0.02, 0.01},
                             /*skip_some=*/true);
}

TEST(AdamW, DiffersFromSgdAndDecaysDecoupled) {
  // With a zero gradient only the decoupled decay moves a parameter: p * (1 - lr * wd) exactly.
  auto p = torch::full({4}, 2.0);
  AdamWOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.5;
  AdamW adamw({p}, o);
  adamw.step({torch::zeros({4})});
  EXPECT_TRUE(torch::equal(p, torch::full({4}, 2.0) * (1 - 0.1 * 0.5))) << p;
}

std::vector<std::string> names_of(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back("p" + std::to_string(i));
  return out;
}

Optimizer::NamedTensors cloned(const Optimizer::NamedTensors& s) {
  Optimizer::NamedTensors out;
  for (const auto& [n, t] : s) out.emplace_back(n, t.clone());
  return out;
}

TEST(AdamW, StateRoundTripContinuesBitForBit) {
  torch::manual_seed(6);
  std::vector<at::Tensor> a = {torch::randn({3, 5}), torch::randn({5})};
  AdamWOptions o;
  o.lr = 0.02;
  o.weight_decay = 0.01;
  AdamW first(a, o);
  for (int i = 0; i < 3; ++i) first.step({torch::randn({3, 5}), torch::randn({5})});
  auto names = names_of(2);
  auto saved = cloned(first.state(names, false));
  std::vector<std::string> keys;
  for (const auto& [n, t] : saved) keys.push_back(n);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"adamw/exp_avg/p0", "adamw/exp_avg_sq/p0", "adamw/step/p0",
                                      "adamw/exp_avg/p1", "adamw/exp_avg_sq/p1", "adamw/step/p1"}));
  std::vector<at::Tensor> b = {a[0].clone(), a[1].clone()};
  AdamW second(b, o);
  ASSERT_TRUE(second.load_state(saved, names, "x.ckpt").is_ok());
  EXPECT_EQ(second.steps(), first.steps());
  for (int step = 0; step < 4; ++step) {
    std::vector<at::Tensor> g = {torch::randn({3, 5}), torch::randn({5})};
    first.step(g);
    second.step(g);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_TRUE(torch::equal(a[i], b[i])) << "step " << step;
  }
  // The step count as a broadcast carries it (a double) loads too.
  auto as_double = cloned(first.state(names, true));
  for (auto& [n, t] : as_double) {
    if (!t.is_floating_point()) t = t.to(at::kDouble);
  }
  AdamW third({a[0].clone(), a[1].clone()}, o);
  ASSERT_TRUE(third.load_state(as_double, names, "broadcast").is_ok());
  EXPECT_EQ(third.steps(), first.steps());
  // A fresh AdamW (before its first step) has a complete state too: zeros, step 0.
  AdamW fresh({torch::zeros({2})}, o);
  EXPECT_EQ(fresh.state({"w"}, false).size(), 3u);
}

TEST(AdamW, BadStateIsRefusedNamingTheFileAndParameterAndChangesNothing) {
  torch::manual_seed(7);
  auto names = names_of(1);
  AdamWOptions o;
  AdamW opt({torch::randn({4})}, o);
  opt.step({torch::randn({4})});
  const auto good = cloned(opt.state(names, false));
  auto without = [&](const std::string& name) {
    Optimizer::NamedTensors out;
    for (const auto& [n, t] : good) {
      if (n != name) out.emplace_back(n, t.clone());
    }
    return out;
  };
  auto with = [&](const std::string& name, at::Tensor v) {
    auto out = without(name);
    out.emplace_back(name, v);
    return out;
  };
  struct Case {
    std::string what;
    Optimizer::NamedTensors state;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"no exp_avg_sq", without("adamw/exp_avg_sq/p0"), "incomplete"},
      {"no step", without("adamw/step/p0"), "incomplete"},
      {"wrong shape", with("adamw/exp_avg/p0", torch::zeros({5})), "adamw/exp_avg of 'p0' is [5]"},
      {"integer moments", with("adamw/exp_avg_sq/p0", torch::zeros({4}, at::kLong)),
       "adamw/exp_avg_sq of 'p0'"},
      {"negative second moment", with("adamw/exp_avg_sq/p0", torch::full({4}, -1.0)), "negative"},
      {"fractional step", with("adamw/step/p0", torch::scalar_tensor(1.5, at::kDouble)),
       "whole number"},
      {"negative step", with("adamw/step/p0", torch::scalar_tensor(-2, at::kLong)), "whole number"},
      {"NaN step", with("adamw/step/p0", torch::scalar_tensor(NAN, at::kDouble)), "whole number"},
      {"two steps", with("adamw/step/p0", torch::ones({2}, at::kLong)), "one count"},
      {"SGD momentum", with("momentum/p0", torch::zeros({4})), "train.optimizer sgd"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    Status s = opt.load_state(c.state, names, "step-5/replicated.ckpt");
    ASSERT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("step-5/replicated.ckpt"), std::string::npos) << s.to_string();
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << s.to_string();
    // Nothing changed.
    auto now = opt.state(names, false);
    ASSERT_EQ(now.size(), good.size());
    for (size_t i = 0; i < now.size(); ++i)
      EXPECT_TRUE(torch::equal(now[i].second, good[i].second)) << now[i].first;
  }
}

TEST(Sgd, RefusesAdamWStateAndBadMomentum) {
  auto p = torch::zeros({3});
  Sgd sgd({p}, 0.1, 0.9, 0.0);
  sgd.step({torch::ones({3})});
  const at::Tensor before = sgd.momentum_buffers()[0].clone();
  Status s = sgd.load_state({{"adamw/exp_avg/w", torch::zeros({3})}}, {"w"}, "a.ckpt");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("a.ckpt"), std::string::npos) << s.to_string();
  EXPECT_NE(s.message().find("train.optimizer adamw"), std::string::npos) << s.to_string();
  s = sgd.load_state({{"momentum/w", torch::zeros({2, 2})}}, {"w"}, "a.ckpt");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("momentum of 'w'"), std::string::npos) << s.to_string();
  EXPECT_TRUE(torch::equal(sgd.momentum_buffers()[0], before));
}

TEST(MakeOptimizer, BuildsWhatTheSpecNames) {
  TrainSpec t;
  t.lr = 0.01;
  t.weight_decay = 0.02;
  auto sgd = make_optimizer(t, {torch::zeros({2})});
  ASSERT_TRUE(sgd.is_ok()) << sgd.status().to_string();
  EXPECT_EQ((*sgd)->name(), "sgd");
  t.optimizer = OptimizerKind::kAdamw;
  t.betas = {0.7, 0.9};
  t.eps = 1e-5;
  auto adamw = make_optimizer(t, {torch::zeros({2})});
  ASSERT_TRUE(adamw.is_ok()) << adamw.status().to_string();
  ASSERT_EQ((*adamw)->name(), "adamw");
  const AdamWOptions& o = static_cast<AdamW&>(**adamw).options();
  EXPECT_EQ(o.lr, 0.01);
  EXPECT_EQ(o.beta1, 0.7);
  EXPECT_EQ(o.beta2, 0.9);
  EXPECT_EQ(o.eps, 1e-5);
  EXPECT_EQ(o.weight_decay, 0.02);
  // sync.average_momentum averages AdamW's first moment.
  EXPECT_EQ((*adamw)->averaged_state(),
            &const_cast<std::vector<at::Tensor>&>(static_cast<AdamW&>(**adamw).exp_avg()));
  // DGC applies momentum itself: SGD then has none; AdamW cannot be combined with it.
  auto dgc = make_optimizer(t, {torch::zeros({2})}, /*momentum_in_reducer=*/true);
  EXPECT_EQ(dgc.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dgc.status().message().find("dgc"), std::string::npos);
  t.optimizer = OptimizerKind::kSgd;
  t.momentum = 0.9;
  auto p = torch::ones({2});
  auto plain = make_optimizer(t, {p}, /*momentum_in_reducer=*/true);
  ASSERT_TRUE(plain.is_ok());
  (*plain)->step({torch::ones({2})});
  EXPECT_TRUE((*plain)->state({"w"}, false).empty()) << "no momentum of its own under DGC";
  t.optimizer = static_cast<OptimizerKind>(99);  // no such value: refused, not undefined behaviour
  EXPECT_EQ(make_optimizer(t, {p}).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern
