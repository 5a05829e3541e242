// Checkpoint and resume with the real binaries (issue 7): `tern run` with periodic checkpoints
// whose rank 1 dies mid-run (debug.fail_step, a simulated crash), then `tern run --resume` of
// the checkpoint directory finishes SUCCEEDED with the full step count, from the newest
// complete step, and ends exactly where an uninterrupted run ends (same test loss and
// accuracy: SSGD over synthetic data resumes bit for bit).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/subprocess.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

struct Output {
  int status = -1;
  std::string out;
};

std::string bin(const std::string& name) {
  const char* dir = std::getenv("TERN_BIN_DIR");
  return std::string(dir ? dir : "build/bin") + "/" + name;
}

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

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
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

// Partial recovery with checkpoints on: the survivor takes step 40's checkpoint, then loses its
// peer while training step 40; after the regroup the group never agreed on that step, so it is
// dropped and taken again by the survivor and the replacement together, and later steps commit
// at the new generation.
TEST(CheckpointResume, CheckpointsKeepCommittingAcrossARegroup) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) GTEST_SKIP() << "tern-trainer not built";
  const fs::path dir = scratch() / "regroup";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "job.yaml")
      << "name: regroup-ckpt\nworkers: 2\nmodel: {type: mlp}\n"
         "data: {source: synthetic, train_size: 4096, test_size: 512}\n"
         "train: {steps: 80, batch_size: 32, lr: 0.05, momentum: 0.9, log_every: 10}\n"
         "sync: {timeout_s: 20}\n"
         "recovery: {mode: partial, checkpoint_every: 10, keep: 2, dir: "
      << (dir / "ckpt").string()
      << "}\n"
         "debug: {fail_rank: 1, fail_step: 40}\n";
  auto trainer = [&](int rank, int64_t generation, int port, const std::string& tag) {
    SpawnOptions o;
    o.argv = {bin("tern-trainer"),
              "--spec",
              (dir / "job.yaml").string(),
              "--rank",
              std::to_string(rank),
              "--world",
              "2",
              "--master",
              "127.0.0.1:" + std::to_string(port),
              "--generation",
              std::to_string(generation),
              "--job",
              "regroup-ckpt",
              "--work-dir",
              dir.string()};
    o.pipe_stdin = true;
    o.stdout_file = (dir / (tag + ".events")).string();
    o.stderr_file = (dir / (tag + ".log")).string();
    auto p = Subprocess::spawn(o);
    EXPECT_TRUE(p.is_ok());
    return std::move(p).value();
  };
  auto port1 = find_free_port();
  ASSERT_TRUE(port1.is_ok());
  auto r0 = trainer(0, 1, *port1, "r0");
  auto r1 = trainer(1, 1, *port1, "r1-gen1");
  auto code1 = r1->wait_for(std::chrono::seconds(120));
  ASSERT_TRUE(code1.has_value());
  EXPECT_EQ(*code1, 17) << slurp(dir / "r1-gen1.log");
  for (int i = 0; i < 200 && slurp(dir / "r0.events").find("peer_lost") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto port2 = find_free_port();
  ASSERT_TRUE(port2.is_ok());
  nlohmann::json cmd = {{"cmd", "regroup"},
                        {"generation", 2},
                        {"world", 2},
                        {"master", "127.0.0.1:" + std::to_string(*port2)}};
  ASSERT_TRUE(r0->write_stdin(cmd.dump() + "\n").is_ok());
  auto r1b = trainer(1, 2, *port2, "r1-gen2");
  auto c0 = r0->wait_for(std::chrono::seconds(240));
  auto c1 = r1b->wait_for(std::chrono::seconds(240));
  ASSERT_TRUE(c0.has_value() && c1.has_value());
  ASSERT_EQ(*c0, 0) << slurp(dir / "r0.log");
  ASSERT_EQ(*c1, 0) << slurp(dir / "r1-gen2.log");
  std::string log0 = slurp(dir / "r0.log");
  EXPECT_NE(log0.find("checkpoint step 40 abandoned"), std::string::npos) << log0;
  EXPECT_NE(log0.find("checkpoint step 40 complete on all 2 ranks"), std::string::npos) << log0;
  // The newest complete steps, written at generation 2.
  std::string manifest = slurp(dir / "ckpt" / "step-000000000080" / "MANIFEST");
  EXPECT_NE(manifest.find("generation 2"), std::string::npos) << manifest;
  EXPECT_TRUE(fs::exists(dir / "ckpt" / "step-000000000070" / "MANIFEST"));
  EXPECT_FALSE(fs::exists(dir / "ckpt" / "step-000000000040")) << "retention keeps 2";
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
