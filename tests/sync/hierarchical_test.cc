// Hierarchical sync with an outer optimizer (issue 21): 2 regions x 2 ranks over real Gloo
// groups (a region group each, a leaders' group). Gradients are averaged inside a region every
// step; between regions the leaders' size-weighted average delta feeds one outer Nesterov step
// that every rank runs, so all four replicas equal the hand computation and each other.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "comm/process_group.h"
#include "sync/strategy.h"
#include "testing/trainer_runs.h"

namespace tern {
namespace {

TEST(Hierarchical, OuterNesterovStepOverRegionsEqualsTheHandComputation) {
  const double lr = 0.7, mu = 0.9;
  auto root = c10::make_intrusive<c10d::HashStore>();
  std::vector<at::Tensor> out(4);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 4; ++rank) {
    threads.emplace_back([&, rank] {
      const int region = rank / 2, member = rank % 2;
      CommunicatorOptions o;
      o.timeout = std::chrono::seconds(60);
      auto intra = make_communicator(
          c10::make_intrusive<c10d::PrefixStore>("intra" + std::to_string(region), root), member, 2,
          o);
      ASSERT_TRUE(intra.is_ok()) << intra.status().to_string();
      std::shared_ptr<Communicator> inter;
      if (member == 0) {
        auto leaders =
            make_communicator(c10::make_intrusive<c10d::PrefixStore>("inter", root), region, 2, o);
        ASSERT_TRUE(leaders.is_ok()) << leaders.status().to_string();
        inter = *leaders;
      }
      HierarchicalStrategy s(*intra, inter, /*period=*/2, /*delay=*/0, 1 << 20,
                             OuterSpec{lr, mu, true});
      std::vector<at::Tensor> p{at::tensor({1.0f, -1.0f, 0.5f})};
      ASSERT_TRUE(s.begin(p).is_ok());
      for (int64_t step = 0; step < 4; ++step) {
        // Each rank's gradient; the region averages it (a region's replicas move together).
        std::vector<at::Tensor> g{
            at::full({3}, 0.1f * static_cast<float>(rank + 1) * static_cast<float>(step + 1))};
        ASSERT_TRUE(s.on_gradients(step, g).is_ok());
        p[0].sub_(g[0]);
        ASSERT_TRUE(s.after_step(step, p).is_ok());
      }
      out[static_cast<size_t>(rank)] = p[0].clone();
    });
  }
  for (auto& t : threads) t.join();
  // By hand: region r's mean gradient per step is 0.1 (2r + 1.5)(step + 1); a period of 2 steps
  // moves region r by -0.1 (2r + 1.5)(1 + 2) (then (3 + 4)); the regions' mean delta is
  // -0.1 * 2.5 * 3 (then * 7).
  double theta = 0, m = 0;
  for (double steps : {3.0, 7.0}) {
    double g = 0.1 * 2.5 * steps;  // pseudo-gradient = -mean(delta)
    m = mu * m + g;
    theta -= lr * (g + mu * m);
  }
  at::Tensor want = at::tensor({1.0, -1.0, 0.5}) + theta;
  for (int r = 0; r < 4; ++r) {
    EXPECT_LT((out[r].to(at::kDouble) - want).abs().max().item<double>(), 1e-5) << "rank " << r;
    EXPECT_TRUE(testing::same_bits(out[r], out[0])) << "rank " << r << " differs from rank 0";
  }
}

}  // namespace
}  // namespace tern
