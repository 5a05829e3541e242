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

}  // namespace
}  // namespace tern
