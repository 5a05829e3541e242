// Runs the real `tern run` binary, which starts real tern-trainer processes that train over
// Gloo on localhost, and checks what a user sees: the JSON summary, exit codes, messages.
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
  Output r = run({bin("tern"), "run", write_spec(), "--json", "--set", "train.batch_size=64",
                  "--set", "train.epochs=2", "--run-dir", (scratch() / "run-set").string()},
                 err.string());
  ASSERT_EQ(r.status, 0) << slurp(err);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["steps"], 16);  // 2 epochs x 512 / 64
}

TEST(TernRun, JsonListsRankZerosEvaluationsOverTime) {
  auto err = scratch() / "evals.err";
  Output r = run({bin("tern"), "run", write_spec(), "--json", "--set", "train.eval_every=4",
                  "--run-dir", (scratch() / "run-evals").string()},
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
  Output r =
      run({bin("tern"), "run", write_spec("sync: {strategy: ssgd, delay: -3}\n")}, err.string());
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
  Output r =
      run({bin("tern"), "run", write_spec(), "--workers", "2", "--json", "--set", "train.steps=40",
           "--set", "train.lr=100", "--run-dir", (scratch() / "run-nan").string()},
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
  Output plain = run({bin("tern"), "run", write_spec(), "--set", "train.steps=40", "--set",
                      "train.lr=100", "--run-dir", (scratch() / "run-nan-plain").string()},
                     err.string());
  EXPECT_EQ(plain.status, 1) << slurp(err);
  EXPECT_NE(plain.out.find("non-finite"), std::string::npos) << plain.out;
}

TEST(TernRun, SkipStepFinishesAndCountsTheSkippedSteps) {
  auto err = scratch() / "skip.err";
  Output r = run({bin("tern"), "run", write_spec(), "--workers", "2", "--json", "--set",
                  "train.steps=40", "--set", "train.lr=100", "--set",
                  "train.on_nonfinite=skip_step", "--run-dir", (scratch() / "run-skip").string()},
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
  std::ofstream(spec)
      << "name: it-criteo\nworkers: 2\nmodel: {type: dlrm}\n"
      << "data: {source: criteo, path: " << data.string() << ", table_size: 100}\n"
      << "train: {steps: 10, batch_size: 16}\nrecovery: {mode: partial, max_recoveries: 3}\n";
  auto err = scratch() / "criteo.err";
  Output r = run({bin("tern"), "run", spec.string(), "--json", "--run-dir",
                  (scratch() / "run-criteo").string()},
                 err.string());
  EXPECT_EQ(r.status, 1) << r.out << slurp(err);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["state"], "FAILED");
  EXPECT_EQ(j["exit_code"], 3) << j.dump();
  EXPECT_FALSE(j.contains("replaced_ranks")) << j.dump();
  EXPECT_NE(j.value("reason", "").find(data.string() + ": no valid line in 200 lines"),
            std::string::npos)
      << j.dump();
}

// Issue 22: a Criteo-format file from scripts/gen-criteo.py with every edge case (empty fields,
// negative integers, CRLF on some lines, no final newline, malformed lines of every kind)
// trains the DLRM through `tern run`; the summary counts exactly the malformed lines the
// generator wrote, by defect, and rank 0's log names the first one by file and line. With
// data.malformed fail, or a count bound below the file's, the job fails with a data error
// (exit code 3) naming the file and the line.
TEST(TernRun, GeneratedCriteoFileTrainsAndCountsMalformedLines) {
  const char* src = std::getenv("TERN_SOURCE_DIR");
  const fs::path generator = fs::path(src ? src : ".") / "scripts" / "gen-criteo.py";
  if (access("/usr/bin/python3", X_OK) != 0)
    GTEST_SKIP() << "no /usr/bin/python3 for " << generator;
  const fs::path data = scratch() / "gen.tsv";
  auto err = scratch() / "gen.err";
  Output gen = run({"/usr/bin/python3", generator.string(), data.string(), "--lines", "3000",
                    "--edge-cases", "--malformed-rate", "0.02", "--seed", "7"},
                   err.string());
  ASSERT_EQ(gen.status, 0) << gen.out << slurp(err);
  auto g = nlohmann::json::parse(gen.out, nullptr, false);
  ASSERT_FALSE(g.is_discarded()) << gen.out;
  const int64_t malformed = g["malformed"].get<int64_t>();
  ASSERT_GT(malformed, 1) << gen.out;
  const int64_t first_bad = g["first_malformed_lines"][0].get<int64_t>();

  auto spec = scratch() / "gen-criteo.yaml";
  std::ofstream(spec)
      << "name: it-gen-criteo\nworkers: 2\n"
      << "model: {type: dlrm, embedding_dim: 8, bottom_mlp: [16, 8], top_mlp: [16, 1]}\n"
      << "data: {source: criteo, path: " << data.string() << ", table_size: 512}\n"
      << "train: {steps: 40, batch_size: 64, lr: 0.2}\n";
  const fs::path run_dir = scratch() / "run-gen-criteo";
  Output r = run({bin("tern"), "run", spec.string(), "--json", "--run-dir", run_dir.string()},
                 err.string());
  ASSERT_EQ(r.status, 0) << r.out << slurp(err);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_EQ(j["steps"], 40);
  EXPECT_EQ(j.value("data_lines", -1), 3000) << j.dump();
  EXPECT_EQ(j.value("malformed_lines", -1), malformed) << j.dump();
  for (const auto& [kind, count] : g["malformed_by_kind"].items()) {
    EXPECT_EQ(j.value("malformed_" + kind, -1), count.get<int64_t>()) << kind << ": " << j.dump();
  }
  ASSERT_TRUE(j.contains("test_auc")) << j.dump();
  EXPECT_GT(j["test_auc"].get<double>(), 0.5) << j.dump();
  EXPECT_LE(j["test_auc"].get<double>(), 1.0) << j.dump();
  const std::string log0 = slurp(run_dir / "rank-0.log");
  EXPECT_NE(log0.find("skipping malformed line " + data.string() + ":" + std::to_string(first_bad) +
                      ": "),
            std::string::npos)
      << log0.substr(0, 4000);
  EXPECT_NE(log0.find(std::to_string(malformed) + " malformed"), std::string::npos)
      << log0.substr(0, 4000);

  // data.malformed fail: the first malformed line is a data error naming the file and line.
  Output f = run({bin("tern"), "run", spec.string(), "--json", "--set", "data.malformed=fail",
                  "--run-dir", (scratch() / "run-gen-criteo-fail").string()},
                 err.string());
  EXPECT_EQ(f.status, 1) << f.out << slurp(err);
  auto fj = nlohmann::json::parse(f.out, nullptr, false);
  ASSERT_FALSE(fj.is_discarded()) << f.out;
  EXPECT_EQ(fj["state"], "FAILED");
  EXPECT_EQ(fj["exit_code"], 3) << fj.dump();
  EXPECT_NE(fj.value("reason", "").find(data.string() + ":" + std::to_string(first_bad) + ": "),
            std::string::npos)
      << fj.dump();
  EXPECT_NE(fj.value("reason", "").find("data.malformed is fail"), std::string::npos) << fj.dump();

  // skip with a count bound one below the file's count: the last malformed line exceeds it.
  Output b = run({bin("tern"), "run", spec.string(), "--json", "--set",
                  "data.max_malformed=" + std::to_string(malformed - 1), "--run-dir",
                  (scratch() / "run-gen-criteo-bound").string()},
                 err.string());
  EXPECT_EQ(b.status, 1) << b.out << slurp(err);
  auto bj = nlohmann::json::parse(b.out, nullptr, false);
  ASSERT_FALSE(bj.is_discarded()) << b.out;
  EXPECT_EQ(bj["exit_code"], 3) << bj.dump();
  EXPECT_NE(
      bj.value("reason", "").find("more than data.max_malformed " + std::to_string(malformed - 1)),
      std::string::npos)
      << bj.dump();
  EXPECT_NE(bj.value("reason", "").find(data.string() + ":"), std::string::npos) << bj.dump();
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
