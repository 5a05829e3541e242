// Elastic regroup of real tern-trainer processes, with this test as their parent (what a worker
// daemon does on the coordinator's word): two ranks train over Gloo, rank 1 dies mid-job
// (debug.fail_step: a simulated crash), rank 0 — the survivor — keeps its process and state,
// receives a regroup command on stdin, and a replacement rank 1 starts at generation 2 on a new
// master address. The job finishes every step; the survivor never rolls back; the replacement
// takes the survivor's state, and the job ends bit for bit where the same job without a failure
// ends. Run with SGD and with AdamW (issue 21), whose moments and step counts the replacement
// must take too.
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
using json = nlohmann::json;
using namespace std::chrono_literals;

class RegroupTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tern_regroup_it_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Subprocess> trainer(int rank, int64_t generation, int port,
                                      const std::string& tag,
                                      const std::string& spec = "job.yaml") {
    SpawnOptions o;
    o.argv = {bin("tern-trainer"),
              "--spec",
              (dir_ / spec).string(),
              "--rank",
              std::to_string(rank),
              "--world",
              "2",
              "--master",
              "127.0.0.1:" + std::to_string(port),
              "--generation",
              std::to_string(generation),
              "--job",
              "regroup-it",
              "--work-dir",
              dir_.string()};
    o.pipe_stdin = true;
    o.stdout_file = (dir_ / (tag + ".events")).string();
    o.stderr_file = (dir_ / (tag + ".log")).string();
    auto p = Subprocess::spawn(o);
    EXPECT_TRUE(p.is_ok());
    return std::move(p).value();
  }
  fs::path dir_;
};

TEST_P(RegroupTest, SurvivorKeepsItsStateAndAReplacementJoins) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) GTEST_SKIP() << "tern-trainer not built";
  const int64_t steps = 120;
  const std::string job =
      std::string(
          "name: regroup\nworkers: 2\nmodel: {type: mlp}\n"
          "data: {source: synthetic, train_size: 4096, test_size: 512}\n"
          "train: {steps: ") +
      std::to_string(steps) + ", batch_size: 32, log_every: 10, " +
      (GetParam() == "adamw" ? "optimizer: adamw, lr: 0.002, weight_decay: 0.01}\n"
                             : "lr: 0.05, momentum: 0.9}\n") +
      "sync: {timeout_s: 20}\n"
      "recovery: {mode: partial}\n";
  std::ofstream(dir_ / "job.yaml") << job << "debug: {fail_rank: 1, fail_step: 40}\n";
  std::ofstream(dir_ / "reference.yaml") << job;
  auto p1 = find_free_port();
  ASSERT_TRUE(p1.is_ok());
  auto r0 = trainer(0, 1, *p1, "r0");
  auto r1 = trainer(1, 1, *p1, "r1-gen1");
  auto code1 = r1->wait_for(120s);
  ASSERT_TRUE(code1.has_value()) << "rank 1 did not die at its injected failure";
  EXPECT_EQ(*code1, 17) << slurp(dir_ / "r1-gen1.log");
  // The survivor notices the lost peer and waits (does not exit).
  for (int i = 0; i < 200 && first(events(dir_ / "r0.events"), "peer_lost").is_null(); ++i)
    std::this_thread::sleep_for(100ms);
  json lost = first(events(dir_ / "r0.events"), "peer_lost");
  ASSERT_FALSE(lost.is_null()) << slurp(dir_ / "r0.log");
  EXPECT_FALSE(r0->poll().has_value()) << "the survivor must keep its process";
  int64_t lost_step = lost["step"].get<int64_t>();
  EXPECT_GE(lost_step, 39);
  EXPECT_LE(lost_step, 41);

  // The parent's regroup: generation 2, a new master; the replacement starts there.
  auto p2 = find_free_port();
  ASSERT_TRUE(p2.is_ok());
  json cmd = {{"cmd", "regroup"},
              {"generation", 2},
              {"world", 2},
              {"master", "127.0.0.1:" + std::to_string(*p2)}};
  ASSERT_TRUE(r0->write_stdin(cmd.dump() + "\n").is_ok());
  auto r1b = trainer(1, 2, *p2, "r1-gen2");
  auto c0 = r0->wait_for(240s);
  auto c1 = r1b->wait_for(240s);
  ASSERT_TRUE(c0.has_value() && c1.has_value());
  ASSERT_EQ(*c0, 0) << slurp(dir_ / "r0.log");
  ASSERT_EQ(*c1, 0) << slurp(dir_ / "r1-gen2.log");

  auto ev0 = events(dir_ / "r0.events");
  auto ev1 = events(dir_ / "r1-gen2.events");
  json regrouped = first(ev0, "regrouped");
  ASSERT_FALSE(regrouped.is_null());
  EXPECT_EQ(regrouped["generation"], 2);
  EXPECT_GE(regrouped["step"].get<int64_t>(), lost_step)
      << "no rollback: training resumes where the survivor was";
  json s0 = first(ev0, "finished")["summary"];
  json s1 = first(ev1, "finished")["summary"];
  ASSERT_TRUE(s0.is_object() && s1.is_object());
  EXPECT_EQ(s0["steps"], steps);
  EXPECT_EQ(s1["steps"], steps);
  EXPECT_EQ(s0["recoveries"], 1);
  EXPECT_EQ(s0["steps_rolled_back"], 0);
  EXPECT_EQ(s0["generation"], 2);
  EXPECT_EQ(first(ev1, "finished")["generation"], 2);
  EXPECT_GT(s0["test_accuracy"].get<double>(), 0.5) << "it kept learning";
  EXPECT_NE(slurp(dir_ / "r1-gen2.log").find("state synced from rank 0"), std::string::npos);

  // The replacement took everything the survivor had (parameters, the optimizer's state), and
  // the step the survivor failed in changed nothing: the job ends where the same job without a
  // failure ends, bit for bit. (The evaluation is job-wide, the sum over both ranks' halves of
  // the test set, so replicas that differed would show in test_loss.)
  auto p3 = find_free_port();
  ASSERT_TRUE(p3.is_ok());
  auto f0 = trainer(0, 1, *p3, "ref0", "reference.yaml");
  auto f1 = trainer(1, 1, *p3, "ref1", "reference.yaml");
  auto e0 = f0->wait_for(240s);
  auto e1 = f1->wait_for(240s);
  ASSERT_TRUE(e0.has_value() && e1.has_value());
  ASSERT_EQ(*e0, 0) << slurp(dir_ / "ref0.log");
  ASSERT_EQ(*e1, 0) << slurp(dir_ / "ref1.log");
  json ref = first(events(dir_ / "ref0.events"), "finished")["summary"];
  ASSERT_TRUE(ref.is_object());
  EXPECT_EQ(s0["test_loss"].get<double>(), ref["test_loss"].get<double>());
  EXPECT_EQ(s0["test_accuracy"].get<double>(), ref["test_accuracy"].get<double>());
}

INSTANTIATE_TEST_SUITE_P(Optimizers, RegroupTest, ::testing::Values("sgd", "adamw"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace tern
