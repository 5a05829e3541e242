// Gradient compressors (docs/algorithms.md §4). A Compressor is a GradientReducer that encodes
// each rank's gradients before they cross the wire (compress → wire payload → collective →
// decompress) and keeps what it did not send as error feedback.
//
// Per-rank state (error-feedback memories, DGC momentum and velocity, PowerSGD's warm-start
// Q, int4's and topk's memories "int4/e/<i>" and "topk/e/<i>") lives in one named map:
// state() returns it for checkpoints and load_state() restores it (names are stable:
// "<method>/<what>/<tensor index>"). State is created on first use, so load_state() may be
// called before the first step.
//
// Contract (as GradientReducer): start() applies error feedback, encodes, issues the
// collectives non-blocking and returns; finish() waits and decodes the global average. All
// state updates of step i happen inside start(i) or in finish order, so finish() may come at
// once (SSGD) or d steps later (DSSGD). Every rank issues the same collectives in the same
// order (sizes depend only on shapes, the step and the spec). No collective ever carries an
// empty tensor. Trainer-loop thread only.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "common/status.h"
#include "compress/codec.h"

namespace tern {

class Compressor : public GradientReducer {
 public:
  Compressor(Communicator& comm, std::string name) : comm_(comm), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  const ReducerStats& stats() const override { return stats_; }
  std::vector<std::pair<std::string, at::Tensor>> state() override;
  Status load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) override;

 protected:
  // The named state tensor, zeros shaped like `like` on first use. A restored tensor whose
  // shape does not match is replaced by zeros and reported by state_error().
  at::Tensor& state_tensor(const std::string& key, const at::Tensor& like);
  Status state_error() const { return state_error_; }

  // The non-empty tensors of a step (what int4 and topk share): flattened in order into one
  // fp32 vector x (a fresh copy), plus, with error feedback, each one's memory
  // "<name>/e/<tensor index>" (x = g + e; the memories alias the state, so
  // store_residual() updates it). Check state_error() afterwards.
  struct FlatStep {
    at::Tensor x;                      // undefined when no tensor has an element
    std::vector<size_t> idx;           // indices into grads of the non-empty tensors
    std::vector<int64_t> numels;       // their sizes
    std::vector<at::Tensor> memories;  // flat views of their memories; empty without feedback
  };
  // `ef_decay` (beta, compress.ef_decay) scales the memory first: x = g + beta e. beta = 1 is
  // classic error feedback; beta < 1 lets what was never sent fade (SparseLoCo uses 0.95 on
  // pseudo-gradients, where the memory plays the part of outer momentum).
  FlatStep flatten_with_memory(const std::vector<at::Tensor>& grads, bool error_feedback,
                               double ef_decay = 1.0);
  // memories = residual (flat, laid out as FlatStep::x). No-op without memories.
  static void store_residual(FlatStep& step, const at::Tensor& residual);

  Communicator& comm_;
  ReducerStats stats_;

 private:
  std::string name_;
  std::map<std::string, at::Tensor> state_;
  Status state_error_;
};

// Adds the wall time of its scope to `*acc` (compression time in ReducerStats).
class ScopedTimer {
 public:
  explicit ScopedTimer(double* acc);
  ~ScopedTimer();

 private:
  double* acc_;
  std::chrono::steady_clock::time_point start_;
};

// A reduction that failed before any collective was issued.
std::unique_ptr<PendingReduction> failed_reduction(Status status);

// Waits for `works` (each with the communicator's timeout), then runs `decode`, timing it
// into `*compress_s`.
std::unique_ptr<PendingReduction> make_pending(
    Communicator& comm, std::vector<WorkPtr> works,
    std::function<Status(std::vector<at::Tensor>&)> decode, double* compress_s);

// The tensors grads[idx...] flattened into one fp32 vector (a fresh copy); unflatten_parts
// (comm/reducer.h) copies it back.
at::Tensor flatten_parts(const std::vector<at::Tensor>& grads, const std::vector<size_t>& idx);

struct DgcOptions {
  double density = 0.001;                // final density
  std::vector<double> warmup_densities;  // densities of the warm-up stages, in order
  int64_t warmup_steps = 0;              // all stages together span these many steps
  double sample_ratio = 0.01;
  double clip_norm = 0;      // 0 = no clipping; else local clip at clip_norm / sqrt(N)
  int64_t min_numel = 1024;  // smaller or 1-D tensors go dense
  double momentum = 0.9;
  bool momentum_masking = true;
  at::ScalarType value_type = at::kFloat;  // kHalf: values (sparse and dense) travel as fp16
  uint64_t seed = 0;                       // per rank, for threshold sampling
};

// Deep Gradient Compression (Lin et al. 2018). Owns momentum: the optimizer must run with
// momentum 0. Per large tensor: u = m·u + g (clipped), v += u, send the top-k of |v| as
// (indices, values) in one fixed-size allgather for all sparse tensors, v -= sent, u = 0 where
// sent (momentum factor masking). Small and 1-D tensors: dense all-reduce, then u = m·u + G.
// Collectives per step: one all-reduce (dense part, if any), one allgather (sparse, if any).
class DgcCompressor : public Compressor {
 public:
  DgcCompressor(Communicator& comm, DgcOptions options);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;
  bool owns_momentum() const override { return true; }
  // Compressor state plus the threshold-sampling generator ("dgc/rng", uint8), so a run
  // resumed from a checkpoint samples exactly as the uninterrupted run would have.
  std::vector<std::pair<std::string, at::Tensor>> state() override;
  Status load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) override;
  double density_at(int64_t step) const;
  // Steps whose sampled threshold fell back to exact top-k (summed over tensors).
  int64_t exact_fallbacks() const { return exact_fallbacks_; }
  int64_t sampled_selections() const { return sampled_; }

 private:
  struct Round;  // what one start() sends and what its decode needs (dgc.cc)
  // The local clipping coefficient (clip_norm scaled by N^-1/2; 1 without clipping).
  double clip_coefficient(const std::vector<at::Tensor>& grads) const;
  // Small and 1-D tensors: one flat dense part (fp16 with error feedback for half values).
  void encode_dense_part(const std::vector<at::Tensor>& grads, double coef, Round* r);
  // The rest: momentum correction, accumulation, top-k, masking, encoding.
  void encode_sparse_part(const std::vector<at::Tensor>& grads, double coef, int64_t step,
                          Round* r);

  DgcOptions options_;
  at::Generator gen_;
  int64_t exact_fallbacks_ = 0;
  int64_t sampled_ = 0;
};

struct PowerSgdOptions {
  int64_t rank = 2;
  int64_t start_iter = 10;            // reductions run dense before compression starts
  double min_compression_rate = 2.0;  // compress n x m only if (n + m) r < n m / rate (0: always)
  bool error_feedback = true;
  uint64_t seed = 0;  // the same on every rank (initial Q)
};

// PowerSGD (Vogels et al. 2019), rank r with warm start. Per matrix M = g + e (conv kernels
// as out x rest): P = M Q, all-reduce P, orthonormalise P, Q = Mᵀ P, e = M − P Qᵀ (this
// rank's own share), all-reduce Q, average = P Qᵀ / N; Q is kept as the next warm start.
// Vectors and matrices that would not shrink go dense. start() blocks on the P all-reduce
// (Q depends on it); the Q all-reduce stays in flight until finish() or the next start().
class PowerSgdCompressor : public Compressor {
 public:
  PowerSgdCompressor(Communicator& comm, PowerSgdOptions options);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;
  struct Round;

 private:
  // The tensors that go as rank-r factors (matrix_idx, with their n, m, r) and the rest (dense).
  void split_matrices(const std::vector<at::Tensor>& grads, bool compress,
                      std::vector<size_t>* dense_idx, std::vector<size_t>* matrix_idx,
                      std::vector<std::array<int64_t, 3>>* dims) const;
  // P = M Q (M with its error feedback), the blocking P all-reduce, P's orthogonalisation, and
  // the Q all-reduce left in flight in `round`.
  Status start_matrices(const std::vector<at::Tensor>& grads, const std::vector<size_t>& matrix_idx,
                        const std::vector<std::array<int64_t, 3>>& dims, Round* round);

  PowerSgdOptions options_;
  int64_t iter_ = 0;
  std::shared_ptr<Round> last_;
};

// fp16 all-reduce with error feedback: x = g + e, h = half(x / N), e = x − N·h; one all-reduce
// of all tensors in half precision.
class Fp16Compressor : public Compressor {
 public:
  Fp16Compressor(Communicator& comm, bool error_feedback);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;

 private:
  bool error_feedback_;
};

// int8 with a per-tensor scale and error feedback: each rank quantises x = g + e with its own
// scale (max|x| / 127), then two allgathers: the scales (fp32, one per tensor) and the int8
// payload. Receivers dequantise every rank's part with that rank's scale and sum in fp32, so
// nothing overflows (int8 sums would in an all-reduce).
class Int8Compressor : public Compressor {
 public:
  Int8Compressor(Communicator& comm, bool error_feedback);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;

 private:
  bool error_feedback_;
};

struct Int4Options {
  int64_t block_size = 64;  // values per scale; a tensor's last block may be shorter
  bool error_feedback = true;
  double ef_decay = 1.0;  // x = g + ef_decay e
};

// 4-bit quantisation with per-block fp32 scales and error feedback (compress.method int4;
// codec.h: encode_int4 for the format and why the scales are fp32). Per step: x = g + e over
// all tensors flattened (blocks never span two tensors), payload = encode_int4(x),
// e = x − decode_int4(payload) (exactly what the receivers reconstruct). 4-bit values cannot be
// summed on the wire, so one allgather carries every rank's payload (scales and nibbles in one
// byte tensor: one round trip, which is what costs on a WAN); every rank decodes all N in rank
// order, sums them in fp32 and divides by N, so every rank computes the same bits.
// Wire: (N − 1) · (4 · blocks + ceil(numel / 2)) bytes per rank and step, about 1/7 of fp32's.
class Int4Compressor : public Compressor {
 public:
  Int4Compressor(Communicator& comm, Int4Options options);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;

 private:
  Int4Options options_;
  BlockLayout layout_;  // of the last step's tensors; rebuilt when their sizes change
};

struct TopkOptions {
  double density =
      0.02;  // k = ceil(density · numel of all tensors) (per chunk: of the chunk), >= 1
  int value_bits =
      32;  // 32 | 16 (fp16, rounding kept in e) | 8 | 4 (chunked only: per-chunk scale)
  int64_t chunk_size = 0;  // 0: one global top-k; C: top-k per chunk of C values (codec.h)
  bool error_feedback = true;
  double ef_decay = 1.0;  // x = g + ef_decay e
};

// Global top-k with error feedback, no momentum (compress.method topk). Per step: x = g + e
// over all tensors flattened into one vector, the k entries of largest |x| over the whole
// vector (not per tensor: for a given k this leaves the smallest residual ‖x − sent‖, the
// quantity error feedback's convergence depends on, and a tensor whose entries are small now
// is sent once its memory has grown), e = x − sent. One fixed-size allgather of k int32
// indices and k values per rank (codec.h: encode_flat_sparse); every rank scatter-adds all N
// payloads in rank order into zeros and divides by N, so every rank computes the same bits.
// Unlike DGC it leaves momentum to the optimizer, so it also carries parameter deltas
// (sync.strategy tsu / dts). Models of 2^31 values or more are refused (int32 indices).
// Wire: (N − 1) · k · (4 + value bytes) bytes per rank and step.
// With chunk_size C (SparseLoCo's layout, codec.h: encode_chunked_topk) every chunk of C values
// sends its own top ceil(density · C), as 1- or 2-byte offsets and values of value_bits bits
// (4 and 8 with one fp32 scale per chunk). Wire: (N − 1) · chunked_topk_payload_bytes, e.g.
// C = 256, density 1/16, 4 bits: 28 bytes per 256 values, 1/37 of fp32.
class TopkCompressor : public Compressor {
 public:
  TopkCompressor(Communicator& comm, TopkOptions options);
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override;
  // k for a model of `numel` values in all (0 when numel is 0); without chunks.
  int64_t k_for(int64_t numel) const;

 private:
  std::unique_ptr<PendingReduction> start_chunked(FlatStep f);

  TopkOptions options_;
  BlockLayout layout_;  // chunked: of the last step's tensors; rebuilt when their sizes change
};

}  // namespace tern
