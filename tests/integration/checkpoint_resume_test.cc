// Checkpoint and resume with the real binaries (issue 7): `tern run` with periodic checkpoints
// whose rank 1 dies mid-run (debug.fail_step, a simulated crash), then `tern run --resume` of
// the checkpoint directory finishes SUCCEEDED with the full step count, from the newest
// complete step, and ends exactly where an uninterrupted run ends (same test loss and
// accuracy: SSGD over synthetic data resumes bit for bit). Checkpoints across a partial-recovery
// regroup, and full recovery (every rank rolls back to the last complete checkpoint).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/subprocess.h"
#include "testing/processes.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

struct Output {
  int status = -1;
  std::string out;
};

fs::path scratch() {
  auto d = fs::temp_directory_path() / ("tern_ckpt_it_" + std::to_string(getpid()));
  fs::create_directories(d);
  return d;
}

Output run(std::vector<std::string> argv, const std::string& stderr_file) {
  SpawnOptions o;
  o.argv = std::move(argv);
  o.pipe_stdout = true;
  o.stderr_file = stderr_file;
  auto p = Subprocess::spawn(o);
  EXPECT_TRUE(p.is_ok());
  std::vector<std::string> lines = read_all_lines((*p)->stdout_fd());
  Output r;
  r.status = (*p)->wait();
  for (auto& l : lines) r.out += l + "\n";
  return r;
}

// 2 ranks x 512 samples, batch 32: 16 steps per epoch, 32 steps.
std::string write_spec() {
  auto p = scratch() / "job.yaml";
  std::ofstream(p) << "name: it-ckpt\nworkers: 2\nmodel: {type: mlp}\n"
                      "data: {source: synthetic, train_size: 1024, test_size: 256}\n"
                      "train: {epochs: 2, batch_size: 32, lr: 0.05, momentum: 0.9, log_every: 4}\n"
                      "sync: {timeout_s: 20}\n";
  return p.string();
}

// One tern-trainer of a 2-rank job in `dir`, as a worker daemon would start it.
std::unique_ptr<Subprocess> spawn_trainer(const fs::path& dir, const std::string& spec, int rank,
                                          int64_t generation, int port, const std::string& tag) {
  SpawnOptions o;
  o.argv = {bin("tern-trainer"),
            "--spec",
            (dir / spec).string(),
            "--rank",
            std::to_string(rank),
            "--world",
            "2",
            "--master",
            "127.0.0.1:" + std::to_string(port),
            "--generation",
            std::to_string(generation),
            "--job",
            "ckpt-it",
            "--work-dir",
            dir.string()};
  o.pipe_stdin = true;
  o.stdout_file = (dir / (tag + ".events")).string();
  o.stderr_file = (dir / (tag + ".log")).string();
  auto p = Subprocess::spawn(o);
  EXPECT_TRUE(p.is_ok());
  return std::move(p).value();
}

nlohmann::json finished_summary(const fs::path& events) {
  std::ifstream in(events);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == "finished") return j["summary"];
  }
  return nlohmann::json();
}

// 2-rank job files for the regroup tests: `name`.yaml, 80 steps.
void write_regroup_spec(const fs::path& dir, const std::string& name, const std::string& recovery,
                        const std::string& debug) {
  std::ofstream(dir / (name + ".yaml"))
      << "name: " << name << "\nworkers: 2\nmodel: {type: mlp}\n"
      << "data: {source: synthetic, train_size: 4096, test_size: 512}\n"
      << "train: {steps: 80, batch_size: 32, lr: 0.05, momentum: 0.9, log_every: 10}\n"
      << "sync: {timeout_s: 20}\n"
      << recovery << debug;
}

TEST(CheckpointResume, CrashedRunResumesFromItsCheckpointsAndFinishesLikeAnUninterruptedOne) {
  const std::string spec = write_spec();
  const fs::path run1 = scratch() / "run-crashed";
  const fs::path err = scratch() / "crashed.err";
  // Checkpoints every 4 steps (committed 4 steps later) into the run directory by default;
  // rank 1 dies at the start of step 22: steps 4..16 are complete, step 20 has no MANIFEST.
  Output crashed = run({bin("tern"), "run", spec, "--json", "--run-dir", run1.string(), "--set",
                        "recovery.checkpoint_every=4", "--set", "recovery.keep=2", "--set",
                        "debug.fail_rank=1", "--set", "debug.fail_step=22"},
                       err.string());
  ASSERT_EQ(crashed.status, 1) << crashed.out << slurp(err);
  auto c = nlohmann::json::parse(crashed.out);
  EXPECT_EQ(c["state"], "FAILED");
  EXPECT_EQ(c["failed_rank"], 1);
  const fs::path ckpt = run1 / "checkpoints";
  ASSERT_TRUE(fs::exists(ckpt / "step-000000000016" / "MANIFEST")) << slurp(run1 / "rank-0.log");
  EXPECT_TRUE(fs::exists(ckpt / "step-000000000012" / "MANIFEST"));
  EXPECT_FALSE(fs::exists(ckpt / "step-000000000008")) << "retention keeps 2";
  EXPECT_FALSE(fs::exists(ckpt / "step-000000000020" / "MANIFEST"));

  const fs::path run2 = scratch() / "run-resumed";
  const fs::path err2 = scratch() / "resumed.err";
  Output resumed = run({bin("tern"), "run", spec, "--json", "--run-dir", run2.string(), "--set",
                        "recovery.checkpoint_every=4", "--resume", ckpt.string()},
                       err2.string());
  ASSERT_EQ(resumed.status, 0) << resumed.out << slurp(err2) << slurp(run2 / "rank-0.log");
  auto r = nlohmann::json::parse(resumed.out);
  EXPECT_EQ(r["state"], "SUCCEEDED");
  EXPECT_EQ(r["steps"], 32);
  EXPECT_EQ(r["resumed_from_step"], 16);
  EXPECT_GE(r["checkpoints"].get<int>(), 4);  // 20, 24, 28, 32 into its own run directory
  EXPECT_TRUE(fs::exists(run2 / "checkpoints" / "step-000000000032" / "MANIFEST"));
  std::string log = slurp(run2 / "rank-0.log");
  EXPECT_NE(log.find("checkpoint step 20 skipped"), std::string::npos) << log;
  EXPECT_NE(log.find("resumed from " + (ckpt / "step-000000000016").string() + " at step 16"),
            std::string::npos)
      << log;

  const fs::path err3 = scratch() / "plain.err";
  Output plain =
      run({bin("tern"), "run", spec, "--json", "--run-dir", (scratch() / "run-plain").string()},
          err3.string());
  ASSERT_EQ(plain.status, 0) << plain.out << slurp(err3);
  auto p = nlohmann::json::parse(plain.out);
  EXPECT_EQ(p["steps"], 32);
  // Bit-identical parameters evaluate identically.
  EXPECT_EQ(r["test_loss"].get<double>(), p["test_loss"].get<double>());
  EXPECT_EQ(r["test_accuracy"].get<double>(), p["test_accuracy"].get<double>());
  EXPECT_EQ(r["final_loss"].get<double>(), p["final_loss"].get<double>());
  EXPECT_EQ(r["samples"], p["samples"]);
}

TEST(CheckpointResume, ResumeFromADirectoryWithoutCheckpointsFailsNamingIt) {
  const fs::path empty = scratch() / "no-checkpoints";
  fs::create_directories(empty);
  const fs::path err = scratch() / "empty.err";
  Output r = run({bin("tern"), "run", write_spec(), "--json", "--run-dir",
                  (scratch() / "run-empty").string(), "--resume", empty.string()},
                 err.string());
  EXPECT_EQ(r.status, 1);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["state"], "FAILED");
  std::string reason = j["reason"].get<std::string>();
  EXPECT_NE(reason.find("recovery.resume_from"), std::string::npos) << reason;
  EXPECT_NE(reason.find(empty.string()), std::string::npos) << reason;
}

// Runs `name`.yaml in `dir` with rank 1 dying at step 40 (debug.fail_step), plays the worker
// daemon's part of the regroup (generation 2, a new master, a replacement rank 1) and waits
// for both to finish. Returns false (with failures recorded) when something went wrong.
bool crash_and_regroup(const fs::path& dir, const std::string& name, bool rollback) {
  auto port1 = find_free_port();
  EXPECT_TRUE(port1.is_ok());
  if (!port1.is_ok()) return false;
  auto r0 = spawn_trainer(dir, name + ".yaml", 0, 1, *port1, "r0");
  auto r1 = spawn_trainer(dir, name + ".yaml", 1, 1, *port1, "r1-gen1");
  auto code1 = r1->wait_for(std::chrono::seconds(120));
  EXPECT_TRUE(code1.has_value());
  if (!code1) return false;
  EXPECT_EQ(*code1, 17) << slurp(dir / "r1-gen1.log");
  for (int i = 0; i < 200 && slurp(dir / "r0.events").find("peer_lost") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto port2 = find_free_port();
  EXPECT_TRUE(port2.is_ok());
  if (!port2.is_ok()) return false;
  nlohmann::json cmd = {{"cmd", "regroup"},
                        {"generation", 2},
                        {"world", 2},
                        {"master", "127.0.0.1:" + std::to_string(*port2)},
                        {"rollback", rollback}};
  EXPECT_TRUE(r0->write_stdin(cmd.dump() + "\n").is_ok());
  auto r1b = spawn_trainer(dir, name + ".yaml", 1, 2, *port2, "r1-gen2");
  auto c0 = r0->wait_for(std::chrono::seconds(240));
  auto c1 = r1b->wait_for(std::chrono::seconds(240));
  EXPECT_TRUE(c0.has_value() && c1.has_value());
  if (!c0 || !c1) return false;
  EXPECT_EQ(*c0, 0) << slurp(dir / "r0.log");
  EXPECT_EQ(*c1, 0) << slurp(dir / "r1-gen2.log");
  return *c0 == 0 && *c1 == 0;
}

// Partial recovery with checkpoints on: the survivor takes step 40's checkpoint, then loses its
// peer while training step 40; after the regroup the group never agreed on that step, so it is
// dropped and taken again by the survivor and the replacement together, and later steps commit
// at the new generation.
TEST(CheckpointResume, CheckpointsKeepCommittingAcrossARegroup) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) GTEST_SKIP() << "tern-trainer not built";
  const fs::path dir = scratch() / "regroup";
  fs::remove_all(dir);
  fs::create_directories(dir);
  // fp16 compression keeps an error-feedback memory per rank: the replacement restores its own.
  write_regroup_spec(dir, "partial",
                     "compress: {method: fp16}\n"
                     "recovery: {mode: partial, checkpoint_every: 10, keep: 2, dir: " +
                         (dir / "ckpt").string() + "}\n",
                     "debug: {fail_rank: 1, fail_step: 40}\n");
  ASSERT_TRUE(crash_and_regroup(dir, "partial", /*rollback=*/false));
  std::string log0 = slurp(dir / "r0.log");
  EXPECT_NE(log0.find("checkpoint step 40 abandoned"), std::string::npos) << log0;
  EXPECT_NE(log0.find("checkpoint step 40 complete on all 2 ranks"), std::string::npos) << log0;
  // The newest complete steps, written at generation 2.
  std::string manifest = slurp(dir / "ckpt" / "step-000000000080" / "MANIFEST");
  EXPECT_NE(manifest.find("generation 2"), std::string::npos) << manifest;
  EXPECT_TRUE(fs::exists(dir / "ckpt" / "step-000000000070" / "MANIFEST"));
  EXPECT_FALSE(fs::exists(dir / "ckpt" / "step-000000000040")) << "retention keeps 2";
  EXPECT_EQ(finished_summary(dir / "r0.events").value("steps_rolled_back", -1), 0);
  std::string log1 = slurp(dir / "r1-gen2.log");
  EXPECT_NE(log1.find("restored rank 1's per-rank state (1 reducer tensors) from " +
                      (dir / "ckpt" / "step-000000000030" / "rank-1.ckpt").string()),
            std::string::npos)
      << log1;
}

// Full recovery (recovery.mode full, the regroup's rollback): survivor and replacement both
// reload step 30, the newest complete checkpoint (step 40's was never committed), and redo
// steps 30..79. SSGD is deterministic, so they end exactly where an uninterrupted run ends.
TEST(CheckpointResume, FullRecoveryRollsEveryRankBackToTheLastCompleteCheckpoint) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) GTEST_SKIP() << "tern-trainer not built";
  const fs::path dir = scratch() / "full";
  fs::remove_all(dir);
  fs::create_directories(dir);
  write_regroup_spec(dir, "full",
                     "recovery: {mode: full, checkpoint_every: 10, keep: 3, dir: " +
                         (dir / "ckpt").string() + "}\n",
                     "debug: {fail_rank: 1, fail_step: 40}\n");
  ASSERT_TRUE(crash_and_regroup(dir, "full", /*rollback=*/true));
  nlohmann::json s0 = finished_summary(dir / "r0.events");
  nlohmann::json s1 = finished_summary(dir / "r1-gen2.events");
  ASSERT_TRUE(s0.is_object() && s1.is_object());
  EXPECT_EQ(s0["steps"], 80);
  EXPECT_EQ(s0["recoveries"], 1);
  EXPECT_EQ(s0["steps_rolled_back"], 10);
  std::string log0 = slurp(dir / "r0.log");
  EXPECT_NE(log0.find("rolled back from " + (dir / "ckpt" / "step-000000000030").string() +
                      " at step 30"),
            std::string::npos)
      << log0;
  EXPECT_NE(slurp(dir / "r1-gen2.log").find("rolled back from"), std::string::npos);

  // The same job, never interrupted.
  write_regroup_spec(dir, "plain", "", "");
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  auto p0 = spawn_trainer(dir, "plain.yaml", 0, 1, *port, "plain0");
  auto p1 = spawn_trainer(dir, "plain.yaml", 1, 1, *port, "plain1");
  ASSERT_EQ(p0->wait_for(std::chrono::seconds(240)).value_or(-1), 0) << slurp(dir / "plain0.log");
  ASSERT_EQ(p1->wait_for(std::chrono::seconds(240)).value_or(-1), 0) << slurp(dir / "plain1.log");
  nlohmann::json plain = finished_summary(dir / "plain0.events");
  ASSERT_TRUE(plain.is_object());
  EXPECT_EQ(s0["test_loss"].get<double>(), plain["test_loss"].get<double>());
  EXPECT_EQ(s1["test_loss"].get<double>(), plain["test_loss"].get<double>());
  EXPECT_EQ(s0["test_accuracy"].get<double>(), plain["test_accuracy"].get<double>());
}

// Removes this process's scratch directories (checkpoints of several MB each) at the end.
class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(fs::temp_directory_path() / ("tern_ckpt_it_" + std::to_string(getpid())), ec);
  }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

}  // namespace
}  // namespace tern
