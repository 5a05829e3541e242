// Elastic groups (recovery.min_workers, issue 22) with real tern-trainer processes and this test
// as their parent (what worker daemons do on the coordinator's word): three ranks train over
// Gloo; rank 2 dies (debug.fail_step); ranks 0 and 1 go on at once as a group of two
// (generation 2, members 0,1) sharing rank 2's samples; a standby for rank 2 loads its data and
// model, reports ready, and the group grows back to three at generation 3. The job runs every
// step with the same global batch (the same samples as without the failure) and learns as the
// job without a failure does.
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

class ElasticTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tern_elastic_it_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Subprocess> trainer(int rank, int64_t generation, int port,
                                      const std::string& tag, const std::string& spec,
                                      std::vector<std::string> extra = {}) {
    SpawnOptions o;
    o.argv = {bin("tern-trainer"),
              "--spec",
              (dir_ / spec).string(),
              "--rank",
              std::to_string(rank),
              "--world",
              "3",
              "--master",
              "127.0.0.1:" + std::to_string(port),
              "--generation",
              std::to_string(generation),
              "--job",
              "elastic-it",
              "--work-dir",
              dir_.string()};
    o.argv.insert(o.argv.end(), extra.begin(), extra.end());
    o.pipe_stdin = true;
    o.stdout_file = (dir_ / (tag + ".events")).string();
    o.stderr_file = (dir_ / (tag + ".log")).string();
    auto p = Subprocess::spawn(o);
    EXPECT_TRUE(p.is_ok());
    return std::move(p).value();
  }
  template <typename Pred>
  bool wait_until(Pred pred, std::chrono::seconds limit = 120s) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end;) {
      if (pred()) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  fs::path dir_;
};

TEST_F(ElasticTest, SurvivorsGoOnAtTwoAndAStandbyGrowsTheGroupBackToThree) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) GTEST_SKIP() << "tern-trainer not built";
  const int64_t steps = 150;
  const std::string job =
      "name: elastic\nworkers: 3\nmodel: {type: mlp}\n"
      "data: {source: synthetic, train_size: 6000, test_size: 600}\n"
      "train: {steps: " +
      std::to_string(steps) +
      ", batch_size: 16, log_every: 10, lr: 0.05, "
      "momentum: 0.9}\n"
      "sync: {timeout_s: 20}\n"
      "recovery: {mode: partial, min_workers: 2}\n";
  std::ofstream(dir_ / "job.yaml") << job << "debug: {fail_rank: 2, fail_step: 40}\n";
  std::ofstream(dir_ / "reference.yaml") << job;
  auto p1 = find_free_port();
  ASSERT_TRUE(p1.is_ok());
  auto r0 = trainer(0, 1, *p1, "r0", "job.yaml");
  auto r1 = trainer(1, 1, *p1, "r1", "job.yaml");
  auto r2 = trainer(2, 1, *p1, "r2", "job.yaml");
  auto code2 = r2->wait_for(120s);
  ASSERT_TRUE(code2.has_value()) << "rank 2 did not die at its injected failure";
  EXPECT_EQ(*code2, 17) << slurp(dir_ / "r2.log");

  // Generation 2: ranks 0 and 1 only, at once.
  auto p2 = find_free_port();
  ASSERT_TRUE(p2.is_ok());
  json shrink = {{"cmd", "regroup"},
                 {"generation", 2},
                 {"world", 2},
                 {"master", "127.0.0.1:" + std::to_string(*p2)},
                 {"members", {0, 1}}};
  ASSERT_TRUE(r0->write_stdin(shrink.dump() + "\n").is_ok());
  ASSERT_TRUE(r1->write_stdin(shrink.dump() + "\n").is_ok());
  ASSERT_TRUE(wait_until([&] {
    return !first(events(dir_ / "r0.events"), "regrouped", 2).is_null();
  })) << slurp(dir_ / "r0.log");
  json shrunk = first(events(dir_ / "r0.events"), "regrouped", 2);
  EXPECT_EQ(shrunk["world"], 2);
  const int64_t shrink_step = shrunk["step"].get<int64_t>();

  // A standby for rank 2: ready without a group; a regroup that does not name it is ignored.
  auto s2 = trainer(2, 2, *p2, "s2", "job.yaml", {"--members", "0,1", "--standby"});
  ASSERT_TRUE(wait_until([&] { return !first(events(dir_ / "s2.events"), "ready").is_null(); }))
      << slurp(dir_ / "s2.log");
  EXPECT_FALSE(s2->poll().has_value());
  // Let the pair train a while at world 2 before the group grows.
  ASSERT_TRUE(wait_until([&] {
    for (const auto& e : events(dir_ / "r0.events")) {
      if (e.value("event", "") == "progress" && e.value("step", int64_t{0}) >= shrink_step + 30)
        return true;
    }
    return false;
  })) << slurp(dir_ / "r0.log");
  auto p3 = find_free_port();
  ASSERT_TRUE(p3.is_ok());
  json grow = {{"cmd", "regroup"},
               {"generation", 3},
               {"world", 3},
               {"master", "127.0.0.1:" + std::to_string(*p3)},
               {"members", {0, 1, 2}}};
  for (auto* p : {r0.get(), r1.get(), s2.get()})
    ASSERT_TRUE(p->write_stdin(grow.dump() + "\n").is_ok());
  auto c0 = r0->wait_for(240s);
  auto c1 = r1->wait_for(240s);
  auto c2 = s2->wait_for(240s);
  ASSERT_TRUE(c0.has_value() && c1.has_value() && c2.has_value());
  ASSERT_EQ(*c0, 0) << slurp(dir_ / "r0.log");
  ASSERT_EQ(*c1, 0) << slurp(dir_ / "r1.log");
  ASSERT_EQ(*c2, 0) << slurp(dir_ / "s2.log");

  json f0 = first(events(dir_ / "r0.events"), "finished")["summary"];
  json f2 = first(events(dir_ / "s2.events"), "finished")["summary"];
  ASSERT_TRUE(f0.is_object() && f2.is_object());
  EXPECT_EQ(f0["steps"], steps);
  EXPECT_EQ(f0["world"], 3) << "grown back";
  EXPECT_EQ(f0["min_world"], 2);
  EXPECT_GE(f0["shrunk_steps"].get<int64_t>(), 30);
  EXPECT_EQ(f0["recoveries"], 2) << "the shrink and the grow";
  EXPECT_EQ(f0["steps_rolled_back"], 0);
  // The same global batch every step: as many samples as the job without a failure.
  EXPECT_EQ(f0["samples"], steps * 3 * 16);
  EXPECT_EQ(f2["steps"], steps);
  EXPECT_NE(slurp(dir_ / "s2.log").find("state synced from rank"), std::string::npos);

  // Against the same job without a failure: close, not equal (the group's reductions differ).
  auto p4 = find_free_port();
  ASSERT_TRUE(p4.is_ok());
  auto e0 = trainer(0, 1, *p4, "ref0", "reference.yaml");
  auto e1 = trainer(1, 1, *p4, "ref1", "reference.yaml");
  auto e2 = trainer(2, 1, *p4, "ref2", "reference.yaml");
  for (auto* p : {e0.get(), e1.get(), e2.get()}) {
    auto c = p->wait_for(240s);
    ASSERT_TRUE(c.has_value() && *c == 0) << slurp(dir_ / "ref0.log");
  }
  json ref = first(events(dir_ / "ref0.events"), "finished")["summary"];
  EXPECT_EQ(ref["samples"], f0["samples"]);
  EXPECT_NEAR(f0["test_accuracy"].get<double>(), ref["test_accuracy"].get<double>(), 0.05);
}

}  // namespace
}  // namespace tern
