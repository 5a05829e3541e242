// Local (communication-free) encoders of the compressors: top-k selection with a sampled
// threshold, the fixed-size sparse wire format, and fp16 / int8 quantisation with the error
// each leaves behind. Every encoder here satisfies, bit for bit,
//   decode(encode(x)) + error == x
// which is what makes error feedback lossless over time. Pure functions of their inputs (and
// of the generator passed in); safe to call from any thread on distinct tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace tern {

// k entries of a flat tensor, indices ascending. `values` are x[indices] except for padding
// entries (value 0, index repeating the smallest selected index), which the sampled path adds
// when it found fewer than k but at least k/2 entries above its threshold.
struct TopKSelection {
  at::Tensor indices;           // int64 [k], ascending
  at::Tensor values;            // x.dtype [k]
  bool exact = true;            // true: exact top-k (at::topk); false: sampled threshold
  int64_t above_threshold = 0;  // entries the sampled threshold let through (0 when exact)
};

// Exact top-k of |x| (x flat).
TopKSelection exact_top_k(const at::Tensor& x, int64_t k);

// DGC's selection: estimates the k-th largest |x| from a random sample (with replacement) of
// max(sample_ratio * numel, min(numel, 1024), 16 * numel / k) entries — so that at least 16
// sampled entries lie above the estimate — and keeps the entries at or above it.
// Falls back to exact top-k when the count is off by more than 2x (fewer than k/2 or more
// than 2k); more than k (up to 2k) are cut to the exact top k among them, fewer are padded.
TopKSelection sampled_top_k(const at::Tensor& x, int64_t k, double sample_ratio,
                            at::Generator& gen);

// The sparse wire format of one tensor of `numel` entries with k selected entries: indices
// split into 64Ki-element chunks, sent as per-chunk counts (int32, ceil(numel / 65536) of
// them) plus the low 16 bits of each index, then the k values (fp32 or fp16). Fixed size for
// a given (numel, k, value dtype), so every rank's payload has the same length.
int64_t sparse_payload_bytes(int64_t numel, int64_t k, at::ScalarType value_type);
// `indices` ascending int64 [k], `values` already in `value_type`. Returns uint8 bytes.
at::Tensor encode_sparse(const at::Tensor& indices, const at::Tensor& values, int64_t numel);
// Adds the decoded values into `dense` (flat fp32, numel entries). `bytes` is one payload.
void decode_sparse_add(const at::Tensor& bytes, int64_t numel, int64_t k, at::ScalarType value_type,
                       at::Tensor& dense);

// The values as they will travel: fp32 unchanged, fp16 rounded to nearest and clamped to the
// finite half range. Returns the wire tensor; `sent` receives it back in x's dtype.
at::Tensor to_wire_values(const at::Tensor& values, at::ScalarType value_type, at::Tensor* sent);

// fp16 for a sum over `world` ranks: h = half(clamp(x / world)), so the sum of world halves
// cannot overflow and is already the average. decode_fp16 gives this rank's contribution in
// x's units (h * world).
at::Tensor encode_fp16(const at::Tensor& x, int world);
at::Tensor decode_fp16(const at::Tensor& h, int world);

// int8 with a per-tensor scale: scale = max|x| / 127, q = round(x / scale) in [-127, 127].
struct Int8Encoded {
  at::Tensor q;     // int8, x's shape
  float scale = 0;  // 0 when x is all zeros
};
Int8Encoded encode_int8(const at::Tensor& x);
at::Tensor decode_int8(const at::Tensor& q, float scale);

}  // namespace tern
