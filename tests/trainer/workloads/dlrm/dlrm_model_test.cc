#include "trainer/workloads/dlrm/dlrm_model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <limits>
#include <map>
#include <mutex>

#include "testing/gloo_group.h"

namespace tern {
namespace {

void one_thread() { torch::set_num_threads(1); }

// The DLRM written plainly, without sharding: full tables, torch's embedding with autograd
// (dense gradients), plain SGD on every parameter. Starts from a DlrmModel's parameters.
struct Reference {
  std::vector<at::Tensor> tables;  // [rows, d]
  std::vector<at::Tensor> params;  // bottom (w, b)..., top (w, b)...
  size_t bottom_layers = 0;

  at::Tensor forward(const Batch& b) {
    at::Tensor z = b.x;
    size_t layers = params.size() / 2;
    for (size_t i = 0; i < bottom_layers; ++i)
      z = torch::relu(torch::linear(z, params[2 * i], params[2 * i + 1]));
    std::vector<at::Tensor> emb;
    for (size_t t = 0; t < tables.size(); ++t)
      emb.push_back(torch::embedding(tables[t], b.sparse.select(1, t)));
    at::Tensor all = torch::cat({z.unsqueeze(1), torch::stack(emb, 1)}, 1);
    const int64_t n = all.size(1), B = b.size();
    std::vector<int64_t> tri;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) tri.push_back(i * n + j);
    at::Tensor inter =
        torch::bmm(all, all.transpose(1, 2)).view({B, -1}).index_select(1, at::tensor(tri));
    at::Tensor h = torch::cat({z, inter}, 1);
    for (size_t i = bottom_layers; i < layers; ++i) {
      h = torch::linear(h, params[2 * i], params[2 * i + 1]);
      if (i + 1 < layers) h = torch::relu(h);
    }
    return h.view({B});
  }

  void step(const Batch& b, double lr) {
    at::Tensor loss =
        torch::binary_cross_entropy_with_logits(forward(b), b.y, {}, {}, at::Reduction::Sum) /
        static_cast<double>(b.size());
    loss.backward();
    torch::NoGradGuard no_grad;
    for (auto* group : {&tables, &params}) {
      for (auto& p : *group) {
        p.sub_(p.grad(), lr);
        p.mutable_grad() = at::Tensor();
      }
    }
  }
};

DlrmOptions small_options() {
  DlrmOptions o;
  o.table_sizes = {40, 7, 100, 25, 60, 3, 80, 33};
  o.embedding_dim = 4;
  o.bottom_mlp = {8, 4};
  o.top_mlp = {8, 1};
  o.lr = 0.5;
  o.seed = 3;
  return o;
}

SyntheticCtrOptions small_data(const DlrmOptions& o) {
  SyntheticCtrOptions d;
  d.table_sizes = o.table_sizes;
  d.zipf_alpha = 1.2;  // many repeated rows inside a batch
  d.train_size = 4096;
  d.test_size = 256;
  d.signal_tables = 3;
  return d;
}

Batch slice(const Batch& b, int64_t begin, int64_t n) {
  return Batch{b.x.narrow(0, begin, n), b.sparse.narrow(0, begin, n), b.y.narrow(0, begin, n)};
}

TEST(DlrmSharding, RoundRobinAndBalancedAreDeterministicAndCoverEveryRank) {
  std::vector<int64_t> sizes = {10, 1000, 20, 500, 30, 5, 400};
  auto rr = shard_tables(sizes, 3, EmbeddingSharding::kRoundRobin);
  ASSERT_TRUE(rr.is_ok());
  EXPECT_EQ(*rr, (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));
  auto bal = shard_tables(sizes, 3, EmbeddingSharding::kBalanced);
  ASSERT_TRUE(bal.is_ok());
  // 1000 -> r0, 500 -> r1, 400 -> r2, then the rest to the lightest rank.
  EXPECT_EQ((*bal)[1], 0);
  EXPECT_EQ((*bal)[3], 1);
  EXPECT_EQ((*bal)[6], 2);
  std::vector<int64_t> rows(3, 0);
  for (size_t t = 0; t < sizes.size(); ++t) rows[(*bal)[t]] += sizes[t];
  EXPECT_EQ(rows, (std::vector<int64_t>{1000, 500, 465}));
  EXPECT_EQ(*bal, *shard_tables(sizes, 3, EmbeddingSharding::kBalanced));
  auto too_many = shard_tables({1, 2}, 3, EmbeddingSharding::kRoundRobin);
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.status().message().find("2 embedding tables cannot be sharded over 3 ranks"),
            std::string::npos);
}

TEST(DlrmOptions, FromSpecChecksShapes) {
  JobSpec spec;
  spec.model.type = ModelType::kDlrm;
  spec.data.source = DataSource::kSyntheticCtr;
  spec.data.num_tables = 3;
  spec.data.table_size = 50;
  auto o = DlrmOptions::from_spec(spec);
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ(o->table_sizes, (std::vector<int64_t>{50, 50, 50}));
  EXPECT_EQ(o->bottom_mlp.back(), 16);
  spec.model.top_mlp = {64, 2};
  EXPECT_NE(DlrmOptions::from_spec(spec).status().message().find("top_mlp must end in 1"),
            std::string::npos);
}

// Runs `steps` steps of a global batch of `global` samples split over `world` ranks as
// `splits` (rows per rank), and compares with the reference on the whole global batch.
void expect_equals_reference(int world, const std::vector<int64_t>& splits, int steps, double tol,
                             EmbeddingSharding sharding = EmbeddingSharding::kRoundRobin) {
  DlrmOptions o = small_options();
  o.sharding = sharding;
  SyntheticCtr data(small_data(o));
  int64_t global = 0;
  for (int64_t s : splits) global += s;

  // The reference starts from a 1-rank trainer's initial parameters.
  Reference ref;
  testing::run_ranks(1, [&](int, std::shared_ptr<Communicator> comm) {
    one_thread();
    auto t = DlrmModel::create(o, *comm);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    for (size_t k = 0; k < o.table_sizes.size(); ++k)
      ref.tables.push_back((*t)->table(k).clone().requires_grad_(true));
    for (auto& p : (*t)->dense_parameters())
      ref.params.push_back(p.detach().clone().requires_grad_(true));
    ref.bottom_layers = o.bottom_mlp.size();
  });
  std::vector<Batch> batches;
  for (int s = 0; s < steps; ++s) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < global; ++i) idx.push_back(s * global + i);
    batches.push_back(data.train_batch(idx));
    ref.step(batches.back(), o.lr);
  }

  std::mutex mu;
  std::map<int64_t, at::Tensor> tables;
  std::vector<std::vector<at::Tensor>> dense(world);
  std::vector<std::map<int64_t, at::Tensor>> counts(world);
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    one_thread();
    auto t = DlrmModel::create(o, *comm);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    int64_t begin = 0;
    for (int r = 0; r < rank; ++r) begin += splits[r];
    for (const Batch& b : batches) {
      auto st = (*t)->step(slice(b, begin, splits[rank]));
      ASSERT_TRUE(st.is_ok()) << st.status().to_string();
      EXPECT_EQ(st->samples, splits[rank]);
      EXPECT_EQ(st->global_samples, global);
    }
    std::lock_guard<std::mutex> lock(mu);
    for (int64_t k : (*t)->owned_tables()) {
      tables[k] = (*t)->table(k).clone();
      counts[rank][k] = (*t)->access_counts(k).clone();
    }
    for (auto& p : (*t)->dense_parameters()) dense[rank].push_back(p.detach().clone());
  });

  ASSERT_EQ(tables.size(), o.table_sizes.size());
  for (size_t k = 0; k < ref.tables.size(); ++k) {
    if (tol == 0) {
      EXPECT_TRUE(at::equal(tables[k], ref.tables[k].detach()))
          << "table " << k << " differs by "
          << (tables[k] - ref.tables[k].detach()).abs().max().item<double>();
    } else {
      EXPECT_TRUE(at::allclose(tables[k], ref.tables[k].detach(), 0, tol))
          << "table " << k << " differs by "
          << (tables[k] - ref.tables[k].detach()).abs().max().item<double>();
    }
  }
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(dense[r].size(), ref.params.size());
    for (size_t i = 0; i < ref.params.size(); ++i) {
      at::Tensor want = ref.params[i].detach();
      if (tol == 0) {
        EXPECT_TRUE(at::equal(dense[r][i], want))
            << "rank " << r << " param " << i << " differs by "
            << (dense[r][i] - want).abs().max().item<double>();
      } else {
        EXPECT_TRUE(at::allclose(dense[r][i], want, 0, tol))
            << "rank " << r << " param " << i << " differs by "
            << (dense[r][i] - want).abs().max().item<double>();
      }
      if (r > 0) EXPECT_TRUE(at::equal(dense[r][i], dense[0][i])) << "replicas diverged";
    }
  }
  // Access counts: every real lookup of every step, counted once on the owner.
  for (int r = 0; r < world; ++r) {
    for (auto& [k, c] : counts[r]) {
      at::Tensor want = at::zeros({o.table_sizes[k]}, at::kLong);
      for (const Batch& b : batches)
        want.index_add_(0, b.sparse.select(1, k), at::ones({global}, at::kLong));
      EXPECT_TRUE(at::equal(c, want)) << "access counts of table " << k;
    }
  }
}

TEST(Dlrm, OneRankEqualsTheUnshardedModelExactly) { expect_equals_reference(1, {24}, 5, 0); }

TEST(Dlrm, TwoRanksEqualOneRank) { expect_equals_reference(2, {12, 12}, 5, 1e-5); }

TEST(Dlrm, FourRanksUnevenBatchesAndAnEmptyRankEqualOneRank) {
  expect_equals_reference(4, {10, 0, 9, 5}, 5, 1e-5, EmbeddingSharding::kBalanced);
}

TEST(Dlrm, ShardedStateRoundTripsAndRefusesAWrongShard) {
  DlrmOptions o = small_options();
  SyntheticCtr data(small_data(o));
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    one_thread();
    auto made = DlrmModel::create(o, *comm);
    ASSERT_TRUE(made.is_ok());
    DlrmModel& t = **made;
    EXPECT_EQ(t.owned_tables(),
              rank == 0 ? (std::vector<int64_t>{0, 2, 4, 6}) : (std::vector<int64_t>{1, 3, 5, 7}));
    EXPECT_FALSE(t.table(rank == 0 ? 1 : 0).defined());
    Batch b = data.train_batch({rank * 8 + 0, rank * 8 + 1, rank * 8 + 2, rank * 8 + 3});
    ASSERT_TRUE(t.step(b).is_ok());
    // The rows updated are exactly the rows both ranks looked up in owned tables.
    Batch both = data.train_batch({0, 1, 2, 3, 8, 9, 10, 11});
    for (int64_t k : t.owned_tables()) {
      auto [want, unused] = at::_unique(both.sparse.select(1, k), /*sorted=*/true);
      EXPECT_TRUE(at::equal(t.updated_rows(k), want)) << "table " << k;
    }
    t.mark_updates();
    for (int64_t k : t.owned_tables()) EXPECT_EQ(t.updated_rows(k).numel(), 0);

    // Snapshot, train on, restore: the shard is back; the replicated state is separate.
    NamedTensors snap;
    for (auto& [name, v] : t.sharded_state()) snap.emplace_back(name, v.clone());
    NamedTensors dense_snap;
    for (auto& [name, v] : t.replicated_state()) dense_snap.emplace_back(name, v.detach().clone());
    EXPECT_EQ(snap.size(), 8u);
    EXPECT_EQ(snap[0].first, rank == 0 ? "embedding.0.weight" : "embedding.1.weight");
    EXPECT_EQ(snap[1].first, rank == 0 ? "embedding.0.access_count" : "embedding.1.access_count");
    EXPECT_EQ(dense_snap.front().first, "bottom.0.weight");
    EXPECT_EQ(dense_snap.back().first, "top.1.bias");
    ASSERT_TRUE(t.step(data.train_batch({100 + rank, 102 + rank})).is_ok());
    int64_t k0 = t.owned_tables()[0];
    EXPECT_FALSE(at::equal(t.table(k0), snap[0].second));
    ASSERT_TRUE(t.load_sharded_state(snap).is_ok());
    EXPECT_TRUE(at::equal(t.table(k0), snap[0].second));
    EXPECT_TRUE(at::equal(t.access_counts(k0), snap[1].second));
    ASSERT_TRUE(t.load_replicated_state(dense_snap).is_ok());
    EXPECT_TRUE(at::equal(t.dense_parameters()[0], dense_snap[0].second));

    // A shard of the other rank is refused, naming the entry.
    NamedTensors wrong{
        {rank == 0 ? "embedding.1.weight" : "embedding.0.weight", at::zeros({7, 4})}};
    Status s = t.load_sharded_state(wrong);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("does not belong to rank"), std::string::npos) << s.message();
    // Partial (row) restore.
    at::Tensor rows = at::tensor(std::vector<int64_t>{0, 2}, at::kLong);
    ASSERT_TRUE(t.load_rows(k0, rows, at::full({2, 4}, 7.0f)).is_ok());
    EXPECT_EQ(t.table(k0)[2][3].item<float>(), 7.0f);
    EXPECT_FALSE(t.load_rows(k0, rows, at::zeros({2, 3})).is_ok());
    EXPECT_FALSE(t.load_rows(rank == 0 ? 1 : 0, rows, at::zeros({2, 4})).is_ok());

    // A survivor's MLPs reach a rank that lost them.
    if (rank == 1) {
      torch::NoGradGuard g;
      for (auto& p : t.dense_parameters()) p.zero_();
    }
    ASSERT_TRUE(t.broadcast_replicated(0).is_ok());
    EXPECT_TRUE(at::equal(t.dense_parameters()[0], dense_snap[0].second));
  });
}

TEST(Dlrm, RejectsRowIdsOutsideTheTable) {
  DlrmOptions o = small_options();
  testing::run_ranks(1, [&](int, std::shared_ptr<Communicator> comm) {
    auto t = DlrmModel::create(o, *comm);
    ASSERT_TRUE(t.is_ok());
    Batch b = SyntheticCtr(small_data(o)).train_batch({0, 1});
    b.sparse[1][5] = 3;  // table 5 has 3 rows
    auto st = (*t)->step(b);
    EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.status().message().find("table 5 outside [0, 3): 3"), std::string::npos)
        << st.status().message();
  });
}

// Issue 18 item 4: one rank's non-finite step is left out on every rank (check_finite): the
// ranks agree, nobody's tables or MLPs change, and the next finite step trains as usual.
TEST(Dlrm, NonFiniteStepOnOneRankUpdatesNothingAnywhere) {
  DlrmOptions o = small_options();
  o.check_finite = true;
  SyntheticCtr data(small_data(o));
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    one_thread();
    auto made = DlrmModel::create(o, *comm);
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
    DlrmModel& t = **made;
    // Copies: the state accessors return the live tensors.
    auto copy = [](NamedTensors state) {
      for (auto& [name, tensor] : state) tensor = tensor.clone();
      return state;
    };
    auto dense0 = copy(t.replicated_state());
    auto shard0 = copy(t.sharded_state());
    Batch b = data.train_batch({rank * 4, rank * 4 + 1, rank * 4 + 2, rank * 4 + 3});
    if (rank == 1) b.x[2][0] = std::numeric_limits<float>::quiet_NaN();
    auto st = t.step(b);
    ASSERT_TRUE(st.is_ok()) << st.status().to_string();
    EXPECT_EQ(st->nonfinite_ranks, std::vector<int>{1}) << "rank " << rank;
    auto dense1 = t.replicated_state();
    auto shard1 = t.sharded_state();
    ASSERT_EQ(dense0.size(), dense1.size());
    for (size_t i = 0; i < dense0.size(); ++i)
      EXPECT_TRUE(at::equal(dense0[i].second, dense1[i].second))
          << "rank " << rank << " " << dense0[i].first;
    ASSERT_EQ(shard0.size(), shard1.size());
    for (size_t i = 0; i < shard0.size(); ++i)
      EXPECT_TRUE(at::equal(shard0[i].second, shard1[i].second))
          << "rank " << rank << " " << shard0[i].first;
    // A finite step afterwards: agreed finite, and it does train.
    Batch good = data.train_batch({8 + rank * 4, 9 + rank * 4, 10 + rank * 4, 11 + rank * 4});
    auto st2 = t.step(good);
    ASSERT_TRUE(st2.is_ok()) << st2.status().to_string();
    EXPECT_TRUE(st2->nonfinite_ranks.empty());
    EXPECT_FALSE(at::equal(dense0.front().second, t.replicated_state().front().second));
  });
}

TEST(Dlrm, TablesLargerThanTheMemoryAreRefusedBeforeAllocating) {
  DlrmOptions o = small_options();
  o.table_sizes = {int64_t{1} << 40, 7};  // 1 Ti rows of 4 floats: far beyond any machine
  testing::run_ranks(1, [&](int, std::shared_ptr<Communicator> comm) {
    auto t = DlrmModel::create(o, *comm);
    ASSERT_FALSE(t.is_ok());
    EXPECT_EQ(t.status().code(), StatusCode::kResourceExhausted) << t.status().to_string();
    EXPECT_NE(t.status().message().find("GiB available"), std::string::npos)
        << t.status().message();
  });
  // An explicit limit below what small tables need: refused the same way.
  DlrmOptions tight = small_options();
  tight.memory_limit_bytes = 100;
  testing::run_ranks(1, [&](int, std::shared_ptr<Communicator> comm) {
    auto t = DlrmModel::create(tight, *comm);
    EXPECT_EQ(t.status().code(), StatusCode::kResourceExhausted) << t.status().to_string();
  });
}

// Trains the synthetic CTR set and evaluates on its test split.
DlrmMetrics train_synthetic(int world, int steps, int64_t batch, DlrmMetrics* before) {
  DlrmOptions o;  // 26 tables x 1000 rows, d = 16, bottom 13-64-16, top 367-64-1
  o.lr = 0.2;
  o.embedding_lr = 0.5;
  SyntheticCtrOptions d;
  d.table_sizes = o.table_sizes;
  d.train_size = steps * batch;
  d.test_size = 4096;
  auto data = std::make_shared<const SyntheticCtr>(d);
  std::vector<DlrmMetrics> after(world), initial(world);
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    one_thread();
    auto t = DlrmModel::create(o, *comm);
    ASSERT_TRUE(t.is_ok());
    SyntheticCtrStream test(data, CtrSplit::kTest, rank, world);
    auto m0 = (*t)->evaluate(test, 512);
    ASSERT_TRUE(m0.is_ok()) << m0.status().to_string();
    initial[rank] = *m0;
    SyntheticCtrStream train(data, CtrSplit::kTrain, rank, world);
    for (int s = 0; s < steps; ++s) {
      auto b = train.next(batch / world);
      ASSERT_TRUE(b.is_ok());
      ASSERT_TRUE((*t)->step(*b).is_ok());
    }
    ASSERT_TRUE(test.rewind().is_ok());
    auto m = (*t)->evaluate(test, 512);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    after[rank] = *m;
  });
  for (int r = 1; r < world; ++r) {
    EXPECT_EQ(after[r].auc, after[0].auc) << "every rank reports the same metrics";
    EXPECT_EQ(after[r].samples, after[0].samples);
  }
  *before = initial[0];
  return after[0];
}

TEST(DlrmTraining, SyntheticReachesAucAboveTheBarOnOneAndTwoRanks) {
  for (int world : {1, 2}) {
    auto start = std::chrono::steady_clock::now();
    DlrmMetrics before;
    DlrmMetrics m = train_synthetic(world, 300, 128, &before);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf(
        "world %d: before auc %.4f logloss %.4f | after 300 steps auc %.4f logloss %.4f accuracy "
        "%.4f "
        "(%lld samples, %.1f s)\n",
        world, before.auc, before.logloss, m.auc, m.logloss, m.accuracy,
        static_cast<long long>(m.samples), secs);
    EXPECT_EQ(m.samples, 4096);
    EXPECT_NEAR(before.auc, 0.5, 0.1) << "an untrained model ranks near random";
    EXPECT_GT(m.auc, 0.75);
    EXPECT_LT(m.logloss, before.logloss);
  }
}

}  // namespace
}  // namespace tern
