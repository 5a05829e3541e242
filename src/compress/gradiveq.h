// GradiVeQ: gradient vector quantisation by a shared PCA basis (Yu et al., NeurIPS 2018;
// docs/algorithms.md §4). Gradients of CNNs are strongly linearly correlated, so a gradient
// cut into slices of d values is well described by k << d coefficients per slice in a basis U
// (d x k, orthonormal columns) of the slices' principal directions. The map x -> X U is linear,
// so the ranks' coefficients are summed by a plain (ring) all-reduce and decoded once:
// mean = (sum_r X_r U) Uᵀ / N.
//
// Slicing (compress.slicing). shaped (the default): slices follow each tensor's structure, so
// that the same position in two slices means the same thing (the paper's observation is about
// such slices; consecutive values cut at arbitrary offsets correlate far less; bench/results/
// compression-cnn-gradiveq-shaped.md). A slice is j whole units, j the largest divisor of the
// tensor's unit count with j * unit <= d (one unit when a unit alone is larger than d):
//   conv kernel (out, in, kh, kw, ...): unit kh*kw*..., count in (one kernel per unit);
//   matrix (out, L) after a conv of C output channels with C | L (the flatten of C feature
//   maps): unit L / C, count C (for the Fashion-MNIST CNN's fc1: 7x7 maps, 49 values);
//   other matrix: unit 1, count L (slices never cross rows), unless L has no divisor in
//   [d/2, d]: then slices of d run across rows;
//   vectors (biases, norms) and tensors whose slice would not exceed k: sent dense; so is a
//   slice group whose coefficients plus covariance (per refresh) would not be fewer values.
// One basis per slice size (per bucket); buckets are whole tensors. flat: the flattened
// gradient in consecutive slices of d values (the last one zero-padded), one basis per bucket.
// matrix: a weight's gradient G (out x the rest, conv kernels flattened) is cut along its
// shorter side s (its columns when out <= the rest, else its rows) when s <= d, with a basis of
// its own: the top-k eigenvectors of the s x s covariance of G's columns are G's k leading left
// singular vectors, so the decoded gradient is G's best rank-k approximation, the one PowerSGD
// approximates by a power step. A linear layer's gradient is a sum of one outer product per sample,
// so its rank is at most the global batch and this is where its energy is (the CNN's fc1 at k 32:
// 0.999 of a step's energy, against 0.917 for k 8 in 7x7 maps; algorithms.md §4.5). It costs an
// s (s + 1) / 2 covariance per tensor and step; other tensors are sliced as shaped.
//
// Basis: the top-k eigenvectors of the slice covariance sum_r X_rᵀ X_r of a recent step. Every
// refresh_every compressed steps (and on the last dense step) the ranks append their local
// d x d covariance (its upper triangle, d (d + 1) / 2 values) to that step's all-reduce, so the sum
// is bit-identical on every rank and so is the basis computed from it (float64 eigh, deterministic
// sign), which the next step uses. The covariance is of x = g + e, so directions that error
// feedback has been holding back enter the next basis. refresh_every 0: each step's basis comes
// from that step's own summed covariance, all-reduced first (a blocking d x d round before the
// coefficients', as PowerSGD's P round), so what error feedback holds back is sent as soon as it
// dominates; with a basis one step old or more the memory outside it grows in bursts and the CNN
// diverged (bench/results/compression-cnn-gradiveq-shaped.md).
//
// Error feedback stays in gradient space: e = x − decode(encode(x)), whatever basis a step
// used; a basis change never reinterprets the memory. Per bucket (sync.bucket_mb of the flat
// gradient) one basis and one all-reduce, issued as soon as that bucket is encoded, so the
// next bucket's encoding overlaps its communication.
//
// State ("gradiveq/iter", "gradiveq/basis/<bucket>" (flat) or "gradiveq/basis/<bucket>/<slice
// size>" (shaped, matrix), "gradiveq/basis/<bucket>/matrix/<tensor index>" (matrix),
// "gradiveq/e/<tensor index>") is in Compressor::state() for checkpoints. Trainer-loop thread only
// (Compressor's contract).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "compress/compressor.h"

namespace tern {

// The linear codec (pure functions; tests check them directly).
// `flat` (fp32, numel values) as m = ceil(numel / d) rows of d, the last one zero-padded.
at::Tensor gradiveq_slices(const at::Tensor& flat, int64_t d);
// Coefficients of the slices in `basis` (d x k): m x k.
at::Tensor gradiveq_encode(const at::Tensor& slices, const at::Tensor& basis);
// The flat vector (numel values) the coefficients stand for.
at::Tensor gradiveq_decode(const at::Tensor& coeffs, const at::Tensor& basis, int64_t numel);
// Local slice covariance Xᵀ X (d x d, fp32).
at::Tensor gradiveq_covariance(const at::Tensor& slices);
// A symmetric d x d covariance travels as its upper triangle (diagonal included, row-major):
// d (d + 1) / 2 values, about half of the full matrix. Sums of packed covariances unpack to the
// sum of the covariances, exactly symmetric.
int64_t gradiveq_packed_numel(int64_t d);
at::Tensor gradiveq_pack_covariance(const at::Tensor& cov);
at::Tensor gradiveq_unpack_covariance(const at::Tensor& packed, int64_t d);
// The k leading eigenvectors of the symmetric `cov` (d x d) as fp32 d x k, orthonormal (solved
// in float64), largest eigenvalue first, each column's largest-magnitude entry positive, so
// equal inputs give equal bits.
at::Tensor gradiveq_basis(const at::Tensor& cov, int64_t k);
// compress.slicing shaped: each tensor's slice size (0: sent dense) for gradients of `shapes`
// in model order, slice size d, basis size k (the rules above).
std::vector<int64_t> gradiveq_shaped_slices(const std::vector<std::vector<int64_t>>& shapes,
                                            int64_t d, int64_t k);
// compress.slicing matrix: per tensor the length of its matrix slices, or 0 where the tensor is
// sliced as shaped. A tensor of >= 2 dimensions is the matrix shape[0] x (numel / shape[0]); its
// slices run along the shorter side s (columns when shape[0] <= the rest, else rows), when
// s <= d, k < s, and the coefficients plus the packed covariance are fewer values than the
// tensor: k * (numel / s) + s (s + 1) / 2 < numel.
std::vector<int64_t> gradiveq_matrix_slices(const std::vector<std::vector<int64_t>>& shapes,
                                            int64_t d, int64_t k);

struct GradiVeqOptions {
  bool flat = false;          // compress.slicing flat
  bool matrix = false;        // compress.slicing matrix (neither: shaped)
  int64_t slice_size = 64;    // d
  int64_t basis_size = 8;     // k < d
  int64_t refresh_every = 0;  // compressed steps between basis refreshes; 0: every step from
                              // its own covariance (two rounds per step, as PowerSGD)
  int64_t start_iter = 10;    // dense all-reduce before (>= 1: the first basis needs one)
  int64_t bucket_numel = int64_t{25} << 18;  // values per bucket (sync.bucket_mb)
  bool error_feedback = true;
  double ef_decay = 1.0;  // x = g + ef_decay e
};

// compress.method gradiveq. Per step and bucket: dense (x, before start_iter or while a bucket
// has no basis yet) or the m x k coefficients, plus the d x d covariance on the steps before a
// refresh, in one all-reduce. Wire per compressed step ~ k/d of dense fp32.
class GradiVeqCompressor : public Compressor {
 public:
  GradiVeqCompressor(Communicator& comm, GradiVeqOptions options);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;
  // Refreshes done so far (bases computed, over all buckets).
  int64_t refreshes() const { return refreshes_; }
  struct Round;

 private:
  // The step's buckets and their slice groups (payload layout, state keys), from the shapes.
  void plan_layout(const std::vector<at::Tensor>& grads, const std::vector<size_t>& idx,
                   Round* round) const;
  // refresh_every 0: every group's basis from this step's summed covariance (one blocking
  // all-reduce of the d x d covariances, before the coefficients').
  Status fresh_bases(const Round& round, const std::vector<std::vector<at::Tensor>>& slices);
  // Bucket `bucket`'s payload (per group raw values or coefficients, then carried covariances), its
  // error-feedback residual (into `residual`, laid out as x), and its all-reduce, issued.
  Status encode_bucket(Round& round, size_t bucket, const std::vector<at::Tensor>& slices,
                       const at::Tensor& x, at::Tensor& residual, int64_t it);
  GradiVeqOptions options_;
  std::shared_ptr<Round> last_;  // the previous step's reduction, while it may carry a covariance
  int64_t refreshes_ = 0;
};

}  // namespace tern
