// Gradient coding (docs/algorithms.md §6.1): from every subset of n - s senders the decoded
// combination equals the true sum of the part gradients.
#include "straggler/gradient_code.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <iostream>

namespace tern {
namespace {

// Calls fn for every subset of {0..n-1} with k elements.
void for_each_subset(int n, int k, const std::function<void(const std::vector<int>&)>& fn) {
  std::vector<int> cur;
  std::function<void(int)> rec = [&](int start) {
    if (static_cast<int>(cur.size()) == k) {
      fn(cur);
      return;
    }
    for (int i = start; i < n; ++i) {
      cur.push_back(i);
      rec(i + 1);
      cur.pop_back();
    }
  };
  rec(0);
}

void check_every_subset(const GradientCode& code) {
  const int n = code.n(), s = code.s();
  torch::manual_seed(11);
  std::vector<at::Tensor> g;  // part gradients
  for (int p = 0; p < n; ++p) g.push_back(torch::randn({257}, at::kDouble));
  at::Tensor truth = at::zeros({257}, at::kDouble);
  for (auto& t : g) truth += t;
  std::vector<at::Tensor> c;  // contributions
  for (int j = 0; j < n; ++j) {
    EXPECT_EQ(static_cast<int>(code.parts(j).size()), s + 1) << "rank " << j;
    at::Tensor sum = at::zeros({257}, at::kDouble);
    for (size_t q = 0; q < code.parts(j).size(); ++q)
      sum += code.coefficients(j)[q] * g[static_cast<size_t>(code.parts(j)[q])];
    c.push_back(sum);
  }
  int subsets = 0;
  for_each_subset(n, n - s, [&](const std::vector<int>& f) {
    ++subsets;
    ASSERT_TRUE(code.decodable(f));
    auto a = code.decode(f);
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    at::Tensor got = at::zeros({257}, at::kDouble);
    for (size_t i = 0; i < f.size(); ++i) got += (*a)[i] * c[static_cast<size_t>(f[i])];
    double err = (got - truth).abs().max().item<double>();
    EXPECT_LE(err, 1e-5) << code.kind_name() << " n=" << n << " s=" << s << " subset size "
                         << f.size();
  });
  EXPECT_GT(subsets, 0);
  // Every part is computed by exactly s + 1 ranks.
  for (int p = 0; p < n; ++p)
    EXPECT_EQ(static_cast<int>(code.holders(p).size()), s + 1) << "part " << p;
}

TEST(GradientCode, FractionalRepetitionDecodesFromEveryNMinusSSubset) {
  for (auto [n, s] : std::vector<std::pair<int, int>>{{4, 1}, {6, 1}, {6, 2}, {8, 3}, {8, 1}}) {
    auto code = GradientCode::make(n, s, 5);
    ASSERT_TRUE(code.is_ok());
    EXPECT_EQ(code->kind(), GradientCode::Kind::kFractionalRepetition);
    check_every_subset(*code);
  }
}

TEST(GradientCode, CyclicRepetitionDecodesFromEveryNMinusSSubset) {
  for (auto [n, s] :
       std::vector<std::pair<int, int>>{{3, 1}, {5, 2}, {5, 1}, {7, 3}, {4, 1}, {8, 2}}) {
    auto code = GradientCode::make_cyclic(n, s, 1234 + n * 10 + s);
    ASSERT_TRUE(code.is_ok()) << code.status().to_string();
    EXPECT_EQ(code->kind(), GradientCode::Kind::kCyclicRepetition);
    check_every_subset(*code);
  }
}

TEST(GradientCode, MakePicksCyclicWhenSPlusOneDoesNotDivideN) {
  auto code = GradientCode::make(5, 1, 3);
  ASSERT_TRUE(code.is_ok());
  EXPECT_EQ(code->kind(), GradientCode::Kind::kCyclicRepetition);
  // Rank j holds parts j and j+1 (mod n).
  EXPECT_EQ(code->parts(4), (std::vector<int>{0, 4}));
}

TEST(GradientCode, TooFewSendersAreNotDecodable) {
  auto fr = GradientCode::make(4, 1, 1);
  ASSERT_TRUE(fr.is_ok());
  EXPECT_FALSE(fr->decodable({0, 1}));  // both from the first group: parts 2, 3 missing
  EXPECT_TRUE(fr->decodable({1, 2}));
  EXPECT_FALSE(fr->decode({2, 3}).is_ok());
  auto cy = GradientCode::make_cyclic(5, 2, 9);
  ASSERT_TRUE(cy.is_ok());
  EXPECT_FALSE(cy->decodable({0, 3}));
  EXPECT_EQ(cy->decode({0, 3}).status().code(), StatusCode::kFailedPrecondition);
}

TEST(GradientCode, IdentityNeedsEveryone) {
  auto id = GradientCode::make(3, 0, 1);
  ASSERT_TRUE(id.is_ok());
  EXPECT_EQ(id->kind(), GradientCode::Kind::kIdentity);
  EXPECT_FALSE(id->decodable({0, 1}));
  EXPECT_TRUE(id->decodable({0, 1, 2}));
}

TEST(GradientCode, RefusesBadParameters) {
  EXPECT_FALSE(GradientCode::make(4, 4, 1).is_ok());
  EXPECT_FALSE(GradientCode::make(0, 0, 1).is_ok());
  EXPECT_FALSE(GradientCode::make(4, -1, 1).is_ok());
}

TEST(GradientCode, SameSeedSameCode) {
  auto a = GradientCode::make_cyclic(5, 2, 77), b = GradientCode::make_cyclic(5, 2, 77);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  for (int j = 0; j < 5; ++j) EXPECT_EQ(a->coefficients(j), b->coefficients(j));
}

// The contributions of a code (float32, as the trainer computes them) for part gradients g.
std::vector<at::Tensor> contributions(const GradientCode& code, const std::vector<at::Tensor>& g) {
  std::vector<at::Tensor> c;
  for (int j = 0; j < code.n(); ++j) {
    at::Tensor sum = at::zeros_like(g[0]);
    for (size_t q = 0; q < code.parts(j).size(); ++q) {
      sum.add_(g[static_cast<size_t>(code.parts(j)[q])], code.coefficients(j)[q]);
    }
    c.push_back(sum);
  }
  return c;
}

TEST(GradientCode, RandomLinearDecodesFromEveryNMinusSSubsetInFloat32) {
  // Every step's code, every (n - s)-subset: the decoded sum of float32 contributions is the
  // plain sum within a few float32 roundings of the amplification limit.
  int tried = 0, failed = 0;
  double worst_rel = 0;
  for (int n = 4; n <= 8; ++n) {
    for (int s = 1; s <= std::min(3, n - 1); ++s) {
      const int failed_before = failed, tried_before = tried;
      for (int64_t step = 0; step < 10; ++step) {
        auto code = GradientCode::make_random(n, s, 99, step);
        ASSERT_TRUE(code.is_ok()) << code.status().to_string();
        EXPECT_EQ(code->kind(), GradientCode::Kind::kRandomLinear);
        torch::manual_seed(static_cast<uint64_t>(n * 100 + s * 10 + step));
        std::vector<at::Tensor> g;
        for (int p = 0; p < n; ++p) g.push_back(torch::randn({513}, at::kFloat));
        at::Tensor truth = at::zeros({513}, at::kDouble);
        for (auto& t : g) truth += t.to(at::kDouble);
        auto c = contributions(*code, g);
        for_each_subset(n, n - s, [&](const std::vector<int>& f) {
          ++tried;
          auto a = code->decode(f);
          if (!a.is_ok()) {
            ++failed;
            EXPECT_FALSE(code->decodable(f));
            return;
          }
          at::Tensor got = at::zeros({513}, at::kFloat);  // summed as StragglerSync does
          for (size_t i = 0; i < f.size(); ++i) got.add_(c[static_cast<size_t>(f[i])], (*a)[i]);
          double rel = (got.to(at::kDouble) - truth).abs().max().item<double>() /
                       truth.abs().max().item<double>();
          worst_rel = std::max(worst_rel, rel);
          EXPECT_LE(rel, 1e-5) << "n=" << n << " s=" << s << " step " << step;
        });
        // All n contributions always decode.
        std::vector<int> all(static_cast<size_t>(n));
        for (int j = 0; j < n; ++j) all[static_cast<size_t>(j)] = j;
        EXPECT_TRUE(code->decodable(all)) << "n=" << n << " s=" << s;
      }
      std::cout << "n=" << n << " s=" << s << ": " << failed - failed_before << " of "
                << tried - tried_before << " subsets did not decode\n";
    }
  }
  // With high probability: the construction redraws codes that amplify rounding too much.
  EXPECT_LE(failed, tried / 100) << failed << " of " << tried << " subsets failed";
  std::cout << "random codes: " << failed << " of " << tried
            << " (n - s)-subsets failed to decode; worst relative "
            << "error " << worst_rel << "\n";
}

TEST(GradientCode, RandomLinearCodesAreTheSameForTheSameSeedAndStep) {
  // Every rank builds the code of a step from the shared seed: equal coefficients. Another
  // step gets other coefficients (fresh every step), on the same cyclic supports.
  auto a = GradientCode::make_random(6, 2, 42, 17), b = GradientCode::make_random(6, 2, 42, 17);
  auto other = GradientCode::make_random(6, 2, 42, 18);
  ASSERT_TRUE(a.is_ok() && b.is_ok() && other.is_ok());
  bool differs = false;
  for (int j = 0; j < 6; ++j) {
    EXPECT_EQ(a->coefficients(j), b->coefficients(j));
    EXPECT_EQ(a->parts(j), other->parts(j));
    differs = differs || a->coefficients(j) != other->coefficients(j);
  }
  EXPECT_TRUE(differs);
  EXPECT_LE(a->worst_amplification(), GradientCode::kMaxAmplification);
}

TEST(GradientCode, AFailedRandomDecodeFallsBackToOneMoreContribution) {
  // A decode limit of 1 refuses every (n - s)-subset (their weights always cancel, amplification
  // > 1): the shortest decodable prefix of the arrivals is then longer than n - s, and all n
  // contributions still decode to the plain sum.
  const int n = 5, s = 2;
  auto code = GradientCode::make_random(n, s, 7, 3, /*max_amplification=*/1.0);
  ASSERT_TRUE(code.is_ok());
  std::vector<int> arrivals = {4, 1, 3, 0, 2};
  EXPECT_FALSE(code->decodable({4, 1, 3}));
  EXPECT_EQ(code->decode({4, 1, 3}).status().code(), StatusCode::kFailedPrecondition);
  size_t k = decodable_prefix(*code, arrivals);
  EXPECT_GT(k, static_cast<size_t>(n - s));
  EXPECT_EQ(k, static_cast<size_t>(n));
  torch::manual_seed(5);
  std::vector<at::Tensor> g;
  for (int p = 0; p < n; ++p) g.push_back(torch::randn({64}, at::kDouble));
  auto c = contributions(*code, g);
  auto a = code->decode(arrivals);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  at::Tensor got = at::zeros({64}, at::kDouble), truth = at::zeros({64}, at::kDouble);
  for (size_t i = 0; i < arrivals.size(); ++i) got += (*a)[i] * c[static_cast<size_t>(arrivals[i])];
  for (auto& t : g) truth += t;
  EXPECT_LE((got - truth).abs().max().item<double>(), 1e-9);
  // With the default limit the same step decodes from the first n - s.
  auto normal = GradientCode::make_random(n, s, 7, 3);
  ASSERT_TRUE(normal.is_ok());
  EXPECT_EQ(decodable_prefix(*normal, arrivals), static_cast<size_t>(n - s));
  EXPECT_FALSE(GradientCode::make_random(4, 4, 1, 0).is_ok());
  EXPECT_FALSE(GradientCode::make_random(4, 0, 1, 0).is_ok());
}

}  // namespace
}  // namespace tern
