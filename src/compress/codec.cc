#include "compress/codec.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace tern {
namespace {

constexpr int64_t kChunk = 65536;      // indices are sent as (chunk, low 16 bits)
constexpr int64_t kLowOffset = 32768;  // low bits stored as int16 in [-32768, 32767]
constexpr int64_t kMinSample = 1024;
constexpr int64_t kMinSampleTop = 16;
constexpr double kHalfMax = 65504.0;
constexpr int64_t kInt4Max = 7;     // levels -7..7, symmetric
constexpr int64_t kInt4Offset = 8;  // nibble = q + 8, in 1..15
constexpr int64_t kIndexBytes = 4;  // topk's int32 indices

int64_t num_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

// A slice of a byte tensor reinterpreted as `type` (copied, so the view starts aligned).
at::Tensor bytes_as(const at::Tensor& bytes, int64_t offset, int64_t count, at::ScalarType type) {
  int64_t n = count * static_cast<int64_t>(c10::elementSize(type));
  return bytes.narrow(0, offset, n).clone().view(type);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t total_of(const std::vector<int64_t>& numels) {
  return std::accumulate(numels.begin(), numels.end(), int64_t{0});
}

void check_int4_layout(const std::vector<int64_t>& numels, int64_t block_size) {
  TORCH_CHECK(block_size >= 1, "int4: block_size must be >= 1, got ", block_size);
  for (int64_t n : numels) TORCH_CHECK(n >= 0, "int4: negative tensor size ", n);
}

// Per row of `mat`: scale = max|row| / levels, 0 for a row that is all zeros or holds a
// non-finite value (it sends zeros; its values stay in the error), and q = round(row / scale)
// in [-levels, levels], 0 where the scale is 0. int4's blocks and chunked top-k's chunks.
struct RowQuantised {
  at::Tensor scale;  // [rows]
  at::Tensor q;      // mat's shape, whole numbers as floats
};
RowQuantised quantise_rows(const at::Tensor& mat, double levels) {
  at::Tensor scale = mat.abs().amax({1}).div_(levels);
  at::Tensor ok = at::isfinite(scale).logical_and_(scale > 0);
  scale = at::where(ok, scale, at::zeros_like(scale));
  at::Tensor q = mat.div(at::where(ok, scale, at::ones_like(scale)).unsqueeze(1))
                     .round_()
                     .clamp_(-levels, levels);
  return {scale, at::where(ok.unsqueeze(1), q, at::zeros_like(q))};
}

// 4-bit levels q in [-7, 7] (flat) as nibbles q + 8, two per byte, element 2j in the low nibble
// of byte j; an odd count leaves the last high nibble 0.
at::Tensor pack_nibbles(const at::Tensor& q) {
  at::Tensor nib = q.add(static_cast<double>(kInt4Offset)).to(at::kByte);
  if (nib.numel() % 2 != 0) nib = at::cat({nib, at::zeros({1}, nib.options())});
  at::Tensor pairs = nib.view({-1, 2});
  return (pairs.select(1, 0) + pairs.select(1, 1) * 16).contiguous();  // <= 15 + 240: no overflow
}

// The first n levels of `packed` back, as floats.
at::Tensor unpack_nibbles(const at::Tensor& packed, int64_t n) {
  at::Tensor nib = at::stack({packed.bitwise_and(15), packed.__rshift__(4)}, 1).view({-1});
  return nib.narrow(0, 0, n).to(at::kFloat).sub_(kInt4Offset);
}

}  // namespace

TopKSelection exact_top_k(const at::Tensor& x, int64_t k) {
  TopKSelection s;
  k = std::max<int64_t>(1, std::min<int64_t>(k, x.numel()));
  at::Tensor idx = std::get<1>(at::topk(x.abs(), k, 0, /*largest=*/true, /*sorted=*/false));
  s.indices = std::get<0>(at::sort(idx));
  s.values = x.index_select(0, s.indices);
  s.exact = true;
  return s;
}

TopKSelection sampled_top_k(const at::Tensor& x, int64_t k, double sample_ratio,
                            at::Generator& gen) {
  int64_t numel = x.numel();
  k = std::max<int64_t>(1, std::min<int64_t>(k, numel));
  // At least kMinSampleTop sampled entries above the threshold, else the estimate of a small
  // k is too noisy to land within 2x (a sample max is off by more than that half the time).
  int64_t samples = std::max({static_cast<int64_t>(std::ceil(sample_ratio * numel)),
                              std::min(numel, kMinSample), kMinSampleTop * numel / k});
  if (samples >= numel || 2 * k >= numel) return exact_top_k(x, k);

  at::Tensor magnitude = x.abs();
  at::Tensor pick =
      at::randint(numel, {samples}, gen, at::TensorOptions().dtype(at::kLong)).to(x.device());
  at::Tensor sample = magnitude.index_select(0, pick);
  int64_t sample_k = std::max<int64_t>(1, std::llround(static_cast<double>(samples) * k / numel));
  at::Tensor threshold = std::get<0>(at::topk(sample, sample_k, 0, true, false)).min();
  at::Tensor candidates = at::nonzero(magnitude >= threshold).view({-1});
  int64_t count = candidates.numel();
  if (count == 0 || 2 * count < k || count > 2 * k) return exact_top_k(x, k);

  TopKSelection s;
  s.exact = false;
  s.above_threshold = count;
  if (count >= k) {
    // Every entry of the true top k is >= threshold, so the top k of the candidates is exact.
    at::Tensor local =
        std::get<1>(at::topk(magnitude.index_select(0, candidates), k, 0, true, false));
    s.indices = std::get<0>(at::sort(candidates.index_select(0, local)));
    s.values = x.index_select(0, s.indices);
    return s;
  }
  // Fewer than k: send them all and pad with zeros at the smallest index (keeps the order).
  int64_t pad = k - count;
  s.indices = at::cat({candidates.narrow(0, 0, 1).expand({pad}), candidates});
  s.values = at::cat({at::zeros({pad}, x.options()), x.index_select(0, candidates)});
  return s;
}

int64_t sparse_payload_bytes(int64_t numel, int64_t k, at::ScalarType value_type) {
  return num_chunks(numel) * 4 + k * (static_cast<int64_t>(c10::elementSize(value_type)) + 2);
}

at::Tensor encode_sparse(const at::Tensor& indices, const at::Tensor& values, int64_t numel) {
  at::Tensor chunk = indices.div(kChunk, "floor");
  at::Tensor counts = at::bincount(chunk, {}, num_chunks(numel)).to(at::kInt).contiguous();
  at::Tensor low = (indices - chunk * kChunk - kLowOffset).to(at::kShort).contiguous();
  return at::cat(
      {counts.view(at::kByte), values.contiguous().view(at::kByte), low.view(at::kByte)});
}

void decode_sparse_add(const at::Tensor& bytes, int64_t numel, int64_t k, at::ScalarType value_type,
                       at::Tensor& dense) {
  int64_t chunks = num_chunks(numel);
  int64_t value_bytes = k * static_cast<int64_t>(c10::elementSize(value_type));
  at::Tensor counts = bytes_as(bytes, 0, chunks, at::kInt).to(at::kLong);
  at::Tensor values = bytes_as(bytes, chunks * 4, k, value_type);
  at::Tensor low =
      bytes_as(bytes, chunks * 4 + value_bytes, k, at::kShort).to(at::kLong) + kLowOffset;
  at::Tensor chunk = at::repeat_interleave(counts);
  TORCH_CHECK(chunk.numel() == k, "sparse payload: chunk counts sum to ", chunk.numel(),
              ", expected ", k);
  at::Tensor idx = chunk * kChunk + low;
  dense.index_add_(0, idx, values.to(dense.scalar_type()));
}

at::Tensor to_wire_values(const at::Tensor& values, at::ScalarType value_type, at::Tensor* sent) {
  if (value_type == values.scalar_type()) {
    *sent = values;
    return values;
  }
  at::Tensor wire = values.clamp(-kHalfMax, kHalfMax).to(value_type);
  *sent = wire.to(values.scalar_type());
  return wire;
}

at::Tensor encode_fp16(const at::Tensor& x, int world) {
  double limit = kHalfMax / world;
  return x.div(static_cast<double>(world)).clamp(-limit, limit).to(at::kHalf);
}

at::Tensor decode_fp16(const at::Tensor& h, int world) {
  return h.to(at::kFloat).mul(static_cast<double>(world));
}

Int8Encoded encode_int8(const at::Tensor& x) {
  Int8Encoded e;
  float max_abs = x.numel() ? x.abs().max().item<float>() : 0.f;
  e.scale = max_abs > 0 && std::isfinite(max_abs) ? max_abs / 127.f : 0.f;
  if (e.scale == 0.f) {
    e.q = at::zeros(x.sizes(), x.options().dtype(at::kChar));
    return e;
  }
  e.q = x.div(e.scale).round().clamp(-127, 127).to(at::kChar);
  return e;
}

at::Tensor decode_int8(const at::Tensor& q, float scale) { return q.to(at::kFloat).mul(scale); }

int64_t int4_blocks(const std::vector<int64_t>& numels, int64_t block_size) {
  check_int4_layout(numels, block_size);
  int64_t blocks = 0;
  for (int64_t n : numels) blocks += ceil_div(n, block_size);
  return blocks;
}

int64_t int4_payload_bytes(const std::vector<int64_t>& numels, int64_t block_size) {
  return int4_blocks(numels, block_size) * 4 + ceil_div(total_of(numels), 2);
}

BlockLayout make_block_layout(const std::vector<int64_t>& numels, int64_t block_size,
                              const at::Device& device) {
  BlockLayout l;
  l.numels = numels;
  l.block_size = block_size;
  l.blocks = int4_blocks(numels, block_size);
  l.numel = total_of(numels);
  l.payload_bytes = int4_payload_bytes(numels, block_size);
  l.device = device;
  std::vector<at::Tensor> block_of, pos;
  int64_t block = 0, padded_off = 0;
  at::TensorOptions longs = at::TensorOptions().dtype(at::kLong).device(device);
  for (int64_t m : numels) {
    if (m == 0) continue;
    at::Tensor j = at::arange(m, longs);
    block_of.push_back(j.div(block_size, "floor").add_(block));
    pos.push_back(j.add(padded_off));
    int64_t nb = ceil_div(m, block_size);
    l.padded = l.padded || nb * block_size != m;
    block += nb;
    padded_off += nb * block_size;
  }
  l.block_of = block_of.empty() ? at::empty({0}, longs) : at::cat(block_of);
  l.padded_pos = pos.empty() ? at::empty({0}, longs) : at::cat(pos);
  return l;
}

at::Tensor encode_int4(const at::Tensor& x, const BlockLayout& l) {
  const int64_t n = l.numel;
  TORCH_CHECK(x.dim() == 1 && x.numel() == n, "int4: expected a flat vector of ", n,
              " values, got shape ", x.sizes());
  at::TensorOptions bytes = x.options().dtype(at::kByte);
  if (n == 0) return at::empty({0}, bytes);
  at::Tensor xf = x.to(at::kFloat).contiguous();
  // A [blocks, block_size] matrix: each tensor zero-padded to whole blocks (zeros change no
  // block's max).
  at::Tensor mat = l.padded ? at::zeros({l.blocks * l.block_size}, xf.options())
                                  .index_copy_(0, l.padded_pos.to(xf.device()), xf)
                            : xf;
  mat = mat.view({l.blocks, l.block_size});
  RowQuantised rq = quantise_rows(mat, static_cast<double>(kInt4Max));
  at::Tensor q = rq.q.view({-1});
  if (l.padded) q = q.index_select(0, l.padded_pos.to(q.device()));
  return at::cat({rq.scale.contiguous().view(at::kByte), pack_nibbles(q)});
}

at::Tensor decode_int4(const at::Tensor& payload, const BlockLayout& l) {
  const int64_t n = l.numel;
  TORCH_CHECK(payload.dim() == 1 && payload.scalar_type() == at::kByte &&
                  payload.numel() == l.payload_bytes,
              "int4 payload has ", payload.numel(), " bytes of ", payload.scalar_type(),
              ", expected ", l.payload_bytes, " of Byte");
  if (n == 0) return at::empty({0}, payload.options().dtype(at::kFloat));
  at::Tensor scales = bytes_as(payload, 0, l.blocks, at::kFloat);
  at::Tensor per_value_scale = scales.index_select(0, l.block_of.to(scales.device()));
  return unpack_nibbles(payload.narrow(0, l.blocks * 4, ceil_div(n, 2)), n).mul_(per_value_scale);
}

at::Tensor encode_int4(const at::Tensor& x, const std::vector<int64_t>& numels,
                       int64_t block_size) {
  return encode_int4(x, make_block_layout(numels, block_size, x.device()));
}

at::Tensor decode_int4(const at::Tensor& payload, const std::vector<int64_t>& numels,
                       int64_t block_size) {
  return decode_int4(payload, make_block_layout(numels, block_size, payload.device()));
}

namespace {

int chunk_index_bytes(int64_t chunk) { return chunk <= 256 ? 1 : 2; }
bool chunk_scaled(int bits) { return bits <= 8; }

int64_t chunk_value_bytes(int64_t count, int bits) {
  switch (bits) {
    case 32:
      return 4 * count;
    case 16:
      return 2 * count;
    case 8:
      return count;
    default:
      return ceil_div(count, 2);
  }
}

void check_chunked_topk(const BlockLayout& l, int64_t k, int bits) {
  TORCH_CHECK(bits == 32 || bits == 16 || bits == 8 || bits == 4,
              "chunked top-k: bits must be 32, 16, 8 or 4, got ", bits);
  TORCH_CHECK(l.block_size >= 2 && l.block_size <= 65536,
              "chunked top-k: chunk size must be in [2, 65536], got ", l.block_size);
  TORCH_CHECK(k >= 1 && k <= l.block_size, "chunked top-k: k must be in [1, ", l.block_size,
              "], got ", k);
}

// Signed levels -L..L of a `bits`-bit value (8: int8 as is; 4: nibbles q + 8).
int64_t chunk_levels(int bits) { return (int64_t{1} << (bits - 1)) - 1; }

}  // namespace

int64_t chunked_topk_k(int64_t chunk, double density) {
  if (chunk <= 0) return 0;
  double k = std::ceil(density * static_cast<double>(chunk));
  return std::clamp<int64_t>(static_cast<int64_t>(std::min(k, static_cast<double>(chunk))), 1,
                             chunk);
}

int64_t chunked_topk_payload_bytes(const BlockLayout& l, int64_t k, int bits) {
  check_chunked_topk(l, k, bits);
  const int64_t m = l.blocks * k;
  return (chunk_scaled(bits) ? 4 * l.blocks : 0) + m * chunk_index_bytes(l.block_size) +
         chunk_value_bytes(m, bits);
}

ChunkedTopkEncoded encode_chunked_topk(const at::Tensor& x, const BlockLayout& l, int64_t k,
                                       int bits) {
  check_chunked_topk(l, k, bits);
  TORCH_CHECK(x.dim() == 1 && x.numel() == l.numel, "chunked top-k: expected a flat vector of ",
              l.numel, " values, got shape ", x.sizes());
  ChunkedTopkEncoded out;
  at::Tensor xf = x.to(at::kFloat).contiguous();
  if (l.blocks == 0) {
    out.payload = at::empty({0}, x.options().dtype(at::kByte));
    out.sent = at::zeros_like(xf);
    return out;
  }
  const int64_t chunk = l.block_size;
  at::Tensor pos = l.padded_pos.to(xf.device());
  at::Tensor mat =
      l.padded ? at::zeros({l.blocks * chunk}, xf.options()).index_copy_(0, pos, xf) : xf;
  mat = mat.view({l.blocks, chunk});
  at::Tensor off = std::get<1>(at::topk(mat.abs(), k, 1, /*largest=*/true, /*sorted=*/false));
  at::Tensor vals = mat.gather(1, off);
  std::vector<at::Tensor> parts;
  at::Tensor sent, value_bytes;
  if (bits == 32) {
    sent = vals;
    value_bytes = vals.contiguous().view({-1}).view(at::kByte);
  } else if (bits == 16) {
    at::Tensor wire = to_wire_values(vals.reshape({-1}), at::kHalf, &sent);
    sent = sent.view({l.blocks, k});
    value_bytes = wire.contiguous().view(at::kByte);
  } else {
    RowQuantised rq = quantise_rows(vals, static_cast<double>(chunk_levels(bits)));
    sent = rq.q.mul(rq.scale.unsqueeze(1));
    parts.push_back(rq.scale.contiguous().view(at::kByte));
    value_bytes = bits == 8 ? rq.q.to(at::kChar).contiguous().view({-1}).view(at::kByte)
                            : pack_nibbles(rq.q.reshape({-1}));
  }
  if (chunk_index_bytes(chunk) == 1) {
    parts.push_back(off.to(at::kByte).contiguous().view({-1}));
  } else {  // offsets up to 65535 as int16 shifted by 32768 (torch has no uint16)
    parts.push_back(off.sub(kLowOffset).to(at::kShort).contiguous().view({-1}).view(at::kByte));
  }
  parts.push_back(value_bytes);
  out.payload = at::cat(parts);
  at::Tensor sent_padded = at::zeros({l.blocks, chunk}, xf.options()).scatter_(1, off, sent);
  out.sent = l.padded ? sent_padded.view({-1}).index_select(0, pos) : sent_padded.view({-1});
  return out;
}

void decode_chunked_topk_add(const at::Tensor& payload, const BlockLayout& l, int64_t k, int bits,
                             at::Tensor& padded) {
  const int64_t expected = chunked_topk_payload_bytes(l, k, bits);
  TORCH_CHECK(
      payload.dim() == 1 && payload.scalar_type() == at::kByte && payload.numel() == expected,
      "chunked top-k payload has ", payload.numel(), " bytes of ", payload.scalar_type(),
      ", expected ", expected, " of Byte");
  const int64_t chunk = l.block_size;
  TORCH_CHECK(
      padded.dim() == 1 && padded.numel() == l.blocks * chunk && padded.scalar_type() == at::kFloat,
      "chunked top-k: the accumulator must be fp32 [", l.blocks * chunk, "]");
  if (l.blocks == 0) return;
  const int64_t m = l.blocks * k;
  int64_t at_byte = 0;
  at::Tensor scales;
  if (chunk_scaled(bits)) {
    scales = bytes_as(payload, 0, l.blocks, at::kFloat);
    at_byte += 4 * l.blocks;
  }
  at::Tensor off;
  if (chunk_index_bytes(chunk) == 1) {
    off = payload.narrow(0, at_byte, m).to(at::kLong);
  } else {
    off = bytes_as(payload, at_byte, m, at::kShort).to(at::kLong).add_(kLowOffset);
  }
  at_byte += m * chunk_index_bytes(chunk);
  // Checked here, not by index_add_: on a GPU an out-of-range index is a device-side assert.
  int64_t lo = off.min().item<int64_t>(), hi = off.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < chunk, "chunked top-k payload: offset ", lo < 0 ? lo : hi,
              " outside its chunk of ", chunk);
  at::Tensor vals;
  if (bits == 32) {
    vals = bytes_as(payload, at_byte, m, at::kFloat);
  } else if (bits == 16) {
    vals = bytes_as(payload, at_byte, m, at::kHalf).to(at::kFloat);
  } else if (bits == 8) {
    vals = bytes_as(payload, at_byte, m, at::kChar).to(at::kFloat);
  } else {
    vals = unpack_nibbles(payload.narrow(0, at_byte, ceil_div(m, 2)), m);
  }
  vals = vals.view({l.blocks, k});
  if (scales.defined()) vals = vals.mul(scales.unsqueeze(1));
  at::Tensor rows = at::arange(l.blocks, off.options()).mul_(chunk).unsqueeze(1);
  padded.index_add_(0, off.view({l.blocks, k}).add(rows).view({-1}), vals.reshape({-1}));
}

int64_t flat_sparse_payload_bytes(int64_t k, at::ScalarType value_type) {
  return k * (kIndexBytes + static_cast<int64_t>(c10::elementSize(value_type)));
}

at::Tensor encode_flat_sparse(const at::Tensor& indices, const at::Tensor& values) {
  TORCH_CHECK(indices.dim() == 1 && values.dim() == 1 && indices.numel() == values.numel(),
              "sparse payload: ", indices.numel(), " indices but ", values.numel(), " values");
  if (indices.numel() > 0) {
    TORCH_CHECK(indices.min().item<int64_t>() >= 0 &&
                    indices.max().item<int64_t>() <= std::numeric_limits<int32_t>::max(),
                "sparse payload: indices must lie in [0, 2^31)");
  }
  at::Tensor idx = indices.to(at::kInt).contiguous();
  return at::cat({idx.view(at::kByte), values.contiguous().view(at::kByte)});
}

void decode_flat_sparse_add(const at::Tensor& bytes, int64_t k, at::ScalarType value_type,
                            at::Tensor& dense) {
  const int64_t expected = flat_sparse_payload_bytes(k, value_type);
  TORCH_CHECK(bytes.dim() == 1 && bytes.scalar_type() == at::kByte && bytes.numel() == expected,
              "sparse payload has ", bytes.numel(), " bytes of ", bytes.scalar_type(),
              ", expected ", expected, " of Byte");
  if (k == 0) return;
  at::Tensor idx = bytes_as(bytes, 0, k, at::kInt).to(at::kLong);
  at::Tensor values = bytes_as(bytes, k * kIndexBytes, k, value_type);
  // Checked here, not by index_add_: on a GPU an out-of-range index is a device-side assert.
  int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < dense.numel(), "sparse payload: index ", lo < 0 ? lo : hi,
              " outside [0, ", dense.numel(), ")");
  dense.index_add_(0, idx, values.to(dense.scalar_type()));
}

}  // namespace tern
