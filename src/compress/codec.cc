#include "compress/codec.h"

#include <algorithm>
#include <cmath>

namespace tern {
namespace {

constexpr int64_t kChunk = 65536;      // indices are sent as (chunk, low 16 bits)
constexpr int64_t kLowOffset = 32768;  // low bits stored as int16 in [-32768, 32767]
constexpr int64_t kMinSample = 1024;
constexpr int64_t kMinSampleTop = 16;
constexpr double kHalfMax = 65504.0;

int64_t num_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

// A slice of a byte tensor reinterpreted as `type` (copied, so the view starts aligned).
at::Tensor bytes_as(const at::Tensor& bytes, int64_t offset, int64_t count, at::ScalarType type) {
  int64_t n = count * static_cast<int64_t>(c10::elementSize(type));
  return bytes.narrow(0, offset, n).clone().view(type);
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

}  // namespace tern
