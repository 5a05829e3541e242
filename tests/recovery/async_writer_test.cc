// The asynchronous writer: what was snapshotted is what gets written even when the caller
// changes its tensors right after snapshot(); a snapshot while a write is in flight waits
// for it and both steps land intact; background errors surface on the next call; timings
// and bytes are reported. gather_manifest over a real Gloo group commits a step that every
// rank wrote and refuses one that a rank did not.
#include "recovery/async_writer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "recovery/checkpoint.h"
#include "recovery/commit.h"
#include "testing/gloo_group.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

class WriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("tern-writer-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

CheckpointMeta meta_for(int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.world = 1;
  m.epoch = 0;
  m.job_id = "j-w";
  return m;
}

Manifest manifest_of(const WrittenStep& w) {
  Manifest m;
  m.step = w.step;
  m.world = 1;
  m.job_id = "j-w";
  m.files = w.files;
  return m;
}

TEST_F(WriterTest, WritesWhatWasSnapshottedEvenIfCallerMutatesRightAfter) {
  AsyncCheckpointWriter writer(CheckpointStore(dir_), 0);
  at::Tensor params = at::arange(1 << 20, at::kFloat);  // 4 MiB: the write takes a while
  at::Tensor ef = at::full({1000}, 1.5);
  at::Tensor want_params = params.clone(), want_ef = ef.clone();
  NamedTensors replicated = {{"params", params}};
  ASSERT_TRUE(writer.snapshot(meta_for(10), {{"ef", ef}}, &replicated).is_ok());
  params.mul_(-3).add_(7);  // the training loop goes on at once
  ef.zero_();
  ASSERT_TRUE(writer.flush(seconds(60)).is_ok());
  auto w = writer.last_written();
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->step, 10);
  ASSERT_EQ(w->files.size(), 2u);
  ASSERT_TRUE(writer.commit(manifest_of(*w), 3).is_ok());
  ASSERT_TRUE(writer.flush(seconds(60)).is_ok());

  LoadOptions o;
  o.all_ranks = true;
  auto l = load_latest_checkpoint(writer.store(), o);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_EQ(l->step, 10);
  EXPECT_TRUE(at::equal(*l->replicated->find("params"), want_params));
  EXPECT_TRUE(at::equal(*l->ranks.at(0).find("ef"), want_ef));
  EXPECT_EQ(l->ranks.at(0).meta.rank, 0);
  EXPECT_EQ(l->replicated->meta.rank, -1);

  // Timings and bytes for the trainer's overhead accounting.
  EXPECT_GT(w->stats.write_s, 0);
  EXPECT_GE(w->stats.snapshot_s, 0);
  EXPECT_EQ(w->stats.bytes, fs::file_size(writer.store().file_path(10, kReplicatedFile)) +
                                fs::file_size(writer.store().file_path(10, rank_file_name(0))));
  auto totals = writer.totals();
  EXPECT_EQ(totals.snapshots, 1);
  EXPECT_EQ(totals.writes, 1);
  EXPECT_EQ(totals.commits, 1);
  EXPECT_EQ(totals.bytes, w->stats.bytes);
}

TEST_F(WriterTest, SnapshotWhileWritingWaitsAndBothStepsLandIntact) {
  AsyncCheckpointWriter writer(CheckpointStore(dir_), 0);
  at::Tensor big = at::zeros({8 << 20});  // 32 MiB per step
  for (int64_t step = 1; step <= 4; ++step) {
    big.fill_(static_cast<float>(step));
    // Back to back: each snapshot finds the previous write in flight (or just finished),
    // waits, then reuses the host buffer. The previous write must not see the new values.
    ASSERT_TRUE(writer.snapshot(meta_for(step), {{"big", big}}, nullptr).is_ok());
  }
  ASSERT_TRUE(writer.flush(seconds(120)).is_ok());
  auto totals = writer.totals();
  EXPECT_EQ(totals.snapshots, 4);
  EXPECT_EQ(totals.writes, 4);
  EXPECT_GT(totals.wait_s, 0);
  for (int64_t step = 1; step <= 4; ++step) {
    auto c = read_checkpoint_file(writer.store().file_path(step, rank_file_name(0)));
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    EXPECT_EQ(c->meta.step, step);
    const at::Tensor& t = *c->find("big");
    EXPECT_EQ(t.min().item<float>(), static_cast<float>(step));
    EXPECT_EQ(t.max().item<float>(), static_cast<float>(step));
  }
}

TEST_F(WriterTest, BackgroundErrorSurfacesOnNextCallOnce) {
  fs::create_directories(fs::path(dir_).parent_path());
  { std::ofstream(dir_) << "a file where the checkpoint directory should be"; }
  AsyncCheckpointWriter writer(CheckpointStore(dir_), 0);
  ASSERT_TRUE(writer.snapshot(meta_for(1), {{"x", at::ones({3})}}, nullptr).is_ok());
  Status st = writer.flush(seconds(30));
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find(dir_), std::string::npos) << st.to_string();
  EXPECT_FALSE(writer.last_written().has_value());
  EXPECT_TRUE(writer.flush(seconds(30)).is_ok()) << "an error is reported once";

  // Surfaced by the next snapshot() too, which then takes nothing.
  ASSERT_TRUE(writer.snapshot(meta_for(2), {{"x", at::ones({3})}}, nullptr).is_ok());
  Status next = writer.snapshot(meta_for(3), {{"x", at::ones({3})}}, nullptr);
  EXPECT_FALSE(next.is_ok());
  EXPECT_NE(next.message().find(dir_), std::string::npos) << next.to_string();
  EXPECT_EQ(writer.totals().snapshots, 2);
  EXPECT_TRUE(writer.flush(seconds(30)).is_ok());
  fs::remove(dir_);
}

TEST_F(WriterTest, BadTensorFailsOnCallerThread) {
  AsyncCheckpointWriter writer(CheckpointStore(dir_), 0);
  Status st = writer.snapshot(meta_for(1), {{"u", at::Tensor()}}, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'u'"), std::string::npos);
  st = writer.snapshot(meta_for(1), {{"c", at::ones({2}, at::kComplexFloat)}}, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(writer.flush(seconds(10)).is_ok());
  EXPECT_EQ(writer.totals().snapshots, 0);
}

TEST_F(WriterTest, SnapshotTimesOutWhenPreviousWriteIsStuck) {
  AsyncCheckpointWriter::Options o;
  o.wait_timeout = std::chrono::milliseconds(1);
  AsyncCheckpointWriter writer(CheckpointStore(dir_), 0, o);
  at::Tensor big = at::ones({16 << 20});  // 64 MiB: still writing 1 ms later
  ASSERT_TRUE(writer.snapshot(meta_for(1), {{"big", big}}, nullptr).is_ok());
  Status st = writer.snapshot(meta_for(2), {{"big", big}}, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.to_string();
  ASSERT_TRUE(writer.flush(seconds(120)).is_ok());
  EXPECT_EQ(writer.totals().writes, 1);
}

TEST_F(WriterTest, GatherManifestCommitsAStepEveryRankWrote) {
  const int world = 3;
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    AsyncCheckpointWriter writer(CheckpointStore(dir_), rank);
    NamedTensors replicated = {{"w", at::full({16}, 2.0)}};
    CheckpointMeta meta = meta_for(50);
    meta.world = world;
    ASSERT_TRUE(writer
                    .snapshot(meta, {{"shard", at::full({4}, static_cast<float>(rank))}},
                              rank == 0 ? &replicated : nullptr)
                    .is_ok());
    Status w = writer.flush(seconds(60));
    ASSERT_TRUE(w.is_ok()) << w.to_string();
    auto m = gather_manifest(*comm, writer.last_written(), 50, 0, "j-w");
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    EXPECT_EQ(m->files.size(), static_cast<size_t>(world + 1));
    if (rank == 0) {
      ASSERT_TRUE(writer.commit(*m, 2).is_ok());
      ASSERT_TRUE(writer.flush(seconds(60)).is_ok());
    }
    ASSERT_TRUE(barrier_sync(*comm).is_ok());

    // Rank 1 did not write step 60: nobody commits it, every rank is told why.
    std::optional<WrittenStep> mine = writer.last_written();
    if (rank != 1) mine->step = 60;
    auto bad = gather_manifest(*comm, mine, 60, 0, "j-w");
    EXPECT_EQ(bad.status().code(), StatusCode::kAborted);
    EXPECT_NE(bad.status().message().find("rank(s) 1 did not write"), std::string::npos)
        << bad.status().to_string();
  });
  LoadOptions o;
  o.all_ranks = true;
  auto l = load_latest_checkpoint(CheckpointStore(dir_), o);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_EQ(l->step, 50);
  EXPECT_EQ(l->manifest.world, world);
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(at::equal(*l->ranks.at(r).find("shard"), at::full({4}, static_cast<float>(r))));
  }
}

}  // namespace
}  // namespace tern
