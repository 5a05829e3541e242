#include "straggler/gradient_code.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace tern {
namespace {

constexpr double kResidualTolerance = 1e-8;

}  // namespace

Result<GradientCode> GradientCode::make(int n, int s, uint64_t seed) {
  if (n < 1) return invalid_argument("gradient code needs n >= 1, got " + std::to_string(n));
  if (s < 0 || s >= n) {
    return invalid_argument("gradient code tolerates s in [0, n), got s=" + std::to_string(s) +
                            " for n=" + std::to_string(n));
  }
  if (s == 0) {
    GradientCode c(Kind::kIdentity, n, 0);
    for (int j = 0; j < n; ++j) {
      c.parts_.push_back({j});
      c.coeffs_.push_back({1.0});
    }
    return c;
  }
  if (n % (s + 1) != 0) return make_cyclic(n, s, seed);
  GradientCode c(Kind::kFractionalRepetition, n, s);
  for (int j = 0; j < n; ++j) {
    int group = j / (s + 1);
    std::vector<int> parts;
    for (int q = 0; q <= s; ++q) parts.push_back(group * (s + 1) + q);
    c.parts_.push_back(parts);
    c.coeffs_.push_back(std::vector<double>(static_cast<size_t>(s + 1), 1.0));
  }
  return c;
}

Result<GradientCode> GradientCode::make_cyclic(int n, int s, uint64_t seed) {
  if (n < 2 || s < 1 || s >= n) {
    return invalid_argument("cyclic gradient code needs 1 <= s < n, got n=" + std::to_string(n) +
                            " s=" + std::to_string(s));
  }
  // H: s x n Gaussian with rows summing to zero, so 1 lies in its null space.
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  at::Tensor h = at::empty({s, n}, at::kDouble);
  auto ha = h.accessor<double, 2>();
  for (int i = 0; i < s; ++i) {
    double sum = 0;
    for (int k = 0; k < n - 1; ++k) {
      ha[i][k] = normal(rng);
      sum += ha[i][k];
    }
    ha[i][n - 1] = -sum;
  }
  GradientCode c(Kind::kCyclicRepetition, n, s);
  for (int j = 0; j < n; ++j) {
    // Row j: support {j, ..., j+s} mod n, b[j] = 1, the other s entries solve
    // H[:, rest] x = -H[:, j] so that H b = 0.
    std::vector<int> support;
    for (int q = 0; q <= s; ++q) support.push_back((j + q) % n);
    at::Tensor a = at::empty({s, s}, at::kDouble);
    at::Tensor rhs = at::empty({s, 1}, at::kDouble);
    auto aa = a.accessor<double, 2>();
    auto ra = rhs.accessor<double, 2>();
    for (int i = 0; i < s; ++i) {
      ra[i][0] = -ha[i][j];
      for (int q = 1; q <= s; ++q) aa[i][q - 1] = ha[i][support[static_cast<size_t>(q)]];
    }
    at::Tensor x = at::linalg_solve(a, rhs);
    auto xa = x.accessor<double, 2>();
    std::vector<std::pair<int, double>> row{{j, 1.0}};
    for (int q = 1; q <= s; ++q) row.emplace_back(support[static_cast<size_t>(q)], xa[q - 1][0]);
    std::sort(row.begin(), row.end());
    std::vector<int> parts;
    std::vector<double> coeffs;
    for (auto& [p, v] : row) {
      parts.push_back(p);
      coeffs.push_back(v);
    }
    c.parts_.push_back(parts);
    c.coeffs_.push_back(coeffs);
  }
  return c;
}

std::string GradientCode::kind_name() const {
  switch (kind_) {
    case Kind::kIdentity: return "identity";
    case Kind::kFractionalRepetition: return "fractional_repetition";
    case Kind::kCyclicRepetition: return "cyclic_repetition";
  }
  return "?";
}

std::vector<int> GradientCode::holders(int part) const {
  std::vector<int> out;
  for (int j = 0; j < n_; ++j) {
    const auto& p = parts_[static_cast<size_t>(j)];
    if (std::find(p.begin(), p.end(), part) != p.end()) out.push_back(j);
  }
  return out;
}

bool GradientCode::decodable(const std::vector<int>& senders) const {
  switch (kind_) {
    case Kind::kIdentity:
      return static_cast<int>(senders.size()) >= n_;
    case Kind::kFractionalRepetition: {
      std::vector<bool> covered(static_cast<size_t>(n_ / (s_ + 1)), false);
      for (int j : senders) covered[static_cast<size_t>(j / (s_ + 1))] = true;
      return std::all_of(covered.begin(), covered.end(), [](bool b) { return b; });
    }
    case Kind::kCyclicRepetition:
      // Any n - s rows of B span its row space, which holds 1; fewer rows do not (rank n - s).
      return static_cast<int>(senders.size()) >= n_ - s_;
  }
  return false;
}

Result<std::vector<double>> GradientCode::decode(const std::vector<int>& senders) const {
  if (!decodable(senders)) {
    return failed_precondition("gradient code (" + kind_name() + ", n=" + std::to_string(n_) + ", s=" +
                               std::to_string(s_) + ") cannot decode from " + std::to_string(senders.size()) +
                               " senders");
  }
  std::vector<double> a(senders.size(), 0.0);
  switch (kind_) {
    case Kind::kIdentity:
      for (size_t i = 0; i < senders.size(); ++i) a[i] = 1.0;
      // Duplicate senders would double count; callers pass distinct ranks.
      return a;
    case Kind::kFractionalRepetition: {
      // The lowest-ranked sender of each group, so every decoder picks the same one.
      std::vector<int> chosen(static_cast<size_t>(n_ / (s_ + 1)), -1);
      for (size_t i = 0; i < senders.size(); ++i) {
        int g = senders[i] / (s_ + 1);
        int& c = chosen[static_cast<size_t>(g)];
        if (c < 0 || senders[static_cast<size_t>(c)] > senders[i]) c = static_cast<int>(i);
      }
      for (int c : chosen) a[static_cast<size_t>(c)] = 1.0;
      return a;
    }
    case Kind::kCyclicRepetition:
      return solve(senders);
  }
  return a;
}

Result<std::vector<double>> GradientCode::solve(const std::vector<int>& senders) const {
  // Least squares: B_F^T a = 1 (n equations, |F| unknowns; consistent when decodable).
  int64_t f = static_cast<int64_t>(senders.size());
  at::Tensor bt = at::zeros({n_, f}, at::kDouble);
  auto ba = bt.accessor<double, 2>();
  for (int64_t i = 0; i < f; ++i) {
    int j = senders[static_cast<size_t>(i)];
    const auto& parts = parts_[static_cast<size_t>(j)];
    const auto& coeffs = coeffs_[static_cast<size_t>(j)];
    for (size_t q = 0; q < parts.size(); ++q) ba[parts[q]][i] = coeffs[q];
  }
  at::Tensor ones = at::ones({n_, 1}, at::kDouble);
  // Minimum-norm solution via the pseudo-inverse (works for |F| > n - s too).
  at::Tensor x = at::matmul(at::linalg_pinv(bt), ones);
  at::Tensor residual = at::matmul(bt, x) - ones;
  double err = residual.abs().max().item<double>();
  if (!std::isfinite(err) || err > kResidualTolerance) {
    return failed_precondition("gradient code decode is ill-conditioned (residual " + std::to_string(err) + ")");
  }
  std::vector<double> a(static_cast<size_t>(f));
  auto xa = x.accessor<double, 2>();
  for (int64_t i = 0; i < f; ++i) a[static_cast<size_t>(i)] = xa[i][0];
  return a;
}

}  // namespace tern
