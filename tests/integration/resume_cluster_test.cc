// Resume on any cluster, end to end (issue 22's done-when line): `tern cluster up` with 4 workers
// and a checkpoint_root, `tern submit` the MLP job, wait until the coordinator journaled a
// committed checkpoint, `tern cluster down`, `up` again with 3 workers, `tern submit --resume
// JOB --set workers=3`: the new job SUCCEEDS and its summary says it resumed from the journaled
// committed step, written by 4 ranks. Real processes: the CLI, the daemons, tern-trainer.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/subprocess.h"
#include "testing/processes.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

struct Output {
  int status = -1;
  std::string out;
  std::string err;
};

// Processes whose command line mentions `needle` (this test's daemons and trainers).
std::vector<pid_t> processes_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = slurp(e.path() / "cmdline");
    for (auto& c : cmd) c = c == '\0' ? ' ' : c;
    if (cmd.find(needle) != std::string::npos) out.push_back(std::stoi(pid));
  }
  return out;
}

// An integer field of a `tern ... --json` document; -1 when absent.
int64_t as_int(const json& j, const std::string& key) {
  if (!j.contains(key)) return -1;
  // --json prints 64-bit integers as numbers (rpc/proto_json.h): a string here throws.
  return j[key].get<int64_t>();
}

class ResumeClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tern_resume_it_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!cluster_.empty()) run({bin("tern"), "cluster", "down", cluster_, "--grace", "2"});
    for (pid_t p : processes_mentioning(dir_.string())) ::kill(p, SIGKILL);
    fs::remove_all(dir_);
  }

  Output run(std::vector<std::string> argv) {
    static int n = 0;
    fs::path err = dir_ / ("stderr-" + std::to_string(n++));
    SpawnOptions o;
    o.argv = std::move(argv);
    o.pipe_stdout = true;
    o.stderr_file = err.string();
    auto p = Subprocess::spawn(o);
    EXPECT_TRUE(p.is_ok());
    LineReader reader((*p)->stdout_fd());
    std::vector<std::string> lines;
    while (reader.read_lines(&lines, 200ms)) {
    }
    Output r;
    r.status = (*p)->wait();
    for (auto& l : lines) r.out += l + "\n";
    r.err = slurp(err);
    return r;
  }
  Output tern(std::vector<std::string> args) {
    args.insert(args.begin(), bin("tern"));
    if (args.size() > 1 && args[1] != "cluster") args.insert(args.end(), {"--cluster", cluster_});
    return run(args);
  }
  // The cluster file, rewritten in place with `workers` daemons (the same name, state
  // directory, address and checkpoint root: the same cluster, brought up again smaller).
  void write_cluster(int workers) {
    if (port_ == 0) {
      auto port = find_free_port();
      ASSERT_TRUE(port.is_ok());
      port_ = *port;
    }
    cluster_ = (dir_ / "cluster.yaml").string();
    std::ofstream(cluster_) << "name: it-resume\ncoordinator: {listen: 127.0.0.1:" << port_
                            << ", heartbeat_ms: 100, lease_ms: 3000}\n"
                            << "state_dir: " << (dir_ / "state").string() << "\n"
                            << "checkpoint_root: " << root().string() << "\n"
                            << "regions:\n  - {name: local, workers: " << workers
                            << ", slots: 1}\n";
  }
  fs::path root() const { return dir_ / "shared-ckpt"; }
  json status_json(const std::string& id) {
    Output o = tern({"status", id, "--json"});
    if (o.status != 0) return json();
    return json::parse(o.out, nullptr, false);
  }
  json wait_until(const std::string& id, int tries, const std::function<bool(const json&)>& done) {
    json last;
    for (int i = 0; i < tries; ++i) {
      json s = status_json(id);
      if (!s.is_discarded() && s.is_object()) {
        last = s;
        if (done(s)) break;
      }
      std::this_thread::sleep_for(100ms);
    }
    return last;
  }
  static bool terminal(const json& s) {
    const std::string st = s.value("state", "");
    return st == "SUCCEEDED" || st == "FAILED" || st == "CANCELLED";
  }

  fs::path dir_;
  std::string cluster_;
  int port_ = 0;
};

TEST_F(ResumeClusterTest, ClusterDownUpWithFewerWorkersResumesFromTheJournaledStep) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built";
  }
  write_cluster(4);
  Output up = tern({"cluster", "up", cluster_});
  ASSERT_EQ(up.status, 0) << up.err;

  // The MLP on synthetic data, long enough to be cut short: 4 ranks x 2048 samples, batch 16
  // (128 steps per epoch), a checkpoint every 10 steps.
  const fs::path spec = dir_ / "mlp.yaml";
  std::ofstream(spec)
      << "name: it-resume-mlp\nworkers: 4\nmodel: {type: mlp}\n"
         "data: {source: synthetic, train_size: 8192, test_size: 256}\n"
         "train: {steps: 100000, batch_size: 16, lr: 0.05, momentum: 0.9, log_every: 5}\n"
         "recovery: {checkpoint_every: 10}\n";
  Output sub = tern({"submit", spec.string()});
  ASSERT_EQ(sub.status, 0) << sub.err;
  ASSERT_EQ(sub.out, "j-1\n");
  json s = wait_until(
      "j-1", 1200, [](const json& j) { return as_int(j, "checkpoint_step") >= 20 || terminal(j); });
  ASSERT_GE(as_int(s, "checkpoint_step"), 20) << "no committed checkpoint journaled: " << s.dump();
  EXPECT_EQ(s.value("checkpoint_dir", ""), (root() / "j-1").string()) << s.dump();
  Output text = tern({"status", "j-1"});
  EXPECT_NE(text.out.find("checkpoint step "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(" committed in " + (root() / "j-1").string()), std::string::npos)
      << text.out;

  Output down = tern({"cluster", "down", cluster_});
  ASSERT_EQ(down.status, 0) << down.err;

  // The same cluster again, with one worker fewer. The old job cannot go on (its ranks' daemons
  // restarted, one never came back): it ends, its journaled step stays.
  write_cluster(3);
  up = tern({"cluster", "up", cluster_});
  ASSERT_EQ(up.status, 0) << up.err;
  json old = wait_until("j-1", 600, terminal);
  ASSERT_TRUE(terminal(old)) << old.dump();
  const int64_t journaled = as_int(old, "checkpoint_step");
  ASSERT_GE(journaled, 20) << old.dump();
  ASSERT_TRUE(fs::exists(root() / "j-1")) << "checkpoints under the shared root";

  // Where the job continues: the same sample position (4 ranks x 16 samples per step, 128 steps
  // per epoch; at 3 ranks 48 samples per step, 171 per epoch); 30 more steps to train.
  const int64_t epoch = journaled / 128;
  const int64_t at = epoch * 171 + std::min<int64_t>(171, (journaled % 128) * 64 / 48);
  const int64_t steps = at + 30;
  Output resumed = tern({"submit", "--resume", "j-1", "--set", "workers=3", "--set",
                         "train.steps=" + std::to_string(steps), "--watch", "--json"});
  ASSERT_EQ(resumed.status, 0) << resumed.out << resumed.err;
  json r = status_json("j-2");
  ASSERT_EQ(r.value("state", ""), "SUCCEEDED") << r.dump();
  EXPECT_EQ(as_int(r, "world_size"), 3);
  EXPECT_EQ(r.value("resumed_job", ""), "j-1");
  EXPECT_EQ(as_int(r, "resumed_step"), journaled);
  ASSERT_TRUE(r.contains("summary")) << r.dump();
  EXPECT_EQ(r["summary"].value("resumed_from_step", -1.0), static_cast<double>(journaled))
      << r.dump();
  EXPECT_EQ(r["summary"].value("resumed_from_world", -1.0), 4.0) << r.dump();
  EXPECT_EQ(r["summary"].value("steps", -1.0), static_cast<double>(steps)) << r.dump();
  // The new job checkpoints into its own directory under the root.
  EXPECT_EQ(r.value("checkpoint_dir", ""), (root() / "j-2").string()) << r.dump();
  Output logs = tern({"logs", "j-2", "--rank", "0"});
  EXPECT_NE(logs.out.find("written by 4 ranks"), std::string::npos) << logs.out;

  // What cannot be resumed is refused with the reason and exit 1, adding no job.
  Output unknown = tern({"submit", "--resume", "j-9"});
  EXPECT_NE(unknown.status, 0);
  EXPECT_NE(unknown.err.find("no job 'j-9'"), std::string::npos) << unknown.err;
  Output both = tern({"submit", spec.string(), "--resume", "j-1"});
  EXPECT_NE(both.status, 0);
}

}  // namespace
}  // namespace tern
