#include "straggler/gradient_code.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <random>

namespace tern {
namespace {

constexpr double kResidualTolerance = 1e-8;
constexpr int kRandomDraws = 16;  // make_random redraws at most this many times

// H: s x n Gaussian with rows summing to zero, so 1 lies in its null space.
std::vector<std::vector<double>> random_h(int n, int s, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<std::vector<double>> h(static_cast<size_t>(s),
                                     std::vector<double>(static_cast<size_t>(n)));
  for (auto& row : h) {
    double sum = 0;
    for (int k = 0; k < n - 1; ++k) {
      row[static_cast<size_t>(k)] = normal(rng);
      sum += row[static_cast<size_t>(k)];
    }
    row[static_cast<size_t>(n - 1)] = -sum;
  }
  return h;
}

// Solves the m x m system a x = b (row-major) by Gaussian elimination with partial pivoting, in
// plain double arithmetic: the construction of a random code must give the same bits in every
// rank's process (LAPACK's results can depend on threads and alignment, and a draw accepted on
// one rank but not on another would give the ranks different codes). False when singular.
bool solve_plain(std::vector<double> a, std::vector<double> b, int m, std::vector<double>* x) {
  for (int c = 0; c < m; ++c) {
    int piv = c;
    for (int r = c + 1; r < m; ++r) {
      if (std::abs(a[static_cast<size_t>(r * m + c)]) >
          std::abs(a[static_cast<size_t>(piv * m + c)]))
        piv = r;
    }
    if (!(std::abs(a[static_cast<size_t>(piv * m + c)]) > 1e-300)) return false;
    if (piv != c) {
      for (int k = 0; k < m; ++k)
        std::swap(a[static_cast<size_t>(c * m + k)], a[static_cast<size_t>(piv * m + k)]);
      std::swap(b[static_cast<size_t>(c)], b[static_cast<size_t>(piv)]);
    }
    for (int r = c + 1; r < m; ++r) {
      double f = a[static_cast<size_t>(r * m + c)] / a[static_cast<size_t>(c * m + c)];
      for (int k = c; k < m; ++k)
        a[static_cast<size_t>(r * m + k)] -= f * a[static_cast<size_t>(c * m + k)];
      b[static_cast<size_t>(r)] -= f * b[static_cast<size_t>(c)];
    }
  }
  x->assign(static_cast<size_t>(m), 0.0);
  for (int r = m - 1; r >= 0; --r) {
    double v = b[static_cast<size_t>(r)];
    for (int k = r + 1; k < m; ++k)
      v -= a[static_cast<size_t>(r * m + k)] * (*x)[static_cast<size_t>(k)];
    (*x)[static_cast<size_t>(r)] = v / a[static_cast<size_t>(r * m + r)];
  }
  for (double v : *x) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// Calls fn for every k-subset of {0..n-1} (ascending) until it returns false.
void for_each_subset(int n, int k, const std::function<bool(const std::vector<int>&)>& fn) {
  std::vector<int> cur;
  bool go = true;
  std::function<void(int)> rec = [&](int start) {
    if (!go) return;
    if (static_cast<int>(cur.size()) == k) {
      go = fn(cur);
      return;
    }
    for (int i = start; i < n && go; ++i) {
      cur.push_back(i);
      rec(i + 1);
      cur.pop_back();
    }
  };
  rec(0);
}

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
  std::mt19937_64 rng(seed);
  GradientCode c(Kind::kCyclicRepetition, n, s);
  if (!c.rows_from_h(random_h(n, s, rng))) {
    return internal_error("cyclic gradient code: singular draw for seed " + std::to_string(seed));
  }
  return c;
}

Result<GradientCode> GradientCode::make_random(int n, int s, uint64_t seed, int64_t step,
                                               double max_amplification) {
  if (n < 2 || s < 1 || s >= n) {
    return invalid_argument("random gradient code needs 1 <= s < n, got n=" + std::to_string(n) +
                            " s=" + std::to_string(s));
  }
  const auto st = static_cast<uint64_t>(step);
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(st), static_cast<uint32_t>(st >> 32), 0x52u};
  std::mt19937_64 rng(seq);
  std::optional<GradientCode> best;
  double best_amp = std::numeric_limits<double>::infinity();
  for (int attempt = 0; attempt < kRandomDraws; ++attempt) {
    GradientCode c(Kind::kRandomLinear, n, s);
    if (!c.rows_from_h(random_h(n, s, rng))) continue;
    c.max_amplification_ = max_amplification;
    double amp = c.worst_amplification();
    if (!best || amp < best_amp) {
      best_amp = amp;
      best = std::move(c);
    }
    if (amp >= 0 && amp <= kTargetAmplification) break;
    if (amp < 0) break;  // too many subsets to check: take the first draw
  }
  if (!best) return internal_error("random gradient code: every draw was singular");
  return std::move(*best);
}

bool GradientCode::rows_from_h(const std::vector<std::vector<double>>& h) {
  const int n = n_, s = s_;
  parts_.clear();
  coeffs_.clear();
  for (int j = 0; j < n; ++j) {
    // Row j: support {j, ..., j+s} mod n, b[j] = 1, the other s entries solve
    // H[:, rest] x = -H[:, j] so that H b = 0.
    std::vector<int> support;
    for (int q = 0; q <= s; ++q) support.push_back((j + q) % n);
    std::vector<double> a(static_cast<size_t>(s * s)), rhs(static_cast<size_t>(s)), xs;
    for (int i = 0; i < s; ++i) {
      rhs[static_cast<size_t>(i)] = -h[static_cast<size_t>(i)][static_cast<size_t>(j)];
      for (int q = 1; q <= s; ++q) {
        a[static_cast<size_t>(i * s + q - 1)] =
            h[static_cast<size_t>(i)][static_cast<size_t>(support[static_cast<size_t>(q)])];
      }
    }
    if (!solve_plain(a, rhs, s, &xs)) return false;
    std::vector<std::pair<int, double>> row{{j, 1.0}};
    for (int q = 1; q <= s; ++q)
      row.emplace_back(support[static_cast<size_t>(q)], xs[static_cast<size_t>(q - 1)]);
    std::sort(row.begin(), row.end());
    std::vector<int> parts;
    std::vector<double> coeffs;
    for (auto& [p, v] : row) {
      parts.push_back(p);
      coeffs.push_back(v);
    }
    parts_.push_back(parts);
    coeffs_.push_back(coeffs);
  }
  return true;
}

std::string GradientCode::kind_name() const {
  switch (kind_) {
    case Kind::kIdentity:
      return "identity";
    case Kind::kFractionalRepetition:
      return "fractional_repetition";
    case Kind::kCyclicRepetition:
      return "cyclic_repetition";
    case Kind::kRandomLinear:
      return "random_linear";
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
    case Kind::kRandomLinear:
      return static_cast<int>(senders.size()) >= n_ - s_ && solve(senders).is_ok();
  }
  return false;
}

Result<std::vector<double>> GradientCode::decode(const std::vector<int>& senders) const {
  if (!decodable(senders)) {
    return failed_precondition("gradient code (" + kind_name() + ", n=" + std::to_string(n_) +
                               ", s=" + std::to_string(s_) + ") cannot decode from " +
                               std::to_string(senders.size()) + " senders");
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
    case Kind::kRandomLinear:
      return solve(senders);
  }
  return a;
}

Result<std::vector<double>> GradientCode::solve(const std::vector<int>& unordered) const {
  // Solved over the senders in rank order, so the weights (and whether they pass) depend on the
  // set only, not on the order contributions arrived in at this rank.
  std::vector<size_t> order(unordered.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t x, size_t y) { return unordered[x] < unordered[y]; });
  std::vector<int> senders;
  for (size_t i : order) senders.push_back(unordered[i]);
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
    return failed_precondition("gradient code decode is ill-conditioned (residual " +
                               std::to_string(err) + ")");
  }
  std::vector<double> sorted_a(static_cast<size_t>(f));
  auto xa = x.accessor<double, 2>();
  for (int64_t i = 0; i < f; ++i) sorted_a[static_cast<size_t>(i)] = xa[i][0];
  if (max_amplification_ > 0 && f < n_) {
    double amp = amplification(senders, sorted_a);
    if (!(amp <= max_amplification_)) {
      return failed_precondition("gradient code decode amplifies rounding " + std::to_string(amp) +
                                 "x (limit " + std::to_string(max_amplification_) + ")");
    }
  }
  std::vector<double> a(static_cast<size_t>(f));
  for (size_t i = 0; i < order.size(); ++i) a[order[i]] = sorted_a[i];
  return a;
}

double GradientCode::amplification(const std::vector<int>& senders,
                                   const std::vector<double>& a) const {
  double total = 0;
  for (size_t i = 0; i < senders.size(); ++i) {
    double row = 0;
    for (double b : coeffs_[static_cast<size_t>(senders[i])]) row += std::abs(b);
    total += std::abs(a[i]) * row;
  }
  return total / n_;
}

double GradientCode::worst_amplification(int64_t max_subsets) const {
  // C(n, n - s) = C(n, s), counted without overflow.
  double count = 1;
  for (int i = 1; i <= s_; ++i) count = count * (n_ - s_ + i) / i;
  if (count > static_cast<double>(max_subsets)) return -1;
  double worst = 0;
  // Plain arithmetic (solve_plain), so every rank's process accepts the same draw: weights from
  // the normal equations (B_F B_Fᵀ) a = B_F 1, refused when B_Fᵀ a misses 1.
  const int f = n_ - s_;
  for_each_subset(n_, f, [&](const std::vector<int>& rows) {
    std::vector<std::vector<double>> dense(static_cast<size_t>(f),
                                           std::vector<double>(static_cast<size_t>(n_), 0.0));
    for (int i = 0; i < f; ++i) {
      const auto& parts = parts_[static_cast<size_t>(rows[static_cast<size_t>(i)])];
      const auto& coeffs = coeffs_[static_cast<size_t>(rows[static_cast<size_t>(i)])];
      for (size_t q = 0; q < parts.size(); ++q)
        dense[static_cast<size_t>(i)][static_cast<size_t>(parts[q])] = coeffs[q];
    }
    std::vector<double> m(static_cast<size_t>(f * f), 0.0), rhs(static_cast<size_t>(f), 0.0), a;
    for (int i = 0; i < f; ++i) {
      for (int p = 0; p < n_; ++p)
        rhs[static_cast<size_t>(i)] += dense[static_cast<size_t>(i)][static_cast<size_t>(p)];
      for (int k = 0; k < f; ++k) {
        double v = 0;
        for (int p = 0; p < n_; ++p)
          v += dense[static_cast<size_t>(i)][static_cast<size_t>(p)] *
               dense[static_cast<size_t>(k)][static_cast<size_t>(p)];
        m[static_cast<size_t>(i * f + k)] = v;
      }
    }
    bool ok = solve_plain(m, rhs, f, &a);
    for (int p = 0; ok && p < n_; ++p) {
      double v = 0;
      for (int i = 0; i < f; ++i)
        v += a[static_cast<size_t>(i)] * dense[static_cast<size_t>(i)][static_cast<size_t>(p)];
      ok = std::abs(v - 1.0) <= 1e-6;
    }
    if (!ok) {
      worst = std::numeric_limits<double>::infinity();
      return false;
    }
    worst = std::max(worst, amplification(rows, a));
    return true;
  });
  return worst;
}

size_t decodable_prefix(const GradientCode& code, const std::vector<int>& arrivals) {
  for (size_t k = static_cast<size_t>(std::max(1, code.n() - code.s())); k <= arrivals.size();
       ++k) {
    if (code.decodable(
            std::vector<int>(arrivals.begin(), arrivals.begin() + static_cast<int64_t>(k))))
      return k;
  }
  return 0;
}

}  // namespace tern
