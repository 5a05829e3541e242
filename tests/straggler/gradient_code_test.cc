// Gradient coding (docs/algorithms.md §6.1): from every subset of n - s senders the decoded
// combination equals the true sum of the part gradients.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>

#include "straggler/gradient_code.h"

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
    for (size_t q = 0; q < code.parts(j).size(); ++q) sum += code.coefficients(j)[q] * g[static_cast<size_t>(code.parts(j)[q])];
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
    EXPECT_LE(err, 1e-5) << code.kind_name() << " n=" << n << " s=" << s << " subset size " << f.size();
  });
  EXPECT_GT(subsets, 0);
  // Every part is computed by exactly s + 1 ranks.
  for (int p = 0; p < n; ++p) EXPECT_EQ(static_cast<int>(code.holders(p).size()), s + 1) << "part " << p;
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
  for (auto [n, s] : std::vector<std::pair<int, int>>{{3, 1}, {5, 2}, {5, 1}, {7, 3}, {4, 1}, {8, 2}}) {
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
  EXPECT_FALSE(fr->decodable({0, 1}));   // both from the first group: parts 2, 3 missing
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

}  // namespace
}  // namespace tern
