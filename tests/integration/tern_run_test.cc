// Runs the real `tern run` binary, which starts real tern-trainer processes that train over
// Gloo on localhost, and checks what a user sees: the JSON summary, exit codes, messages.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

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
  auto d = fs::temp_directory_path() / ("tern_run_it_" + std::to_string(getpid()));
  fs::create_directories(d);
  return d;
}

// Runs argv, capturing stdout (stderr goes to a file so failures can be shown).
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

std::string write_spec(const std::string& extra = "") {
  auto p = scratch() / "job.yaml";
  std::ofstream(p) << "name: it-small\nworkers: 2\nmodel: {type: mlp}\n"
                      "data: {source: synthetic, train_size: 1024, test_size: 256}\n"
                      "train: {epochs: 1, batch_size: 32, lr: 0.05, log_every: 4}\n"
                   << extra;
  return p.string();
}

TEST(TernRun, TwoWorkersSucceedWithJsonSummary) {
  auto err = scratch() / "ok.err";
  Output r = run({bin("tern"), "run", write_spec(), "--workers", "2", "--json", "--run-dir",
                  (scratch() / "run-ok").string()},
                 err.string());
  ASSERT_EQ(r.status, 0) << r.out << slurp(err);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_EQ(j["workers"], 2);
  EXPECT_EQ(j["steps"], 16);  // 1024 / 2 ranks / 32
  EXPECT_DOUBLE_EQ(j["epochs"].get<double>(), 1.0);
  EXPECT_GT(j["samples_per_s"].get<double>(), 0);
  EXPECT_GT(j["test_accuracy"].get<double>(), 0.2);  // chance is 0.1
  EXPECT_GT(j["final_loss"].get<double>(), 0);
  EXPECT_GT(j["bytes_sent_per_rank"].get<double>(), 0);
  EXPECT_GT(j["wall_s"].get<double>(), 0);
  // Per-rank logs and the effective spec are kept.
  EXPECT_TRUE(fs::exists(scratch() / "run-ok" / "rank-0.log"));
  EXPECT_TRUE(fs::exists(scratch() / "run-ok" / "rank-1.log"));
  EXPECT_NE(slurp(scratch() / "run-ok" / "spec.yaml").find("workers: 2"), std::string::npos);
}

TEST(TernRun, SetOverridesTheSpec) {
  auto err = scratch() / "set.err";
  Output r = run({bin("tern"), "run", write_spec(), "--json", "--set", "train.batch_size=64", "--set",
                  "train.epochs=2", "--run-dir", (scratch() / "run-set").string()},
                 err.string());
  ASSERT_EQ(r.status, 0) << slurp(err);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["steps"], 16);  // 2 epochs x 512 / 64
}

TEST(TernRun, JsonListsRankZerosEvaluationsOverTime) {
  auto err = scratch() / "evals.err";
  Output r = run({bin("tern"), "run", write_spec(), "--json", "--set", "train.eval_every=4", "--run-dir",
                  (scratch() / "run-evals").string()},
                 err.string());
  ASSERT_EQ(r.status, 0) << slurp(err);
  auto j = nlohmann::json::parse(r.out);
  const auto& evals = j["evals"];
  ASSERT_EQ(evals.size(), 4u) << evals.dump();  // steps 4, 8, 12 and the final one (16)
  double last_t = 0;
  for (size_t i = 0; i < evals.size(); ++i) {
    EXPECT_EQ(evals[i]["step"], 4 * static_cast<int>(i + 1)) << evals.dump();
    EXPECT_GE(evals[i]["train_s"].get<double>(), last_t);
    EXPECT_GE(evals[i]["elapsed_s"].get<double>(), evals[i]["train_s"].get<double>());
    last_t = evals[i]["train_s"].get<double>();
  }
  EXPECT_GT(last_t, 0.0);
  EXPECT_DOUBLE_EQ(evals.back()["test_accuracy"].get<double>(), j["test_accuracy"].get<double>());
}

TEST(TernRun, BadConfigExitsNonZeroNamingTheField) {
  auto err = scratch() / "bad.err";
  Output r = run({bin("tern"), "run", write_spec("sync: {strategy: ssgd, delay: -3}\n")}, err.string());
  EXPECT_EQ(r.status, 2);
  std::string msg = slurp(err);
  EXPECT_NE(msg.find("job.yaml:6: sync.delay must be >= 0, got -3"), std::string::npos) << msg;
  Output r2 = run({bin("tern"), "run", write_spec("trian: {epochs: 1}\n")}, err.string());
  EXPECT_EQ(r2.status, 2);
  EXPECT_NE(slurp(err).find("trian is not a known field"), std::string::npos);
}

TEST(TernRun, ACrashedTrainerFailsTheJobFastWithItsExitCode) {
  auto err = scratch() / "crash.err";
  auto start = std::chrono::steady_clock::now();
  Output r = run({bin("tern"), "run", write_spec("debug: {fail_rank: 1, fail_step: 3}\n"), "--json",
                  "--set", "sync.timeout_s=20"},
                 err.string());
  EXPECT_EQ(r.status, 1);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["state"], "FAILED");
  EXPECT_EQ(j["failed_rank"], 1);
  EXPECT_EQ(j["exit_code"], 17);
  EXPECT_NE(j["reason"].get<std::string>().find("injected failure"), std::string::npos) << j.dump();
  // The survivor noticed the lost peer (or was stopped) well before the 20 s collective timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
}

// Issue 18 item 4: a diverging run (lr 100) stops at the first non-finite step with exit code
// 7 naming the step; the CLI prints valid JSON (it aborted on a JSON null before).
TEST(TernRun, NonFiniteLossFailsWithAClearMessageAndValidJson) {
  auto err = scratch() / "nan.err";
  Output r = run({bin("tern"), "run", write_spec(), "--workers", "2", "--json", "--set", "train.steps=40", "--set",
                  "train.lr=100", "--run-dir", (scratch() / "run-nan").string()},
                 err.string());
  EXPECT_EQ(r.status, 1) << r.out << slurp(err);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["state"], "FAILED");
  EXPECT_EQ(j["exit_code"], 7) << j.dump();
  const std::string reason = j.value("reason", "");
  EXPECT_NE(reason.find("non-finite"), std::string::npos) << reason;
  EXPECT_NE(reason.find(": step "), std::string::npos) << reason;
  EXPECT_NE(reason.find("train.on_nonfinite"), std::string::npos) << reason;
  // Without --json: the same failure, a message, no abort.
  Output plain = run({bin("tern"), "run", write_spec(), "--set", "train.steps=40", "--set", "train.lr=100",
                      "--run-dir", (scratch() / "run-nan-plain").string()},
                     err.string());
  EXPECT_EQ(plain.status, 1) << slurp(err);
  EXPECT_NE(plain.out.find("non-finite"), std::string::npos) << plain.out;
}

TEST(TernRun, SkipStepFinishesAndCountsTheSkippedSteps) {
  auto err = scratch() / "skip.err";
  Output r = run({bin("tern"), "run", write_spec(), "--workers", "2", "--json", "--set", "train.steps=40", "--set",
                  "train.lr=100", "--set", "train.on_nonfinite=skip_step", "--run-dir",
                  (scratch() / "run-skip").string()},
                 err.string());
  ASSERT_EQ(r.status, 0) << r.out << slurp(err);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_EQ(j["steps"], 40);
  EXPECT_GT(j.value("skipped_steps", 0), 0) << j.dump();
}

// Issue 18 item 5: a Criteo file with no valid line is a data error: no replacement rank
// (recovery.mode partial) and the data error, naming the file, as the reason.
TEST(TernRun, CriteoWithNoValidLineFailsOnceWithTheDataError) {
  auto data = scratch() / "novalid.tsv";
  {
    std::ofstream f(data);
    for (int i = 0; i < 200; ++i) f << "garbage\tline\t" << i << "\n";
  }
  auto spec = scratch() / "criteo.yaml";
  std::ofstream(spec) << "name: it-criteo\nworkers: 2\nmodel: {type: dlrm}\n"
                      << "data: {source: criteo, path: " << data.string() << ", table_size: 100}\n"
                      << "train: {steps: 10, batch_size: 16}\nrecovery: {mode: partial, max_recoveries: 3}\n";
  auto err = scratch() / "criteo.err";
  Output r = run({bin("tern"), "run", spec.string(), "--json", "--run-dir", (scratch() / "run-criteo").string()},
                 err.string());
  EXPECT_EQ(r.status, 1) << r.out << slurp(err);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["state"], "FAILED");
  EXPECT_EQ(j["exit_code"], 3) << j.dump();
  EXPECT_FALSE(j.contains("replaced_ranks")) << j.dump();
  EXPECT_NE(j.value("reason", "").find(data.string() + ": no valid line in 200 lines"), std::string::npos)
      << j.dump();
}

// Issue 18 item 6: more intra-op threads than this machine has cores is refused up front.
TEST(TernRun, TrainThreadsBeyondTheCoresAreRefused) {
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores == 0 || cores >= 128) GTEST_SKIP() << "this machine has " << cores << " cores";
  auto err = scratch() / "threads.err";
  Output r = run({bin("tern"), "run", write_spec(), "--set", "train.threads=128"}, err.string());
  EXPECT_EQ(r.status, 2);
  const std::string msg = slurp(err);
  EXPECT_NE(msg.find("train.threads 128"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(cores) + " cores"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tern
