// The worker daemon against a real in-process coordinator, with fake trainer executables
// (shell scripts speaking common/trainer_protocol.h): jobs succeed, a trainer exiting 4 fails
// its job with the code and its last log lines, cancel and shutdown kill trainers.
#include "worker/worker_daemon.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/trainer_protocol.h"
#include "coordinator/coordinator_server.h"
#include "worker/trainer_events.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string source_dir() {
  const char* d = std::getenv("TERN_SOURCE_DIR");
  return d ? d : ".";
}

bool process_alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close == std::string::npos || line.size() <= close + 2 || line[close + 2] != 'Z';
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_daemon_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    CoordinatorServerOptions o;
    o.listen = "127.0.0.1:0";
    o.core.state_dir = (dir_ / "coord").string();
    o.core.heartbeat_ms = 50;
    o.core.lease_ms = 3000;
    o.tick = 20ms;
    auto s = CoordinatorServer::start(o, &clock_);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
    client_ = std::make_unique<CoordinatorClient>(server_->address());
  }
  void TearDown() override {
    for (auto& d : daemons_) d->request_stop();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    daemons_.clear();
    server_.reset();
    fs::remove_all(dir_);
  }
  WorkerDaemon* start_daemon(const std::string& name, const std::string& trainer,
                             const std::string& work_dir = "") {
    WorkerDaemonOptions o;
    o.coordinator = server_->address();
    o.name = name;
    o.region = "local";
    o.work_dir = work_dir.empty() ? (dir_ / "work" / name).string() : work_dir;
    o.trainer_path = trainer;
    o.stop_grace = 2000ms;
    o.checkpoint_root = checkpoint_root_;
    daemons_.push_back(std::make_unique<WorkerDaemon>(o));
    WorkerDaemon* d = daemons_.back().get();
    threads_.emplace_back([d] { EXPECT_TRUE(d->run().is_ok()); });
    return d;
  }
  std::string fake() { return source_dir() + "/tests/worker/fake_trainer.sh"; }
  std::string submit(const std::string& name, int workers, const std::string& extra = "") {
    v1::SubmitJobRequest req;
    req.set_spec_yaml("name: " + name + "\nworkers: " + std::to_string(workers) +
                      "\ndata: {source: synthetic, train_size: 256, test_size: 64}\n" + extra);
    auto r = client_->submit_job(req);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? r->job_id() : "";
  }
  v1::JobStatus wait_state(const std::string& id, v1::JobState want,
                           std::chrono::seconds timeout = 20s) {
    auto until = std::chrono::steady_clock::now() + timeout;
    v1::JobStatus last;
    while (std::chrono::steady_clock::now() < until) {
      auto j = client_->get_job(id);
      if (j.is_ok()) {
        last = j->job();
        if (last.state() == want) return last;
      }
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << id << " did not reach " << v1::JobState_Name(want)
                  << "; last: " << last.DebugString();
    return last;
  }
  std::string coordinator_log(const std::string& id, int rank) {
    v1::GetLogsRequest req;
    req.set_job_id(id);
    req.set_rank(rank);
    auto l = client_->get_logs(req);
    return l.is_ok() ? l->data() : "";
  }

  fs::path dir_;
  std::string checkpoint_root_;  // WorkerDaemonOptions::checkpoint_root of daemons started next
  SystemClock clock_;
  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<CoordinatorClient> client_;
  std::vector<std::unique_ptr<WorkerDaemon>> daemons_;
  std::vector<std::thread> threads_;
};

TEST(TrainerEvents, ParsesProtocolLines) {
  v1::TaskRef task;
  task.set_job_id("j-1");
  task.set_rank(1);
  task.set_generation(2);
  auto e = parse_trainer_event(
      R"({"event": "progress", "job": "other", "rank": 9, "generation": 2, "time": 5.5, "step": 7, )"
      R"("total_steps": 10, "epoch": 0.7, "loss": 0.25, "samples_per_s": 300, "bytes_sent": 1e6, )"
      R"("compute_s": 1, "wait_s": 0.5, "staleness": 3, "note": "text"})",
      task);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->task().job_id(), "j-1") << "the daemon's task is authoritative";
  EXPECT_EQ(e->task().rank(), 1);
  EXPECT_DOUBLE_EQ(e->time(), 5.5);
  ASSERT_TRUE(e->has_progress());
  EXPECT_EQ(e->progress().step(), 7);
  EXPECT_DOUBLE_EQ(e->progress().bytes_sent(), 1e6);
  EXPECT_EQ(e->progress().metrics().size(), 1u);
  EXPECT_DOUBLE_EQ(e->progress().metrics().at("staleness"), 3);
  // An evaluation's other numeric results (DLRM's test_auc) travel with it.
  auto ev = parse_trainer_event(
      R"({"event": "eval", "step": 9, "test_accuracy": 0.77, "test_loss": 0.5, "test_auc": 0.81, "rank": 1})",
      task);
  ASSERT_TRUE(ev.has_value() && ev->has_eval());
  EXPECT_DOUBLE_EQ(ev->eval().test_accuracy(), 0.77);
  ASSERT_EQ(ev->eval().metrics().size(), 1u);
  EXPECT_DOUBLE_EQ(ev->eval().metrics().at("test_auc"), 0.81);
  auto f = parse_trainer_event(
      R"({"event": "finished", "summary": {"test_accuracy": 0.8, "steps": 10}})", task);
  ASSERT_TRUE(f.has_value() && f->has_finished());
  EXPECT_DOUBLE_EQ(f->finished().summary().at("test_accuracy"), 0.8);
  auto er = parse_trainer_event(R"({"event": "error", "message": "boom", "code": 3})", task);
  ASSERT_TRUE(er.has_value() && er->has_error());
  EXPECT_EQ(er->error().message(), "boom");
  EXPECT_EQ(er->error().code(), 3);
  EXPECT_FALSE(parse_trainer_event("not json", task).has_value());
  EXPECT_FALSE(parse_trainer_event(R"({"event": "checkpoint", "step": 3})", task).has_value());
  // A committed checkpoint is relayed (the coordinator journals the newest, issue 22); a
  // mistyped step reads as 0, which the coordinator refuses.
  auto ck =
      parse_trainer_event(R"({"event": "checkpoint_committed", "step": 40, "bytes": 123})", task);
  ASSERT_TRUE(ck.has_value() && ck->has_checkpoint());
  EXPECT_EQ(ck->checkpoint().step(), 40);
  auto bad = parse_trainer_event(R"({"event": "checkpoint_committed", "step": "forty"})", task);
  ASSERT_TRUE(bad.has_value() && bad->has_checkpoint());
  EXPECT_EQ(bad->checkpoint().step(), 0);
  EXPECT_FALSE(parse_trainer_event(R"({"no_event": 1})", task).has_value());
  // Elastic regroup events (and any kind a newer trainer adds) are not relayed.
  EXPECT_FALSE(parse_trainer_event(R"({"event": "peer_lost", "step": 3, "message": "x"})", task));
  EXPECT_FALSE(parse_trainer_event(R"({"event": "regrouped", "generation": 3})", task));
  EXPECT_FALSE(parse_trainer_event(R"({"event": "from_the_future", "x": [1]})", task));
  EXPECT_EQ(trainer_event_kind(R"({"event": "regrouped", "generation": 3})"), "regrouped");
  EXPECT_EQ(trainer_event_kind("plain text"), "");
}

// Issue 18 item 4: a trainer writes a non-finite number as null; other types and absurd
// values are read as absent, never an exception (the daemon has no try around this).
TEST(TrainerEvents, NullAndMistypedNumbersAreReadAsAbsent) {
  v1::TaskRef task;
  task.set_job_id("j-1");
  auto e = parse_trainer_event(
      R"({"event": "progress", "step": 1e300, "total_steps": "ten", "loss": null, )"
      R"("samples_per_s": null, "bytes_sent": [1], "skipped_steps": 3, "staleness": null})",
      task);
  ASSERT_TRUE(e.has_value() && e->has_progress());
  EXPECT_EQ(e->progress().step(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(e->progress().total_steps(), 0);
  EXPECT_EQ(e->progress().loss(), 0);
  EXPECT_EQ(e->progress().metrics().size(), 1u);
  EXPECT_EQ(e->progress().metrics().at("skipped_steps"), 3);
  auto er = parse_trainer_event(R"({"event": "error", "message": null, "code": null})", task);
  ASSERT_TRUE(er.has_value() && er->has_error());
  EXPECT_EQ(er->error().message(), "");
  EXPECT_EQ(er->error().code(), 0);
  auto f = parse_trainer_event(
      R"({"event": "finished", "summary": {"final_loss": null, "steps": 4}})", task);
  ASSERT_TRUE(f.has_value() && f->has_finished());
  EXPECT_EQ(f->finished().summary().count("final_loss"), 0u);
  EXPECT_EQ(f->finished().summary().at("steps"), 4);
}

TEST_F(DaemonTest, TwoRanksOnTwoDaemonsSucceed) {
  start_daemon("a", fake());
  start_daemon("b", fake());
  std::string id = submit("pair", 2);
  auto j = wait_state(id, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(j.step(), 6);
  EXPECT_DOUBLE_EQ(j.test_accuracy(), 0.875);
  ASSERT_EQ(j.ranks_size(), 2);
  EXPECT_EQ(j.ranks(1).worker_id(), "b");
  EXPECT_EQ(j.ranks(1).exit_code(), 0);
  EXPECT_DOUBLE_EQ(j.ranks(0).metrics().at("staleness"), 1.5)
      << "extra progress fields relayed as metrics";
  // An evaluation's extra metrics (DLRM's test_auc) reach the coordinator through the daemon.
  EXPECT_DOUBLE_EQ(j.ranks(0).metrics().at("test_auc"), 0.8125);
  // The spec handed to the trainer, its log on the worker and the coordinator's copy.
  EXPECT_TRUE(fs::exists(dir_ / "work" / "a" / id / "spec.yaml"));
  std::ifstream local(dir_ / "work" / "b" / id / "rank-1.log");
  std::string local_log((std::istreambuf_iterator<char>(local)), {});
  EXPECT_NE(local_log.find("rank=1/2"), std::string::npos) << local_log;
  auto until = std::chrono::steady_clock::now() + 5s;
  while (coordinator_log(id, 1).find("fake trainer: done") == std::string::npos &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(coordinator_log(id, 1), local_log);
}

TEST_F(DaemonTest, TrainerExitingFourFailsTheJobWithItsLogTail) {
  start_daemon("a", source_dir() + "/tests/worker/fake_trainer_exit4.sh");
  std::string id = submit("doomed", 1);
  auto j = wait_state(id, v1::JOB_STATE_FAILED);
  EXPECT_NE(j.reason().find("exited with code 4"), std::string::npos) << j.reason();
  EXPECT_NE(j.reason().find("communication failure"), std::string::npos) << j.reason();
  EXPECT_NE(j.reason().find("peer 1 closed the connection"), std::string::npos) << j.reason();
  // The non-UTF-8 bytes of the log tail arrive replaced (U+FFFD), not refused with the batch.
  EXPECT_NE(j.reason().find("garbage \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD before"),
            std::string::npos)
      << j.reason();
  EXPECT_EQ(j.ranks(0).exit_code(), 4);
  EXPECT_EQ(j.ranks(0).state(), v1::RANK_STATE_FAILED);
}

TEST_F(DaemonTest, RegroupIsWrittenToTheSurvivorsStdinAndReKeysTheTask) {
  start_daemon("a", fake());
  start_daemon("b", fake());
  // Rank 1 exits 4 at step 2 of generation 1; rank 0 waits for the regroup, then trains on.
  std::string id = submit("regroup-pair", 2, "recovery: {mode: partial}\n");
  auto j = wait_state(id, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(j.generation(), 2);
  EXPECT_EQ(j.recoveries(), 1);
  EXPECT_EQ(j.step(), 6);
  ASSERT_EQ(j.ranks_size(), 2);
  EXPECT_EQ(j.ranks(1).worker_id(), "b") << "replaced on its own worker";
  auto core_job = server_->core()->get_job(id);
  ASSERT_TRUE(core_job.is_ok());
  EXPECT_EQ(core_job->ranks[0].generation, 2) << "the survivor's daemon re-keyed its task";

  // Exactly one regroup line reached the survivor (a task still reported at generation 1
  // would have drawn a Regroup on every heartbeat), with the new generation and master.
  std::ifstream in(dir_ / "work" / "a" / id / "rank-0.log");
  std::string log((std::istreambuf_iterator<char>(in)), {});
  size_t first = log.find("fake trainer: regroup command: ");
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("fake trainer: regroup command: ", first + 1), std::string::npos) << log;
  std::string line = log.substr(first, log.find('\n', first) - first);
  const size_t brace = line.find('{');
  ASSERT_NE(brace, std::string::npos)
      << "no command on the regroup line (a flake seen once under load):\n"
      << log;
  auto cmd = nlohmann::json::parse(line.substr(brace), nullptr, false);
  ASSERT_FALSE(cmd.is_discarded()) << line;
  EXPECT_EQ(cmd.value("cmd", ""), "regroup");
  EXPECT_EQ(cmd.value("generation", 0), 2);
  EXPECT_EQ(cmd.value("world", 0), 2);
  EXPECT_EQ(cmd.value("master", ""), j.master_addr());
  EXPECT_EQ(cmd.value("rollback", true), false);
  // The replacement started at generation 2 on the new master.
  std::ifstream in1(dir_ / "work" / "b" / id / "rank-1.log");
  std::string log1((std::istreambuf_iterator<char>(in1)), {});
  EXPECT_NE(log1.find("gen=2 master=" + j.master_addr()), std::string::npos) << log1;
}

// Issue 18 item 9: a spec path the worker refuses is reported with the refusal itself and a
// code of its own, and (deterministic) never regrouped.
TEST_F(DaemonTest, RefusedSpecPathFailsOnceWithTheRefusal) {
  start_daemon("a", fake());
  const std::string outside = (dir_ / "elsewhere").string();
  std::string id = submit("refused", 1, "recovery: {mode: partial, dir: " + outside + "}\n");
  auto j = wait_state(id, v1::JOB_STATE_FAILED);
  EXPECT_NE(j.reason().find("refused by the worker"), std::string::npos) << j.reason();
  EXPECT_NE(j.reason().find("recovery.dir '" + outside + "'"), std::string::npos) << j.reason();
  EXPECT_EQ(j.reason().find("unknown"), std::string::npos) << j.reason();
  EXPECT_EQ(j.ranks(0).exit_code(), kTrainerRefused);
  EXPECT_EQ(j.recoveries(), 0);
}

// Issue 22: with a checkpoint_root a job may write its own <root>/<job id> (what the
// coordinator sets as recovery.dir) and read anywhere below the root; another job's directory
// or a path that climbs out is refused by the daemon's own check.
TEST_F(DaemonTest, CheckpointRootAllowsAJobItsOwnDirectoryAndReadsBelowIt) {
  checkpoint_root_ = (dir_ / "shared-ckpt").string();
  start_daemon("a", fake());
  std::string own = submit("own", 1, "recovery: {dir: " + checkpoint_root_ + "/j-1}\n");
  ASSERT_EQ(own, "j-1");
  wait_state(own, v1::JOB_STATE_SUCCEEDED);
  std::string other = submit("other", 1, "recovery: {dir: " + checkpoint_root_ + "/j-1}\n");
  auto j = wait_state(other, v1::JOB_STATE_FAILED);
  EXPECT_NE(j.reason().find("refused by the worker"), std::string::npos) << j.reason();
  EXPECT_NE(j.reason().find("recovery.dir"), std::string::npos) << j.reason();
  std::string reads = submit("reads", 1, "recovery: {resume_from: " + checkpoint_root_ + "/j-1}\n");
  wait_state(reads, v1::JOB_STATE_SUCCEEDED);
  std::string climbs =
      submit("climbs", 1, "recovery: {resume_from: " + checkpoint_root_ + "/../secrets}\n");
  j = wait_state(climbs, v1::JOB_STATE_FAILED);
  EXPECT_NE(j.reason().find("recovery.resume_from"), std::string::npos) << j.reason();
}

// Issue 18 item 6: trainers run at a lower priority than their daemon.
TEST_F(DaemonTest, TrainersRunNicerThanTheDaemon) {
  start_daemon("a", fake());
  std::string id = submit("nice", 1);
  wait_state(id, v1::JOB_STATE_SUCCEEDED);
  errno = 0;
  const int mine = getpriority(PRIO_PROCESS, 0);
  ASSERT_EQ(errno, 0);
  const std::string log = coordinator_log(id, 0);
  EXPECT_NE(log.find("nice=" + std::to_string(std::min(19, mine + 10)) + "\n"), std::string::npos)
      << log;
}

TEST_F(DaemonTest, MissingTrainerFailsCleanly) {
  start_daemon("a", (dir_ / "no-such-trainer").string());
  std::string id = submit("nobin", 1);
  auto j = wait_state(id, v1::JOB_STATE_FAILED);
  EXPECT_NE(j.reason().find("code 127"), std::string::npos) << j.reason();
  EXPECT_NE(j.reason().find("not found or not executable"), std::string::npos) << j.reason();
}

TEST_F(DaemonTest, CancelStopsTheTrainer) {
  WorkerDaemon* d = start_daemon("a", fake());
  std::string id = submit("hang-forever", 1);
  wait_state(id, v1::JOB_STATE_RUNNING);
  std::vector<pid_t> pids;
  auto until = std::chrono::steady_clock::now() + 10s;
  while ((pids = d->trainer_pids()).empty() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(pids.size(), 1u);
  ASSERT_TRUE(client_->cancel_job(id).is_ok());
  until = std::chrono::steady_clock::now() + 10s;
  while (process_alive(pids[0]) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(process_alive(pids[0])) << "the trainer is stopped after a cancel";
  until = std::chrono::steady_clock::now() + 5s;
  while (coordinator_log(id, 0).find("stop requested") == std::string::npos &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(coordinator_log(id, 0).find("stop requested"), std::string::npos)
      << "a graceful stop via stdin";
  EXPECT_EQ(wait_state(id, v1::JOB_STATE_CANCELLED).ranks(0).state(), v1::RANK_STATE_STOPPED);
}

TEST_F(DaemonTest, ShutdownStopsTrainersAndTheJobFails) {
  WorkerDaemon* d = start_daemon("a", fake());
  std::string id = submit("hang-too", 1);
  std::vector<pid_t> pids;
  auto until = std::chrono::steady_clock::now() + 10s;
  while ((pids = d->trainer_pids()).empty() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(pids.size(), 1u);
  d->request_stop();
  threads_.back().join();
  threads_.pop_back();
  EXPECT_FALSE(process_alive(pids[0]));
  auto j = wait_state(id, v1::JOB_STATE_FAILED);
  EXPECT_NE(j.reason().find("code 6"), std::string::npos) << j.reason();
}

TEST_F(DaemonTest, DaemonWaitsForALateCoordinator) {
  // A daemon started before its coordinator registers once it appears.
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  WorkerDaemonOptions o;
  o.coordinator = "127.0.0.1:" + std::to_string(*port);
  o.name = "late";
  o.work_dir = (dir_ / "work-late").string();
  o.trainer_path = fake();
  WorkerDaemon d(o);
  std::thread t([&] { EXPECT_TRUE(d.run().is_ok()); });
  std::this_thread::sleep_for(700ms);
  CoordinatorServerOptions so;
  so.listen = o.coordinator;
  so.core.state_dir = (dir_ / "coord-late").string();
  SystemClock clock;
  auto late = CoordinatorServer::start(so, &clock);
  ASSERT_TRUE(late.is_ok()) << late.status().to_string();
  auto until = std::chrono::steady_clock::now() + 10s;
  while (d.worker_id().empty() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(d.worker_id(), "late");
  d.request_stop();
  t.join();
}

// Issue 18, item 3: a live worker's name is only re-registered with its session. The daemon
// keeps its session in its work directory, so after its own restart it takes its name back
// while the lease is live; another daemon with the same name (no session) is refused.
TEST_F(DaemonTest, RestartedDaemonTakesItsLiveNameBackAnImpostorCannot) {
  WorkerDaemon* first = start_daemon("w1", fake());
  auto until = std::chrono::steady_clock::now() + 10s;
  while (first->worker_id().empty() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(first->worker_id(), "w1");
  EXPECT_TRUE(fs::exists(dir_ / "work" / "w1" / ".session-w1"));
  EXPECT_EQ(fs::status(dir_ / "work" / "w1" / ".session-w1").permissions() &
                (fs::perms::group_all | fs::perms::others_all),
            fs::perms::none)
      << "the session file is the owner's only";
  first->request_stop();  // a daemon gone without a goodbye: its lease (3 s) is still live
  threads_[0].join();

  WorkerDaemon* impostor = start_daemon("w1", fake(), (dir_ / "elsewhere").string());
  std::this_thread::sleep_for(1000ms);
  EXPECT_EQ(impostor->worker_id(), "") << "registered a live worker's name without its session";

  WorkerDaemon* restarted = start_daemon("w1", fake());
  until = std::chrono::steady_clock::now() + 1500ms;  // well inside the old lease
  while (restarted->worker_id().empty() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(restarted->worker_id(), "w1") << "the restarted daemon did not get its name back";
  std::this_thread::sleep_for(3500ms);  // past the old lease: the restarted daemon holds it
  EXPECT_EQ(impostor->worker_id(), "");
  auto workers = server_->core()->list_workers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].state, WorkerState::kReady);
  EXPECT_GE(server_->core()->worker_plane_stats().registrations_refused, 2u);
  // And it still runs jobs.
  const std::string id = submit("after-restart", 1);
  wait_state(id, v1::JOB_STATE_SUCCEEDED);
}

}  // namespace
}  // namespace tern
