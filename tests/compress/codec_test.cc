// Local encoders: top-k selection and threshold estimation vs exact top-k, the sparse wire
// format, and decode(encode(x)) + error == x bit for bit for every lossy encoder.
#include "compress/codec.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

namespace tern {
namespace {

at::Generator gen_for(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

std::set<int64_t> as_set(const at::Tensor& idx) {
  std::set<int64_t> s;
  auto a = idx.accessor<int64_t, 1>();
  for (int64_t i = 0; i < idx.numel(); ++i) s.insert(a[i]);
  return s;
}

bool ascending(const at::Tensor& idx) {
  return idx.numel() < 2 || (idx.narrow(0, 1, idx.numel() - 1) >= idx.narrow(0, 0, idx.numel() - 1))
                                .all()
                                .item<bool>();
}

TEST(TopK, ExactMatchesSortOfMagnitudes) {
  auto g = gen_for(1);
  at::Tensor x = at::randn({5000}, g);
  TopKSelection s = exact_top_k(x, 50);
  ASSERT_EQ(s.indices.numel(), 50);
  EXPECT_TRUE(ascending(s.indices));
  at::Tensor ref = std::get<1>(at::sort(x.abs(), 0, /*descending=*/true)).narrow(0, 0, 50);
  EXPECT_EQ(as_set(s.indices), as_set(ref));
  EXPECT_TRUE(at::equal(s.values, x.index_select(0, s.indices)));
}

TEST(TopK, SampledThresholdAgreesWithExactTopK) {
  auto g = gen_for(2);
  int sampled = 0, padded = 0;
  for (int trial = 0; trial < 40; ++trial) {
    // Heavy-ish tails like accumulated gradients; sizes on both sides of the 64Ki chunk.
    int64_t n = trial % 2 ? 200000 : 30000;
    at::Tensor x = at::randn({n}, g) * at::rand({n}, g).pow(3);
    int64_t k = n / 1000;
    TopKSelection s = sampled_top_k(x, k, 0.01, g);
    TopKSelection e = exact_top_k(x, k);
    ASSERT_EQ(s.indices.numel(), k);
    EXPECT_TRUE(ascending(s.indices));
    if (s.exact) {
      EXPECT_EQ(as_set(s.indices), as_set(e.indices));
      continue;
    }
    ++sampled;
    // The estimate was within 2x of k, or the selection would have fallen back.
    EXPECT_GE(2 * s.above_threshold, k);
    EXPECT_LE(s.above_threshold, 2 * k);
    if (s.above_threshold >= k) {
      EXPECT_EQ(as_set(s.indices), as_set(e.indices)) << "trial " << trial;
      EXPECT_TRUE(at::equal(s.values, x.index_select(0, s.indices)));
    } else {
      ++padded;
      // Fewer than k above the threshold: all of them are in the exact top k; the rest is
      // zero-valued padding.
      at::Tensor real = s.values != 0;
      std::set<int64_t> exact = as_set(e.indices);
      for (int64_t i : as_set(s.indices.masked_select(real))) EXPECT_TRUE(exact.count(i)) << i;
      EXPECT_EQ(real.sum().item<int64_t>(), s.above_threshold);
    }
  }
  // The estimate is usually good enough that the exact fallback is the exception.
  EXPECT_GE(sampled, 30) << "sampled threshold fell back to exact top-k too often";
}

TEST(TopK, FallsBackToExactWhenTheEstimateIsFarOff) {
  // 10 non-zeros but k = 50: the sampled threshold is 0 and lets everything through.
  at::Tensor x = at::zeros({100000});
  x.index_put_({at::arange(0, 100000, 10000)}, at::arange(1, 11, at::kFloat));
  auto g = gen_for(3);
  TopKSelection s = sampled_top_k(x, 50, 0.01, g);
  EXPECT_TRUE(s.exact);
  EXPECT_EQ(as_set(s.indices), as_set(exact_top_k(x, 50).indices));
}

TEST(SparseWire, RoundTripsAcrossChunksBothValueTypes) {
  int64_t numel = 3 * 65536 + 17;
  at::Tensor idx =
      at::tensor({int64_t{0}, int64_t{1}, int64_t{32767}, int64_t{32768}, int64_t{65535},
                  int64_t{65536}, int64_t{65536}, int64_t{131071}, numel - 1});
  at::Tensor vals = at::tensor({1.f, -2.f, 3.5f, 4.f, -5.f, 6.f, 0.f, 7.25f, -8.f});
  for (at::ScalarType vt : {at::kFloat, at::kHalf}) {
    at::Tensor sent;
    at::Tensor wire = to_wire_values(vals, vt, &sent);
    at::Tensor bytes = encode_sparse(idx, wire, numel);
    ASSERT_EQ(bytes.numel(), sparse_payload_bytes(numel, idx.numel(), vt));
    ASSERT_EQ(bytes.scalar_type(), at::kByte);
    at::Tensor dense = at::zeros({numel});
    decode_sparse_add(bytes, numel, idx.numel(), vt, dense);
    at::Tensor expect = at::zeros({numel});
    expect.index_add_(0, idx, sent);
    EXPECT_TRUE(at::equal(dense, expect));
  }
}

TEST(ErrorFeedback, SparseSelectionPlusResidualIsExact) {
  auto g = gen_for(4);
  at::Tensor v = at::randn({70000}, g) * 1e3;
  for (at::ScalarType vt : {at::kFloat, at::kHalf}) {
    TopKSelection s = sampled_top_k(v, 70, 0.01, g);
    at::Tensor sent;
    at::Tensor wire = to_wire_values(s.values, vt, &sent);
    at::Tensor residual = v.clone();
    residual.index_add_(0, s.indices, sent.neg());
    at::Tensor decoded = at::zeros_like(v);
    decode_sparse_add(encode_sparse(s.indices, wire, v.numel()), v.numel(), 70, vt, decoded);
    EXPECT_TRUE(at::equal(decoded + residual, v));
    if (vt == at::kFloat) {
      EXPECT_EQ((residual.index_select(0, s.indices) != 0).sum().item<int64_t>(), 0);
    }
  }
}

TEST(ErrorFeedback, Fp16PlusErrorIsExact) {
  auto g = gen_for(5);
  // Normal, tiny (fp16 subnormal / underflow) and large magnitudes.
  at::Tensor x =
      at::cat({at::randn({1000}, g), at::randn({1000}, g) * 1e-7, at::randn({1000}, g) * 1e4});
  for (int world : {1, 3, 4}) {
    at::Tensor h = encode_fp16(x, world);
    EXPECT_EQ(h.scalar_type(), at::kHalf);
    at::Tensor y = decode_fp16(h, world);
    at::Tensor e = x - y;
    EXPECT_TRUE(at::equal(y + e, x)) << "world " << world;
    EXPECT_TRUE(at::isfinite(h.to(at::kFloat)).all().item<bool>());
  }
}

TEST(ErrorFeedback, Int8PlusErrorIsExact) {
  auto g = gen_for(6);
  for (double magnitude : {1e-6, 1.0, 1e5}) {
    at::Tensor x = at::randn({4096}, g) * magnitude;
    Int8Encoded q = encode_int8(x);
    EXPECT_EQ(q.q.scalar_type(), at::kChar);
    EXPECT_LE(q.q.abs().max().item<int>(), 127);
    at::Tensor y = decode_int8(q.q, q.scale);
    at::Tensor e = x - y;
    EXPECT_TRUE(at::equal(y + e, x));
    EXPECT_LE(e.abs().max().item<float>(), q.scale * 0.5001f);
  }
  Int8Encoded zero = encode_int8(at::zeros({10}));
  EXPECT_EQ(zero.scale, 0.f);
  EXPECT_TRUE(at::equal(decode_int8(zero.q, zero.scale), at::zeros({10})));
}

}  // namespace
}  // namespace tern
