// Compressors over real Gloo groups (ranks as threads): PowerSGD at full rank and DGC at
// density 1 against dense averaging, delayed finish (DSSGD) equal to immediate finish,
// state save/restore, empty and tiny tensors, identical collective order on every rank,
// and the measured wire bytes of DGC; int4 and topk against a by-hand simulation of every
// rank (bit for bit, identical on every rank), their error feedback and wire bytes.
#include "compress/compressor.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <mutex>
#include <numeric>

#include "comm/counting_communicator.h"
#include "comm/reducer.h"
#include "compress/codec.h"
#include "compress/factory.h"
#include "testing/gloo_group.h"

namespace tern {
namespace {

using Shapes = std::vector<std::vector<int64_t>>;

// Deterministic per-(rank, step) gradients.
std::vector<at::Tensor> grads_for(const Shapes& shapes, int rank, int64_t step,
                                  double sparsity = 0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 * static_cast<uint64_t>(rank) +
                                                      static_cast<uint64_t>(step) + 7);
  std::vector<at::Tensor> out;
  for (const auto& s : shapes) {
    at::Tensor g = at::randn(s, gen);
    if (sparsity > 0) g = g * (at::rand(s, gen) > sparsity).to(at::kFloat);
    out.push_back(g);
  }
  return out;
}

std::vector<at::Tensor> zeros_like_all(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(at::zeros_like(t));
  return out;
}

// Dense reference: the plain average over ranks.
std::vector<at::Tensor> dense_average(Communicator& comm, const std::vector<at::Tensor>& grads) {
  DenseReducer dense(comm, 1 << 20);
  auto out = zeros_like_all(grads);
  EXPECT_TRUE(dense.start(grads, 0)->finish(out).is_ok());
  return out;
}

void expect_close(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, double tol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::allclose(a[i], b[i], tol, tol))
        << what << " tensor " << i << " max diff " << (a[i] - b[i]).abs().max().item<double>();
  }
}

DgcOptions dgc_options(double density, bool masking, double momentum, int64_t min_numel = 16) {
  DgcOptions o;
  o.density = density;
  o.momentum = momentum;
  o.momentum_masking = masking;
  o.min_numel = min_numel;
  return o;
}

const Shapes kModel = {{16, 20}, {16}, {8, 4, 3, 3}, {8}, {3, 2}, {10, 16}};

TEST(PowerSgd, FullRankReproducesTheDenseAverage) {
  testing::run_ranks(3, [](int rank, std::shared_ptr<Communicator> comm) {
    PowerSgdOptions o;
    o.rank = 64;  // clamped to min(n, m) per matrix
    o.start_iter = 0;
    o.min_compression_rate = 0;  // compress every matrix, even when it does not shrink
    o.seed = 11;
    PowerSgdCompressor psgd(*comm, o);
    for (int64_t step = 0; step < 4; ++step) {
      auto g = grads_for(kModel, rank, step);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(psgd.start(g, step)->finish(out).is_ok());
      expect_close(out, dense_average(*comm, g), 1e-4, "step " + std::to_string(step));
    }
    // Full rank leaves nothing behind: each rank keeps M_j - P̂P̂ᵀM_j (non-zero when n > m,
    // as P̂ spans the column space of the sum, not of M_j), and those errors sum to zero.
    for (auto& [name, t] : psgd.state()) {
      if (name.rfind("powersgd/e/", 0) != 0) continue;
      std::vector<at::Tensor> sum{t.clone()};
      ASSERT_TRUE(all_reduce_sync(*comm, sum).is_ok());
      EXPECT_LT(sum[0].abs().max().item<double>(), 1e-4) << name;
    }
  });
}

TEST(PowerSgd, LowRankErrorFeedbackKeepsWhatWasNotSent) {
  // One rank: average = P Qᵀ, and (g + e_old) == P Qᵀ + e_new up to fp rounding.
  testing::run_ranks(1, [](int, std::shared_ptr<Communicator> comm) {
    PowerSgdOptions o;
    o.rank = 2;
    o.start_iter = 0;
    PowerSgdCompressor psgd(*comm, o);
    at::Tensor e_old = at::zeros({40, 30});
    for (int64_t step = 0; step < 3; ++step) {
      auto g = grads_for({{40, 30}}, 0, step);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(psgd.start(g, step)->finish(out).is_ok());
      at::Tensor e_new;
      for (auto& [name, t] : psgd.state()) {
        if (name == "powersgd/e/0") e_new = t.clone();
      }
      ASSERT_TRUE(e_new.defined());
      EXPECT_TRUE(at::allclose(out[0] + e_new, g[0] + e_old, 1e-5, 1e-5));
      EXPECT_GT(e_new.abs().max().item<double>(), 0.1);  // rank 2 of 30 really drops something
      e_old = e_new;
    }
  });
}

TEST(PowerSgd, DenseBeforeStartIterAndForVectors) {
  testing::run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    PowerSgdOptions o;
    o.rank = 1;
    o.start_iter = 2;
    PowerSgdCompressor psgd(*comm, o);
    for (int64_t step = 0; step < 3; ++step) {
      auto g = grads_for(kModel, rank, step);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(psgd.start(g, step)->finish(out).is_ok());
      auto ref = dense_average(*comm, g);
      if (step < 2) {
        expect_close(out, ref, 1e-6, "dense warm-up");
      } else {
        EXPECT_TRUE(at::allclose(out[1], ref[1], 1e-6, 1e-6));   // vector: dense
        EXPECT_FALSE(at::allclose(out[0], ref[0], 1e-3, 1e-3));  // 16x20 at rank 1: compressed
      }
    }
  });
}

// DGC at density 1 without momentum masking is momentum SGD on the averaged gradient.
TEST(Dgc, DensityOneEqualsDenseSsgdWithMomentum) {
  testing::run_ranks(3, [](int rank, std::shared_ptr<Communicator> comm) {
    const double m = 0.9;
    DgcCompressor dgc(*comm, dgc_options(1.0, /*masking=*/false, m));
    std::vector<at::Tensor> buf;
    for (int64_t step = 0; step < 5; ++step) {
      auto g = grads_for(kModel, rank, step);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(dgc.start(g, step)->finish(out).is_ok());
      auto avg = dense_average(*comm, g);
      if (buf.empty()) {
        buf = avg;
      } else {
        for (size_t i = 0; i < buf.size(); ++i) buf[i] = buf[i] * m + avg[i];
      }
      expect_close(out, buf, 1e-5, "step " + std::to_string(step));
    }
  });
}

// With masking, density 1 zeroes the momentum of everything sent: plain averaged SGD for
// the sparse tensors, momentum SGD for the dense (small / 1-D) ones.
TEST(Dgc, DensityOneWithMaskingDropsMomentumOfSparseTensors) {
  testing::run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    const double m = 0.9;
    DgcCompressor dgc(*comm, dgc_options(1.0, /*masking=*/true, m, /*min_numel=*/100));
    std::vector<at::Tensor> buf;
    for (int64_t step = 0; step < 3; ++step) {
      auto g = grads_for(kModel, rank, step);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(dgc.start(g, step)->finish(out).is_ok());
      auto avg = dense_average(*comm, g);
      if (buf.empty()) {
        buf = avg;
      } else {
        for (size_t i = 0; i < buf.size(); ++i) buf[i] = buf[i] * m + avg[i];
      }
      for (size_t i = 0; i < g.size(); ++i) {
        bool sparse = g[i].dim() > 1 && g[i].numel() >= 100;
        EXPECT_TRUE(at::allclose(out[i], sparse ? avg[i] : buf[i], 1e-5, 1e-5)) << "tensor " << i;
      }
    }
  });
}

TEST(Dgc, SparseSumOverStepsMatchesDenseSum) {
  // Error feedback: whatever is not sent stays in v, so sum of what was applied plus what is
  // still pending equals the sum of all averaged gradients (momentum 0, no masking effect).
  testing::run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    DgcCompressor dgc(*comm, dgc_options(0.05, true, 0.0));
    const Shapes shapes = {{30, 40}};
    at::Tensor applied = at::zeros({30, 40}), dense = at::zeros({30, 40});
    for (int64_t step = 0; step < 6; ++step) {
      auto g = grads_for(shapes, rank, step);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(dgc.start(g, step)->finish(out).is_ok());
      applied += out[0];
      dense += dense_average(*comm, g)[0];
    }
    at::Tensor pending;
    for (auto& [name, t] : dgc.state()) {
      if (name == "dgc/v/0") pending = t.view({30, 40}).clone();
    }
    ASSERT_TRUE(pending.defined());
    std::vector<at::Tensor> p{pending};
    ASSERT_TRUE(all_reduce_sync(*comm, p).is_ok());
    EXPECT_TRUE(at::allclose(applied + p[0] / 2, dense, 1e-4, 1e-4));
    EXPECT_GT(p[0].abs().max().item<double>(), 0.1);  // something really is pending
  });
}

TEST(Dgc, WarmupScheduleSpansTheGivenSteps) {
  testing::run_ranks(1, [](int, std::shared_ptr<Communicator> comm) {
    DgcOptions o = dgc_options(0.001, true, 0.9);
    o.warmup_densities = {0.25, 0.0625, 0.015625, 0.00390625};
    o.warmup_steps = 40;
    DgcCompressor dgc(*comm, o);
    EXPECT_DOUBLE_EQ(dgc.density_at(0), 0.25);
    EXPECT_DOUBLE_EQ(dgc.density_at(9), 0.25);
    EXPECT_DOUBLE_EQ(dgc.density_at(10), 0.0625);
    EXPECT_DOUBLE_EQ(dgc.density_at(39), 0.00390625);
    EXPECT_DOUBLE_EQ(dgc.density_at(40), 0.001);
  });
}

// A reducer's outputs must not depend on when finish() is called (SSGD: at once; DSSGD: d
// steps later).
void expect_delay_invariant(
    const std::function<std::unique_ptr<GradientReducer>(Communicator&)>& make) {
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto now = make(*comm);
    auto later = make(*comm);
    const int64_t steps = 6, delay = 2;
    std::vector<std::vector<at::Tensor>> at_once, delayed(steps);
    for (int64_t s = 0; s < steps; ++s) {
      auto g = grads_for(kModel, rank, s);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(now->start(g, s)->finish(out).is_ok());
      at_once.push_back(out);
    }
    std::vector<std::unique_ptr<PendingReduction>> inflight;
    for (int64_t s = 0; s < steps + delay; ++s) {
      if (s < steps) {
        auto g = grads_for(kModel, rank, s);
        inflight.push_back(later->start(g, s));
        for (auto& t : g) t.fill_(12345);  // the caller may overwrite its inputs at once
      }
      int64_t done = s - delay;
      if (done >= 0) {
        delayed[done] = zeros_like_all(grads_for(kModel, rank, done));
        ASSERT_TRUE(inflight[done]->finish(delayed[done]).is_ok());
      }
    }
    for (int64_t s = 0; s < steps; ++s)
      expect_close(delayed[s], at_once[s], 0, "step " + std::to_string(s));
  });
}

TEST(Compressors, DelayedFinishGivesTheSameResults) {
  expect_delay_invariant([](Communicator& c) {
    return std::make_unique<DgcCompressor>(c, dgc_options(0.1, true, 0.9));
  });
  expect_delay_invariant([](Communicator& c) {
    PowerSgdOptions o;
    o.rank = 2;
    o.start_iter = 1;
    return std::make_unique<PowerSgdCompressor>(c, o);
  });
  expect_delay_invariant([](Communicator& c) { return std::make_unique<Fp16Compressor>(c, true); });
  expect_delay_invariant([](Communicator& c) { return std::make_unique<Int8Compressor>(c, true); });
  expect_delay_invariant(
      [](Communicator& c) { return std::make_unique<Int4Compressor>(c, Int4Options{}); });
  expect_delay_invariant([](Communicator& c) {
    return std::make_unique<TopkCompressor>(c, TopkOptions{0.05, 32, 0, true});
  });
  expect_delay_invariant([](Communicator& c) {
    return std::make_unique<TopkCompressor>(c, TopkOptions{0.1, 4, 16, true, 0.95});
  });
}

// Saving the per-rank state after k steps and loading it into a fresh compressor continues
// exactly where the first one would have.
void expect_state_round_trip(
    const std::function<std::unique_ptr<GradientReducer>(Communicator&)>& make) {
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto a = make(*comm);
    for (int64_t s = 0; s < 3; ++s) {
      auto g = grads_for(kModel, rank, s);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(a->start(g, s)->finish(out).is_ok());
    }
    auto saved = a->state();
    ASSERT_FALSE(saved.empty());
    std::vector<std::pair<std::string, at::Tensor>> copy;
    for (auto& [k, v] : saved) copy.emplace_back(k, v.clone());
    auto b = make(*comm);
    ASSERT_TRUE(b->load_state(copy).is_ok());
    for (int64_t s = 3; s < 5; ++s) {
      auto g = grads_for(kModel, rank, s);
      auto out_a = zeros_like_all(g), out_b = zeros_like_all(g);
      ASSERT_TRUE(a->start(g, s)->finish(out_a).is_ok());
      ASSERT_TRUE(b->start(g, s)->finish(out_b).is_ok());
      expect_close(out_a, out_b, 0, a->name() + " after restore");
    }
  });
}

TEST(Compressors, StateSavesAndRestores) {
  expect_state_round_trip([](Communicator& c) {
    DgcOptions o = dgc_options(0.05, true, 0.9);
    o.seed = 5;            // sampling must restart identically too: same seed, same stream position
    o.sample_ratio = 1.0;  // (exact selection, so the generator position does not matter)
    return std::make_unique<DgcCompressor>(c, o);
  });
  expect_state_round_trip([](Communicator& c) {
    PowerSgdOptions o;
    o.start_iter = 1;
    return std::make_unique<PowerSgdCompressor>(c, o);
  });
  expect_state_round_trip(
      [](Communicator& c) { return std::make_unique<Fp16Compressor>(c, true); });
  expect_state_round_trip(
      [](Communicator& c) { return std::make_unique<Int8Compressor>(c, true); });
  expect_state_round_trip([](Communicator& c) {
    return std::make_unique<Int4Compressor>(c, Int4Options{16, true});
  });
  expect_state_round_trip([](Communicator& c) {
    return std::make_unique<TopkCompressor>(c, TopkOptions{0.05, 16, 0, true});
  });
  expect_state_round_trip([](Communicator& c) {
    return std::make_unique<TopkCompressor>(c, TopkOptions{0.1, 4, 16, true, 0.95});
  });
}

// Chunked top-k with a decaying memory, on one rank (the average is what this rank sent):
// x = g + beta e, e = x - sent, step after step.
TEST(Compressors, ChunkedTopkKeepsTheDecayedMemory) {
  testing::run_ranks(1, [](int, std::shared_ptr<Communicator> comm) {
    const double beta = 0.9;
    TopkCompressor c(*comm, TopkOptions{0.25, 4, 8, true, beta});
    at::Tensor e = at::zeros({40});
    for (int64_t s = 0; s < 4; ++s) {
      std::vector<at::Tensor> g{at::randn({40})}, out{at::zeros({40})};
      ASSERT_TRUE(c.start(g, s)->finish(out).is_ok());
      at::Tensor x = g[0] + e * beta;
      // A quarter of each chunk of 8 at most is sent, the largest of x.
      EXPECT_LE(out[0].ne(0).sum().item<int64_t>(), 10);
      e = x - out[0];
      at::Tensor kept;
      for (auto& [name, t] : c.state()) {
        if (name == "topk/e/0") kept = t;
      }
      ASSERT_TRUE(kept.defined());
      EXPECT_TRUE(at::allclose(kept, e, 1e-6, 1e-6)) << "step " << s;
    }
  });
}

TEST(Compressors, RestoredStateOfTheWrongShapeIsAnError) {
  testing::run_ranks(1, [](int, std::shared_ptr<Communicator> comm) {
    Int8Compressor c(*comm, true);
    ASSERT_TRUE(c.load_state({{"int8/e/0", at::zeros({3})}}).is_ok());
    std::vector<at::Tensor> g{at::ones({4})}, out{at::zeros({4})};
    EXPECT_FALSE(c.start(g, 0)->finish(out).is_ok());
    EXPECT_FALSE(c.load_state({{"dgc/v/0", at::zeros({3})}}).is_ok());
    std::vector<std::unique_ptr<GradientReducer>> others;
    others.push_back(std::make_unique<Int4Compressor>(*comm, Int4Options{}));
    others.push_back(std::make_unique<TopkCompressor>(*comm, TopkOptions{}));
    for (auto& other : others) {
      ASSERT_TRUE(other->load_state({{other->name() + "/e/0", at::zeros({3})}}).is_ok());
      std::vector<at::Tensor> out4{at::zeros({4})};
      Status s = other->start(g, 0)->finish(out4);
      EXPECT_FALSE(s.is_ok()) << other->name();
      EXPECT_NE(s.message().find(other->name() + "/e/0"), std::string::npos) << s.message();
      EXPECT_FALSE(other->load_state({{"int8/e/0", at::zeros({4})}}).is_ok()) << other->name();
    }
  });
}

std::vector<std::unique_ptr<GradientReducer>> all_compressors(Communicator& c) {
  std::vector<std::unique_ptr<GradientReducer>> out;
  DgcOptions d = dgc_options(0.001, true, 0.9, /*min_numel=*/1);
  d.warmup_densities = {0.5};
  d.warmup_steps = 1;
  out.push_back(std::make_unique<DgcCompressor>(c, d));
  d.value_type = at::kHalf;
  out.push_back(std::make_unique<DgcCompressor>(c, d));
  PowerSgdOptions p;
  p.start_iter = 1;
  p.min_compression_rate = 0;
  out.push_back(std::make_unique<PowerSgdCompressor>(c, p));
  out.push_back(std::make_unique<Fp16Compressor>(c, true));
  out.push_back(std::make_unique<Int8Compressor>(c, true));
  out.push_back(std::make_unique<Int4Compressor>(c, Int4Options{2, true}));
  out.push_back(std::make_unique<Int4Compressor>(c, Int4Options{64, false}));
  out.push_back(std::make_unique<TopkCompressor>(c, TopkOptions{0.001, 32, 0, true}));
  out.push_back(std::make_unique<TopkCompressor>(c, TopkOptions{0.3, 16, 0, false}));
  out.push_back(std::make_unique<TopkCompressor>(c, TopkOptions{0.25, 4, 8, true, 0.95}));
  out.push_back(std::make_unique<TopkCompressor>(c, TopkOptions{0.1, 8, 300, false}));
  out.push_back(std::make_unique<TopkCompressor>(c, TopkOptions{0.5, 32, 2, true}));
  return out;
}

TEST(Compressors, NoHangOnEmptyOrTinyTensors) {
  const std::vector<Shapes> cases = {
      {},                                // nothing at all
      {{0}},                             // one empty tensor
      {{0, 3}, {1}},                     // empty matrix + scalar-like vector
      {{1, 1}, {2, 1}, {1, 5}, {0, 0}},  // tiny matrices (k = 1), degenerate shapes
  };
  testing::run_ranks(
      2,
      [&](int rank, std::shared_ptr<Communicator> comm) {
        for (const auto& shapes : cases) {
          for (auto& c : all_compressors(*comm)) {
            for (int64_t step = 0; step < 3; ++step) {
              auto g = grads_for(shapes, rank, step);
              auto out = zeros_like_all(g);
              Status s = c->start(g, step)->finish(out);
              ASSERT_TRUE(s.is_ok()) << c->name() << ": " << s.to_string();
              for (auto& t : out) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << c->name();
            }
          }
        }
      },
      std::chrono::seconds(20));
}

// Records each collective's kind and size, to compare across ranks.
class RecordingCommunicator : public ForwardingCommunicator {
 public:
  using ForwardingCommunicator::ForwardingCommunicator;
  WorkPtr all_reduce(std::vector<at::Tensor>& t, ReduceOp op) override {
    log_.push_back("all_reduce " + describe(t));
    return inner_->all_reduce(t, op);
  }
  WorkPtr all_gather(std::vector<at::Tensor>& o, at::Tensor& i) override {
    log_.push_back("all_gather " + describe({i}));
    for (const auto& t : o) {
      EXPECT_EQ(t.sizes(), i.sizes());
    }
    return inner_->all_gather(o, i);
  }
  WorkPtr broadcast(std::vector<at::Tensor>& t, int root) override {
    log_.push_back("broadcast " + describe(t));
    return inner_->broadcast(t, root);
  }
  const std::vector<std::string>& log() const { return log_; }

 private:
  static std::string describe(const std::vector<at::Tensor>& ts) {
    std::string s;
    for (const auto& t : ts) {
      EXPECT_GT(t.numel(), 0) << "empty tensor in a collective";
      s += std::string(c10::toString(t.scalar_type())) + c10::str(t.sizes()) + ";";
    }
    return s;
  }
  std::vector<std::string> log_;
};

TEST(Compressors, EveryRankIssuesTheSameCollectivesInTheSameOrder) {
  std::mutex mu;
  std::vector<std::vector<std::string>> logs(3);
  testing::run_ranks(3, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto rec = std::make_shared<RecordingCommunicator>(comm);
    for (auto& c : all_compressors(*rec)) {
      for (int64_t step = 0; step < 4; ++step) {
        // Different sparsity per rank: selection differs, wire sizes must not.
        auto g = grads_for(kModel, rank, step, 0.3 * rank);
        auto out = zeros_like_all(g);
        ASSERT_TRUE(c->start(g, step)->finish(out).is_ok()) << c->name();
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    logs[static_cast<size_t>(rank)] = rec->log();
  });
  ASSERT_FALSE(logs[0].empty());
  EXPECT_EQ(logs[0], logs[1]);
  EXPECT_EQ(logs[0], logs[2]);
}

TEST(Factory, DgcWireBytesAndCompressionRatio) {
  // One 1000 x 1000 matrix at density 0.001 on 4 ranks: k = 1000 entries of 2 (low index) +
  // 2 (fp16 value) bytes plus 16 chunk counts of 4 bytes, sent (N-1) = 3 times by a ring
  // allgather; dense fp32 ring all-reduce would send 2 (N-1)/N * 4 MB.
  testing::run_ranks(4, [](int rank, std::shared_ptr<Communicator> comm) {
    JobSpec spec;
    spec.compress.method = CompressMethod::kDgc;
    spec.compress.density = 0.001;
    spec.compress.warmup_steps = 0;
    spec.compress.warmup_epochs = 0;
    spec.compress.value_bits = 16;
    auto r = make_gradient_reducer(spec, *comm, ReducerContext{});
    ASSERT_TRUE(r.is_ok());
    auto& reducer = *r;
    EXPECT_TRUE(reducer->owns_momentum());
    for (int64_t step = 0; step < 3; ++step) {
      auto g = grads_for({{1000, 1000}}, rank, step);
      auto out = zeros_like_all(g);
      ASSERT_TRUE(reducer->start(g, step)->finish(out).is_ok());
      EXPECT_EQ((out[0] != 0).sum().item<int64_t>() <= 4000, true);
    }
    const ReducerStats& s = reducer->stats();
    EXPECT_EQ(s.wire_bytes, 3 * 3 * (1000 * 4 + 16 * 4));
    EXPECT_EQ(s.dense_bytes, 3 * 4000000);
    EXPECT_NEAR(s.compression_ratio(4), 1.5 * 4e6 / (3 * (4000 + 64)), 1e-6);
    EXPECT_GT(s.compression_ratio(4), 300);
    EXPECT_GT(s.compress_s, 0);

    spec.compress.method = CompressMethod::kNone;
    auto dense = make_gradient_reducer(spec, *comm, ReducerContext{});
    ASSERT_TRUE(dense.is_ok());
    auto g = grads_for({{1000, 1000}}, rank, 0);
    auto out = zeros_like_all(g);
    ASSERT_TRUE((*dense)->start(g, 0)->finish(out).is_ok());
    EXPECT_NEAR((*dense)->stats().compression_ratio(4), 1.0, 1e-9);
    EXPECT_FALSE((*dense)->owns_momentum());
  });
}

// One rank's side of int4 or topk, simulated with the codec alone: x = g + e, the payload this
// rank sends, e = x − what it sent. `decoded` is the payload as every receiver decodes it.
struct SimRank {
  std::vector<at::Tensor> e;  // per tensor, flat
};

// What a compressor of `method` ("int4" / "topk") must output on every rank for one step, given
// every rank's gradients, computed by hand: each rank's decoded payload, summed in rank order
// (int4: decoded vectors; topk: scatter-adds into zeros), divided by N.
std::vector<at::Tensor> simulate_step(const std::string& method, std::vector<SimRank>& ranks,
                                      const std::vector<std::vector<at::Tensor>>& grads,
                                      int64_t block, double density) {
  const size_t world = ranks.size();
  std::vector<int64_t> numels;
  for (const auto& t : grads[0]) numels.push_back(t.numel());
  int64_t n = std::accumulate(numels.begin(), numels.end(), int64_t{0});
  at::Tensor acc;
  for (size_t r = 0; r < world; ++r) {
    if (ranks[r].e.empty()) {
      for (int64_t m : numels) ranks[r].e.push_back(at::zeros({m}));
    }
    std::vector<at::Tensor> parts;
    for (size_t i = 0; i < numels.size(); ++i)
      parts.push_back(grads[r][i].reshape({-1}) + ranks[r].e[i]);
    at::Tensor x = at::cat(parts);
    at::Tensor sent;  // dense, what this rank's payload stands for
    if (method == "int4") {
      sent = decode_int4(encode_int4(x, numels, block), numels, block);
      acc = r == 0 ? sent.clone() : acc.add_(sent);
    } else {
      int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(density * n)));
      at::Tensor order = std::get<1>(at::sort(x.abs(), 0, /*descending=*/true)).narrow(0, 0, k);
      at::Tensor idx = std::get<0>(at::sort(order));
      sent = at::zeros({n}).index_put_({idx}, x.index_select(0, idx));
      if (r == 0) acc = at::zeros({n});
      acc.index_add_(0, idx, x.index_select(0, idx));
    }
    at::Tensor residual = x - sent;
    int64_t off = 0;
    for (size_t i = 0; i < numels.size(); ++i) {
      ranks[r].e[i] = residual.narrow(0, off, numels[i]).clone();
      off += numels[i];
    }
  }
  acc.div_(static_cast<double>(world));
  std::vector<at::Tensor> out;
  int64_t off = 0;
  for (size_t i = 0; i < numels.size(); ++i) {
    out.push_back(acc.narrow(0, off, numels[i]).view_as(grads[0][i]).clone());
    off += numels[i];
  }
  return out;
}

// 2 and 3 ranks: every rank's output is bit-identical to the by-hand simulation of all ranks
// (and so to every other rank's), over steps where the error feedback carries over.
void expect_matches_simulation(const std::string& method, int64_t block, double density) {
  const Shapes shapes = {{16, 20}, {16}, {8, 4, 3, 3}, {8}, {3, 2}, {10, 16}, {1}};
  for (int world : {2, 3}) {
    const int64_t steps = 4;
    std::vector<SimRank> sim(static_cast<size_t>(world));
    std::vector<std::vector<at::Tensor>> expected;
    for (int64_t s = 0; s < steps; ++s) {
      std::vector<std::vector<at::Tensor>> g;
      for (int r = 0; r < world; ++r) g.push_back(grads_for(shapes, r, s, 0.2 * r));
      expected.push_back(simulate_step(method, sim, g, block, density));
    }
    testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
      std::unique_ptr<GradientReducer> c;
      if (method == "int4") {
        c = std::make_unique<Int4Compressor>(*comm, Int4Options{block, true});
      } else {
        c = std::make_unique<TopkCompressor>(*comm, TopkOptions{density, 32, 0, true});
      }
      for (int64_t s = 0; s < steps; ++s) {
        auto g = grads_for(shapes, rank, s, 0.2 * rank);
        auto out = zeros_like_all(g);
        ASSERT_TRUE(c->start(g, s)->finish(out).is_ok());
        for (size_t i = 0; i < out.size(); ++i) {
          EXPECT_TRUE(at::equal(out[i], expected[static_cast<size_t>(s)][i]))
              << method << " world " << world << " rank " << rank << " step " << s << " tensor "
              << i << " max diff "
              << (out[i] - expected[static_cast<size_t>(s)][i]).abs().max().item<double>();
        }
      }
      // The memories are the simulation's too: checkpoints carry exactly these.
      auto state = c->state();
      ASSERT_EQ(state.size(), shapes.size());
      for (const auto& [name, t] : state) {
        size_t i = std::stoul(name.substr(name.rfind('/') + 1));
        EXPECT_EQ(name, method + "/e/" + std::to_string(i));
        EXPECT_TRUE(at::equal(t, sim[static_cast<size_t>(rank)].e[i])) << name << " rank " << rank;
      }
    });
  }
}

TEST(Int4Compressor, EveryRankOutputsTheAverageOfTheDecodedPayloads) {
  expect_matches_simulation("int4", 64, 0);
  expect_matches_simulation("int4", 4, 0);
}

TEST(Int4Compressor, RebuildsItsLayoutWhenTheShapesChange) {
  // Without error feedback the output of one rank is decode(encode(x)) for whatever shapes
  // come, also when they change between steps (the layout is cached per shape set).
  testing::run_ranks(1, [](int, std::shared_ptr<Communicator> comm) {
    Int4Compressor c(*comm, Int4Options{8, false});
    const std::vector<Shapes> shapes = {{{5, 3}, {4}}, {{9}}, {{5, 3}, {4}}, {{2, 2}, {0}, {13}}};
    for (size_t step = 0; step < shapes.size(); ++step) {
      auto g = grads_for(shapes[step], 0, static_cast<int64_t>(step));
      auto out = zeros_like_all(g);
      ASSERT_TRUE(c.start(g, static_cast<int64_t>(step))->finish(out).is_ok());
      std::vector<int64_t> numels;
      std::vector<at::Tensor> flat;
      for (const auto& t : g) {
        numels.push_back(t.numel());
        flat.push_back(t.reshape({-1}));
      }
      at::Tensor expect = decode_int4(encode_int4(at::cat(flat), numels, 8), numels, 8);
      std::vector<at::Tensor> got;
      for (const auto& t : out) got.push_back(t.reshape({-1}));
      EXPECT_TRUE(at::equal(at::cat(got), expect)) << "step " << step;
    }
  });
}

TEST(TopkCompressor, EveryRankOutputsTheAverageOfTheScatteredPayloads) {
  expect_matches_simulation("topk", 0, 0.02);
  expect_matches_simulation("topk", 0, 0.3);
}

// One rank: what was applied plus what the memory keeps is exactly what there was to send,
// bit for bit (the average of one rank is its own decoded payload).
void expect_exact_feedback(GradientReducer& c) {
  const Shapes shapes = {{30, 40}, {7}};
  std::vector<at::Tensor> e_old = {at::zeros({1200}), at::zeros({7})};
  for (int64_t step = 0; step < 4; ++step) {
    auto g = grads_for(shapes, 0, step);
    auto out = zeros_like_all(g);
    ASSERT_TRUE(c.start(g, step)->finish(out).is_ok());
    std::vector<at::Tensor> e_new(2);
    for (auto& [name, t] : c.state())
      e_new[std::stoul(name.substr(name.rfind('/') + 1))] = t.clone();
    for (size_t i = 0; i < 2; ++i) {
      ASSERT_TRUE(e_new[i].defined()) << c.name();
      EXPECT_TRUE(at::equal(out[i].reshape({-1}) + e_new[i], g[i].reshape({-1}) + e_old[i]))
          << c.name() << " step " << step << " tensor " << i;
    }
    EXPECT_GT(e_new[0].abs().max().item<double>(), 0.01) << c.name() << ": nothing was kept back";
    e_old = e_new;
  }
}

TEST(Compressors, Int4AndTopkFeedBackExactlyWhatWasNotSent) {
  testing::run_ranks(1, [](int, std::shared_ptr<Communicator> comm) {
    Int4Compressor int4(*comm, Int4Options{});
    expect_exact_feedback(int4);
    TopkCompressor topk(*comm, TopkOptions{0.02, 32, 0, true});
    expect_exact_feedback(topk);
    TopkCompressor topk16(*comm, TopkOptions{0.02, 16, 0, true});
    expect_exact_feedback(topk16);
  });
}

TEST(Compressors, Int4AndTopkSumOverStepsMatchesDenseSum) {
  // Several ranks: the sum of the applied averages plus the average of what every rank still
  // holds equals the sum of the dense averages.
  for (std::string method : {"int4", "topk"}) {
    testing::run_ranks(3, [&](int rank, std::shared_ptr<Communicator> comm) {
      std::unique_ptr<GradientReducer> c;
      if (method == "int4") {
        c = std::make_unique<Int4Compressor>(*comm, Int4Options{});
      } else {
        c = std::make_unique<TopkCompressor>(*comm, TopkOptions{0.05, 32, 0, true});
      }
      at::Tensor applied = at::zeros({30, 40}), dense = at::zeros({30, 40});
      for (int64_t step = 0; step < 6; ++step) {
        auto g = grads_for({{30, 40}}, rank, step);
        auto out = zeros_like_all(g);
        ASSERT_TRUE(c->start(g, step)->finish(out).is_ok());
        applied += out[0];
        dense += dense_average(*comm, g)[0];
      }
      auto state = c->state();
      ASSERT_EQ(state.size(), 1u);
      std::vector<at::Tensor> p{state[0].second.view({30, 40}).clone()};
      ASSERT_TRUE(all_reduce_sync(*comm, p).is_ok());
      EXPECT_TRUE(at::allclose(applied + p[0] / 3, dense, 1e-5, 1e-5)) << method;
      EXPECT_FALSE(at::allclose(applied, dense, 1e-3, 1e-3)) << method << ": nothing is pending";
    });
  }
}

TEST(Factory, Int4AndTopkWireBytesFollowTheirFormats) {
  // A 1000 x 1000 matrix and a 10-vector on 4 ranks; an allgather sends a payload N − 1 times.
  const std::vector<int64_t> numels = {1000 * 1000, 10};
  const int64_t n = numels[0] + numels[1];
  const int world = 4, steps = 3;
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    for (const char* method : {"int4", "topk"}) {
      JobSpec spec;
      ASSERT_TRUE(parse_spec_enum(method, &spec.compress.method)) << method;
      spec.compress.density = kTopkDefaultDensity;
      auto r = make_gradient_reducer(spec, *comm, ReducerContext{});
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      auto& reducer = *r;
      EXPECT_EQ(reducer->name(), method);
      EXPECT_FALSE(reducer->owns_momentum());
      for (int64_t step = 0; step < steps; ++step) {
        auto g = grads_for({{1000, 1000}, {10}}, rank, step);
        auto out = zeros_like_all(g);
        ASSERT_TRUE(reducer->start(g, step)->finish(out).is_ok());
      }
      const ReducerStats& s = reducer->stats();
      int64_t payload;
      if (std::string(method) == "int4") {
        // Blocks of 64 within each tensor: ceil(1e6 / 64) + ceil(10 / 64); fp32 scales; 2 per byte.
        int64_t blocks = (numels[0] + 63) / 64 + (numels[1] + 63) / 64;
        payload = blocks * 4 + (n + 1) / 2;
        // About 1/8 of fp32 plus the scales (one fp32 per 64 values).
        EXPECT_NEAR(static_cast<double>(payload) / (4.0 * n), 1.0 / 8 + 1.0 / 64, 1e-4);
      } else {
        int64_t k = static_cast<int64_t>(std::ceil(kTopkDefaultDensity * static_cast<double>(n)));
        payload = k * (4 + 4);
      }
      EXPECT_EQ(s.wire_bytes, steps * (world - 1) * payload) << method;
      EXPECT_EQ(s.dense_bytes, steps * 4 * n) << method;
      EXPECT_EQ(s.reductions, steps) << method;
      EXPECT_GT(s.compress_s, 0) << method;
      EXPECT_NEAR(
          s.compression_ratio(world),
          2.0 * (world - 1) / world * 4.0 * n / ((world - 1) * static_cast<double>(payload)), 1e-9);
    }
  });
}

}  // namespace
}  // namespace tern
