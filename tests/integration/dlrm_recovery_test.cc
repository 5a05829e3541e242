// DLRM failure and recovery with real processes (issue 7, CPR): `tern run` starts the
// tern-trainer ranks, debug.fail_step kills rank 1 mid-job, and tern run (as a worker daemon
// would on the coordinator's word) starts a replacement at the next generation and sends the
// survivors a regroup command.
//   - recovery.mode partial: the survivor keeps its state, the replacement restores only its
//     own embedding shard from the last checkpoint (the updates since are lost: PLS > 0) and
//     the MLPs from the survivor; no step is redone; the job ends with about the clean AUC.
//   - recovery.mode full: every rank reloads the last checkpoint and redoes the steps since
//     it; deterministic SSGD ends exactly where the clean run ends.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "testing/processes.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class DlrmRecoveryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("tern_dlrm_recovery_it_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // 2 ranks x 9600 samples / 64 = 150 steps; checkpoints every 10 steps (committed 4 later).
    std::ofstream(dir_ / "job.yaml")
        << "name: dlrm-it\nworkers: 2\n"
           "model: {type: dlrm, embedding_dim: 8, bottom_mlp: [16, 8], top_mlp: [32, 1]}\n"
           "data: {source: synthetic_ctr, num_tables: 8, table_size: 500, train_size: 19200, "
           "test_size: 4096}\n"
           "train: {epochs: 1, batch_size: 64, lr: 0.1, seed: 7, log_every: 25}\n"
           "sync: {timeout_s: 20}\n"
           "recovery: {checkpoint_every: 10, keep: 3}\n";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // `tern run --json` with --set overrides; the JSON result.
  static json run(const std::string& tag, const std::vector<std::string>& sets) {
    SpawnOptions o;
    o.argv = {bin("tern"), "run",       (dir_ / "job.yaml").string(),
              "--json",    "--run-dir", (dir_ / tag).string()};
    for (const auto& s : sets) o.argv.insert(o.argv.end(), {"--set", s});
    o.pipe_stdout = true;
    o.stderr_file = (dir_ / (tag + ".err")).string();
    auto p = Subprocess::spawn(o);
    EXPECT_TRUE(p.is_ok());
    if (!p.is_ok()) return json();
    std::string out;
    for (auto& l : read_all_lines((*p)->stdout_fd())) out += l;
    (*p)->wait();
    json j = json::parse(out, nullptr, false);
    return j.is_discarded() ? json() : j;
  }

  static json clean() {
    static json c = run("clean", {});
    return c;
  }

  static fs::path dir_;
};

fs::path DlrmRecoveryTest::dir_;

TEST_F(DlrmRecoveryTest, PartialRecoveryRestoresOnlyTheLostShardAndKeepsTheAuc) {
  if (access(bin("tern").c_str(), X_OK) != 0 || access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "tern / tern-trainer not built";
  }
  json c = clean();
  ASSERT_EQ(c.value("state", ""), "SUCCEEDED") << c.dump() << slurp(dir_ / "clean.err");
  EXPECT_GT(c["test_auc"].get<double>(), 0.58);
  EXPECT_EQ(c["recoveries"], 0);

  // Rank 1 dies at the top of step 77: step 70 is the newest complete checkpoint.
  json p = run("partial", {"recovery.mode=partial", "debug.fail_rank=1", "debug.fail_step=77"});
  ASSERT_EQ(p.value("state", ""), "SUCCEEDED") << p.dump() << slurp(dir_ / "partial.err");
  EXPECT_EQ(p["replaced_ranks"], 1);
  EXPECT_EQ(p["recoveries"], 1);
  EXPECT_EQ(p["steps"], 150);
  EXPECT_EQ(p["steps_rolled_back"], 0) << "partial recovery never rolls back";
  // The replacement's shard is as of step 70: 7 steps x 128 samples of its updates are lost.
  EXPECT_DOUBLE_EQ(p["lost_samples"].get<double>(), 7.0 * 128);
  EXPECT_NEAR(p["shard_pls"].get<double>(), 7.0 / 77, 1e-9);
  EXPECT_GT(p["pls"].get<double>(), 0);
  EXPECT_LT(p["pls"].get<double>(), p["shard_pls"].get<double>());
  EXPECT_GT(p["time_lost_s"].get<double>(), 0);
  EXPECT_NEAR(p["test_auc"].get<double>(), c["test_auc"].get<double>(), 0.01)
      << "clean " << c["test_auc"];
  std::string log = slurp(dir_ / "partial" / "rank-1-gen2.log");
  EXPECT_NE(
      log.find("restored rank 1's embedding shard (partial recovery) from " +
               (dir_ / "partial" / "checkpoints" / "step-000000000070" / "rank-1.ckpt").string()),
      std::string::npos)
      << log;
  EXPECT_NE(log.find("state synced from rank 0 at step 77"), std::string::npos) << log;
}

TEST_F(DlrmRecoveryTest, FullRecoveryRollsBackAndEndsLikeTheCleanRun) {
  if (access(bin("tern").c_str(), X_OK) != 0 || access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "tern / tern-trainer not built";
  }
  json c = clean();
  ASSERT_EQ(c.value("state", ""), "SUCCEEDED") << c.dump() << slurp(dir_ / "clean.err");
  json f = run("full", {"recovery.mode=full", "debug.fail_rank=1", "debug.fail_step=77"});
  ASSERT_EQ(f.value("state", ""), "SUCCEEDED") << f.dump() << slurp(dir_ / "full.err");
  EXPECT_EQ(f["recoveries"], 1);
  EXPECT_EQ(f["steps_rolled_back"], 7);
  EXPECT_EQ(f["lost_samples"], 0.0);
  EXPECT_EQ(f["samples"], c["samples"]);
  EXPECT_NEAR(f["test_auc"].get<double>(), c["test_auc"].get<double>(), 1e-9);
  EXPECT_NEAR(f["test_logloss"].get<double>(), c["test_logloss"].get<double>(), 1e-9);
}

// train.dp with LazyDP (issue 25): rank 1 dies at step 27 of 40 (checkpoint 20 complete); with
// recovery.mode partial the replacement takes the privacy accountant from the survivor with the
// rest of the job's state and restores its shard (saves are fully noised), so the job ends with
// the clean run's epsilon after all 40 steps and about its AUC.
TEST_F(DlrmRecoveryTest, DpPartialRecoveryKeepsTheAccountant) {
  if (access(bin("tern").c_str(), X_OK) != 0 || access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "tern / tern-trainer not built";
  }
  const std::vector<std::string> dp = {"train.steps=40", "train.dp.clip=1.0",
                                       "train.dp.noise_multiplier=0.5",
                                       "train.dp.embedding_noise=lazy"};
  json c = run("dp-clean", dp);
  ASSERT_EQ(c.value("state", ""), "SUCCEEDED") << c.dump() << slurp(dir_ / "dp-clean.err");
  std::vector<std::string> failing = dp;
  failing.insert(failing.end(),
                 {"recovery.mode=partial", "debug.fail_rank=1", "debug.fail_step=27"});
  json p = run("dp-partial", failing);
  ASSERT_EQ(p.value("state", ""), "SUCCEEDED") << p.dump() << slurp(dir_ / "dp-partial.err");
  EXPECT_EQ(p["recoveries"], 1);
  EXPECT_EQ(p["dp_steps"], 40);
  EXPECT_DOUBLE_EQ(p["epsilon"].get<double>(), c["epsilon"].get<double>());
  EXPECT_GT(c["epsilon"].get<double>(), 0);
  EXPECT_NEAR(p["test_auc"].get<double>(), c["test_auc"].get<double>(), 0.03)
      << "clean " << c["test_auc"];
  std::string log = slurp(dir_ / "dp-partial" / "rank-1-gen2.log");
  // The replacement trained steps 27..39 only: its own summary counts all 40 (27 came with the
  // state sync) and reports the job's epsilon.
  EXPECT_NE(log.find("\"dp_steps\":40"), std::string::npos) << log;
  EXPECT_NE(log.find("\"epsilon\":" + c["epsilon"].dump()), std::string::npos) << log;
  EXPECT_NE(log.find("restored rank 1's embedding shard (partial recovery)"), std::string::npos)
      << log;
}

}  // namespace
}  // namespace tern
