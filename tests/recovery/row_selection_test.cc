// CPR-MFU / CPR-SSU row selection and partial row checkpoints: under a Zipf access pattern
// the hottest 10 % of rows cover most lookups; SSU samples the requested fraction of the
// updated rows, uniformly and reproducibly; saved rows restore exactly, through a real
// checkpoint file.
#include "recovery/row_selection.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <set>

namespace tern {
namespace {

// Zipf(s) samples over [0, n) by inverse CDF, with a shuffled row order so hot rows are not
// simply the low indices.
at::Tensor zipf_lookups(int64_t n, int64_t count, double s, uint64_t seed,
                        std::vector<int64_t>* rank_to_row) {
  std::mt19937_64 rng(seed);
  std::vector<double> cdf(n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) cdf[i] = (sum += 1.0 / std::pow(static_cast<double>(i + 1), s));
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::uniform_real_distribution<double> u(0, sum);
  std::vector<int64_t> out(count);
  for (auto& x : out) {
    int64_t r = std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin();
    x = perm[std::min(r, n - 1)];
  }
  if (rank_to_row) *rank_to_row = perm;
  return at::tensor(out, at::kLong);
}

TEST(RowSelection, MfuTopTenPercentCoversMostZipfAccesses) {
  const int64_t rows = 10000;
  EmbeddingAccessTracker tracker(rows);
  std::vector<int64_t> hot_order;
  at::Tensor lookups = zipf_lookups(rows, 200000, 1.1, 3, &hot_order);
  // Batches of 26 x 512 lookups, as a DLRM step would record them.
  for (int64_t off = 0; off < lookups.numel(); off += 26 * 512) {
    ASSERT_TRUE(tracker.record(lookups.slice(0, off, off + 26 * 512)).is_ok());
  }
  EXPECT_EQ(tracker.counts().sum().item<int64_t>(), 200000);
  at::Tensor hot = select_rows_mfu(tracker.counts(), rows / 10);
  ASSERT_EQ(hot.numel(), rows / 10);
  EXPECT_TRUE(at::equal(hot, std::get<0>(at::sort(hot)))) << "ascending";
  double covered = tracker.counts().index_select(0, hot).sum().item<double>() / 200000.0;
  // Zipf(1.1) over 10^4 rows: the top 1,000 ranks hold about 79 % of the mass.
  EXPECT_GT(covered, 0.7) << covered;
  // The selected set is the truly hottest: the 50 hottest ranks are all in it.
  std::set<int64_t> sel(hot.data_ptr<int64_t>(), hot.data_ptr<int64_t>() + hot.numel());
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(sel.count(hot_order[i])) << "rank " << i;
  // Tie-breaking and edge sizes.
  at::Tensor flat = at::tensor(std::vector<int64_t>{5, 7, 7, 1, 7}, at::kLong);
  EXPECT_TRUE(at::equal(select_rows_mfu(flat, 2), at::tensor(std::vector<int64_t>{1, 2})));
  EXPECT_EQ(select_rows_mfu(flat, 0).numel(), 0);
  EXPECT_EQ(select_rows_mfu(flat, 99).numel(), 5);
}

TEST(RowSelection, TrackerRecordsUpdatedRowsAndRefusesOutOfRange) {
  EmbeddingAccessTracker t(10);
  ASSERT_TRUE(t.record(at::tensor({3, 3, 7}, at::kInt)).is_ok());
  EXPECT_TRUE(at::equal(t.updated_rows(), at::tensor(std::vector<int64_t>{3, 7})));
  EXPECT_EQ(t.counts()[3].item<int64_t>(), 2);
  t.clear_updated();
  EXPECT_EQ(t.updated_rows().numel(), 0);
  EXPECT_EQ(t.counts()[3].item<int64_t>(), 2) << "counts survive clear_updated";
  Status st = t.record(at::tensor(std::vector<int64_t>{1, 10}));
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(t.counts().sum().item<int64_t>(), 3) << "nothing counted from a bad batch";
  EXPECT_EQ(t.record(at::ones({2})).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(t.record(at::empty({0}, at::kLong)).is_ok());
}

TEST(RowSelection, SsuSamplesTheRequestedFractionUniformly) {
  at::Tensor updated = at::arange(0, 20000, 2, at::kLong);  // 10,000 updated rows
  std::mt19937_64 rng(11);
  at::Tensor s = select_rows_ssu(updated, 0.25, rng);
  ASSERT_EQ(s.numel(), 2500);
  std::set<int64_t> uniq(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
  EXPECT_EQ(uniq.size(), 2500u) << "no repeats";
  for (int64_t r : uniq) ASSERT_EQ(r % 2, 0) << "only updated rows";
  EXPECT_TRUE(at::equal(s, std::get<0>(at::sort(s))));
  // Uniform: each half of the updated set gets about half the sample.
  int64_t low = (s < 10000).sum().item<int64_t>();
  EXPECT_NEAR(static_cast<double>(low), 1250.0, 120.0);
  // Inclusion frequency over repeats is about the fraction for every row.
  at::Tensor hits = at::zeros({20000}, at::kLong);
  for (int rep = 0; rep < 200; ++rep) {
    at::Tensor x = select_rows_ssu(updated, 0.1, rng);
    hits.index_put_({x}, at::ones({x.numel()}, at::kLong), true);
  }
  at::Tensor freq = hits.index_select(0, updated).to(at::kDouble) / 200.0;
  EXPECT_NEAR(freq.mean().item<double>(), 0.1, 1e-9);
  EXPECT_LT(freq.max().item<double>(), 0.25);
  EXPECT_GT(freq.min().item<double>(), 0.0);
  // Reproducible from the seed; edge fractions.
  std::mt19937_64 a(5), b(5);
  EXPECT_TRUE(at::equal(select_rows_ssu(updated, 0.3, a), select_rows_ssu(updated, 0.3, b)));
  EXPECT_EQ(select_rows_ssu(updated, 0.0, a).numel(), 0);
  EXPECT_EQ(select_rows_ssu(updated, 1.0, a).numel(), 10000);
  EXPECT_EQ(select_rows_ssu(at::empty({0}, at::kLong), 0.5, a).numel(), 0);
}

TEST(RowSelection, SavedRowsRestoreExactlyThroughACheckpointFile) {
  namespace fs = std::filesystem;
  std::string path =
      (fs::temp_directory_path() / ("tern-rows-" + std::to_string(::getpid()) + ".ckpt")).string();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  at::Tensor table = at::randn({1000, 16}, gen);
  at::Tensor saved_table = table.clone();
  at::Tensor rows = at::tensor(std::vector<int64_t>{0, 17, 512, 999}, at::kLong);
  NamedTensors out;
  ASSERT_TRUE(append_rows("emb.3", table, rows, &out).is_ok());
  CheckpointMeta meta;
  meta.step = 40;
  meta.rank = 1;
  meta.world = 2;
  ASSERT_TRUE(write_checkpoint_file(path, meta, out).is_ok());

  table.add_(at::randn({1000, 16}, gen));  // training continues; then the node is lost
  at::Tensor before = table.clone();
  auto c = read_checkpoint_file(path);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  ASSERT_TRUE(restore_rows_from(*c, "emb.3", table).is_ok());
  // Saved rows are back bit for bit; the others are untouched.
  EXPECT_TRUE(at::equal(table.index_select(0, rows), saved_table.index_select(0, rows)));
  at::Tensor mask = at::ones({1000}, at::kBool);
  mask.index_fill_(0, rows, false);
  EXPECT_TRUE(at::equal(table.index({mask}), before.index({mask})));

  EXPECT_EQ(restore_rows_from(*c, "emb.4", table).code(), StatusCode::kNotFound);
  at::Tensor wrong = at::zeros({4, 8});
  EXPECT_EQ(restore_rows(table, rows, wrong).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(restore_rows(table, at::tensor(std::vector<int64_t>{1000}), at::zeros({1, 16})).code(),
            StatusCode::kInvalidArgument);
  NamedTensors o2;
  EXPECT_EQ(append_rows("x", table, at::tensor({int64_t{-1}}), &o2).code(),
            StatusCode::kInvalidArgument);
  fs::remove(path);
}

}  // namespace
}  // namespace tern
