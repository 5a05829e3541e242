// The control plane as a user drives it: `tern cluster up` a 3-worker local cluster from a
// temporary cluster file, submit and watch jobs, status/logs/cancel, kill -9 the coordinator
// and restart it (the job list is intact, the daemons carry on), `cluster down` with no
// process left behind; kill -9 the coordinator while a real job trains. Trainers are the fake
// script (tests/worker/fake_trainer.sh); the RealTrainer test runs the real tern-trainer when it is
// built.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
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

std::string source_dir() {
  const char* d = std::getenv("TERN_SOURCE_DIR");
  return d ? d : ".";
}

// Processes whose command line mentions `needle` (daemons and trainers of one test cluster).
std::vector<std::string> processes_mentioning(const std::string& needle) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string st;
    std::getline(stat, st);
    auto close = st.rfind(')');
    if (close != std::string::npos && close + 2 < st.size() && st[close + 2] == 'Z')
      continue;  // reaped soon
    std::string cmd = slurp(e.path() / "cmdline");
    for (auto& c : cmd) c = c == '\0' ? ' ' : c;
    if (cmd.find(needle) != std::string::npos) out.push_back(pid + ": " + cmd);
  }
  return out;
}

// An integer field of a `tern ... --json` document.
int64_t as_int(const json& j, const std::string& key) {
  if (!j.contains(key)) return 0;
  // --json prints 64-bit integers as numbers (rpc/proto_json.h): a string here throws.
  return j[key].get<int64_t>();
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_cp_it_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!cluster_.empty()) run({bin("tern"), "cluster", "down", cluster_, "--grace", "2"});
    for (const auto& p : processes_mentioning(dir_.string())) {
      ::kill(std::stoi(p.substr(0, p.find(':'))), SIGKILL);
    }
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
  std::string write_cluster(const std::string& trainer_line, const std::string& regions) {
    auto port = find_free_port();
    EXPECT_TRUE(port.is_ok());
    cluster_ = (dir_ / "cluster.yaml").string();
    std::ofstream(cluster_) << "name: it\ncoordinator: {listen: 127.0.0.1:" << *port
                            << ", heartbeat_ms: 100, lease_ms: 3000}\n"
                            << "state_dir: " << (dir_ / "state").string() << "\n"
                            << trainer_line << "regions:\n"
                            << regions;
    return cluster_;
  }
  std::string write_job(const std::string& name, int workers, const std::string& extra = "") {
    fs::path p = dir_ / (name + ".yaml");
    std::ofstream(p)
        << "name: " << name << "\nworkers: " << workers
        << "\nmodel: {type: mlp}\ndata: {source: synthetic, train_size: 512, test_size: 128}\n"
        << "train: {epochs: 1, batch_size: 32, log_every: 2}\n"
        << extra;
    return p.string();
  }
  json status_json(const std::string& id) {
    Output o = tern({"status", id, "--json"});
    EXPECT_EQ(o.status, 0) << o.err;
    return json::parse(o.out, nullptr, false);
  }

  // Polls `tern status ID` until the job reaches a terminal state (or `tries` x 100 ms pass);
  // the last status read. Tolerates a coordinator that is briefly down.
  json wait_terminal(const std::string& id, int tries) {
    json last;
    for (int i = 0; i < tries; ++i) {
      Output o = tern({"status", id, "--json"});
      if (o.status == 0) {
        last = json::parse(o.out, nullptr, false);
        std::string st = last.value("state", "");
        if (st == "SUCCEEDED" || st == "FAILED" || st == "CANCELLED") break;
      }
      std::this_thread::sleep_for(100ms);
    }
    return last;
  }
  // Polls until every rank of job `id` reported at least `step` (or 30 s pass); the lowest step.
  int64_t wait_for_step(const std::string& id, int world, int64_t step) {
    int64_t lowest = 0;
    for (int i = 0; i < 300 && lowest < step; ++i) {
      json s = status_json(id);
      if (s.contains("ranks") && static_cast<int>(s["ranks"].size()) == world) {
        lowest = as_int(s["ranks"][0], "step");
        for (const auto& r : s["ranks"]) lowest = std::min(lowest, as_int(r, "step"));
      }
      std::this_thread::sleep_for(100ms);
    }
    return lowest;
  }

  // kill -9 the cluster's coordinator and wait until it is gone.
  void kill_coordinator() {
    pid_t coordinator = std::stoi(slurp(dir_ / "state" / "run" / "coordinator.pid"));
    ASSERT_EQ(::kill(coordinator, SIGKILL), 0);
    for (int i = 0; i < 50 && ::kill(coordinator, 0) == 0; ++i) std::this_thread::sleep_for(20ms);
  }
  // `tern jobs --json` once the (restarted) coordinator answers, or its last failure after 10 s.
  Output jobs_once_up() {
    Output jobs;
    for (int i = 0; i < 100; ++i) {
      jobs = tern({"jobs", "--json"});
      if (jobs.status == 0) break;
      std::this_thread::sleep_for(100ms);
    }
    return jobs;
  }
  // Starts the coordinator again on the same config (as `tern cluster up` would, detached).
  void restart_coordinator() {
    SpawnOptions restart;
    restart.argv = {bin("tern"), "coordinator", "--config", cluster_};
    restart.stderr_file = (dir_ / "state" / "logs" / "coordinator.log").string();
    restart.stdout_file = restart.stderr_file;
    restart.new_session = true;
    restart.die_with_parent = false;
    auto proc = Subprocess::spawn(restart);
    ASSERT_TRUE(proc.is_ok());
    std::ofstream(dir_ / "state" / "run" / "coordinator.pid") << (*proc)->pid() << "\n";
    (*proc)->detach();
  }

  fs::path dir_;
  std::string cluster_;
};

TEST_F(ClusterTest, LifecycleWithRestartAndCleanShutdown) {
  write_cluster("trainer: " + source_dir() + "/tests/worker/fake_trainer.sh\n",
                "  - {name: east, workers: 2, slots: 1}\n  - {name: west, workers: 1, slots: 1}\n");
  Output up = tern({"cluster", "up", cluster_});
  ASSERT_EQ(up.status, 0) << up.out << up.err;
  EXPECT_NE(up.out.find("3 workers in 2 regions"), std::string::npos) << up.out;
  EXPECT_NE(up.out.find((dir_ / "state" / "logs").string()), std::string::npos)
      << "says where the logs are";
  Output again = tern({"cluster", "up", cluster_});
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.err.find("already up"), std::string::npos) << again.err;

  Output workers = tern({"workers", "--json"});
  ASSERT_EQ(workers.status, 0) << workers.err;
  auto w = json::parse(workers.out);
  ASSERT_EQ(w["workers"].size(), 3u);
  for (const auto& x : w["workers"]) EXPECT_EQ(x["state"], "READY");
  Output table = tern({"workers"});
  EXPECT_NE(table.out.find("east-1"), std::string::npos) << table.out;

  // A job watched to the end (plain lines: stdout is not a TTY).
  Output watched = tern({"submit", write_job("it-small", 3, "placement: spread\n"), "--watch"});
  ASSERT_EQ(watched.status, 0) << watched.out << watched.err;
  EXPECT_NE(watched.out.find("j-1 SUCCEEDED"), std::string::npos) << watched.out;
  EXPECT_NE(watched.out.find("test accuracy 0.8750"), std::string::npos) << watched.out;
  json s = status_json("j-1");
  EXPECT_EQ(s["state"], "SUCCEEDED");
  EXPECT_DOUBLE_EQ(s["test_accuracy"].get<double>(), 0.875);
  ASSERT_EQ(s["ranks"].size(), 3u);
  EXPECT_EQ(s["ranks"][2]["region"], "west") << "spread: ranks in both regions";
  // The trainers' eval events carry test_auc (as DLRM's do): trainer -> worker daemon ->
  // coordinator -> `tern status`.
  Output shown = tern({"status", "j-1"});
  EXPECT_NE(shown.out.find("test auc   0.8125"), std::string::npos) << shown.out;
  Output logs = tern({"logs", "j-1", "--rank", "2"});
  EXPECT_EQ(logs.status, 0);
  EXPECT_NE(logs.out.find("fake trainer: done"), std::string::npos) << logs.out;

  // A long job: per-rank progress while it runs, then cancelled.
  Output sub = tern({"submit", write_job("it-hang", 2)});
  ASSERT_EQ(sub.status, 0) << sub.err;
  EXPECT_EQ(sub.out, "j-2\n");
  bool progressed = false;
  for (int i = 0; i < 100 && !progressed; ++i) {
    json r = status_json("j-2");
    progressed = r["state"] == "RUNNING" && r["ranks"].size() == 2 &&
                 r["ranks"][1]["step"].get<int64_t>() > 0;
    if (!progressed) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(progressed) << "status --json shows per-rank progress while running";
  Output human = tern({"status", "j-2"});
  EXPECT_NE(human.out.find("RUNNING"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("SAMPLES/S"), std::string::npos) << human.out;
  Output cancel = tern({"cancel", "j-2"});
  EXPECT_EQ(cancel.status, 0) << cancel.err;
  EXPECT_EQ(status_json("j-2")["state"], "CANCELLED");
  for (int i = 0; i < 50 && !processes_mentioning("j-2/spec.yaml").empty(); ++i)
    std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(processes_mentioning("j-2/spec.yaml").empty()) << "cancelled trainers are gone";

  // Bad input is refused with the field named; the job list does not change.
  Output bad = tern({"submit", write_job("it-bad", 2, "sync: {strategy: telepathy}\n")});
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("sync.strategy"), std::string::npos) << bad.err;

  // kill -9 the coordinator: clients say it is unreachable; restarted, it has every job.
  ASSERT_NO_FATAL_FAILURE(kill_coordinator());
  Output down = tern({"jobs"});
  EXPECT_EQ(down.status, 3);
  EXPECT_NE(down.err.find("unreachable"), std::string::npos) << down.err;
  ASSERT_NO_FATAL_FAILURE(restart_coordinator());
  Output jobs = jobs_once_up();
  ASSERT_EQ(jobs.status, 0) << jobs.err;
  auto list = json::parse(jobs.out)["jobs"];
  ASSERT_EQ(list.size(), 2u) << jobs.out;
  EXPECT_EQ(list[0]["job_id"], "j-1");
  EXPECT_EQ(list[0]["state"], "SUCCEEDED");
  EXPECT_DOUBLE_EQ(list[0]["test_accuracy"].get<double>(), 0.875);
  EXPECT_EQ(list[1]["state"], "CANCELLED");
  // The daemons carry on with the restarted coordinator.
  Output after = tern({"submit", write_job("it-after", 3), "--watch"});
  EXPECT_EQ(after.status, 0) << after.out << after.err;
  EXPECT_NE(after.out.find("j-3 SUCCEEDED"), std::string::npos) << after.out;

  Output stop = tern({"cluster", "down", cluster_});
  EXPECT_EQ(stop.status, 0) << stop.err;
  EXPECT_NE(stop.out.find("stopped 4 processes"), std::string::npos) << stop.out;
  EXPECT_TRUE(processes_mentioning(dir_.string()).empty())
      << "orphans: " << processes_mentioning(dir_.string())[0];
  EXPECT_TRUE(fs::is_empty(dir_ / "state" / "run")) << "pid files removed";
  cluster_.clear();
}

// Every `--json` output is one JSON document per line, in one style (rpc/proto_json.h): the
// same short state names as `tern run --json` (SUCCEEDED, not JOB_STATE_SUCCEEDED) and 64-bit
// integers as numbers.
void expect_one_style(const std::string& what, const std::string& out, size_t min_lines = 1) {
  std::vector<json> docs;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << what << ": not one JSON document per line: " << line;
    docs.push_back(std::move(j));
  }
  ASSERT_GE(docs.size(), min_lines) << what << ": " << out;
  static const std::set<std::string> kStates = {"UNSPECIFIED", "PENDING", "ASSIGNED",  "RUNNING",
                                                "SUCCEEDED",   "FAILED",  "CANCELLED", "STOPPED",
                                                "READY",       "LOST"};
  static const std::set<std::string> kIntegers = {"step",       "total_steps", "generation",
                                                  "recoveries", "world_size",  "slots",
                                                  "offset",     "rank",        "world"};
  std::function<void(const json&, const std::string&)> walk = [&](const json& j,
                                                                  const std::string& path) {
    if (j.is_object()) {
      for (const auto& [k, v] : j.items()) {
        if (k == "state" && v.is_string()) {
          EXPECT_TRUE(kStates.count(v.get<std::string>()))
              << what << " " << path << "." << k << " = " << v;
        }
        if (kIntegers.count(k)) {
          EXPECT_TRUE(v.is_number_integer()) << what << " " << path << "." << k << " = " << v;
        }
        walk(v, path + "." + k);
      }
    } else if (j.is_array()) {
      for (const auto& v : j) walk(v, path + "[]");
    } else if (j.is_string()) {
      const std::string v = j.get<std::string>();
      EXPECT_EQ(v.find("_STATE_"), std::string::npos) << what << " " << path << " = " << v;
    }
  };
  for (const auto& d : docs) walk(d, "");
}

// Group commit (journal_writer.h): many submits at once share fdatasyncs, and every one that was
// acknowledged survives a kill -9 that follows at once.
TEST_F(ClusterTest, ConcurrentSubmitsAcknowledgedAreDurableAcrossKill9) {
  write_cluster("trainer: " + source_dir() + "/tests/worker/fake_trainer.sh\n",
                "  - {name: local, workers: 1, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  const std::string spec = write_job("it-wide", 4);  // never placed: one worker with one slot
  constexpr int kClients = 16;
  std::string script = "for i in $(seq " + std::to_string(kClients) + "); do '" + bin("tern") +
                       "' submit '" + spec + "' --cluster '" + cluster_ + "' > '" +
                       (dir_ / "sub.").string() + "'$i 2>&1 & done; wait";
  ASSERT_EQ(run({"/bin/bash", "-c", script}).status, 0);
  // A client that could not connect on a loaded machine was not acknowledged; every one that
  // was must survive.
  std::set<std::string> acknowledged;
  for (int i = 1; i <= kClients; ++i) {
    std::string out = slurp(dir_ / ("sub." + std::to_string(i)));
    if (out.rfind("j-", 0) == 0) {
      acknowledged.insert(out.substr(0, out.find('\n')));
    } else {
      EXPECT_NE(out.find("unreachable"), std::string::npos) << "submit " << i << ": " << out;
    }
  }
  ASSERT_GE(acknowledged.size(), static_cast<size_t>(kClients / 2));
  ASSERT_NO_FATAL_FAILURE(kill_coordinator());
  ASSERT_NO_FATAL_FAILURE(restart_coordinator());
  Output jobs = jobs_once_up();
  ASSERT_EQ(jobs.status, 0) << jobs.err;
  std::set<std::string> restored;
  const json listed = json::parse(jobs.out);
  for (const auto& j : listed["jobs"]) restored.insert(j["job_id"].get<std::string>());
  for (const std::string& id : acknowledged)
    EXPECT_TRUE(restored.count(id)) << id << " was lost: " << jobs.out;
  EXPECT_LE(restored.size(), static_cast<size_t>(kClients));
}

TEST_F(ClusterTest, EveryJsonOutputIsOneStyle) {
  write_cluster("trainer: " + source_dir() + "/tests/worker/fake_trainer.sh\n",
                "  - {name: east, workers: 2, slots: 1}\n");
  Output up = tern({"cluster", "up", cluster_, "--json"});
  ASSERT_EQ(up.status, 0) << up.out << up.err;
  expect_one_style("cluster up", up.out);
  Output workers = tern({"workers", "--json"});
  ASSERT_EQ(workers.status, 0) << workers.err;
  expect_one_style("workers", workers.out);
  EXPECT_EQ(json::parse(workers.out)["workers"][0]["state"], "READY") << workers.out;
  EXPECT_TRUE(json::parse(workers.out)["workers"][0]["slots"].is_number_integer()) << workers.out;

  Output sub = tern({"submit", write_job("it-json", 2), "--json"});
  ASSERT_EQ(sub.status, 0) << sub.err;
  expect_one_style("submit", sub.out);
  const std::string id = json::parse(sub.out)["job_id"];
  Output watched = tern({"status", id, "--watch", "--json"});
  ASSERT_EQ(watched.status, 0) << watched.err;
  expect_one_style("status --watch", watched.out);
  Output status = tern({"status", id, "--json"});
  expect_one_style("status", status.out);
  json s = json::parse(status.out);
  EXPECT_EQ(s["state"], "SUCCEEDED") << status.out;
  EXPECT_EQ(s["step"], s["total_steps"]) << status.out;
  EXPECT_TRUE(s["created_at"].is_string()) << "timestamps stay RFC 3339 strings: " << status.out;
  Output logs = tern({"logs", id, "--rank", "1", "--json"});
  ASSERT_EQ(logs.status, 0) << logs.err;
  expect_one_style("logs", logs.out);
  EXPECT_NE(logs.out.find("\"line\":\"fake trainer: done"), std::string::npos) << logs.out;

  Output watch_sub = tern({"submit", write_job("it-json-watch", 1), "--watch", "--json"});
  ASSERT_EQ(watch_sub.status, 0) << watch_sub.err;
  expect_one_style("submit --watch", watch_sub.out);
  Output hang = tern({"submit", write_job("it-json-hang", 1), "--json"});
  const std::string hang_id = json::parse(hang.out)["job_id"];
  Output cancel = tern({"cancel", hang_id, "--json"});
  ASSERT_EQ(cancel.status, 0) << cancel.err;
  expect_one_style("cancel", cancel.out);
  EXPECT_EQ(json::parse(cancel.out)["state"], "CANCELLED") << cancel.out;
  Output jobs = tern({"jobs", "--json"});
  expect_one_style("jobs", jobs.out);
  EXPECT_EQ(json::parse(jobs.out)["jobs"].size(), 3u) << jobs.out;

  Output down = tern({"cluster", "down", cluster_, "--json"});
  EXPECT_EQ(down.status, 0) << down.err;
  expect_one_style("cluster down", down.out);
  Output repair = run({bin("tern"), "coordinator", "--config", cluster_, "--repair", "--json"});
  EXPECT_EQ(repair.status, 0) << repair.err;
  expect_one_style("coordinator --repair", repair.out);
  cluster_.clear();
}

TEST_F(ClusterTest, FailingRankFailsTheJobWithTheReason) {
  write_cluster("trainer: " + source_dir() + "/tests/worker/fake_trainer.sh\n",
                "  - {name: local, workers: 2}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  Output o = tern({"submit", write_job("it-crash", 2), "--watch"});
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.out.find("FAILED"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("exited with code 4"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("simulated peer loss"), std::string::npos) << "last log lines: " << o.out;
}

// Issue 18 item 2: a damaged journal stops `tern cluster up` with the coordinator's message
// (the file, the record, the byte offset and the way out) and nothing is lost; `tern
// coordinator --repair` salvages the intact records and keeps the damaged file; the cluster
// then starts, and job ids go on above every id handed out before.
TEST_F(ClusterTest, DamagedJournalStopsClusterUpAndRepairSalvagesIt) {
  write_cluster("trainer: " + source_dir() + "/tests/worker/fake_trainer.sh\n",
                "  - {name: local, workers: 1, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  EXPECT_EQ(tern({"submit", write_job("it-a", 1)}).out, "j-1\n");
  EXPECT_EQ(tern({"submit", write_job("it-b", 1)}).out, "j-2\n");
  ASSERT_EQ(tern({"cluster", "down", cluster_}).status, 0);

  const fs::path journal = dir_ / "state" / "journal" / "journal.log";
  std::string bytes = slurp(journal);
  ASSERT_GT(bytes.size(), 100u);
  bytes[bytes.size() - 2] ^= 0x08;  // a flipped bit in the last (acknowledged) record
  std::ofstream(journal, std::ios::binary | std::ios::trunc) << bytes;

  Output up = tern({"cluster", "up", cluster_});
  EXPECT_EQ(up.status, 1);
  EXPECT_NE(up.err.find(journal.string() + ": record "), std::string::npos) << up.err;
  EXPECT_NE(up.err.find("fails its checksum"), std::string::npos) << up.err;
  EXPECT_NE(up.err.find("tern coordinator --config " + cluster_ + " --repair"), std::string::npos)
      << up.err;
  EXPECT_EQ(slurp(journal), bytes) << "nothing changed";
  EXPECT_TRUE(processes_mentioning(dir_.string()).empty());

  Output repair = run({bin("tern"), "coordinator", "--config", cluster_, "--repair"});
  ASSERT_EQ(repair.status, 0) << repair.out << repair.err;
  EXPECT_NE(repair.out.find("kept: "), std::string::npos) << repair.out;
  EXPECT_NE(repair.out.find("lost: "), std::string::npos) << repair.out;
  EXPECT_NE(repair.out.find("the next job is j-3"), std::string::npos) << repair.out;
  bool kept = false;
  for (const auto& e : fs::directory_iterator(journal.parent_path())) {
    kept |= e.path().filename().string().rfind("journal.log.damaged-", 0) == 0 &&
            slurp(e.path()) == bytes;
  }
  EXPECT_TRUE(kept) << "the damaged journal is kept next to the new one";
  Output again = run({bin("tern"), "coordinator", "--config", cluster_, "--repair", "--json"});
  ASSERT_EQ(again.status, 0) << again.err;
  json report = json::parse(again.out, nullptr, false);
  EXPECT_EQ(report.value("changed", true), false) << again.out;
  EXPECT_EQ(report.value("next_job_id", ""), "j-3") << again.out;

  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  EXPECT_EQ(tern({"submit", write_job("it-c", 1)}).out, "j-3\n");
}

TEST_F(ClusterTest, InvalidClusterFileStartsNothing) {
  cluster_ = (dir_ / "bad.yaml").string();
  std::ofstream(cluster_) << "name: bad\nstate_dir: " << (dir_ / "state").string()
                          << "\nregions:\n  - {name: r, workers: -1}\n";
  Output o = run({bin("tern"), "cluster", "up", cluster_});
  EXPECT_EQ(o.status, 2);
  EXPECT_NE(o.err.find("workers"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("nothing was started"), std::string::npos) << o.err;
  EXPECT_FALSE(fs::exists(dir_ / "state"));
  EXPECT_TRUE(processes_mentioning(dir_.string()).empty());
  cluster_.clear();
}

TEST_F(ClusterTest, RealTrainer) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  write_cluster("", "  - {name: local, workers: 2, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  Output o = tern({"submit", write_job("it-real", 2), "--watch"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  json s = status_json("j-1");
  EXPECT_EQ(s["state"], "SUCCEEDED");
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.2);  // chance is 0.1
  Output logs = tern({"logs", "j-1", "--rank", "1"});
  EXPECT_FALSE(logs.out.empty());
}

// kill -9 the coordinator while a real job trains: the trainers and daemons carry on, the
// restarted coordinator replays its journal, the daemons re-register and report, and the job
// finishes SUCCEEDED with its accuracy (issue 7: coordinator restart).
TEST_F(ClusterTest, CoordinatorKilledMidJobTheJobStillCompletes) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  write_cluster("", "  - {name: local, workers: 2, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  fs::path spec = dir_ / "it-long.yaml";
  std::ofstream(spec) << "name: it-long\nworkers: 2\nmodel: {type: mlp}\n"
                         "data: {source: synthetic, train_size: 8192, test_size: 256}\n"
                         "train: {epochs: 4, batch_size: 32, log_every: 5}\n";
  Output sub = tern({"submit", spec.string()});
  ASSERT_EQ(sub.status, 0) << sub.err;
  // Wait until it trains, then kill the coordinator mid-job.
  ASSERT_GE(wait_for_step("j-1", 2, 10), 10) << "the job did not start training";
  ASSERT_NO_FATAL_FAILURE(kill_coordinator());
  std::this_thread::sleep_for(1s);  // the trainers keep going without it
  ASSERT_NO_FATAL_FAILURE(restart_coordinator());
  json last = wait_terminal("j-1", 1200);
  ASSERT_EQ(last.value("state", ""), "SUCCEEDED") << last.dump();
  EXPECT_GT(last["test_accuracy"].get<double>(), 0.2);
  EXPECT_EQ(as_int(last, "generation"), 1) << "the job was not restarted: " << last.dump();
}

// kill -9 one trainer of a real 2-rank job with recovery.mode partial (issue 7): the daemon
// reports the exit, the coordinator bumps the generation and restarts the rank (its own worker
// has the slot again), the survivor regroups in place without rolling back, and the job
// finishes SUCCEEDED with one recovery.
TEST_F(ClusterTest, TrainerKilledMidJobPartialRecoveryKeepsTheSurvivor) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  write_cluster("", "  - {name: local, workers: 2, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  fs::path spec = dir_ / "it-kill.yaml";
  std::ofstream(spec) << "name: it-kill\nworkers: 2\nmodel: {type: mlp}\n"
                         "data: {source: synthetic, train_size: 8192, test_size: 256}\n"
                         "train: {epochs: 3, batch_size: 32, log_every: 5}\n"
                         "recovery: {mode: partial, max_recoveries: 2}\n";
  Output sub = tern({"submit", spec.string()});
  ASSERT_EQ(sub.status, 0) << sub.err;
  ASSERT_GE(wait_for_step("j-1", 2, 20), 20) << "the job did not start training";
  pid_t victim = -1;
  for (const auto& p : processes_mentioning(dir_.string())) {
    if (p.find("tern-trainer") != std::string::npos && p.find("--rank 1 ") != std::string::npos)
      victim = std::stoi(p.substr(0, p.find(':')));
  }
  ASSERT_GT(victim, 0) << "no trainer for rank 1";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  json last = wait_terminal("j-1", 1800);
  ASSERT_EQ(last.value("state", ""), "SUCCEEDED") << last.dump();
  EXPECT_EQ(as_int(last, "recoveries"), 1) << last.dump();
  EXPECT_EQ(as_int(last, "generation"), 2) << last.dump();
  EXPECT_GT(last["test_accuracy"].get<double>(), 0.2);
  ASSERT_TRUE(last.contains("summary")) << last.dump();
  EXPECT_EQ(last["summary"].value("steps_rolled_back", -1.0), 0.0) << last.dump();
  EXPECT_EQ(last["summary"].value("recoveries", -1.0), 1.0) << last.dump();
  Output logs = tern({"logs", "j-1", "--rank", "0"});
  EXPECT_NE(logs.out.find("regrouped at generation 2"), std::string::npos) << logs.out;
}

// Issue 18 item 5: a Criteo file with no valid line on a cluster with recovery.mode partial:
// the job fails once, at once, with the data error naming the file as its reason; no regroup.
TEST_F(ClusterTest, CriteoWithNoValidLineFailsOnceWithTheDataError) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  fs::create_directories(dir_ / "data");
  const fs::path data = dir_ / "data" / "novalid.tsv";
  {
    std::ofstream f(data);
    for (int i = 0; i < 200; ++i) f << "garbage\tline\t" << i << "\n";
  }
  write_cluster("data_dirs: [" + (dir_ / "data").string() + "]\n",
                "  - {name: local, workers: 2, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  fs::path spec = dir_ / "it-criteo.yaml";
  std::ofstream(spec) << "name: it-criteo\nworkers: 2\nmodel: {type: dlrm}\n"
                      << "data: {source: criteo, path: " << data.string() << ", table_size: 100}\n"
                      << "train: {steps: 10, batch_size: 16}\n"
                      << "recovery: {mode: partial, max_recoveries: 3}\n";
  Output sub = tern({"submit", spec.string()});
  ASSERT_EQ(sub.status, 0) << sub.err;
  json last = wait_terminal("j-1", 600);
  ASSERT_EQ(last.value("state", ""), "FAILED") << last.dump();
  EXPECT_EQ(as_int(last, "recoveries"), 0) << last.dump();
  EXPECT_EQ(as_int(last, "generation"), 1) << last.dump();
  const std::string reason = last.value("reason", "");
  EXPECT_NE(reason.find("data error"), std::string::npos) << reason;
  EXPECT_NE(reason.find(data.string() + ": no valid line in 200 lines"), std::string::npos)
      << reason;
  EXPECT_EQ(reason.find("rendezvous"), std::string::npos) << reason;
  EXPECT_EQ(reason.find("regroup"), std::string::npos) << reason;
}

// DLRM's test AUC travels from the trainer's eval event through the daemon and the coordinator
// to `tern status` (the daemon used to keep only accuracy and loss).
TEST_F(ClusterTest, DlrmTestAucReachesStatus) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  write_cluster("", "  - {name: local, workers: 2, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  fs::path spec = dir_ / "it-auc.yaml";
  std::ofstream(spec)
      << "name: it-auc\nworkers: 2\nmodel: {type: dlrm, embedding_dim: 4, bottom_mlp: [8, 4], "
      << "top_mlp: [8, 1]}\ndata: {source: synthetic_ctr, num_tables: 4, table_size: 50, "
      << "train_size: 2048, test_size: 512}\ntrain: {steps: 8, batch_size: 32, eval_every: 4}\n";
  ASSERT_EQ(tern({"submit", spec.string()}).status, 0);
  json last = wait_terminal("j-1", 600);
  ASSERT_EQ(last.value("state", ""), "SUCCEEDED") << last.dump();
  for (const auto& r : last["ranks"]) {
    ASSERT_TRUE(r["metrics"].contains("test_auc")) << r.dump();
    const double auc = r["metrics"]["test_auc"].get<double>();
    EXPECT_GE(auc, 0.0);
    EXPECT_LE(auc, 1.0);
  }
  Output human = tern({"status", "j-1"});
  EXPECT_NE(human.out.find("test auc"), std::string::npos) << human.out;
}

// train.dp (issue 25): epsilon travels from the trainers' progress and summary through the
// daemon and the coordinator to `tern status` (--json: the ranks' metrics and the summary;
// human: the privacy line).
TEST_F(ClusterTest, DpEpsilonReachesStatus) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  write_cluster("", "  - {name: local, workers: 2, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  fs::path spec = dir_ / "it-dp.yaml";
  std::ofstream(spec)
      << "name: it-dp\nworkers: 2\nmodel: {type: dlrm, embedding_dim: 4, bottom_mlp: [8, 4], "
      << "top_mlp: [8, 1]}\ndata: {source: synthetic_ctr, num_tables: 4, table_size: 50, "
      << "train_size: 2048, test_size: 512}\ntrain: {steps: 8, batch_size: 32, log_every: 4, "
      << "dp: {clip: 1.0, noise_multiplier: 1.1, delta: 1e-5}}\n";
  ASSERT_EQ(tern({"submit", spec.string()}).status, 0);
  json last = wait_terminal("j-1", 600);
  ASSERT_EQ(last.value("state", ""), "SUCCEEDED") << last.dump();
  ASSERT_TRUE(last["summary"].contains("epsilon")) << last.dump();
  const double eps = last["summary"]["epsilon"].get<double>();
  EXPECT_GT(eps, 0.0);
  EXPECT_DOUBLE_EQ(last["summary"]["dp_delta"].get<double>(), 1e-5);
  EXPECT_EQ(last["summary"]["dp_steps"].get<double>(), 8.0);
  for (const auto& r : last["ranks"]) ASSERT_TRUE(r["metrics"].contains("epsilon")) << r.dump();
  Output human = tern({"status", "j-1"});
  EXPECT_NE(human.out.find("privacy    epsilon"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("at delta 1e-05"), std::string::npos) << human.out;
}

// Issue 18 item 4: a diverging job submitted to a cluster fails naming the step (it ended
// SUCCEEDED with loss 0 and accuracy 0.10 before).
TEST_F(ClusterTest, NonFiniteLossFailsTheJob) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  write_cluster("", "  - {name: local, workers: 2, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  Output sub = tern({"submit", write_job("it-nan", 2, "sync: {timeout_s: 20}\n"), "--set",
                     "train.steps=40", "--set", "train.lr=100"});
  ASSERT_EQ(sub.status, 0) << sub.err;
  json last = wait_terminal("j-1", 600);
  ASSERT_EQ(last.value("state", ""), "FAILED") << last.dump();
  const std::string reason = last.value("reason", "");
  EXPECT_NE(reason.find("non-finite"), std::string::npos) << reason;
  EXPECT_NE(reason.find("step "), std::string::npos) << reason;
}

// Issue 22, N-1 elasticity on a real cluster: a 4-rank job with recovery.min_workers 3 loses the
// worker daemon of rank 3 (kill -9: its trainer dies with it) and no other worker is free: the
// three survivors go on at once as a group of three (no waiting for a replacement). When the
// daemon comes back, a standby for rank 3 starts there and the job grows back to four; it
// finishes SUCCEEDED with every step and the status shows both group changes.
TEST_F(ClusterTest, ElasticJobShrinksWhenAWorkerIsLostAndGrowsBackWhenItReturns) {
  if (access(bin("tern-trainer").c_str(), X_OK) != 0) {
    GTEST_SKIP() << bin("tern-trainer") << " is not built (TERN_BUILD_TRAINER=OFF)";
  }
  write_cluster("", "  - {name: local, workers: 4, slots: 1}\n");
  ASSERT_EQ(tern({"cluster", "up", cluster_}).status, 0);
  fs::path spec = dir_ / "it-elastic.yaml";
  std::ofstream(spec) << "name: it-elastic\nworkers: 4\nmodel: {type: mlp}\n"
                         "data: {source: synthetic, train_size: 16384, test_size: 512}\n"
                         "train: {steps: 1200, batch_size: 16, log_every: 5}\n"
                         "recovery: {mode: partial, min_workers: 3, max_recoveries: 3}\n";
  Output sub = tern({"submit", spec.string()});
  ASSERT_EQ(sub.status, 0) << sub.err;
  ASSERT_GE(wait_for_step("j-1", 4, 20), 20) << "the job did not start training";
  pid_t daemon = -1;
  std::vector<std::string> argv;
  for (const auto& p : processes_mentioning(dir_.string())) {
    if (p.find(" worker ") != std::string::npos && p.find("--name local-3 ") != std::string::npos) {
      daemon = std::stoi(p.substr(0, p.find(':')));
    }
  }
  ASSERT_GT(daemon, 0) << "no daemon local-3";
  {
    std::string cmd = slurp("/proc/" + std::to_string(daemon) + "/cmdline");
    for (size_t b = 0, e; b < cmd.size(); b = e + 1) {
      e = cmd.find('\0', b);
      if (e == std::string::npos) e = cmd.size();
      argv.push_back(cmd.substr(b, e - b));
    }
  }
  ASSERT_EQ(::kill(daemon, SIGKILL), 0);
  // (A loaded machine may refuse one status call: polls tolerate that.)
  auto poll = [&]() {
    Output o = tern({"status", "j-1", "--json"});
    return o.status == 0 ? json::parse(o.out, nullptr, false) : json::object();
  };
  // The lease runs out (3 s): the group shrinks to ranks 0, 1, 2 and trains on.
  json s;
  for (int i = 0; i < 300; ++i) {
    s = poll();
    if (s.contains("members") && s["members"].size() == 3u) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(s.contains("members") && s["members"].size() == 3u) << s.dump();
  const int64_t at_shrink = as_int(s, "step");
  for (int i = 0; i < 300; ++i) {
    s = poll();
    if (s.contains("step") && as_int(s, "step") >= at_shrink + 40) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(s.value("state", ""), "RUNNING") << s.dump();
  EXPECT_GE(as_int(s, "step"), at_shrink + 40) << "the three survivors train on without rank 3";
  // The daemon returns (same name and work directory): a standby joins, the group grows back.
  SpawnOptions o;
  o.argv = argv;
  o.stderr_file = (dir_ / "local-3-again.log").string();
  auto again = Subprocess::spawn(o);
  ASSERT_TRUE(again.is_ok());
  json last = wait_terminal("j-1", 3000);
  ASSERT_EQ(last.value("state", ""), "SUCCEEDED") << last.dump();
  ASSERT_TRUE(last.contains("timelines")) << last.dump();
  bool shrank = false, grew = false;
  for (const auto& t : last["timelines"]) {
    if (!t.value("grow", false) && t.value("world", 0) == 3) shrank = true;
    if (t.value("grow", false) && t.value("world", 0) == 4) grew = true;
  }
  EXPECT_TRUE(shrank && grew) << last["timelines"].dump();
  EXPECT_EQ(last["members"].size(), 4u) << last.dump();
  ASSERT_TRUE(last.contains("summary")) << last.dump();
  EXPECT_EQ(last["summary"].value("steps", -1.0), 1200.0);
  EXPECT_EQ(last["summary"].value("min_world", -1.0), 3.0);
  EXPECT_EQ(last["summary"].value("world", -1.0), 4.0);
  EXPECT_EQ(last["summary"].value("samples", -1.0), 1200.0 * 4 * 16) << "the global batch kept";
  EXPECT_GT(last["test_accuracy"].get<double>(), 0.2);
  (*again)->send_signal(SIGTERM);
  (*again)->wait_for(std::chrono::seconds(20));
}

}  // namespace
}  // namespace tern
