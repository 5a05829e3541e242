// GradiVeQ (compress/gradiveq.h): the linear codec (reconstruction of slices in the basis'
// span, linearity, a deterministic orthonormal basis), and the compressor over real Gloo groups
// (ranks as threads): a stream of gradients in a low-dimensional subspace that changes is
// reconstructed exactly before and after the basis refresh, bit-identical on every rank;
// error feedback in gradient space (nothing lost over steps, memory orthogonal to the basis);
// state round trip across a refresh.
#include "compress/gradiveq.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <mutex>
#include <tuple>

#include "comm/reducer.h"
#include "testing/gloo_group.h"

namespace tern {
namespace {

at::Generator gen_for(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// An orthonormal d x k basis of a random subspace.
at::Tensor random_subspace(int64_t d, int64_t k, uint64_t seed) {
  auto gen = gen_for(seed);
  return std::get<0>(at::linalg_qr(at::randn({d, k}, gen, at::kFloat), "reduced"));
}

// m slices, each a random combination of the subspace's columns.
at::Tensor slices_in(const at::Tensor& subspace, int64_t m, uint64_t seed) {
  auto gen = gen_for(seed);
  return at::matmul(at::randn({m, subspace.size(1)}, gen, at::kFloat), subspace.t());
}

TEST(GradiVeqCodec, ReconstructsSlicesInTheBasisSpanAndIsLinear) {
  const int64_t d = 16, k = 3;
  at::Tensor sub = random_subspace(d, k, 1);
  at::Tensor x = slices_in(sub, 40, 2);
  at::Tensor basis = gradiveq_basis(gradiveq_covariance(x), k);
  ASSERT_EQ(basis.sizes(), (std::vector<int64_t>{d, k}));
  EXPECT_TRUE(at::allclose(at::matmul(basis.t(), basis), at::eye(k), 1e-5, 1e-5))
      << "not orthonormal";
  at::Tensor flat = x.reshape({-1});
  at::Tensor back =
      gradiveq_decode(gradiveq_encode(gradiveq_slices(flat, d), basis), basis, flat.numel());
  EXPECT_LE((back - flat).abs().max().item<double>(), 1e-4);

  // Linearity: the sum of encodings is the encoding of the sum (what lets the ring add them).
  at::Tensor a = at::randn({200}, gen_for(3)),
             b = at::randn({200}, gen_for(4));  // 200: a padded tail
  at::Tensor ea = gradiveq_encode(gradiveq_slices(a, d), basis);
  at::Tensor eb = gradiveq_encode(gradiveq_slices(b, d), basis);
  at::Tensor esum = gradiveq_encode(gradiveq_slices(a + b, d), basis);
  EXPECT_TRUE(at::allclose(ea + eb, esum, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(gradiveq_decode(ea + eb, basis, 200),
                           gradiveq_decode(ea, basis, 200) + gradiveq_decode(eb, basis, 200), 1e-5,
                           1e-5));
  // A generic vector is not in a 3-dim span: the codec is lossy off the subspace.
  EXPECT_GT((gradiveq_decode(ea, basis, 200) - a).abs().max().item<double>(), 0.1);
}

TEST(GradiVeqCodec, BasisIsAFunctionOfTheCovariance) {
  at::Tensor x = at::randn({100, 8}, gen_for(9));
  at::Tensor cov = gradiveq_covariance(x);
  at::Tensor u1 = gradiveq_basis(cov, 4), u2 = gradiveq_basis(cov.clone(), 4);
  EXPECT_TRUE(at::equal(u1, u2));
  // Leading eigenvectors first: the captured variance is non-increasing column by column.
  at::Tensor var = at::matmul(x, u1).pow(2).sum(0);
  for (int64_t j = 1; j < 4; ++j) EXPECT_GE(var[j - 1].item<float>(), var[j].item<float>() * 0.999);
  // Each column's largest-magnitude entry is positive.
  at::Tensor pivot = u1.abs().argmax(0);
  for (int64_t j = 0; j < 4; ++j) EXPECT_GT(u1[pivot[j].item<int64_t>()][j].item<float>(), 0);
}

TEST(GradiVeqCodec, PackedCovariancesAddUpToTheSumOfCovariances) {
  for (int64_t d : {1, 2, 7, 49}) {
    at::Tensor a = gradiveq_covariance(at::randn({30, d}, gen_for(20 + d)));
    at::Tensor b = gradiveq_covariance(at::randn({30, d}, gen_for(40 + d)));
    at::Tensor pa = gradiveq_pack_covariance(a), pb = gradiveq_pack_covariance(b);
    ASSERT_EQ(pa.numel(), d * (d + 1) / 2);
    ASSERT_EQ(gradiveq_packed_numel(d), pa.numel());
    // The packed values are the upper triangle, row by row.
    EXPECT_EQ(pa[0].item<float>(), a[0][0].item<float>());
    if (d > 1) {
      EXPECT_EQ(pa[1].item<float>(), a[0][1].item<float>());
    }
    EXPECT_EQ(pa[pa.numel() - 1].item<float>(), a[d - 1][d - 1].item<float>());
    at::Tensor back = gradiveq_unpack_covariance(pa, d);
    at::Tensor sym = at::triu(a) + at::triu(a, 1).t();  // a's upper triangle, mirrored
    EXPECT_TRUE(at::equal(back, sym)) << "d " << d;
    EXPECT_TRUE(at::equal(back, back.t())) << "d " << d;
    at::Tensor sum = gradiveq_unpack_covariance(pa + pb, d);
    EXPECT_TRUE(at::allclose(sum, a + b, 1e-5, 1e-4)) << "d " << d;
    EXPECT_TRUE(at::equal(sum, sum.t())) << "d " << d;
  }
}

// A model of 256 values in two tensors, four buckets of 64, slices of 16.
const std::vector<std::vector<int64_t>> kShapes = {{10, 16}, {96}};

std::vector<at::Tensor> split(const at::Tensor& flat) {
  return {flat.narrow(0, 0, 160).reshape({10, 16}).clone(), flat.narrow(0, 160, 96).clone()};
}

GradiVeqOptions small_options(bool error_feedback) {
  GradiVeqOptions o;
  o.flat = true;
  o.slice_size = 16;
  o.basis_size = 3;
  o.refresh_every = 3;
  o.start_iter = 1;
  o.bucket_numel = 64;
  o.error_feedback = error_feedback;
  return o;
}

TEST(GradiVeqCompressor, ReconstructsASubspaceStreamBeforeAndAfterTheRefresh) {
  // Steps 0-4 in subspace A, 5-9 in subspace B. Covariances ride on steps 0, 3, 6, 9; bases
  // change at steps 1, 4, 7. Steps 5 and 6 still use A's basis; from 7 on the basis is B's.
  const int world = 3;
  const at::Tensor sub_a = random_subspace(16, 3, 11), sub_b = random_subspace(16, 3, 12);
  std::mutex mu;
  std::vector<std::vector<at::Tensor>> outputs(world), bases(world);
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    GradiVeqCompressor c(*comm, small_options(false));
    std::vector<at::Tensor> mine;
    for (int64_t step = 0; step < 10; ++step) {
      const at::Tensor& sub = step < 5 ? sub_a : sub_b;
      auto g = split(slices_in(sub, 16, 100 * static_cast<uint64_t>(rank) + step).reshape({-1}));
      std::vector<at::Tensor> out{at::zeros({10, 16}), at::zeros({96})};
      ASSERT_TRUE(c.start(g, step)->finish(out).is_ok());
      // The dense average of the same gradients.
      std::vector<at::Tensor> avg{at::cat({g[0].reshape({-1}), g[1]})};
      ASSERT_TRUE(all_reduce_sync(*comm, avg).is_ok());
      avg[0].div_(world);
      at::Tensor got = at::cat({out[0].reshape({-1}), out[1]});
      double err = (got - avg[0]).abs().max().item<double>();
      if (step == 5 || step == 6) {
        EXPECT_GT(err, 0.05) << "step " << step << " should still use subspace A's basis";
      } else {
        EXPECT_LE(err, 1e-4) << "rank " << rank << " step " << step;
      }
      mine.push_back(got);
    }
    EXPECT_EQ(c.refreshes(), 4 * 4);  // 4 buckets x covariances of steps 0, 3, 6, 9
    std::lock_guard<std::mutex> lock(mu);
    outputs[static_cast<size_t>(rank)] = mine;
    for (auto& [name, t] : c.state()) {
      if (name.rfind("gradiveq/basis/", 0) == 0)
        bases[static_cast<size_t>(rank)].push_back(t.clone());
    }
  });
  for (int r = 1; r < world; ++r) {
    for (size_t i = 0; i < outputs[0].size(); ++i) {
      EXPECT_TRUE(at::equal(outputs[0][i], outputs[static_cast<size_t>(r)][i]))
          << "rank " << r << " step " << i;
    }
    ASSERT_EQ(bases[0].size(), 4u);
    ASSERT_EQ(bases[static_cast<size_t>(r)].size(), 4u);
    for (size_t b = 0; b < 4; ++b) {
      EXPECT_TRUE(at::equal(bases[0][b], bases[static_cast<size_t>(r)][b]))
          << "rank " << r << " bucket " << b;
    }
  }
}

TEST(GradiVeqCompressor, ErrorFeedbackKeepsWhatWasNotSentInGradientSpace) {
  // Generic gradients (not in any 3-dim subspace): the sum of the applied averages plus the
  // average of the memories equals the sum of the dense averages, across two refreshes.
  const int world = 3;
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    GradiVeqCompressor c(*comm, small_options(true));
    at::Tensor applied = at::zeros({256}), dense = at::zeros({256});
    for (int64_t step = 0; step < 8; ++step) {
      auto g = split(at::randn({256}, gen_for(1000 * static_cast<uint64_t>(rank) + step)));
      std::vector<at::Tensor> out{at::zeros({10, 16}), at::zeros({96})};
      // The memory before this step and the basis of each bucket this step encodes with.
      std::map<std::string, at::Tensor> before;
      for (auto& [name, t] : c.state()) before[name] = t.clone();
      ASSERT_TRUE(c.start(g, step)->finish(out).is_ok());
      applied += at::cat({out[0].reshape({-1}), out[1]});
      std::vector<at::Tensor> avg{at::cat({g[0].reshape({-1}), g[1]})};
      ASSERT_TRUE(all_reduce_sync(*comm, avg).is_ok());
      dense += avg[0] / world;
      if (step >= 1) {
        // Memory = x - decode(encode(x)): orthogonal to the basis the step used, per slice.
        at::Tensor e = at::zeros({256});
        std::map<std::string, at::Tensor> after;
        for (auto& [name, t] : c.state()) after[name] = t;
        e = at::cat(
            {after.at("gradiveq/e/0").reshape({-1}), after.at("gradiveq/e/1").reshape({-1})});
        for (int b = 0; b < 4; ++b) {
          at::Tensor basis = before.at("gradiveq/basis/" + std::to_string(b));
          at::Tensor proj = at::matmul(gradiveq_slices(e.narrow(0, 64 * b, 64), 16), basis);
          EXPECT_LE(proj.abs().max().item<double>(), 1e-4) << "step " << step << " bucket " << b;
        }
        EXPECT_GT(e.abs().max().item<double>(), 0.1) << "a 3-of-16 basis must leave something out";
      }
    }
    std::map<std::string, at::Tensor> st;
    for (auto& [name, t] : c.state()) st[name] = t;
    std::vector<at::Tensor> mem{
        at::cat({st.at("gradiveq/e/0").reshape({-1}), st.at("gradiveq/e/1").reshape({-1})})};
    ASSERT_TRUE(all_reduce_sync(*comm, mem).is_ok());
    EXPECT_TRUE(at::allclose(applied + mem[0] / world, dense, 1e-4, 1e-4))
        << (applied + mem[0] / world - dense).abs().max().item<double>();
    EXPECT_FALSE(at::allclose(applied, dense, 1e-3, 1e-3)) << "nothing is pending";
  });
}

TEST(GradiVeqCompressor, StateRoundTripAcrossARefresh) {
  // A run resumed after step 6 (whose covariance made the basis of step 7) matches the
  // uninterrupted run bit for bit.
  const int world = 2;
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto grads = [&](int64_t step) {
      return split(at::randn({256}, gen_for(77 + 10 * static_cast<uint64_t>(rank) + step)));
    };
    GradiVeqCompressor straight(*comm, small_options(true)), first(*comm, small_options(true));
    std::vector<at::Tensor> want;
    for (int64_t step = 0; step < 10; ++step) {
      std::vector<at::Tensor> out{at::zeros({10, 16}), at::zeros({96})};
      ASSERT_TRUE(straight.start(grads(step), step)->finish(out).is_ok());
      want.push_back(at::cat({out[0].reshape({-1}), out[1]}));
    }
    for (int64_t step = 0; step < 7; ++step) {
      std::vector<at::Tensor> out{at::zeros({10, 16}), at::zeros({96})};
      ASSERT_TRUE(first.start(grads(step), step)->finish(out).is_ok());
    }
    auto saved = first.state();
    EXPECT_EQ(saved.size(), 1u + 4u + 2u);  // iter, 4 bases, 2 memories
    GradiVeqCompressor resumed(*comm, small_options(true));
    ASSERT_TRUE(resumed.load_state(saved).is_ok());
    for (int64_t step = 7; step < 10; ++step) {
      std::vector<at::Tensor> out{at::zeros({10, 16}), at::zeros({96})};
      ASSERT_TRUE(resumed.start(grads(step), step)->finish(out).is_ok());
      EXPECT_TRUE(
          at::equal(at::cat({out[0].reshape({-1}), out[1]}), want[static_cast<size_t>(step)]))
          << "rank " << rank << " step " << step;
    }
  });
}

TEST(GradiVeqCompressor, DelayedFinishGivesTheSameResults) {
  // DSSGD: finish() two steps late; the covariance round is finalised by the next start().
  const int world = 2;
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto grads = [&](int64_t step) {
      return split(at::randn({256}, gen_for(5 + 10 * static_cast<uint64_t>(rank) + step)));
    };
    GradiVeqCompressor now(*comm, small_options(true)), late(*comm, small_options(true));
    std::vector<at::Tensor> want;
    for (int64_t step = 0; step < 8; ++step) {
      std::vector<at::Tensor> out{at::zeros({10, 16}), at::zeros({96})};
      ASSERT_TRUE(now.start(grads(step), step)->finish(out).is_ok());
      want.push_back(at::cat({out[0].reshape({-1}), out[1]}));
    }
    std::vector<std::unique_ptr<PendingReduction>> pending;
    for (int64_t step = 0; step < 8; ++step) pending.push_back(late.start(grads(step), step));
    for (int64_t step = 0; step < 8; ++step) {
      std::vector<at::Tensor> out{at::zeros({10, 16}), at::zeros({96})};
      ASSERT_TRUE(pending[static_cast<size_t>(step)]->finish(out).is_ok());
      EXPECT_TRUE(
          at::equal(at::cat({out[0].reshape({-1}), out[1]}), want[static_cast<size_t>(step)]))
          << step;
    }
  });
}

TEST(GradiVeqShaped, SlicesFollowKernelsFeatureMapsAndRows) {
  // The Fashion-MNIST CNN: conv1 (kernels of 25), conv2 (two 25-kernels per slice of <= 64),
  // fc1 after conv2's 64 channels (7x7 maps: 49), fc2 (rows of 512: 64); biases dense.
  EXPECT_EQ(
      gradiveq_shaped_slices(
          {{32, 1, 5, 5}, {32}, {64, 32, 5, 5}, {64}, {512, 3136}, {512}, {10, 512}, {10}}, 64, 2),
      (std::vector<int64_t>{25, 0, 50, 0, 49, 0, 64, 0}));
  // The MLP's first layer: rows of 784 = 28 x 28, largest divisor <= 64 is 56 (two image rows).
  EXPECT_EQ(gradiveq_shaped_slices({{512, 784}}, 64, 8), (std::vector<int64_t>{56}));
  // A prime row length: no divisor near d, slices run across rows.
  EXPECT_EQ(gradiveq_shaped_slices({{10, 97}}, 64, 8), (std::vector<int64_t>{64}));
  // 1x1 convolutions: a kernel is one value; 32 input channels per slice.
  EXPECT_EQ(gradiveq_shaped_slices({{64, 32, 1, 1}}, 64, 8), (std::vector<int64_t>{32}));
  // A kernel larger than d is one slice; a linear layer after global pooling (L == C) is
  // plain values, its short rows 8 to a slice of 64.
  EXPECT_EQ(gradiveq_shaped_slices({{8, 3, 11, 11}, {16, 8}}, 64, 8),
            (std::vector<int64_t>{121, 64}));
  // A slice that would not exceed k is sent dense (3x3 kernels with k = 9, one input channel).
  EXPECT_EQ(gradiveq_shaped_slices({{4, 1, 3, 3}, {0, 5}}, 64, 9), (std::vector<int64_t>{0, 0}));
  // Feature maps larger than 1024 values: the matrix is sliced as plain rows.
  EXPECT_EQ(gradiveq_shaped_slices({{4, 2, 3, 3}, {10, 4 * 48 * 48}}, 64, 8),
            (std::vector<int64_t>{18, 64}));
}

// A conv (6 x 2 x 4 x 4: one 16-kernel per slice), its bias (dense) and a matrix after it
// (12 x 24 = six 4-value maps: slices of three maps, 12 values): two slice groups.
const std::vector<std::vector<int64_t>> kShapedModel = {{6, 2, 4, 4}, {6}, {12, 24}};

std::vector<at::Tensor> shaped_grads(const at::Tensor& sub16, const at::Tensor& sub12,
                                     uint64_t seed) {
  return {slices_in(sub16, 12, seed).reshape({6, 2, 4, 4}), at::randn({6}, gen_for(seed + 1)),
          slices_in(sub12, 24, seed + 2).reshape({12, 24})};
}

std::vector<at::Tensor> zeros_like_all(const std::vector<at::Tensor>& g) {
  std::vector<at::Tensor> out;
  for (const auto& t : g) out.push_back(at::zeros_like(t));
  return out;
}

at::Tensor flat_of(const std::vector<at::Tensor>& g) {
  std::vector<at::Tensor> f;
  for (const auto& t : g) f.push_back(t.reshape({-1}));
  return at::cat(f);
}

// Every rank's outputs equal rank 0's, bit for bit.
void expect_identical_ranks(const std::vector<std::vector<at::Tensor>>& outputs) {
  for (size_t r = 1; r < outputs.size(); ++r) {
    for (size_t i = 0; i < outputs[0].size(); ++i) {
      EXPECT_TRUE(at::equal(outputs[0][i], outputs[r][i])) << r << " " << i;
    }
  }
}

// The compressor's state by name.
std::map<std::string, at::Tensor> state_map(GradiVeqCompressor& c) {
  std::map<std::string, at::Tensor> st;
  for (auto& [name, t] : c.state()) st[name] = t;
  return st;
}

// The names of the compressor's state, without the error-feedback memories unless asked.
std::vector<std::string> state_names(GradiVeqCompressor& c, bool with_memories) {
  std::vector<std::string> names;
  for (auto& [name, t] : c.state()) {
    if (with_memories || name.rfind("gradiveq/e/", 0) != 0) names.push_back(name);
  }
  return names;
}

// Nothing lost: the applied averages plus the ranks' mean memory equal the sum of the dense
// averages, and the memory is not empty (the basis really left something out).
void expect_nothing_lost(GradiVeqCompressor& c, Communicator& comm, const at::Tensor& applied,
                         const at::Tensor& dense, const std::string& what) {
  std::vector<at::Tensor> mem;
  for (auto& [name, t] : c.state()) {
    if (name.rfind("gradiveq/e/", 0) == 0) mem.push_back(t.reshape({-1}));
  }
  std::vector<at::Tensor> m{at::cat(mem)};
  ASSERT_TRUE(all_reduce_sync(comm, m).is_ok());
  ASSERT_EQ(m[0].numel(), dense.numel()) << what;
  const double world = comm.size();
  EXPECT_TRUE(at::allclose(applied + m[0] / world, dense, 1e-4, 1e-4))
      << what << ": " << (applied + m[0] / world - dense).abs().max().item<double>();
  EXPECT_GT(m[0].abs().max().item<double>(), 0.1) << what << ": the memory is empty";
}

// One step of `c` on this rank's g: what it applied and the exact average over the ranks,
// both flat.
struct StepResult {
  at::Tensor applied, dense;
};
StepResult compress_step(GradiVeqCompressor& c, Communicator& comm,
                         const std::vector<at::Tensor>& g, int64_t step) {
  auto out = zeros_like_all(g);
  Status s = c.start(g, step)->finish(out);
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  std::vector<at::Tensor> avg{flat_of(g)};
  EXPECT_TRUE(all_reduce_sync(comm, avg).is_ok());
  return {flat_of(out), avg[0] / comm.size()};
}

GradiVeqOptions shaped_options(int64_t refresh_every, bool error_feedback) {
  GradiVeqOptions o;
  o.slice_size = 16;
  o.basis_size = 3;
  o.refresh_every = refresh_every;
  o.start_iter = 1;
  o.error_feedback = error_feedback;
  return o;
}

TEST(GradiVeqShaped, EachSliceGroupHasItsBasisAndReconstructsItsSubspaceOnEveryRank) {
  ASSERT_EQ(gradiveq_shaped_slices(kShapedModel, 16, 3), (std::vector<int64_t>{16, 0, 12}));
  const int world = 3;
  const at::Tensor sub16 = random_subspace(16, 3, 21), sub12 = random_subspace(12, 3, 22);
  std::mutex mu;
  std::vector<std::vector<at::Tensor>> outputs(world);
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    GradiVeqCompressor c(*comm, shaped_options(2, false));
    std::vector<at::Tensor> mine;
    for (int64_t step = 0; step < 5; ++step) {
      auto g = shaped_grads(sub16, sub12, 100 * static_cast<uint64_t>(rank) + 10 * step);
      const StepResult r = compress_step(c, *comm, g, step);
      EXPECT_LE((r.applied - r.dense).abs().max().item<double>(), 1e-4)
          << "rank " << rank << " step " << step;
      mine.push_back(r.applied);
    }
    EXPECT_EQ(c.refreshes(), 2 * 3);  // 2 groups x covariances of steps 0, 2, 4
    EXPECT_EQ(
        state_names(c, true),
        (std::vector<std::string>{"gradiveq/basis/0/12", "gradiveq/basis/0/16", "gradiveq/iter"}));
    std::lock_guard<std::mutex> lock(mu);
    outputs[static_cast<size_t>(rank)] = mine;
  });
  expect_identical_ranks(outputs);
}

TEST(GradiVeqShaped, ErrorFeedbackKeepsEverythingAcrossSliceGroups) {
  // Generic gradients in two slice groups and a dense bias, with a basis one step old (refresh 1)
  // and with each step's own (refresh 0): the applied averages plus the mean memory equal the
  // sum of the dense averages over steps (nothing lost), and the memory is not empty (the basis
  // really leaves something out). With refresh 0 the basis in the state after a step is the one
  // it used, and each group's memory is orthogonal to it, slice by slice.
  const int world = 2;
  for (int64_t refresh : {1, 0}) {
    testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
      GradiVeqCompressor c(*comm, shaped_options(refresh, true));
      at::Tensor applied, dense;
      for (int64_t step = 0; step < 6; ++step) {
        auto gen = gen_for(500 + 10 * static_cast<uint64_t>(rank) + step);
        std::vector<at::Tensor> g{at::randn({6, 2, 4, 4}, gen), at::randn({6}, gen),
                                  at::randn({12, 24}, gen)};
        const StepResult r = compress_step(c, *comm, g, step);
        applied = step == 0 ? r.applied : applied + r.applied;
        dense = step == 0 ? r.dense : dense + r.dense;
        if (refresh != 0 || step == 0) continue;
        const auto st = state_map(c);
        for (const auto& [e, basis, d] : {std::tuple{"gradiveq/e/0", "gradiveq/basis/0/16", 16},
                                          std::tuple{"gradiveq/e/2", "gradiveq/basis/0/12", 12}}) {
          at::Tensor proj = at::matmul(st.at(e).reshape({-1, d}), st.at(basis));
          EXPECT_LE(proj.abs().max().item<double>(), 1e-4) << e << " step " << step;
        }
      }
      expect_nothing_lost(c, *comm, applied, dense, "refresh " + std::to_string(refresh));
    });
  }
}

TEST(GradiVeqShaped, RefreshEveryZeroEncodesEachStepInItsOwnBasis) {
  // The subspace changes at step 3: with the step's own covariance there is no stale step (every
  // step exact). The gradients lie in the subspaces, so the memory stays in the basis' null
  // space trivially here; ErrorFeedbackKeepsEverythingAcrossSliceGroups checks that with
  // generic gradients.
  const int world = 2;
  const at::Tensor a16 = random_subspace(16, 3, 31), a12 = random_subspace(12, 3, 32);
  const at::Tensor b16 = random_subspace(16, 3, 33), b12 = random_subspace(12, 3, 34);
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    GradiVeqCompressor c(*comm, shaped_options(0, true));
    for (int64_t step = 0; step < 6; ++step) {
      const bool b = step >= 3;
      auto g = shaped_grads(b ? b16 : a16, b ? b12 : a12, 40 * static_cast<uint64_t>(rank) + step);
      const StepResult r = compress_step(c, *comm, g, step);
      EXPECT_LE((r.applied - r.dense).abs().max().item<double>(), 1e-4)
          << "rank " << rank << " step " << step;
      const auto st = state_map(c);
      if (step == 0) continue;
      at::Tensor conv_memory = st.at("gradiveq/e/0").reshape({-1, 16});
      EXPECT_LE(at::matmul(conv_memory, st.at("gradiveq/basis/0/16")).abs().max().item<double>(),
                1e-4);
    }
    EXPECT_EQ(c.refreshes(), 2 * 5);  // both groups, steps 1-5
  });
}

TEST(GradiVeqShaped, AGroupWhoseCovarianceWouldCostMoreThanItsValuesGoesDense) {
  // 2 x 16 in slices of 16 with k 3: 6 coefficients + a 136-value covariance every step is more
  // than its 32 values, so it is sent as is (exact, no basis); with the covariance every 20th
  // step (6 + 136 / 20 < 32) it is compressed.
  const int world = 2;
  for (int64_t refresh : {0, 20}) {
    testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
      GradiVeqCompressor c(*comm, shaped_options(refresh, true));
      for (int64_t step = 0; step < 3; ++step) {
        std::vector<at::Tensor> g{at::randn(
            {2, 16}, gen_for(90 + 10 * static_cast<uint64_t>(rank) + static_cast<uint64_t>(step)))};
        const StepResult r = compress_step(c, *comm, g, step);
        const double err = (r.applied - r.dense).abs().max().item<double>();
        if (refresh == 0) {
          EXPECT_LE(err, 1e-6) << "step " << step;
        } else if (step == 2) {
          EXPECT_GT(err, 1e-3) << "a 3-of-16 basis must lose something";
        }
      }
      bool has_basis = false;
      for (auto& [name, t] : c.state()) has_basis |= name.rfind("gradiveq/basis/", 0) == 0;
      EXPECT_EQ(has_basis, refresh != 0) << "refresh " << refresh;
    });
  }
}

TEST(GradiVeqMatrix, SlicesRunAlongTheShorterSideWhereThatPays) {
  // The Fashion-MNIST CNN with d 1024, k 32: conv1 (32 x 25: shorter side 25 <= k) and fc2 (10
  // x 512) as shaped; conv2 (64 x 800) by its 64-value columns; fc1 (512 x 3136) by its
  // 512-value columns; biases as shaped (dense).
  const std::vector<std::vector<int64_t>> cnn = {{32, 1, 5, 5}, {32},  {64, 32, 5, 5}, {64},
                                                 {512, 3136},   {512}, {10, 512},      {10}};
  EXPECT_EQ(gradiveq_matrix_slices(cnn, 1024, 32),
            (std::vector<int64_t>{0, 0, 64, 0, 512, 0, 0, 0}));
  // d caps the side (the covariance is s x s): with d 256 only conv2.
  EXPECT_EQ(gradiveq_matrix_slices(cnn, 256, 32), (std::vector<int64_t>{0, 0, 64, 0, 0, 0, 0, 0}));
  // A tall matrix is cut into its rows.
  EXPECT_EQ(gradiveq_matrix_slices({{3000, 20}}, 64, 4), (std::vector<int64_t>{20}));
  // 100 x 100: k 45 sends 4500 coefficients + 5050 covariance < 10000; k 50 would not pay.
  EXPECT_EQ(gradiveq_matrix_slices({{100, 100}}, 128, 45), (std::vector<int64_t>{100}));
  EXPECT_EQ(gradiveq_matrix_slices({{100, 100}}, 128, 50), (std::vector<int64_t>{0}));
  EXPECT_EQ(gradiveq_matrix_slices({{0, 5}, {7}}, 64, 2), (std::vector<int64_t>{0, 0}));
}

// A wide matrix (6 x 40: by its 6-value columns), a tall one (30 x 5: by its 5-value rows), a
// conv (4 x 3 x 3 x 3: 4 x 27, by columns), a bias (dense) and a matrix whose shorter side is
// over d = 8 (12 x 16: shaped, rows cut in slices of 8).
const std::vector<std::vector<int64_t>> kMatrixModel = {
    {6, 40}, {30, 5}, {4, 3, 3, 3}, {6}, {12, 16}};

GradiVeqOptions matrix_options(bool error_feedback) {
  GradiVeqOptions o = shaped_options(0, error_feedback);
  o.matrix = true;
  o.slice_size = 8;
  o.basis_size = 2;
  return o;
}

// Gradients whose sum over ranks has rank 2 in every matrix (the left factor of the wide ones,
// the right factor of the tall one and the 8-value slices' subspace shared by all ranks).
std::vector<at::Tensor> rank2_grads(int rank, int64_t step) {
  const uint64_t seed = 1000 * static_cast<uint64_t>(rank) + static_cast<uint64_t>(step);
  auto coeffs = [&](int64_t rows, int64_t cols, uint64_t salt) {
    return at::randn({rows, cols}, gen_for(seed * 7 + salt));
  };
  return {at::matmul(random_subspace(6, 2, 61), coeffs(2, 40, 1)),
          at::matmul(coeffs(30, 2, 2), random_subspace(5, 2, 62).t()),
          at::matmul(random_subspace(4, 2, 63), coeffs(2, 27, 3)).reshape({4, 3, 3, 3}),
          coeffs(6, 1, 4).reshape({6}),
          slices_in(random_subspace(8, 2, 64), 24, seed * 7 + 5).reshape({12, 16})};
}

TEST(GradiVeqMatrix, RankKGradientsAreExactOnEveryRankEachMatrixWithItsOwnBasis) {
  ASSERT_EQ(gradiveq_matrix_slices(kMatrixModel, 8, 2), (std::vector<int64_t>{6, 5, 4, 0, 0}));
  const int world = 3;
  std::mutex mu;
  std::vector<std::vector<at::Tensor>> outputs(world);
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    GradiVeqCompressor c(*comm, matrix_options(true));
    std::vector<at::Tensor> mine;
    for (int64_t step = 0; step < 4; ++step) {
      auto g = rank2_grads(rank, step);
      const StepResult r = compress_step(c, *comm, g, step);
      EXPECT_LE((r.applied - r.dense).abs().max().item<double>(), 1e-4)
          << "rank " << rank << " step " << step;
      mine.push_back(r.applied);
    }
    EXPECT_EQ(c.refreshes(), 4 * 3);  // three matrices and the shaped group, steps 1-3
    EXPECT_EQ(state_names(c, false),
              (std::vector<std::string>{"gradiveq/basis/0/8", "gradiveq/basis/0/matrix/0",
                                        "gradiveq/basis/0/matrix/1", "gradiveq/basis/0/matrix/2",
                                        "gradiveq/iter"}));
    std::lock_guard<std::mutex> lock(mu);
    outputs[static_cast<size_t>(rank)] = mine;
  });
  expect_identical_ranks(outputs);
}

TEST(GradiVeqMatrix, ErrorFeedbackKeepsWhatTheSingularBasisLeavesOut) {
  // Generic gradients: the applied averages plus the mean memory equal the dense sum, and each
  // matrix's memory is orthogonal to the basis its step used (by columns: Uᵀ E = 0; by rows:
  // E U = 0).
  const int world = 2;
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    GradiVeqCompressor c(*comm, matrix_options(true));
    at::Tensor applied, dense;
    for (int64_t step = 0; step < 5; ++step) {
      auto gen = gen_for(700 + 10 * static_cast<uint64_t>(rank) + step);
      std::vector<at::Tensor> g;
      for (const auto& shape : kMatrixModel) g.push_back(at::randn(shape, gen));
      const StepResult r = compress_step(c, *comm, g, step);
      applied = step == 0 ? r.applied : applied + r.applied;
      dense = step == 0 ? r.dense : dense + r.dense;
      if (step == 0) continue;
      const auto st = state_map(c);
      auto memory = [&](int i) {  // tensor i's memory as its matrix
        return st.at("gradiveq/e/" + std::to_string(i)).reshape({kMatrixModel[i][0], -1});
      };
      auto basis = [&](int i) { return st.at("gradiveq/basis/0/matrix/" + std::to_string(i)); };
      for (int i : {0, 2}) {  // by columns
        EXPECT_LE(at::matmul(basis(i).t(), memory(i)).abs().max().item<double>(), 1e-4)
            << i << " step " << step;
      }
      EXPECT_LE(at::matmul(memory(1), basis(1)).abs().max().item<double>(), 1e-4)
          << "step " << step;
    }
    expect_nothing_lost(c, *comm, applied, dense, "matrix");
  });
}

}  // namespace
}  // namespace tern
