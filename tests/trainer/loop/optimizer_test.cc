#include "trainer/loop/optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

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
  torch::optim::SGD ref({b}, torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(0.001).nesterov(true));
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

}  // namespace
}  // namespace tern
