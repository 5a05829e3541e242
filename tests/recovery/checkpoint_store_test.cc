// Step directories, MANIFEST and retention, and loading with fallback: a flipped byte, a
// truncated file, a wrong magic or a lying length in the newest step each make the loader
// skip it with a warning naming the file and use the previous step; a step without (valid)
// manifest is ignored; partial loads read one rank only.
#include "recovery/checkpoint_store.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "recovery/checkpoint.h"
#include "recovery/fs_util.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("tern-store-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a complete step: replicated.ckpt holds "w" = step, rank-K.ckpt holds "e" = step +
  // K / 10 and a per-rank int64 "pos". With commit = false the MANIFEST is not written.
  void write_step(const CheckpointStore& store, int64_t step, int64_t world, bool commit = true) {
    ASSERT_TRUE(store.prepare_step(step).is_ok());
    Manifest m;
    m.step = step;
    m.world = world;
    m.job_id = "j-1";
    CheckpointMeta meta;
    meta.step = step;
    meta.world = world;
    meta.job_id = "j-1";
    meta.rank = -1;
    auto w = write_checkpoint_file(store.file_path(step, kReplicatedFile), meta,
                                   {{"w", at::full({64}, static_cast<float>(step))}});
    ASSERT_TRUE(w.is_ok()) << w.status().to_string();
    m.files.push_back({kReplicatedFile, w->bytes, w->digest});
    for (int64_t r = 0; r < world; ++r) {
      meta.rank = r;
      meta.sampler_position = 100 * step + r;
      auto rw = write_checkpoint_file(
          store.file_path(step, rank_file_name(r)), meta,
          {{"e", at::full({8, 4}, static_cast<float>(step) + static_cast<float>(r) / 10)},
           {"pos", at::tensor({step, r}, at::kLong)}});
      ASSERT_TRUE(rw.is_ok()) << rw.status().to_string();
      m.files.push_back({rank_file_name(r), rw->bytes, rw->digest});
    }
    if (commit) ASSERT_TRUE(store.commit(m).is_ok());
  }

  std::string dir_;
};

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x40);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

void overwrite(const std::string& path, uint64_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST_F(StoreTest, LoadsNewestCompleteStepFullAndPartial) {
  CheckpointStore store(dir_);
  for (int64_t s : {10, 20, 30}) write_step(store, s, 3);
  LoadOptions full;
  full.all_ranks = true;
  auto l = load_latest_checkpoint(store, full);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_EQ(l->step, 30);
  EXPECT_TRUE(l->skipped.empty());
  ASSERT_TRUE(l->replicated.has_value());
  EXPECT_TRUE(at::equal(*l->replicated->find("w"), at::full({64}, 30.0f)));
  ASSERT_EQ(l->ranks.size(), 3u);
  EXPECT_TRUE(at::equal(*l->ranks.at(2).find("e"), at::full({8, 4}, 30.2f)));
  EXPECT_EQ(l->ranks.at(1).meta.sampler_position, 3001);

  // Partial recovery of rank 1: that rank's file only.
  LoadOptions partial;
  partial.replicated = false;
  partial.ranks = {1};
  l = load_latest_checkpoint(store, partial);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_FALSE(l->replicated.has_value());
  ASSERT_EQ(l->ranks.size(), 1u);
  EXPECT_TRUE(
      at::equal(*l->ranks.at(1).find("pos"), at::tensor(std::vector<int64_t>{30, int64_t{1}})));

  // max_step, a given step, a rank the checkpoint does not have.
  full.max_step = 25;
  l = load_latest_checkpoint(store, full);
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ(l->step, 20);
  l = load_checkpoint_step(store, 10, full);
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ(l->step, 10);
  partial.ranks = {3};
  EXPECT_EQ(load_latest_checkpoint(store, partial).status().code(), StatusCode::kOutOfRange);
}

// Each kind of damage to the newest step's files: skipped, the previous step used.
struct Damage {
  const char* name;
  std::function<void(const std::string&)> apply;
  const char* expect;  // in the skip message
};

TEST_F(StoreTest, DamagedNewestStepFallsBackToPreviousGoodOne) {
  std::vector<Damage> damages = {
      {"flipped payload byte", [](const std::string& p) { flip_byte(p, fs::file_size(p) - 5); },
       "checksum mismatch"},
      {"flipped header byte", [](const std::string& p) { flip_byte(p, 9); }, "checksum"},
      {"truncated", [](const std::string& p) { fs::resize_file(p, fs::file_size(p) / 2); },
       "truncated"},
      {"wrong magic", [](const std::string& p) { overwrite(p, 0, "NOTACKPT"); }, "wrong magic"},
      {"bogus length",
       [](const std::string& p) { overwrite(p, 16, std::string("\xff\xff\xff\x7f", 4)); },
       "checksum"},
      {"emptied", [](const std::string& p) { fs::resize_file(p, 0); }, "truncated"},
      {"deleted", [](const std::string& p) { fs::remove(p); }, "no such file"},
  };
  for (const auto& d : damages) {
    SCOPED_TRACE(d.name);
    fs::remove_all(dir_);
    CheckpointStore store(dir_);
    write_step(store, 100, 2);
    write_step(store, 200, 2);
    std::string victim = store.file_path(200, rank_file_name(1));
    d.apply(victim);
    LoadOptions o;
    o.all_ranks = true;
    auto l = load_latest_checkpoint(store, o);
    ASSERT_TRUE(l.is_ok()) << l.status().to_string();
    EXPECT_EQ(l->step, 100);
    EXPECT_TRUE(at::equal(*l->ranks.at(1).find("e"), at::full({8, 4}, 100.1f)));
    ASSERT_EQ(l->skipped.size(), 1u);
    EXPECT_NE(l->skipped[0].find(victim), std::string::npos) << l->skipped[0];
    EXPECT_NE(l->skipped[0].find(d.expect), std::string::npos) << l->skipped[0];

    // A loader that needs only rank 0 of step 200 still gets step 200 (its files are fine)
    // unless the damage shows in the manifest check (size / header digest).
    LoadOptions r0;
    r0.replicated = false;
    r0.ranks = {0};
    auto l0 = load_latest_checkpoint(store, r0);
    ASSERT_TRUE(l0.is_ok());
    EXPECT_TRUE(l0->step == 200 || l0->step == 100);
    if (std::string(d.name) == "flipped payload byte") EXPECT_EQ(l0->step, 200);
  }
}

TEST_F(StoreTest, EveryStepDamagedIsNotFoundListingWhy) {
  CheckpointStore store(dir_);
  write_step(store, 5, 1);
  flip_byte(store.file_path(5, kReplicatedFile),
            fs::file_size(store.file_path(5, kReplicatedFile)) - 1);
  auto l = load_latest_checkpoint(store, LoadOptions());
  ASSERT_EQ(l.status().code(), StatusCode::kNotFound);
  EXPECT_NE(l.status().message().find("replicated.ckpt"), std::string::npos)
      << l.status().to_string();
  EXPECT_EQ(load_latest_checkpoint(CheckpointStore(dir_ + "/nothing-here"), LoadOptions())
                .status()
                .code(),
            StatusCode::kNotFound);
}

TEST_F(StoreTest, StepWithoutValidManifestIsIgnored) {
  CheckpointStore store(dir_);
  write_step(store, 1, 2);
  write_step(store, 2, 2, /*commit=*/false);  // crashed before the manifest
  write_step(store, 3, 2);
  // Step 3's manifest damaged: ignored too.
  std::string m3 = store.file_path(3, kManifestFile);
  flip_byte(m3, 30);
  EXPECT_FALSE(store.check_step(2).is_ok());
  EXPECT_NE(store.check_step(2).status().message().find("no manifest"), std::string::npos);
  EXPECT_NE(store.check_step(3).status().message().find("MANIFEST"), std::string::npos);
  auto l = load_latest_checkpoint(store, LoadOptions());
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ(l->step, 1);
  EXPECT_EQ(l->skipped.size(), 2u);
  std::vector<std::string> skipped;
  auto complete = store.complete_steps(&skipped);
  ASSERT_TRUE(complete.is_ok());
  ASSERT_EQ(complete->size(), 1u);
  EXPECT_EQ(skipped.size(), 2u);
}

TEST_F(StoreTest, CommitRefusesFilesThatDoNotMatchTheWriterReport) {
  CheckpointStore store(dir_);
  write_step(store, 7, 1, /*commit=*/false);
  std::string p = store.file_path(7, rank_file_name(0));
  auto d = checkpoint_file_digest(p);
  ASSERT_TRUE(d.is_ok());
  Manifest m;
  m.step = 7;
  m.world = 1;
  m.files = {{rank_file_name(0), fs::file_size(p), *d + 1}};
  Status st = store.commit(m);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find(p), std::string::npos) << st.to_string();
  EXPECT_FALSE(fs::exists(store.file_path(7, kManifestFile)));
  m.files = {{"../escape", 1, 1}};
  EXPECT_EQ(store.commit(m).code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, RetentionKeepsNewestCompleteStepsOnly) {
  CheckpointStore store(dir_);
  for (int64_t s = 1; s <= 5; ++s) write_step(store, s, 1);
  write_step(store, 6, 1, /*commit=*/false);  // newest, in flight: left alone
  auto deleted = store.apply_retention(2);
  ASSERT_TRUE(deleted.is_ok()) << deleted.status().to_string();
  EXPECT_EQ(*deleted, (std::vector<int64_t>{1, 2, 3}));
  auto steps = store.list_steps();
  ASSERT_TRUE(steps.is_ok());
  EXPECT_EQ(*steps, (std::vector<int64_t>{4, 5, 6}));

  // keep 0 is treated as 1: the newest good step survives.
  deleted = store.apply_retention(0);
  ASSERT_TRUE(deleted.is_ok());
  EXPECT_EQ(*deleted, (std::vector<int64_t>{4}));
  EXPECT_TRUE(store.check_step(5).is_ok());

  // A damaged newest step does not count: the older good one is kept.
  write_step(store, 7, 1);
  fs::resize_file(store.file_path(7, kReplicatedFile), 10);
  deleted = store.apply_retention(1);
  ASSERT_TRUE(deleted.is_ok());
  EXPECT_TRUE(deleted->empty());
  EXPECT_TRUE(store.check_step(5).is_ok());
}

TEST_F(StoreTest, RetentionWithNoCompleteStepDeletesNothing) {
  CheckpointStore store(dir_);
  write_step(store, 1, 1, false);
  write_step(store, 2, 1, false);
  auto deleted = store.apply_retention(1);
  ASSERT_TRUE(deleted.is_ok());
  EXPECT_TRUE(deleted->empty());
  EXPECT_EQ(store.list_steps()->size(), 2u);
}

TEST(Manifest, RoundTripAndDamage) {
  Manifest m;
  m.step = 120;
  m.world = 2;
  m.generation = 3;
  m.job_id = "j-9";
  m.files = {{"rank-1.ckpt", 10, 0xdeadbeef}, {"rank-0.ckpt", 12, 7}, {"replicated.ckpt", 99, 0}};
  std::string text = encode_manifest(m);
  auto p = parse_manifest(text, "M");
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->step, 120);
  EXPECT_EQ(p->world, 2);
  EXPECT_EQ(p->generation, 3);
  EXPECT_EQ(p->job_id, "j-9");
  ASSERT_EQ(p->files.size(), 3u);
  EXPECT_EQ(p->files[0].name, "rank-0.ckpt");  // sorted
  EXPECT_EQ(p->files[2].digest, 0u);
  EXPECT_EQ(p->files[1].digest, 0xdeadbeefu);
  for (size_t i = 0; i < text.size(); ++i) {
    std::string bad = text;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_FALSE(parse_manifest(bad, "M").is_ok()) << "flip at " << i;
  }
  for (size_t n = 0; n < text.size(); ++n) {
    EXPECT_FALSE(parse_manifest(text.substr(0, n), "M").is_ok()) << "truncated to " << n;
  }
}

TEST_F(StoreTest, AtomicWriteLeavesOldFileOnFailureAndNoTempFiles) {
  fs::create_directories(dir_);
  std::string path = dir_ + "/f";
  ASSERT_TRUE(atomic_write_file(path, [](FdSink& s) { return s.write("old", 3); }).is_ok());
  Status st = atomic_write_file(path, [](FdSink& s) {
    TERN_RETURN_IF_ERROR(s.write("new-but-", 8));
    return internal_error("disk full (simulated)");
  });
  EXPECT_FALSE(st.is_ok());
  EXPECT_EQ(*read_whole_file(path), "old");
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
  EXPECT_EQ(read_whole_file(path, 2).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(read_whole_file(dir_ + "/missing").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern
