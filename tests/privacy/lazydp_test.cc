// LazyDP (trainer/workloads/dlrm/dlrm_model.h, train.dp.embedding_noise): deferring the noise
// of rows a step did not read and applying it when they are next read (or at a flush) gives
// the model eager DP-SGD gives.
//   - lazy_exact (the LazyDP bookkeeping, the owed noise summed from eager's very draws) ends,
//     after N steps on 2 ranks with a changing learning rate, with eager's parameters to float
//     rounding; before the final flush its tables differ (the noise really was deferred).
//   - lazy (one aggregated draw per owed row) adds each never-read row a Gaussian of variance
//     sum_j (lr_j sigma C / B)^2, as eager's k draws do (k draws == one draw with k x variance).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "testing/gloo_group.h"
#include "trainer/workloads/dlrm/ctr_data.h"
#include "trainer/workloads/dlrm/dlrm_model.h"

namespace tern {
namespace {

constexpr int kWorld = 2;

DlrmOptions dp_options(DpEmbeddingNoise noise) {
  DlrmOptions o;
  o.table_sizes = {300, 50, 1000, 120};
  o.embedding_dim = 4;
  o.bottom_mlp = {8, 4};
  o.top_mlp = {8, 1};
  o.lr = 0.3;
  o.seed = 11;
  o.dp = true;
  o.dp_clip = 0.5;
  o.dp_noise_multiplier = 1.3;
  o.dp_embedding_noise = noise;
  return o;
}

SyntheticCtrOptions data_for(const DlrmOptions& o) {
  SyntheticCtrOptions d;
  d.table_sizes = o.table_sizes;
  d.zipf_alpha = 1.2;
  d.train_size = 4096;
  d.test_size = 64;
  d.signal_tables = 2;
  return d;
}

double lr_at(int step) {
  return 0.3 * std::pow(0.8, step);
}  // a schedule: coefficients differ per step

struct Final {
  std::vector<at::Tensor> tables;  // by table id (owned ones only on each rank)
  std::vector<at::Tensor> before_flush;
  std::vector<at::Tensor> dense;
  int64_t noised_rows = 0;
};

// `steps` steps of model.step() on both ranks (batch 32 each); then flush_noise().
std::vector<Final> train(DpEmbeddingNoise noise, int steps) {
  DlrmOptions o = dp_options(noise);
  SyntheticCtr data(data_for(o));
  std::vector<Final> out(kWorld);
  testing::run_ranks(kWorld, [&](int rank, std::shared_ptr<Communicator> comm) {
    torch::set_num_threads(1);
    auto m = DlrmModel::create(o, *comm);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    for (int s = 0; s < steps; ++s) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < 32; ++i)
        idx.push_back((s * kWorld * 32 + rank * 32 + i) % data.train_size());
      (*m)->set_lr(lr_at(s));
      auto st = (*m)->step(data.batch(CtrSplit::kTrain, idx));
      ASSERT_TRUE(st.is_ok()) << st.status().to_string();
    }
    Final& f = out[static_cast<size_t>(rank)];
    for (size_t t = 0; t < o.table_sizes.size(); ++t) {
      at::Tensor w = (*m)->table(static_cast<int64_t>(t));
      f.before_flush.push_back(w.defined() ? w.clone() : w);
    }
    (*m)->flush_noise();
    for (size_t t = 0; t < o.table_sizes.size(); ++t) {
      at::Tensor w = (*m)->table(static_cast<int64_t>(t));
      f.tables.push_back(w.defined() ? w.clone() : w);
      at::Tensor until = (*m)->noised_until(static_cast<int64_t>(t));
      if (until.defined()) {
        EXPECT_EQ(until.min().item<int64_t>(), steps)
            << "table " << t << ": flushed rows are noised until now";
      }
    }
    for (auto& p : (*m)->dense_parameters()) f.dense.push_back(p.detach().clone());
    f.noised_rows = (*m)->noised_rows();
  });
  return out;
}

TEST(LazyDp, LazyExactEqualsEagerAfterNSteps) {
  const int steps = 12;
  auto eager = train(DpEmbeddingNoise::kEager, steps);
  auto lazy = train(DpEmbeddingNoise::kLazyExact, steps);
  int64_t eager_rows = 0, lazy_rows = 0;
  bool deferred = false;
  for (int r = 0; r < kWorld; ++r) {
    for (size_t t = 0; t < eager[r].tables.size(); ++t) {
      if (!eager[r].tables[t].defined()) continue;
      ASSERT_TRUE(lazy[r].tables[t].defined());
      const double diff = (eager[r].tables[t] - lazy[r].tables[t]).abs().max().item<double>();
      EXPECT_LT(diff, 1e-5) << "rank " << r << " table " << t;
      // Before the flush the lazy table lacked the owed noise of unread rows.
      deferred = deferred ||
                 (eager[r].tables[t] - lazy[r].before_flush[t]).abs().max().item<double>() > 1e-3;
    }
    for (size_t i = 0; i < eager[r].dense.size(); ++i) {
      EXPECT_TRUE(at::allclose(eager[r].dense[i], lazy[r].dense[i], 1e-4, 1e-5))
          << "rank " << r << " dense " << i;
    }
    eager_rows += eager[r].noised_rows;
    lazy_rows += lazy[r].noised_rows;
  }
  EXPECT_TRUE(deferred) << "lazy_exact applied every row's noise at every step";
  // The control: LazyDP's aggregated draws are other numbers than eager's (same distribution),
  // and the comparison above sees that.
  auto aggregated = train(DpEmbeddingNoise::kLazy, steps);
  double max_diff = 0;
  for (int r = 0; r < kWorld; ++r) {
    for (size_t t = 0; t < eager[r].tables.size(); ++t) {
      if (eager[r].tables[t].defined()) {
        max_diff = std::max(
            max_diff, (eager[r].tables[t] - aggregated[r].tables[t]).abs().max().item<double>());
      }
    }
  }
  EXPECT_GT(max_diff, 1e-3);
  EXPECT_EQ(eager_rows, steps * (300 + 50 + 1000 + 120));
  EXPECT_LT(lazy_rows, eager_rows / 2);  // each row once per read (hot rows) or once at the flush
}

TEST(LazyDp, AggregatedDrawHasTheSummedVariance) {
  // Rows never read get noise only: their change over the run is N(0, sum_j c_j^2) per value,
  // c_j = lr_j sigma C / B, under eager (k draws) and lazy (one draw) alike.
  const int steps = 6;
  DlrmOptions o = dp_options(DpEmbeddingNoise::kLazy);
  double var = 0;
  for (int s = 0; s < steps; ++s) {
    const double c = lr_at(s) * o.dp_noise_multiplier * o.dp_clip / (32.0 * kWorld);
    var += c * c;
  }
  DlrmOptions init = o;
  init.dp = false;
  std::vector<at::Tensor> start(o.table_sizes.size());
  testing::run_ranks(kWorld, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto m = DlrmModel::create(init, *comm);
    ASSERT_TRUE(m.is_ok());
    for (size_t t = 0; t < o.table_sizes.size(); ++t) {
      if ((*m)->table(static_cast<int64_t>(t)).defined())
        start[t] = (*m)->table(static_cast<int64_t>(t)).clone();
    }
  });
  SyntheticCtr data(data_for(o));
  at::Tensor read = at::zeros({1000}, at::kBool);  // table 2's rows any batch read
  for (int s = 0; s < steps; ++s) {
    for (int r = 0; r < kWorld; ++r) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < 32; ++i)
        idx.push_back((s * kWorld * 32 + r * 32 + i) % data.train_size());
      read.index_fill_(0, data.batch(CtrSplit::kTrain, idx).sparse.select(1, 2), true);
    }
  }
  at::Tensor unread = (~read).nonzero().view({-1});
  ASSERT_GT(unread.numel(), 500);
  for (DpEmbeddingNoise noise : {DpEmbeddingNoise::kEager, DpEmbeddingNoise::kLazy}) {
    SCOPED_TRACE(noise == DpEmbeddingNoise::kEager ? "eager" : "lazy");
    auto runs = train(noise, steps);
    at::Tensor w;
    for (auto& f : runs) {
      if (f.tables[2].defined()) w = f.tables[2];
    }
    ASSERT_TRUE(w.defined());
    at::Tensor delta = (w - start[2]).index_select(0, unread).to(at::kDouble);
    const double got = delta.pow(2).mean().item<double>();
    // Chi-square with ~2800+ degrees of freedom: within 10% with overwhelming probability.
    EXPECT_NEAR(got / var, 1.0, 0.1) << "empirical " << got << " expected " << var;
    EXPECT_NEAR(delta.mean().item<double>(), 0.0,
                4 * std::sqrt(var / static_cast<double>(delta.numel())));
  }
}

}  // namespace
}  // namespace tern
