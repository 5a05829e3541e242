// Local (communication-free) encoders of the compressors: top-k selection with a sampled
// threshold, the fixed-size sparse wire formats (DGC's chunked one, topk's flat int32 one),
// and fp16 / int8 / int4 quantisation with the error each leaves behind. Every encoder here
// satisfies, bit for bit,
//   decode(encode(x)) + error == x
// which is what makes error feedback lossless over time. Pure functions of their inputs (and
// of the generator passed in); safe to call from any thread on distinct tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

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

// int4 with per-block scales over several tensors flattened into one vector (`numels` are the
// tensors' sizes, in order; their sum is the vector's length). Blocks of `block_size` values
// never span two tensors (a tensor's last block may be shorter): a block mixing a large-valued
// tensor with a small-valued one would quantise the small one to zero. Per block
// scale = max|x| / 7 (fp32), q = round(x / scale) in [-7, 7]; a block that is all zeros or
// holds a non-finite value gets scale 0 and sends zeros (its values stay in the error).
// Scales are fp32, not fp16: 4 bytes per 64 values costs 0.5 bit per value (7.1x smaller than
// fp32 instead of 7.5x), but an fp16 scale underflows below 6e-8 (parameter deltas of small
// learning rates reach that) and overflows above 65504, and each would break the bound
// |x - decode(encode(x))| <= scale / 2 that error feedback relies on.
// Payload (uint8): the scales (fp32, one per block, in order), then the values as nibbles
// q + 8 (1..15), two per byte, element 2j in the low nibble of byte j and 2j + 1 in the high
// one; an odd count leaves the last high nibble 0. Fixed size for given (numels, block_size).
int64_t int4_blocks(const std::vector<int64_t>& numels, int64_t block_size);
int64_t int4_payload_bytes(const std::vector<int64_t>& numels, int64_t block_size);
// Where every value of the flat vector sits among the blocks (int4's blocks, chunked top-k's
// chunks). It depends only on the sizes and the block size, so a compressor builds it once and
// reuses it every step (the index tensors are what makes decoding a gather rather than a
// repeat_interleave, ~50x faster on CPU).
struct BlockLayout {
  std::vector<int64_t> numels;
  int64_t block_size = 0;
  int64_t blocks = 0;
  int64_t numel = 0;          // sum(numels)
  int64_t payload_bytes = 0;  // int4_payload_bytes(numels, block_size)
  at::Device device = at::kCPU;
  bool padded = false;    // some tensor's last block is short
  at::Tensor block_of;    // int64 [numel]: each value's block
  at::Tensor padded_pos;  // int64 [numel]: its position in the zero-padded blocks
};
BlockLayout make_block_layout(const std::vector<int64_t>& numels, int64_t block_size,
                              const at::Device& device);
// `x` flat fp32 of layout.numel values. Returns the payload.
at::Tensor encode_int4(const at::Tensor& x, const BlockLayout& layout);
// One payload back to a flat fp32 vector of layout.numel values (x's reconstruction). Throws
// (c10::Error) on a payload of the wrong size or type.
at::Tensor decode_int4(const at::Tensor& payload, const BlockLayout& layout);
// The same, building the layout on the fly.
at::Tensor encode_int4(const at::Tensor& x, const std::vector<int64_t>& numels, int64_t block_size);
at::Tensor decode_int4(const at::Tensor& payload, const std::vector<int64_t>& numels,
                       int64_t block_size);

// Chunked top-k (compress.method topk with compress.chunk_size C, SparseLoCo's format): the flat
// vector is cut into chunks of C values laid out as `layout` (make_block_layout(numels, C):
// chunks never span two tensors, a tensor's last chunk is zero-padded) and every chunk sends its
// own k entries of largest |x|. Per-chunk selection bounds what one tensor can take from
// another (global top-k can starve a layer for many syncs) and makes the indices small: an
// offset inside the chunk, 1 byte when C <= 256, else 2 (C <= 65536). Values travel as fp32 or
// fp16 (`bits` 32 / 16) or quantised to `bits` 8 or 4 with one fp32 scale per chunk:
// scale = max|selected| / L, L = 2^(bits-1) - 1, q = round(v / scale) in [-L, L]; a chunk with a
// non-finite or all-zero selection sends scale 0 (its values stay in the error). Padding slots
// may be selected (when a chunk has fewer than k non-zeros); they carry 0 and decode into the
// padding, which is dropped.
// Payload (uint8, fixed size for given layout, k and bits): [scales: fp32 x chunks, only for
// bits <= 8] [offsets: chunks x k, uint8 or uint16] [values: chunks x k, fp32 / fp16 / int8 /
// nibbles q + 8 two per byte, low nibble first, a last odd nibble padded with 0].
int64_t chunked_topk_k(int64_t chunk, double density);  // ceil(density * chunk) in [1, chunk]
int64_t chunked_topk_payload_bytes(const BlockLayout& layout, int64_t k, int bits);
struct ChunkedTopkEncoded {
  at::Tensor payload;  // uint8
  at::Tensor sent;     // flat fp32 [layout.numel]: what the receivers reconstruct of x
};
// `x` flat fp32 of layout.numel values; bits in {32, 16, 8, 4}; 1 <= k <= layout.block_size.
ChunkedTopkEncoded encode_chunked_topk(const at::Tensor& x, const BlockLayout& layout, int64_t k,
                                       int bits);
// Adds one payload's values into `padded` (fp32 [layout.blocks * layout.block_size], the chunks'
// padded layout); take x's values back with padded.index_select(0, layout.padded_pos). Throws
// (c10::Error) on a payload of the wrong size or type, or an offset outside its chunk.
void decode_chunked_topk_add(const at::Tensor& payload, const BlockLayout& layout, int64_t k,
                             int bits, at::Tensor& padded);

// topk's wire format: the k indices into the flat vector (int32), then the k values (fp32 or
// fp16), k * (4 + value size) bytes. No chunking (unlike DGC's): the indices are spread over the
// whole model, where 16-bit offsets per 64Ki chunk would save little.
int64_t flat_sparse_payload_bytes(int64_t k, at::ScalarType value_type);
// `indices` int64 [k], each in [0, 2^31); `values` already in `value_type`. Returns uint8 bytes.
at::Tensor encode_flat_sparse(const at::Tensor& indices, const at::Tensor& values);
// Adds one payload's values into `dense` (flat fp32) at its indices. Throws (c10::Error) when an
// index lies outside `dense` or the payload has the wrong size.
void decode_flat_sparse_add(const at::Tensor& bytes, int64_t k, at::ScalarType value_type,
                            at::Tensor& dense);

}  // namespace tern
