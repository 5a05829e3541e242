// Local encoders: top-k selection and threshold estimation vs exact top-k, the sparse wire
// formats (DGC's chunked one, topk's flat one), int4 against a by-hand block quantiser and its
// documented byte layout, and decode(encode(x)) + error == x bit for bit for every lossy
// encoder.
#include "compress/codec.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <limits>
#include <numeric>
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

// int4 by hand: every tensor cut into blocks of `block` values (the last one shorter), each
// block's scale max|x| / 7. Returns the scale of every value.
at::Tensor int4_scales_by_hand(const at::Tensor& x, const std::vector<int64_t>& numels,
                               int64_t block, std::vector<float>* block_scales) {
  at::Tensor per_value = at::empty_like(x);
  auto xa = x.accessor<float, 1>();
  auto pa = per_value.accessor<float, 1>();
  int64_t off = 0;
  for (int64_t n : numels) {
    for (int64_t b = 0; b < n; b += block) {
      int64_t len = std::min(block, n - b);
      float m = 0;
      for (int64_t j = 0; j < len; ++j) m = std::max(m, std::abs(xa[off + b + j]));
      float scale = m / 7.f;
      block_scales->push_back(scale);
      for (int64_t j = 0; j < len; ++j) pa[off + b + j] = scale;
    }
    off += n;
  }
  return per_value;
}

TEST(Int4, RoundTripWithinHalfAScaleForEveryLayout) {
  auto g = gen_for(7);
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> layouts = {
      {{4096}, 64},          // whole blocks
      {{100}, 64},           // one full block and a short one
      {{7, 0, 130, 1}, 64},  // an empty tensor, odd total, a one-value tensor
      {{3, 5, 9}, 2},        // the smallest block size
      {{1000, 37}, 256},     // blocks longer than a tensor
  };
  for (const auto& [numels, block] : layouts) {
    int64_t n = std::accumulate(numels.begin(), numels.end(), int64_t{0});
    for (double magnitude : {1e-9, 1.0, 1e6}) {
      const std::string what = "numels[0] " + std::to_string(numels[0]) + " block " +
                               std::to_string(block) + " magnitude " + std::to_string(magnitude);
      at::Tensor x = at::randn({n}, g) * magnitude;
      std::vector<float> scales;
      at::Tensor scale = int4_scales_by_hand(x, numels, block, &scales);
      at::Tensor payload = encode_int4(x, numels, block);
      ASSERT_EQ(payload.scalar_type(), at::kByte);
      // The documented size: one fp32 scale per block, two values per byte.
      ASSERT_EQ(payload.numel(), static_cast<int64_t>(scales.size()) * 4 + (n + 1) / 2) << what;
      EXPECT_EQ(int4_payload_bytes(numels, block), payload.numel()) << what;
      EXPECT_EQ(int4_blocks(numels, block), static_cast<int64_t>(scales.size())) << what;
      // The scales travel first, bit for bit.
      std::vector<float> sent(scales.size());
      std::memcpy(sent.data(), payload.data_ptr<uint8_t>(), sent.size() * 4);
      EXPECT_EQ(sent, scales) << what;
      at::Tensor y = decode_int4(payload, numels, block);
      ASSERT_EQ(y.sizes(), x.sizes());
      // |x − q(x)| <= scale / 2 per value (plus fp32 rounding of x / scale and q · scale).
      at::Tensor slack = scale * (0.5 * (1 + 1e-6));
      EXPECT_TRUE(((x - y).abs() <= slack).all().item<bool>())
          << what << ": worst excess " << ((x - y).abs() - slack).max().item<double>();
      // Every value is one of the 15 levels of its block.
      at::Tensor q = y / scale;
      EXPECT_TRUE(at::allclose(q, q.round(), 0, 1e-4)) << what;
      EXPECT_LE(q.abs().max().item<double>(), 7 + 1e-4) << what;
      // decode + error == x bit for bit.
      at::Tensor e = x - y;
      EXPECT_TRUE(at::equal(y + e, x)) << what;
    }
  }
}

TEST(Int4, ByteLayoutIsTheDocumentedOne) {
  // One block with max 7: scale 1, q = x; nibbles q + 8, element 2j low, 2j + 1 high.
  at::Tensor x = at::tensor({7.f, -7.f, 0.f, 1.f, -1.f});
  at::Tensor p = encode_int4(x, {5}, 64);
  ASSERT_EQ(p.numel(), 4 + 3);
  float scale;
  std::memcpy(&scale, p.data_ptr<uint8_t>(), 4);
  EXPECT_EQ(scale, 1.f);
  auto b = p.accessor<uint8_t, 1>();
  EXPECT_EQ(b[4], (7 + 8) + 16 * (-7 + 8));
  EXPECT_EQ(b[5], (0 + 8) + 16 * (1 + 8));
  EXPECT_EQ(b[6], (-1 + 8));  // odd count: the last high nibble is 0
  EXPECT_TRUE(at::equal(decode_int4(p, {5}, 64), x));
}

TEST(Int4, BlocksNeverSpanTwoTensors) {
  // A large tensor followed by a small one, with a block size that would put both in one block:
  // the small tensor still gets its own scale.
  at::Tensor big = at::full({3}, 1000.f), small = at::tensor({0.01f, -0.02f, 0.03f, 0.004f, 0.f});
  at::Tensor x = at::cat({big, small});
  at::Tensor y = decode_int4(encode_int4(x, {3, 5}, 64), {3, 5}, 64);
  at::Tensor err = (y.narrow(0, 3, 5) - small).abs();
  EXPECT_LE(err.max().item<float>(), 0.03f / 7 / 2 * 1.0001f);
  EXPECT_GT(y.narrow(0, 3, 5).abs().sum().item<float>(), 0.f);
}

TEST(Int4, ZeroAndNonFiniteBlocksSendZeros) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Blocks of 4: [zeros] [inf] [nan] [finite].
  at::Tensor x = at::tensor(
      {0.f, 0.f, 0.f, 0.f, 1.f, inf, 2.f, 3.f, nan, 1.f, 1.f, 1.f, 4.f, -2.f, 1.f, 0.5f});
  at::Tensor y = decode_int4(encode_int4(x, {16}, 4), {16}, 4);
  EXPECT_TRUE(at::isfinite(y).all().item<bool>());
  EXPECT_TRUE(at::equal(y.narrow(0, 0, 12), at::zeros({12})));
  EXPECT_LE((y.narrow(0, 12, 4) - x.narrow(0, 12, 4)).abs().max().item<float>(),
            4.f / 7 / 2 * 1.0001f);
}

TEST(Int4, PayloadOfTheWrongSizeOrTypeThrows) {
  at::Tensor p = encode_int4(at::randn({10}), {10}, 4);
  EXPECT_THROW(decode_int4(p.narrow(0, 0, p.numel() - 1), {10}, 4), c10::Error);
  EXPECT_THROW(decode_int4(p, {12}, 4), c10::Error);
  EXPECT_THROW(decode_int4(p.to(at::kInt), {10}, 4), c10::Error);
  EXPECT_THROW(encode_int4(at::randn({10}), {9}, 4), c10::Error);
  EXPECT_EQ(encode_int4(at::zeros({0}), {0, 0}, 4).numel(), 0);
  EXPECT_EQ(decode_int4(at::zeros({0}, at::kByte), {0}, 4).numel(), 0);
}

// Chunked top-k by hand: per tensor, chunks of `chunk` values (the last one shorter); the k
// largest |x| of each chunk (all of it when shorter than k) are selected. Returns a 0/1 mask.
at::Tensor chunk_top_k_mask_by_hand(const at::Tensor& x, const std::vector<int64_t>& numels,
                                    int64_t chunk, int64_t k) {
  at::Tensor mask = at::zeros_like(x);
  int64_t off = 0;
  for (int64_t n : numels) {
    for (int64_t b = 0; b < n; b += chunk) {
      int64_t len = std::min(chunk, n - b);
      at::Tensor part = x.narrow(0, off + b, len).abs();
      at::Tensor top = std::get<1>(part.topk(std::min(k, len)));
      mask.narrow(0, off + b, len).index_fill_(0, top, 1.f);
    }
    off += n;
  }
  return mask;
}

TEST(ChunkedTopk, EachChunkSendsItsLargestValuesWithinHalfAScale) {
  auto g = gen_for(11);
  struct Case {
    std::vector<int64_t> numels;
    int64_t chunk, k;
  };
  const std::vector<Case> cases = {
      {{4096}, 256, 16},             // whole chunks, 1-byte offsets
      {{1000, 10, 0, 37}, 256, 32},  // short last chunks, a tensor shorter than k, an empty one
      {{70000}, 1000, 50},           // 2-byte offsets
      {{5, 3}, 2, 1},                // the smallest chunk
      {{300}, 65536, 7},             // one chunk longer than the tensor
  };
  for (const Case& c : cases) {
    const int64_t n = std::accumulate(c.numels.begin(), c.numels.end(), int64_t{0});
    BlockLayout layout = make_block_layout(c.numels, c.chunk, at::kCPU);
    for (int bits : {32, 16, 8, 4}) {
      const std::string what = "numels[0] " + std::to_string(c.numels[0]) + " chunk " +
                               std::to_string(c.chunk) + " k " + std::to_string(c.k) + " bits " +
                               std::to_string(bits);
      at::Tensor x = at::randn({n}, g) * 3;
      ChunkedTopkEncoded enc = encode_chunked_topk(x, layout, c.k, bits);
      // The documented size: scales (quantised only), offsets, values.
      const int64_t m = layout.blocks * c.k;
      const int64_t expect_bytes = (bits <= 8 ? 4 * layout.blocks : 0) +
                                   m * (c.chunk <= 256 ? 1 : 2) +
                                   (bits == 32   ? 4 * m
                                    : bits == 16 ? 2 * m
                                    : bits == 8  ? m
                                                 : (m + 1) / 2);
      ASSERT_EQ(enc.payload.numel(), expect_bytes) << what;
      EXPECT_EQ(chunked_topk_payload_bytes(layout, c.k, bits), expect_bytes) << what;
      // What is sent sits on each chunk's top k only, and decoding gives exactly `sent`.
      at::Tensor mask = chunk_top_k_mask_by_hand(x, c.numels, c.chunk, c.k);
      EXPECT_TRUE((enc.sent.ne(0).to(at::kFloat) <= mask).all().item<bool>()) << what;
      at::Tensor padded = at::zeros({layout.blocks * layout.block_size});
      decode_chunked_topk_add(enc.payload, layout, c.k, bits, padded);
      at::Tensor decoded = padded.index_select(0, layout.padded_pos);
      EXPECT_TRUE(at::equal(decoded, enc.sent)) << what;
      // Selected values within half a level (fp32: exact), never more than max|x| of the chunk.
      at::Tensor err = (x - enc.sent) * mask;
      const double tol = bits == 32   ? 0.0
                         : bits == 16 ? 3 * 2e-3
                                      : 3 * 4.5 / ((1 << (bits - 1)) - 1) / 2 + 1e-5;
      EXPECT_LE(err.abs().max().item<double>(), tol) << what;
      // residual + sent == x bit for bit (what error feedback keeps).
      at::Tensor residual = x - enc.sent;
      EXPECT_TRUE(at::equal(residual + enc.sent, x)) << what;
    }
  }
}

TEST(ChunkedTopk, ChunksNeverSpanTwoTensors) {
  // A large tensor and then a small one in one 256-chunk's reach: the small tensor still gets its
  // own chunk, its own top k and (4 bits) its own scale.
  at::Tensor big = at::full({100}, 1000.f), small = at::tensor({0.01f, -0.02f, 0.03f, 0.004f});
  at::Tensor x = at::cat({big, small});
  BlockLayout layout = make_block_layout({100, 4}, 256, at::kCPU);
  ChunkedTopkEncoded enc = encode_chunked_topk(x, layout, 2, 4);
  at::Tensor s = enc.sent.narrow(0, 100, 4);
  EXPECT_NEAR(s[2].item<float>(), 0.03f, 0.03f / 7 / 2 * 1.0001f);
  EXPECT_NEAR(s[1].item<float>(), -0.02f, 0.03f / 7 / 2 * 1.0001f);
  EXPECT_EQ(s[0].item<float>(), 0.f);
  EXPECT_EQ(s[3].item<float>(), 0.f);
}

TEST(ChunkedTopk, NonFiniteChunksSendZerosWhenQuantised) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  at::Tensor x = at::tensor({1.f, nan, 2.f, 3.f, 4.f, -5.f, 0.f, 0.f});
  BlockLayout layout = make_block_layout({8}, 4, at::kCPU);
  ChunkedTopkEncoded enc = encode_chunked_topk(x, layout, 2, 4);
  EXPECT_TRUE(at::equal(enc.sent.narrow(0, 0, 4), at::zeros({4})));
  EXPECT_NEAR(enc.sent[5].item<float>(), -5.f, 1e-5);
  EXPECT_NEAR(enc.sent[4].item<float>(), 4.f, 5.f / 7 / 2 * 1.0001f);
}

TEST(ChunkedTopk, BadPayloadsThrowInsteadOfWritingOutside) {
  BlockLayout layout = make_block_layout({300}, 100, at::kCPU);  // 1-byte offsets, chunks of 100
  ChunkedTopkEncoded enc = encode_chunked_topk(at::randn({300}), layout, 3, 4);
  at::Tensor padded = at::zeros({300});
  at::Tensor bad = enc.payload.clone();
  bad.data_ptr<uint8_t>()[3 * 4] = 200;  // the first offset, past its chunk of 100
  EXPECT_THROW(decode_chunked_topk_add(bad, layout, 3, 4, padded), c10::Error);
  EXPECT_TRUE(at::equal(padded, at::zeros({300})));
  EXPECT_THROW(decode_chunked_topk_add(enc.payload.narrow(0, 0, 5), layout, 3, 4, padded),
               c10::Error);
  EXPECT_THROW(decode_chunked_topk_add(enc.payload, layout, 4, 4, padded), c10::Error);  // other k
  at::Tensor small = at::zeros({10});
  EXPECT_THROW(decode_chunked_topk_add(enc.payload, layout, 3, 4, small), c10::Error);
  EXPECT_THROW(encode_chunked_topk(at::randn({300}), layout, 3, 2), c10::Error);    // bits
  EXPECT_THROW(encode_chunked_topk(at::randn({300}), layout, 101, 4), c10::Error);  // k > chunk
  EXPECT_THROW(encode_chunked_topk(at::randn({299}), layout, 3, 4), c10::Error);    // size
}

TEST(ChunkedTopk, KPerChunkFollowsTheDensity) {
  EXPECT_EQ(chunked_topk_k(256, 1.0 / 16), 16);
  EXPECT_EQ(chunked_topk_k(256, 0.001), 1);
  EXPECT_EQ(chunked_topk_k(100, 0.125), 13);
  EXPECT_EQ(chunked_topk_k(4, 1.0), 4);
}

TEST(FlatSparseWire, RoundTripsBothValueTypes) {
  auto g = gen_for(8);
  const int64_t numel = 200000, k = 1234;
  at::Tensor x = at::randn({numel}, g) * 100;
  TopKSelection s = exact_top_k(x, k);
  for (at::ScalarType vt : {at::kFloat, at::kHalf}) {
    at::Tensor sent;
    at::Tensor wire = to_wire_values(s.values, vt, &sent);
    at::Tensor bytes = encode_flat_sparse(s.indices, wire);
    ASSERT_EQ(bytes.numel(), flat_sparse_payload_bytes(k, vt));
    EXPECT_EQ(bytes.numel(), k * (4 + static_cast<int64_t>(c10::elementSize(vt))));
    at::Tensor dense = at::zeros({numel});
    decode_flat_sparse_add(bytes, k, vt, dense);
    at::Tensor expect = at::zeros({numel});
    expect.index_add_(0, s.indices, sent);
    EXPECT_TRUE(at::equal(dense, expect));
    // decode + residual == x bit for bit.
    at::Tensor residual = x.index_add(0, s.indices, sent.neg());
    EXPECT_TRUE(at::equal(dense + residual, x));
  }
}

TEST(FlatSparseWire, BadPayloadsThrowInsteadOfWritingOutside) {
  at::Tensor dense = at::zeros({10});
  for (int64_t bad : {int64_t{10}, int64_t{-1}}) {
    at::Tensor idx = at::tensor({int64_t{2}, bad});
    at::Tensor bytes = encode_flat_sparse(idx.clamp_min(0), at::ones({2}));
    int32_t raw = static_cast<int32_t>(bad);
    std::memcpy(bytes.data_ptr<uint8_t>() + 4, &raw, 4);  // the second index
    EXPECT_THROW(decode_flat_sparse_add(bytes, 2, at::kFloat, dense), c10::Error) << bad;
  }
  EXPECT_TRUE(at::equal(dense, at::zeros({10})));
  at::Tensor ok = encode_flat_sparse(at::tensor({int64_t{1}}), at::ones({1}));
  EXPECT_THROW(decode_flat_sparse_add(ok, 2, at::kFloat, dense), c10::Error);  // size
  EXPECT_THROW(decode_flat_sparse_add(ok, 1, at::kHalf, dense), c10::Error);
  EXPECT_THROW(encode_flat_sparse(at::tensor({int64_t{1} << 31}), at::ones({1})), c10::Error);
  EXPECT_THROW(encode_flat_sparse(at::tensor({int64_t{1}}), at::ones({2})), c10::Error);
}

}  // namespace
}  // namespace tern
