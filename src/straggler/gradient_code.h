// GradientCode: gradient coding (Tandon et al., ICML 2017; docs/algorithms.md §6.1). A step's
// data is split into n parts; rank j computes the gradients of s + 1 parts and sends one linear
// combination c_j = sum_p B[j][p] g_p. From the contributions of any n - s ranks F the sum
// sum_p g_p is recovered as sum_{j in F} a_j c_j, with a solving a^T B_F = 1^T.
//
//   fractional repetition (when (s + 1) divides n): ranks form groups of s + 1 that compute the
//     same s + 1 parts with coefficient 1; decoding takes one sender per group (exact: group
//     members send bit-identical vectors).
//   cyclic repetition (any n, s < n): rank j computes parts j .. j+s (mod n); B is built from a
//     random s x n matrix H with H 1 = 0, each row in H's null space, so any n - s rows span it
//     and contain 1 (the paper's construction). Decoding solves a least-squares system.
//   identity (s = 0): every rank computes its own part; all n needed.
//   random linear (straggler.mode random_code, RLNC-style): cyclic supports, but a fresh random
//     H every step, drawn from (seed, step) so every rank builds the same code. Draws whose
//     decode from some (n - s)-subset would amplify rounding by more than kTargetAmplification
//     are redrawn (a bounded number of times). Decoding is a float64 least-squares solve whose
//     weights are refused (not decodable) when their amplification exceeds max_amplification
//     while fewer than n contributions are in: the caller then waits for one more
//     (decodable_prefix); all n always decode.
//
// Amplification of a decode: sum_j |a_j| * sum_p |B[j][p]| / n, the factor by which the
// contributions' own (fp32) rounding can grow in the decoded sum relative to a plain sum of n
// gradients (1 for fractional repetition).
//
// Immutable after construction; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

class GradientCode {
 public:
  enum class Kind { kIdentity, kFractionalRepetition, kCyclicRepetition, kRandomLinear };

  // Redraw threshold of make_random's construction and its default decode limit.
  static constexpr double kTargetAmplification = 4.0;
  static constexpr double kMaxAmplification = 64.0;

  // Fractional repetition when (s + 1) | n, else cyclic (random B from `seed`; every rank must
  // pass the same seed). Refuses s >= n or n < 1.
  static Result<GradientCode> make(int n, int s, uint64_t seed);
  // Forces the cyclic construction (tests compare both).
  static Result<GradientCode> make_cyclic(int n, int s, uint64_t seed);
  // The random linear code of `step` (1 <= s < n): a function of (n, s, seed, step) only.
  static Result<GradientCode> make_random(int n, int s, uint64_t seed, int64_t step,
                                          double max_amplification = kMaxAmplification);

  Kind kind() const { return kind_; }
  std::string kind_name() const;
  int n() const { return n_; }
  int s() const { return s_; }
  // The parts rank j computes (s + 1 of them, ascending) and their coefficients B[j][p].
  const std::vector<int>& parts(int rank) const { return parts_[static_cast<size_t>(rank)]; }
  const std::vector<double>& coefficients(int rank) const {
    return coeffs_[static_cast<size_t>(rank)];
  }
  // The ranks that compute part p.
  std::vector<int> holders(int part) const;

  // True when the contributions of `senders` (distinct ranks) determine the sum.
  bool decodable(const std::vector<int>& senders) const;
  // Decoding weights: a[i] multiplies the contribution of senders[i] (zero for senders not
  // needed). FAILED_PRECONDITION when not decodable.
  Result<std::vector<double>> decode(const std::vector<int>& senders) const;
  // The amplification of decoding `senders` with weights `a` (see above).
  double amplification(const std::vector<int>& senders, const std::vector<double>& a) const;
  // The largest amplification over every (n - s)-subset of senders (when there are at most
  // `max_subsets` of them; else -1). +inf when some subset does not decode.
  double worst_amplification(int64_t max_subsets = 256) const;

 private:
  GradientCode(Kind kind, int n, int s) : kind_(kind), n_(n), s_(s) {}
  Result<std::vector<double>> solve(const std::vector<int>& senders) const;
  // Rows with cyclic supports in the null space of h (s x n, h 1 = 0); false if singular.
  bool rows_from_h(const std::vector<std::vector<double>>& h);

  Kind kind_;
  int n_;
  int s_;
  std::vector<std::vector<int>> parts_;
  std::vector<std::vector<double>> coeffs_;
  double max_amplification_ = 0;  // > 0: decode limit (random linear codes)
};

// The length of the shortest prefix of `arrivals` (contributions in arrival order) from which
// `code` decodes; 0 when none does. More than n - s means a failed decode was fallen back from.
size_t decodable_prefix(const GradientCode& code, const std::vector<int>& arrivals);

}  // namespace tern
