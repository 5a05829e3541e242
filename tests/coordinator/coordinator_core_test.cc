// CoordinatorCore without gRPC: validation, FIFO gang scheduling, the job state machine,
// heartbeat reconciliation, leases on a ManualClock, and restarts from the journal.
#include "coordinator/coordinator_core.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>
#include <thread>

#include "common/trainer_protocol.h"
#include "coordinator/metrics.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

std::string spec(const std::string& name, int workers, const std::string& extra = "") {
  return "name: " + name + "\nworkers: " + std::to_string(workers) +
         "\ndata: {source: synthetic, train_size: 512, test_size: 128}\n" + extra;
}

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_core_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    options_.state_dir = dir_.string();
    options_.lease_ms = 1000;
    options_.heartbeat_ms = 100;
    reopen();
  }
  void TearDown() override {
    core_.reset();
    fs::remove_all(dir_);
  }
  void reopen() {
    core_.reset();
    auto c = CoordinatorCore::open(options_, &clock_);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    core_ = std::move(c).value();
  }
  // `session`: the daemon's previous session (a restarted daemon re-registering a live name).
  RegistrationResult add_worker(const std::string& name, const std::string& region = "local",
                                int slots = 1, uint64_t session = 0) {
    auto r = core_->register_worker(
        {name, "127.0.0.1", region, slots, {40000 + static_cast<int>(next_port_++)}, session});
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return *r;
  }
  HeartbeatResult beat(const RegistrationResult& w, const std::vector<TaskKey>& running = {}) {
    auto r =
        core_->heartbeat(w.worker_id, w.session, running, {41000 + static_cast<int>(next_port_++)});
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : HeartbeatResult{};
  }
  Status report(const RegistrationResult& w, std::vector<TaskEvent> events) {
    auto r = core_->report_events(w.worker_id, w.session, events);
    return r.status();
  }
  static TaskEvent exited(const TaskKey& k, int code, const std::string& tail = "") {
    TaskEvent e;
    e.kind = TaskEvent::Kind::kExited;
    e.task = k;
    e.exit_code = code;
    e.log_tail = tail;
    return e;
  }
  static TaskEvent progress(const TaskKey& k, int64_t step, int64_t total, double loss) {
    TaskEvent e;
    e.kind = TaskEvent::Kind::kProgress;
    e.task = k;
    e.step = step;
    e.total_steps = total;
    e.loss = loss;
    e.samples_per_s = 100;
    e.metrics["staleness"] = 2;
    return e;
  }
  Job job(const std::string& id) {
    auto j = core_->get_job(id);
    EXPECT_TRUE(j.is_ok());
    return *j;
  }

  fs::path dir_;
  ManualClock clock_;
  CoordinatorOptions options_;
  std::unique_ptr<CoordinatorCore> core_;
  size_t next_port_ = 0;
};

TEST_F(CoreTest, InvalidSpecIsRefusedWithTheFieldName) {
  auto r = core_->submit_job(spec("bad", 2, "train: {lr: -1}\n"), {}, "jobs/bad.yaml");
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("train.lr"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("jobs/bad.yaml"), std::string::npos) << r.status().message();
  EXPECT_EQ(core_->submit_job("name: [unclosed\n", {}, "x.yaml").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->submit_job(spec("ok", 1), {"train.nonsense=3"}, "x.yaml").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(core_->list_jobs().empty());
}

// Issue #18 item 1: this override crashed the coordinator (unbounded recursion on the cycle).
TEST_F(CoreTest, HostileYamlIsInvalidArgumentAndTheCoreKeepsAnswering) {
  auto r = core_->submit_job(spec("cyc", 1), {"x=&a [*a]"}, "cyc.yaml");
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("cyclic alias"), std::string::npos) << r.status().message();
  // The same in the spec text, in a known section, and an alias bomb.
  std::string bomb = "l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n";
  for (int i = 1; i <= 9; ++i) {
    bomb += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) bomb += (k ? ", *l" : "*l") + std::to_string(i - 1);
    bomb += "]\n";
  }
  for (const std::string& text :
       {spec("cyc", 1, "train: &t {lr: 0.1, again: *t}\n"), spec("bomb", 1, bomb),
        spec("dup", 1, "workers: 2\n"), spec("null", 1, "train: {lr: ~}\n")}) {
    EXPECT_EQ(core_->submit_job(text, {}, "x.yaml").status().code(), StatusCode::kInvalidArgument)
        << text.substr(0, 200);
  }
  // Item 9: text that is not UTF-8 (protobuf refuses it in a string field) is INVALID_ARGUMENT
  // naming the byte, wherever it comes in.
  auto bad = core_->submit_job(spec("ok", 1) + "# caf\xe9\n", {}, "latin1.yaml");
  ASSERT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("latin1.yaml: not valid UTF-8 at line 4"),
            std::string::npos)
      << bad.status().message();
  EXPECT_EQ(core_->submit_job(spec("ok", 1), {"data.path=/tmp/\xff"}, "o.yaml").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->submit_job(spec("ok", 1), {}, "name\xff.yaml").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(core_->list_jobs().empty());
  // Still answering, and still accepting good jobs.
  auto ok = core_->submit_job(spec("ok", 1), {"train.epochs=1"}, "ok.yaml");
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(core_->list_jobs().size(), 1u);
}

TEST_F(CoreTest, OverridesApplyBeforeValidation) {
  auto r = core_->submit_job(spec("o", 2), {"workers=3", "train.epochs=2"}, "o.yaml");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->world, 3);
  EXPECT_NE(r->spec_yaml.find("epochs: 2"), std::string::npos) << r->spec_yaml;
}

TEST_F(CoreTest, JobRunsToSucceededThroughHeartbeatsAndEvents) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto submitted = core_->submit_job(spec("two", 2), {}, "two.yaml");
  ASSERT_TRUE(submitted.is_ok());
  Job j = job(submitted->id);
  ASSERT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.generation, 1);
  ASSERT_EQ(j.ranks.size(), 2u);
  EXPECT_EQ(j.ranks[0].worker_id, "a");
  EXPECT_EQ(j.ranks[1].worker_id, "b");
  EXPECT_EQ(j.master_addr, "127.0.0.1:40000") << "rank 0's worker's spare port";

  auto hb = beat(a);
  ASSERT_EQ(hb.commands.size(), 1u);
  const TaskCommand& start = hb.commands[0];
  EXPECT_EQ(start.kind, TaskCommand::Kind::kStart);
  EXPECT_EQ(start.task, (TaskKey{j.id, 0, 1}));
  EXPECT_EQ(start.world, 2);
  EXPECT_EQ(start.master_addr, j.master_addr);
  EXPECT_EQ(start.spec_yaml, j.spec_yaml);
  EXPECT_TRUE(beat(a).commands.size() == 1)
      << "StartTask repeats until the worker reports it running";
  EXPECT_TRUE(beat(a, {{j.id, 0, 1}}).commands.empty());

  TaskKey r0{j.id, 0, 1}, r1{j.id, 1, 1};
  TaskEvent started;
  started.kind = TaskEvent::Kind::kStarted;
  started.task = r0;
  ASSERT_TRUE(report(a, {started, progress(r0, 5, 10, 0.5)}).is_ok());
  ASSERT_TRUE(report(b, {progress(r1, 4, 10, 0.7)}).is_ok());
  j = job(j.id);
  EXPECT_EQ(j.ranks[0].state, RankState::kRunning);
  EXPECT_EQ(j.step(), 4);
  EXPECT_EQ(j.total_steps(), 10);
  EXPECT_DOUBLE_EQ(j.loss(), 0.6);
  EXPECT_DOUBLE_EQ(j.ranks[0].metrics.at("staleness"), 2);

  TaskEvent fin;
  fin.kind = TaskEvent::Kind::kFinished;
  fin.task = r0;
  fin.summary = {{"test_accuracy", 0.9}, {"final_loss", 0.2}};
  ASSERT_TRUE(report(a, {fin, exited(r0, 0)}).is_ok());
  EXPECT_EQ(job(j.id).state, JobState::kRunning) << "rank 1 still runs";
  ASSERT_TRUE(report(b, {exited(r1, 0)}).is_ok());
  j = job(j.id);
  EXPECT_EQ(j.state, JobState::kSucceeded);
  ASSERT_TRUE(j.test_accuracy.has_value());
  EXPECT_DOUBLE_EQ(*j.test_accuracy, 0.9);
  EXPECT_GT(j.finished_at, 0);
  // A retried batch changes nothing.
  ASSERT_TRUE(report(b, {exited(r1, 3)}).is_ok());
  EXPECT_EQ(job(j.id).state, JobState::kSucceeded);
}

TEST_F(CoreTest, RankExitingNonZeroFailsTheJobAndStopsTheOthers) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("crash", 2), {}, "c.yaml")->id;
  TaskKey r0{id, 0, 1}, r1{id, 1, 1};
  TaskEvent err;
  err.kind = TaskEvent::Kind::kError;
  err.task = r1;
  err.message = "collective timed out";
  ASSERT_TRUE(report(b, {err, exited(r1, 4, "line 1\nline 2\n")}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_NE(j.reason.find("rank 1 on worker b exited with code 4"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("collective timed out"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("line 2"), std::string::npos) << j.reason;
  EXPECT_EQ(j.ranks[0].state, RankState::kStopped);
  EXPECT_EQ(j.ranks[1].exit_code, 4);
  auto hb = beat(a, {r0});
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kStop);
  EXPECT_EQ(hb.commands[0].task, r0);
}

TEST_F(CoreTest, FifoHeadOfLineBlocksLaterJobs) {
  auto a = add_worker("a", "local", 2);
  auto big = core_->submit_job(spec("big", 3), {}, "b.yaml")->id;
  auto small = core_->submit_job(spec("small", 1), {}, "s.yaml")->id;
  EXPECT_EQ(job(big).state, JobState::kPending);
  EXPECT_NE(job(big).reason.find("waiting for 3 free slots"), std::string::npos) << job(big).reason;
  EXPECT_EQ(job(small).state, JobState::kPending) << "strict FIFO: nothing overtakes the head";
  auto b = add_worker("b");
  EXPECT_EQ(job(big).state, JobState::kRunning);
  EXPECT_EQ(job(small).state, JobState::kPending) << "all slots taken by the head job";
  beat(a, {{big, 0, 1}, {big, 1, 1}});
  beat(b, {{big, 2, 1}});
  ASSERT_TRUE(core_->cancel_job(big, "").is_ok());
  EXPECT_EQ(job(big).state, JobState::kCancelled);
  EXPECT_EQ(job(big).reason, "cancelled by user");
  // The cancelled trainers hold their slots until their workers report them gone.
  EXPECT_EQ(job(small).state, JobState::kPending);
  auto hb = beat(b, {{big, 2, 1}});
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kStop);
  EXPECT_EQ(job(small).state, JobState::kPending);
  beat(b, {});
  EXPECT_EQ(job(small).state, JobState::kRunning);
  EXPECT_EQ(job(small).ranks[0].worker_id, "b");
}

TEST_F(CoreTest, RendezvousPortsAreNotHandedOutTwice) {
  auto a = add_worker("a", "local", 2);
  auto first = core_->submit_job(spec("one", 1), {}, "1.yaml")->id;
  const std::string port = job(first).master_addr;
  // The daemon reports the same port as free again (the trainer has not bound it yet).
  int p = std::stoi(port.substr(port.rfind(':') + 1));
  ASSERT_TRUE(core_->heartbeat("a", a.session, {}, {p}).is_ok());
  auto second = core_->submit_job(spec("two", 1), {}, "2.yaml")->id;
  EXPECT_EQ(job(second).state, JobState::kPending);
  EXPECT_NE(job(second).reason.find("free port"), std::string::npos) << job(second).reason;
  ASSERT_TRUE(core_->heartbeat("a", a.session, {}, {p, p + 1}).is_ok());
  EXPECT_EQ(job(second).master_addr, "127.0.0.1:" + std::to_string(p + 1));
}

TEST_F(CoreTest, CancelPendingAndEndedJobs) {
  auto id = core_->submit_job(spec("p", 1), {}, "p.yaml")->id;
  auto c = core_->cancel_job(id, "not needed");
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->state, JobState::kCancelled);
  EXPECT_EQ(c->reason, "not needed");
  EXPECT_EQ(core_->cancel_job(id, "").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(core_->cancel_job("j-999", "").status().code(), StatusCode::kNotFound);
}

TEST_F(CoreTest, MissedLeaseMarksWorkerLostAndFailsItsJob) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("two", 2), {}, "t.yaml")->id;
  clock_.advance_ms(600);
  beat(a);
  clock_.advance_ms(600);  // b: 1200 ms since its last sign of life > lease 1000 ms
  core_->tick();
  auto workers = core_->list_workers();
  ASSERT_EQ(workers.size(), 2u);
  EXPECT_EQ(workers[0].state, WorkerState::kReady);
  EXPECT_EQ(workers[1].state, WorkerState::kLost);
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_NE(j.reason.find("worker b lost"), std::string::npos) << j.reason;
  auto hb = core_->heartbeat(b.worker_id, b.session, {}, {});
  EXPECT_EQ(hb.status().code(), StatusCode::kFailedPrecondition)
      << "a lost worker must register again";
  auto again = add_worker("b");
  EXPECT_NE(again.session, b.session);
  EXPECT_EQ(core_->list_workers()[1].state, WorkerState::kReady);
}

TEST_F(CoreTest, LeaseRenewedByHeartbeatsOnTheManualClock) {
  auto a = add_worker("a");
  for (int i = 0; i < 10; ++i) {
    clock_.advance_ms(900);
    beat(a);
    core_->tick();
  }
  EXPECT_EQ(core_->list_workers()[0].state, WorkerState::kReady);
  clock_.advance_ms(1001);
  core_->tick();
  EXPECT_EQ(core_->list_workers()[0].state, WorkerState::kLost);
}

TEST_F(CoreTest, RestartKeepsJobsWorkersAndRunningJobs) {
  auto a = add_worker("a");
  auto done = core_->submit_job(spec("done", 1), {}, "d.yaml")->id;
  ASSERT_TRUE(report(a, {exited({done, 0, 1}, 0)}).is_ok());
  beat(a);  // a fresh spare port for the next job's rendezvous
  auto running = core_->submit_job(spec("running", 1), {}, "r.yaml")->id;
  auto pending = core_->submit_job(spec("pending", 1), {}, "p.yaml")->id;
  ASSERT_EQ(job(running).state, JobState::kRunning);
  ASSERT_TRUE(report(a, {progress({running, 0, 1}, 3, 10, 1.0)}).is_ok());

  reopen();  // as after kill -9: nothing but the journal survives
  auto jobs = core_->list_jobs();
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].id, done);
  EXPECT_EQ(jobs[0].state, JobState::kSucceeded);
  EXPECT_EQ(jobs[1].state, JobState::kRunning);
  EXPECT_EQ(jobs[1].generation, 1);
  EXPECT_EQ(jobs[2].state, JobState::kPending);
  EXPECT_EQ(core_->submit_job(spec("next", 1), {}, "n.yaml")->id, "j-4") << "ids are never reused";
  // The daemon carries on with its old session, and the running job finishes.
  auto hb = core_->heartbeat("a", a.session, {{running, 0, 1}}, {42000});
  ASSERT_TRUE(hb.is_ok()) << hb.status().to_string();
  EXPECT_TRUE(hb->commands.empty());
  ASSERT_TRUE(report(a, {exited({running, 0, 1}, 0)}).is_ok());
  EXPECT_EQ(job(running).state, JobState::kSucceeded);
  EXPECT_EQ(job(pending).state, JobState::kRunning) << job(pending).reason;
}

TEST_F(CoreTest, CompactionKeepsOneRecordPerEntity) {
  options_.compact_every = 20;
  reopen();
  auto a = add_worker("a");
  for (int i = 0; i < 30; ++i) {
    auto id = core_->submit_job(spec("j" + std::to_string(i), 1), {}, "x.yaml")->id;
    ASSERT_TRUE(report(a, {exited({id, 0, 1}, 0)}).is_ok());
    beat(a);
  }
  reopen();
  EXPECT_EQ(core_->list_jobs().size(), 30u);
  EXPECT_LE(core_->replay_stats().records, 31u + 20u);
  for (const Job& j : core_->list_jobs()) EXPECT_EQ(j.state, JobState::kSucceeded) << j.id;
}

TEST_F(CoreTest, ReRegistrationOfABusyWorkerFailsItsTasks) {
  auto a = add_worker("a");
  auto id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  add_worker("a", "local", 1, a.session);  // the daemon restarted (it kept its session)
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_NE(j.reason.find("worker a restarted"), std::string::npos) << j.reason;
  EXPECT_EQ(core_->heartbeat("a", a.session, {}, {}).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(CoreTest, StaleGenerationEventsAreDropped) {
  auto a = add_worker("a");
  auto id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  auto n = core_->report_events("a", a.session, {exited({id, 0, 7}, 1)});
  ASSERT_TRUE(n.is_ok());
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(job(id).state, JobState::kRunning);
}

TEST_F(CoreTest, LogsAreStoredPerRankAndServedByOffset) {
  auto a = add_worker("a");
  auto id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  TaskEvent log;
  log.kind = TaskEvent::Kind::kLog;
  log.task = {id, 0, 1};
  log.log_offset = 0;
  log.log_data = "hello\n";
  ASSERT_TRUE(report(a, {log}).is_ok());
  ASSERT_TRUE(report(a, {log}).is_ok());  // a retry: not duplicated
  log.log_offset = 6;
  log.log_data = "world\n";
  ASSERT_TRUE(report(a, {log}).is_ok());
  auto s = core_->get_logs(id, 0, 0, 0);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->data, "hello\nworld\n");
  EXPECT_FALSE(s->complete);
  s = core_->get_logs(id, 0, 6, 3);
  EXPECT_EQ(s->data, "wor");
  EXPECT_EQ(s->next_offset, 9);
  ASSERT_TRUE(report(a, {exited({id, 0, 1}, 0)}).is_ok());
  s = core_->get_logs(id, 0, 12, 0);
  EXPECT_TRUE(s->complete);
  EXPECT_EQ(core_->get_logs(id, 5, 0, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->get_logs("j-77", 0, 0, 0).status().code(), StatusCode::kNotFound);
}

TEST_F(CoreTest, QueueLimitAnswersResourceExhausted) {
  options_.max_queued_jobs = 2;
  reopen();
  ASSERT_TRUE(core_->submit_job(spec("a", 1), {}, "a.yaml").is_ok());
  ASSERT_TRUE(core_->submit_job(spec("b", 1), {}, "b.yaml").is_ok());
  EXPECT_EQ(core_->submit_job(spec("c", 1), {}, "c.yaml").status().code(),
            StatusCode::kResourceExhausted);
}

// --- elastic regroup (recovery.mode partial | full) ---

const TaskCommand* find_command(const HeartbeatResult& hb, TaskCommand::Kind kind) {
  for (const TaskCommand& c : hb.commands) {
    if (c.kind == kind) return &c;
  }
  return nullptr;
}

TEST_F(CoreTest, RankExitWithRecoveryRegroupsAndSurvivorsGetRegroup) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("elastic", 2, "recovery: {mode: partial}\n"), {}, "e.yaml")->id;
  TaskKey r0{id, 0, 1}, r1{id, 1, 1};
  beat(a, {r0});  // a fresh spare port on rank 0's worker for the next generation
  beat(b, {r1});
  const std::string old_master = job(id).master_addr;
  TaskEvent err;
  err.kind = TaskEvent::Kind::kError;
  err.task = r1;
  err.message = "injected";
  ASSERT_TRUE(report(a, {progress(r0, 3, 10, 1.0)}).is_ok());
  ASSERT_TRUE(report(b, {progress(r1, 3, 10, 1.0), err, exited(r1, 17, "boom\n")}).is_ok());

  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.generation, 2);
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_NE(j.reason.find("regroup 1 of 3"), std::string::npos) << j.reason;
  const std::string metrics = render_coordinator_metrics(*core_, nullptr);
  EXPECT_NE(metrics.find("tern_job_recoveries{job=\"" + id + "\",name=\"elastic\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(j.master_addr, old_master) << "a new generation rendezvouses on a new port";
  EXPECT_EQ(j.master_addr.rfind("127.0.0.1:", 0), 0u) << "rank 0's worker hosts it";
  EXPECT_EQ(j.ranks[0].state, RankState::kRunning) << "the survivor keeps running";
  EXPECT_EQ(j.ranks[0].worker_id, "a");
  EXPECT_EQ(j.ranks[1].worker_id, "b") << "its own worker is READY with a free slot";
  EXPECT_EQ(j.ranks[1].state, RankState::kAssigned);
  EXPECT_FALSE(j.ranks[1].exited);
  EXPECT_EQ(j.ranks[1].exit_code, 0);
  EXPECT_EQ(j.ranks[1].error, "");

  // The survivor's daemon: a Regroup (never a Stop) of its task at the old generation.
  auto hb = beat(a, {r0});
  ASSERT_EQ(hb.commands.size(), 1u);
  const TaskCommand& rg = hb.commands[0];
  EXPECT_EQ(rg.kind, TaskCommand::Kind::kRegroup);
  EXPECT_EQ(rg.task, r0);
  EXPECT_EQ(rg.generation, 2);
  EXPECT_EQ(rg.world, 2);
  EXPECT_EQ(rg.master_addr, j.master_addr);
  EXPECT_FALSE(rg.rollback) << "partial recovery keeps the survivors' state";
  // The replacement's daemon: a Start at the new generation, same master.
  hb = beat(b, {});
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kStart);
  EXPECT_EQ(hb.commands[0].task, (TaskKey{id, 1, 2}));
  EXPECT_EQ(hb.commands[0].master_addr, j.master_addr);

  // Both re-keyed: nothing more to say; events at generation 2 count; the job finishes.
  TaskKey n0{id, 0, 2}, n1{id, 1, 2};
  EXPECT_TRUE(beat(a, {n0}).commands.empty());
  EXPECT_TRUE(beat(b, {n1}).commands.empty());
  EXPECT_EQ(*core_->report_events("a", a.session, {exited(r0, 0)}), 0)
      << "the old generation is stale once re-keyed";
  ASSERT_TRUE(report(a, {progress(n0, 10, 10, 0.5), exited(n0, 0)}).is_ok());
  ASSERT_TRUE(report(b, {exited(n1, 0)}).is_ok());
  j = job(id);
  EXPECT_EQ(j.state, JobState::kSucceeded) << j.reason;
  EXPECT_EQ(j.recoveries, 1);
}

TEST_F(CoreTest, LostLeaseWithRecoveryMovesTheRankToAnotherWorker) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto c = add_worker("c");
  auto id = core_->submit_job(spec("elastic", 2, "recovery: {mode: full}\n"), {}, "e.yaml")->id;
  ASSERT_EQ(job(id).ranks[1].worker_id, "b");
  TaskKey r0{id, 0, 1};
  TaskEvent log;
  log.kind = TaskEvent::Kind::kLog;
  log.task = {id, 1, 1};
  log.log_data = "on b\n";
  ASSERT_TRUE(report(b, {log}).is_ok());
  clock_.advance_ms(600);
  beat(a, {r0});
  beat(c);
  clock_.advance_ms(600);  // b: 1200 ms without a heartbeat > lease
  core_->tick();
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.generation, 2);
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_EQ(j.ranks[1].worker_id, "c");
  EXPECT_EQ(j.ranks[1].state, RankState::kAssigned);
  auto hb = beat(a, {r0});
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kRegroup);
  EXPECT_EQ(hb.commands[0].generation, 2);
  EXPECT_TRUE(hb.commands[0].rollback) << "recovery.mode full rolls back";
  hb = beat(c);
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kStart);
  EXPECT_EQ(hb.commands[0].task, (TaskKey{id, 1, 2}));
  // The replacement's log (offset 0 on c) continues the rank's log, not overwritten by it.
  log.task = {id, 1, 2};
  log.log_data = "on c\n";
  ASSERT_TRUE(report(c, {log}).is_ok());
  ASSERT_TRUE(report(c, {log}).is_ok());  // a retry
  EXPECT_EQ(core_->get_logs(id, 1, 0, 0)->data, "on b\non c\n");
}

TEST_F(CoreTest, RecoveryNoneStillFailsTheJob) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  add_worker("c");
  auto id = core_->submit_job(spec("rigid", 2, "recovery: {mode: none}\n"), {}, "r.yaml")->id;
  ASSERT_TRUE(report(b, {exited({id, 1, 1}, 17)}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.generation, 1);
  EXPECT_EQ(j.recoveries, 0);
  EXPECT_EQ(j.reason.find("regroup"), std::string::npos) << j.reason;
  EXPECT_EQ(find_command(beat(a, {{id, 0, 1}}), TaskCommand::Kind::kStop)->task,
            (TaskKey{id, 0, 1}));
}

TEST_F(CoreTest, ExhaustedRecoveriesFailTheJob) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_
                ->submit_job(spec("twice", 2, "recovery: {mode: partial, max_recoveries: 1}\n"), {},
                             "t.yaml")
                ->id;
  beat(a, {{id, 0, 1}});
  ASSERT_TRUE(report(b, {exited({id, 1, 1}, 17)}).is_ok());
  ASSERT_EQ(job(id).generation, 2);
  ASSERT_EQ(job(id).state, JobState::kRunning);
  ASSERT_TRUE(report(b, {exited({id, 1, 2}, 17)}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_NE(j.reason.find("exited with code 17"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("no regroup left (1 of recovery.max_recoveries 1 used)"),
            std::string::npos)
      << j.reason;

  // A bad spec fails the same way anywhere: no regroup even with recoveries left.
  beat(a, {});
  beat(b, {});
  auto bad = core_->submit_job(spec("bad", 1, "recovery: {mode: partial}\n"), {}, "b.yaml")->id;
  const std::string w = job(bad).ranks[0].worker_id;
  ASSERT_TRUE(report(w == "a" ? a : b, {exited({bad, 0, 1}, 2)}).is_ok());
  EXPECT_EQ(job(bad).state, JobState::kFailed);
  EXPECT_EQ(job(bad).recoveries, 0);
}

TEST_F(CoreTest, SurvivorGivingUpBeforeTheRegroupJoinsIt) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("join", 2, "recovery: {mode: partial}\n"), {}, "j.yaml")->id;
  beat(a, {{id, 0, 1}});
  beat(b, {{id, 1, 1}});
  ASSERT_TRUE(report(b, {exited({id, 1, 1}, 17)}).is_ok());
  ASSERT_EQ(job(id).generation, 2);
  const std::string master = job(id).master_addr;
  // Rank 0 lost its peer and exits 4 before its daemon heard of the regroup.
  ASSERT_TRUE(report(a, {exited({id, 0, 1}, 4)}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.generation, 2) << "the same regroup: no second bump";
  EXPECT_EQ(j.recoveries, 1) << "not counted again";
  EXPECT_EQ(j.master_addr, master) << "rank 0 stays on its worker: same master";
  EXPECT_EQ(j.ranks[0].worker_id, "a");
  EXPECT_EQ(j.ranks[0].state, RankState::kAssigned);
  auto hb = beat(a, {});
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kStart);
  EXPECT_EQ(hb.commands[0].task, (TaskKey{id, 0, 2}));
  // A replacement of the current generation failing is a new regroup.
  ASSERT_TRUE(report(b, {exited({id, 1, 2}, 4)}).is_ok());
  EXPECT_EQ(job(id).recoveries, 2);
  EXPECT_EQ(job(id).generation, 3);
}

TEST_F(CoreTest, RegroupWaitsForAWorkerThenPlacesAndSurvivesARestart) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("wait", 2, "recovery: {mode: partial}\n"), {}, "w.yaml")->id;
  TaskKey r0{id, 0, 1};
  clock_.advance_ms(600);
  beat(a, {r0});
  clock_.advance_ms(600);
  core_->tick();  // b lost; a's only slot is taken by rank 0
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_NE(j.reason.find("waiting for a worker"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("worker b lost"), std::string::npos) << j.reason;
  EXPECT_EQ(j.generation, 1) << "bumped once a replacement is placed";
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_EQ(j.ranks[1].state, RankState::kUnassigned);
  EXPECT_EQ(j.ranks[1].worker_id, "");
  EXPECT_TRUE(beat(a, {r0}).commands.empty()) << "the survivor waits: no stop, no regroup yet";
  core_->tick();
  EXPECT_EQ(job(id).ranks[1].state, RankState::kUnassigned);

  reopen();  // the waiting regroup is journaled
  j = job(id);
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_EQ(j.ranks[1].state, RankState::kUnassigned);
  ASSERT_TRUE(core_->heartbeat("a", a.session, {r0}, {43000}).is_ok());
  auto c = add_worker("c");
  j = job(id);
  EXPECT_EQ(j.generation, 2);
  EXPECT_EQ(j.ranks[1].worker_id, "c");
  EXPECT_EQ(j.master_addr, "127.0.0.1:43000");
  auto hb = core_->heartbeat("a", a.session, {r0}, {43001});
  ASSERT_TRUE(hb.is_ok());
  ASSERT_EQ(hb->commands.size(), 1u);
  EXPECT_EQ(hb->commands[0].kind, TaskCommand::Kind::kRegroup);
  EXPECT_EQ(hb->commands[0].master_addr, "127.0.0.1:43000");
  hb = core_->heartbeat("c", c.session, {}, {});
  ASSERT_EQ(hb->commands.size(), 1u);
  EXPECT_EQ(hb->commands[0].kind, TaskCommand::Kind::kStart);
  EXPECT_EQ(hb->commands[0].task, (TaskKey{id, 1, 2}));
}

TEST_F(CoreTest, SurvivorGivingUpWhileTheRegroupWaitsIsPlacedWithIt) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("wait", 2, "recovery: {mode: partial}\n"), {}, "w.yaml")->id;
  clock_.advance_ms(600);
  beat(a, {{id, 0, 1}});
  clock_.advance_ms(600);
  core_->tick();  // b lost, no free worker for rank 1
  ASSERT_EQ(job(id).ranks[1].state, RankState::kUnassigned);
  // Rank 0 gives up on its peer: same generation (nothing was bumped yet) but part of it.
  ASSERT_TRUE(report(a, {exited({id, 0, 1}, 4)}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_EQ(j.generation, 1);
  EXPECT_EQ(j.ranks[0].state, RankState::kUnassigned) << "placed with rank 1, as a whole";
  EXPECT_TRUE(beat(a, {}).commands.empty()) << "nothing starts before every rank has a worker";
  add_worker("c");
  j = job(id);
  EXPECT_EQ(j.generation, 2);
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_EQ(j.ranks[0].worker_id, "a");
  EXPECT_EQ(j.ranks[1].worker_id, "c");
  auto hb = beat(a, {});
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kStart);
  EXPECT_EQ(hb.commands[0].task, (TaskKey{id, 0, 2}));
}

TEST_F(CoreTest, RestartedDaemonWithRecoveryGetsItsRankBackAtANewGeneration) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("restart", 2, "recovery: {mode: partial}\n"), {}, "r.yaml")->id;
  beat(a, {{id, 0, 1}});
  auto b2 = add_worker("b", "local", 1, b.session);  // b's daemon restarted: its trainer is gone
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.generation, 2);
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_EQ(j.ranks[1].worker_id, "b");
  auto hb = beat(b2);
  ASSERT_EQ(hb.commands.size(), 1u);
  EXPECT_EQ(hb.commands[0].kind, TaskCommand::Kind::kStart);
  EXPECT_EQ(hb.commands[0].task, (TaskKey{id, 1, 2}));
  EXPECT_EQ(beat(a, {{id, 0, 1}}).commands.at(0).kind, TaskCommand::Kind::kRegroup);
}

TEST_F(CoreTest, JournalReplayAfterARegroupRestoresGenerationAndRecoveries) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("replay", 2, "recovery: {mode: partial}\n"), {}, "r.yaml")->id;
  TaskKey r0{id, 0, 1};
  beat(a, {r0});
  ASSERT_TRUE(report(b, {exited({id, 1, 1}, 17)}).is_ok());
  const Job before = job(id);
  ASSERT_EQ(before.generation, 2);

  reopen();
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.generation, 2);
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_EQ(j.max_recoveries, 3);
  EXPECT_EQ(j.recovery_mode, RecoveryMode::kPartial);
  EXPECT_EQ(j.master_addr, before.master_addr);
  EXPECT_EQ(j.ranks[0].generation, 1) << "the survivor has not re-keyed yet";
  EXPECT_EQ(j.ranks[1].generation, 2);
  // The survivor's daemon carries on with its session and still gets its Regroup.
  auto hb = core_->heartbeat("a", a.session, {r0}, {});
  ASSERT_TRUE(hb.is_ok()) << hb.status().to_string();
  ASSERT_EQ(hb->commands.size(), 1u);
  EXPECT_EQ(hb->commands[0].kind, TaskCommand::Kind::kRegroup);
  EXPECT_EQ(hb->commands[0].generation, 2);
  ASSERT_TRUE(core_->heartbeat("a", a.session, {{id, 0, 2}}, {}).is_ok());
  reopen();
  EXPECT_EQ(job(id).ranks[0].generation, 2) << "the re-key is journaled";
}

// Issue 18 item 5: a deterministic failure (bad spec, bad data, out of memory, non-finite
// loss, internal error, refused by the worker, an unknown code) fails the job at once with
// its own reason, even with recoveries left; only a lost process or machine regroups.
TEST_F(CoreTest, DeterministicExitsFailAtOnceAndOnlyLossesRegroup) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  struct Case {
    int code;
    bool regroups;
  };
  for (Case c : std::vector<Case>{{2, false},
                                  {3, false},
                                  {5, false},
                                  {7, false},
                                  {8, false},
                                  {9, false},
                                  {10, false},
                                  {1, false},
                                  {4, true},
                                  {6, true},
                                  {17, true},
                                  {127, true},
                                  {-9, true}}) {
    beat(a, {});
    beat(b, {});
    auto id =
        core_
            ->submit_job(spec("c" + std::to_string(c.code + 10), 1, "recovery: {mode: partial}\n"),
                         {}, "c.yaml")
            ->id;
    Job j = job(id);
    ASSERT_EQ(j.state, JobState::kRunning) << c.code;
    const std::string w = j.ranks[0].worker_id;
    TaskEvent err;
    err.kind = TaskEvent::Kind::kError;
    err.task = {id, 0, 1};
    err.message = "the cause, code " + std::to_string(c.code);
    ASSERT_TRUE(report(w == "a" ? a : b, {err, exited({id, 0, 1}, c.code, "tail\n")}).is_ok());
    j = job(id);
    if (c.regroups) {
      EXPECT_EQ(j.state, JobState::kRunning) << c.code << ": " << j.reason;
      EXPECT_EQ(j.recoveries, 1) << c.code;
      ASSERT_TRUE(core_->cancel_job(id, "next case").is_ok());
    } else {
      EXPECT_EQ(j.state, JobState::kFailed) << c.code << ": " << j.reason;
      EXPECT_EQ(j.recoveries, 0) << c.code;
      EXPECT_EQ(j.generation, 1) << c.code;
      EXPECT_EQ(j.reason.rfind("rank 0 on worker " + w + ": " + trainer_exit_meaning(c.code), 0),
                0u)
          << j.reason;
      EXPECT_NE(j.reason.find("the cause, code " + std::to_string(c.code)), std::string::npos)
          << j.reason;
      EXPECT_EQ(j.reason.find("regroup"), std::string::npos) << j.reason;
    }
  }
}

// Issue 18 item 5: the reason is the root cause even when a peer's loss is reported first.
TEST_F(CoreTest, RootCauseReplacesAPeerLossReportedBeforeIt) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("rc", 2), {}, "rc.yaml")->id;
  ASSERT_TRUE(report(a, {exited({id, 0, 1}, 4, "peer closed the connection\n")}).is_ok());
  ASSERT_EQ(job(id).state, JobState::kFailed);
  EXPECT_NE(job(id).reason.find("exited with code 4"), std::string::npos) << job(id).reason;
  TaskEvent err;
  err.kind = TaskEvent::Kind::kError;
  err.task = {id, 1, 1};
  err.message = "DATA_LOSS: /data/x.tsv: no valid line in 1000 lines";
  ASSERT_TRUE(report(b, {err, exited({id, 1, 1}, 3)}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.reason.rfind("rank 1 on worker b: data error", 0), 0u) << j.reason;
  EXPECT_NE(j.reason.find("/data/x.tsv: no valid line in 1000 lines"), std::string::npos)
      << j.reason;
  EXPECT_EQ(j.ranks[1].exit_code, 3);
  // It is journaled: a restart keeps the root cause.
  reopen();
  EXPECT_EQ(job(id).reason, j.reason);

  // A rank that died on its own (here an injected crash) after its peer's comm failure was
  // reported is the root cause too; a peer stopped afterwards (6) is not.
  auto c = add_worker("c");
  auto d = add_worker("d");
  auto id2 = core_->submit_job(spec("rc2", 2), {}, "rc2.yaml")->id;
  const std::string w0 = job(id2).ranks[0].worker_id, w1 = job(id2).ranks[1].worker_id;
  ASSERT_TRUE(report(w0 == "c" ? c : d, {exited({id2, 0, 1}, 4)}).is_ok());
  ASSERT_TRUE(report(w1 == "c" ? c : d, {exited({id2, 1, 1}, 17)}).is_ok());
  EXPECT_EQ(job(id2).reason.rfind("rank 1 on worker " + w1 + ": injected failure", 0), 0u)
      << job(id2).reason;
}

// Issue 18 item 4: numbers a worker reports are not trusted to be finite; the journal (JSON)
// keeps working, before and after a restart.
TEST_F(CoreTest, NonFiniteNumbersFromAWorkerAreNotStored) {
  auto a = add_worker("a");
  auto id = core_->submit_job(spec("nan", 1), {}, "n.yaml")->id;
  TaskKey k{id, 0, 1};
  ASSERT_TRUE(report(a, {progress(k, 1, 10, 2.5)}).is_ok());
  TaskEvent p = progress(k, 2, 10, std::nan(""));
  p.samples_per_s = std::numeric_limits<double>::infinity();
  p.metrics["staleness"] = std::nan("");
  TaskEvent ev;
  ev.kind = TaskEvent::Kind::kEval;
  ev.task = k;
  ev.test_accuracy = std::nan("");
  TaskEvent fin;
  fin.kind = TaskEvent::Kind::kFinished;
  fin.task = k;
  fin.summary = {{"final_loss", std::nan("")}, {"steps", 2}};
  ASSERT_TRUE(report(a, {p, ev, fin}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.ranks[0].step, 2);
  EXPECT_EQ(j.ranks[0].loss, 2.5) << "the last finite value stays";
  EXPECT_EQ(j.ranks[0].samples_per_s, 100);
  EXPECT_EQ(j.ranks[0].metrics.at("staleness"), 2);
  EXPECT_FALSE(j.ranks[0].test_accuracy.has_value());
  EXPECT_EQ(j.summary.count("final_loss"), 0u);
  reopen();
  EXPECT_EQ(job(id).ranks[0].loss, 2.5);
}

// An evaluation's other results (DLRM's test_auc) reach the rank's metrics, hence `tern status`;
// non-finite ones do not.
TEST_F(CoreTest, EvaluationMetricsReachTheRankStatus) {
  auto a = add_worker("a");
  auto id = core_->submit_job(spec("auc", 1), {}, "a.yaml")->id;
  TaskKey k{id, 0, 1};
  TaskEvent ev;
  ev.kind = TaskEvent::Kind::kEval;
  ev.task = k;
  ev.step = 4;
  ev.test_accuracy = 0.77;
  ev.test_loss = 0.5;
  ev.metrics = {{"test_auc", 0.81}, {"test_bogus", std::nan("")}};
  ASSERT_TRUE(report(a, {ev}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.ranks[0].metrics.at("test_auc"), 0.81);
  EXPECT_EQ(j.ranks[0].metrics.count("test_bogus"), 0u);
  EXPECT_EQ(j.test_accuracy, 0.77);
}

// Issue 18 item 6: workers report their cores; a job whose train.threads exceeds every
// worker's cores fails at placement naming both, and does not block the queue; workers with
// too few cores get no rank of it.
TEST_F(CoreTest, TrainThreadsBeyondTheWorkersCoresAreRefusedAtPlacement) {
  auto small = core_->register_worker({"small", "127.0.0.1", "local", 2, {40100}, 0, 2});
  ASSERT_TRUE(small.is_ok());
  auto greedy = core_->submit_job(spec("greedy", 1, "train: {threads: 8}\n"), {}, "g.yaml");
  ASSERT_TRUE(greedy.is_ok());
  auto modest = core_->submit_job(spec("modest", 1, "train: {threads: 2}\n"), {}, "m.yaml");
  ASSERT_TRUE(modest.is_ok());
  Job g = job(greedy->id);
  EXPECT_EQ(g.state, JobState::kFailed);
  EXPECT_NE(g.reason.find("train.threads 8"), std::string::npos) << g.reason;
  EXPECT_NE(g.reason.find("has 2"), std::string::npos) << g.reason;
  EXPECT_EQ(job(modest->id).state, JobState::kRunning) << "the queue moves on";

  // A big worker joins: the next greedy job runs there, never on the small one.
  auto big = core_->register_worker({"big", "127.0.0.1", "local", 2, {40200}, 0, 16});
  ASSERT_TRUE(big.is_ok());
  auto again = core_->submit_job(spec("greedy2", 2, "train: {threads: 8}\n"), {}, "g.yaml");
  Job j = job(again->id);
  ASSERT_EQ(j.state, JobState::kRunning) << j.reason;
  for (const auto& r : j.ranks) EXPECT_EQ(r.worker_id, "big");
  // Negative cores are refused at registration.
  EXPECT_EQ(
      core_->register_worker({"neg", "127.0.0.1", "local", 1, {40300}, 0, -1}).status().code(),
      StatusCode::kInvalidArgument);
}

TEST_F(CoreTest, WorkerRegistrationIsValidated) {
  EXPECT_EQ(core_->register_worker({"a", "127.0.0.1", "local", 0, {}}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->register_worker({"a/../b", "127.0.0.1", "local", 1, {}}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->register_worker({"a", "", "local", 1, {}}).status().code(),
            StatusCode::kInvalidArgument);
  auto anon = core_->register_worker({"", "127.0.0.1", "local", 1, {}});
  ASSERT_TRUE(anon.is_ok());
  EXPECT_EQ(anon->worker_id, "w-1");
}

// --- elastic groups (recovery.min_workers) ---

TEST_F(CoreTest, ElasticLossShrinksAtOnceThenTheStandbyGrowsTheGroupBack) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto c = add_worker("c");
  auto id =
      core_->submit_job(spec("el", 3, "recovery: {mode: partial, min_workers: 2}\n"), {}, "e.yaml")
          ->id;
  TaskKey r0{id, 0, 1}, r1{id, 1, 1}, r2{id, 2, 1};
  beat(a, {r0});
  beat(b, {r1});
  beat(c, {r2});
  auto version = core_->await_work("a", a.session, 0, std::chrono::milliseconds(0));
  ASSERT_TRUE(version.is_ok());
  TaskEvent lost = exited(r2, -9);
  lost.time = 1000.5;
  ASSERT_TRUE(report(c, {progress(r2, 3, 10, 1.0), lost}).is_ok());

  // The survivors form generation 2 at once, without waiting for a replacement.
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.generation, 2);
  EXPECT_EQ(j.members(), (std::vector<int>{0, 1}));
  EXPECT_NE(j.reason.find("shrink to 2 of 3 ranks (0,1)"), std::string::npos) << j.reason;
  ASSERT_EQ(j.timelines.size(), 1u);
  EXPECT_EQ(j.timelines[0]["lost"], 1000.5);
  EXPECT_EQ(j.timelines[0]["world"], 2);
  // Their daemons learn it without waiting for a heartbeat.
  auto woke = core_->await_work("a", a.session, *version, std::chrono::milliseconds(0));
  ASSERT_TRUE(woke.is_ok());
  EXPECT_NE(*woke, *version) << "a nudge for the survivor's worker";
  auto hb = beat(a, {r0});
  const TaskCommand* rg = find_command(hb, TaskCommand::Kind::kRegroup);
  ASSERT_NE(rg, nullptr);
  EXPECT_EQ(rg->generation, 2);
  EXPECT_EQ(rg->world, 2);
  EXPECT_EQ(rg->members, (std::vector<int>{0, 1}));
  EXPECT_EQ(rg->master_addr, j.master_addr);
  // The replacement starts as a standby on the free worker, not a member.
  EXPECT_EQ(j.ranks[2].worker_id, "c");
  EXPECT_FALSE(j.ranks[2].member);
  hb = beat(c, {});
  const TaskCommand* st = find_command(hb, TaskCommand::Kind::kStart);
  ASSERT_NE(st, nullptr);
  EXPECT_TRUE(st->standby);
  EXPECT_EQ(st->task, (TaskKey{id, 2, 2}));
  EXPECT_EQ(st->members, (std::vector<int>{0, 1}));
  // Survivors train on at generation 2; the first progress after the regroup ends the timeline.
  TaskKey n0{id, 0, 2}, n1{id, 1, 2}, s2{id, 2, 2};
  beat(a, {n0});
  beat(b, {n1});
  TaskEvent again = progress(n0, 4, 10, 0.9);
  again.metrics["regroup_generation"] = 2;
  again.time = 1000.9;
  ASSERT_TRUE(report(a, {again}).is_ok());
  j = job(id);
  EXPECT_EQ(j.timelines[0]["training_again"], 1000.9);
  EXPECT_EQ(j.ranks[0].metrics.count("regroup_generation"), 0u) << "not a training metric";

  // Ready: the group grows back to 3 at generation 3; everybody is told, the standby too.
  TaskEvent ready;
  ready.kind = TaskEvent::Kind::kReady;
  ready.task = s2;
  ready.setup_s = 4.2;
  ASSERT_TRUE(report(c, {ready}).is_ok());
  j = job(id);
  EXPECT_EQ(j.generation, 3);
  EXPECT_EQ(j.members(), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(j.timelines.back()["grow"], 1);
  for (auto [w, k] : {std::pair{a, n0}, std::pair{b, n1}, std::pair{c, s2}}) {
    hb = beat(w, {k});
    rg = find_command(hb, TaskCommand::Kind::kRegroup);
    ASSERT_NE(rg, nullptr) << k.rank;
    EXPECT_EQ(rg->generation, 3);
    EXPECT_EQ(rg->members, (std::vector<int>{0, 1, 2}));
  }
  TaskKey g0{id, 0, 3}, g1{id, 1, 3}, g2{id, 2, 3};
  ASSERT_TRUE(report(a, {exited(g0, 0)}).is_ok());
  ASSERT_TRUE(report(b, {exited(g1, 0)}).is_ok());
  ASSERT_TRUE(report(c, {exited(g2, 0)}).is_ok());
  j = job(id);
  EXPECT_EQ(j.state, JobState::kSucceeded) << j.reason;
  reopen();  // membership and timelines are journaled
  j = job(id);
  EXPECT_EQ(j.members(), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(j.timelines.size(), 2u);
}

TEST_F(CoreTest, ElasticWithoutAFreeWorkerFinishesSmallerAndStopsNothingElse) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto c = add_worker("c");
  auto id =
      core_->submit_job(spec("el", 3, "recovery: {mode: partial, min_workers: 2}\n"), {}, "e.yaml")
          ->id;
  TaskKey r0{id, 0, 1}, r1{id, 1, 1};
  clock_.advance_ms(600);
  beat(a, {r0});
  beat(b, {r1});
  clock_.advance_ms(600);  // c: lost (its lease), no worker free for rank 2
  core_->tick();
  Job j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.members(), (std::vector<int>{0, 1}));
  EXPECT_EQ(j.ranks[2].state, RankState::kUnassigned);
  TaskKey n0{id, 0, 2}, n1{id, 1, 2};
  beat(a, {n0});
  beat(b, {n1});
  ASSERT_TRUE(report(a, {exited(n0, 0)}).is_ok());
  EXPECT_EQ(job(id).state, JobState::kRunning) << "rank 1 still trains";
  ASSERT_TRUE(report(b, {exited(n1, 0)}).is_ok());
  j = job(id);
  EXPECT_EQ(j.state, JobState::kSucceeded) << j.reason;
  EXPECT_NE(j.reason.find("all 2 ranks finished (of 3)"), std::string::npos) << j.reason;
}

TEST_F(CoreTest, ElasticBelowMinWorkersWaitsForReplacementsLikeAFixedJob) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id =
      core_->submit_job(spec("el", 2, "recovery: {mode: partial, min_workers: 2}\n"), {}, "e.yaml")
          ->id;
  beat(a, {{id, 0, 1}});  // a spare port on rank 0's worker for the next generation
  ASSERT_TRUE(report(b, {exited({id, 1, 1}, -9)}).is_ok());
  Job j = job(id);
  EXPECT_EQ(j.members(), (std::vector<int>{0, 1})) << "1 left < min_workers 2: the fixed-size path";
  EXPECT_EQ(j.generation, 2);
  auto hb = beat(b, {});
  const TaskCommand* st = find_command(hb, TaskCommand::Kind::kStart);
  ASSERT_NE(st, nullptr);
  EXPECT_FALSE(st->standby);
}

TEST_F(CoreTest, ReadyFromARankThatIsNotAStandbyIsDropped) {
  auto a = add_worker("a");
  auto id =
      core_->submit_job(spec("el", 1, "recovery: {mode: partial, min_workers: 1}\n"), {}, "e.yaml")
          ->id;
  TaskEvent ready;
  ready.kind = TaskEvent::Kind::kReady;
  ready.task = {id, 0, 1};
  EXPECT_EQ(*core_->report_events("a", a.session, {ready}), 0);
  EXPECT_EQ(job(id).generation, 1);
}

// --- generation fencing (issue 28: a partitioned host comes back) ---

TaskEvent log_chunk(const TaskKey& k, int64_t offset, const std::string& data) {
  TaskEvent e;
  e.kind = TaskEvent::Kind::kLog;
  e.task = k;
  e.log_offset = offset;
  e.log_data = data;
  return e;
}

// Worker b's link goes down: its lease expires, its rank is restarted elsewhere (c) at
// generation 2. When b comes back and registers again, nothing its old trainer still says
// about rank 1 at generation 1 (progress, an evaluation, a checkpoint, an exit, log bytes) is
// applied, and a heartbeat that still lists the task is answered with a Stop.
TEST_F(CoreTest, AWrittenOffGenerationIsFencedOnAnotherWorker) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto c = add_worker("c");
  auto id = core_->submit_job(spec("fence", 2, "recovery: {mode: partial}\n"), {}, "f.yaml")->id;
  ASSERT_EQ(job(id).ranks[1].worker_id, "b");
  const TaskKey old1{id, 1, 1};
  ASSERT_TRUE(report(b, {progress(old1, 5, 100, 1.5), log_chunk(old1, 0, "b says hi\n")}).is_ok());
  clock_.advance_ms(600);
  beat(a, {{id, 0, 1}});
  beat(c);
  clock_.advance_ms(600);  // b silent for 1200 ms > lease 1000 ms
  core_->tick();
  ASSERT_EQ(job(id).ranks[1].worker_id, "c");
  ASSERT_EQ(job(id).ranks[1].start_generation, 2);
  ASSERT_TRUE(report(c, {progress({id, 1, 2}, 6, 100, 1.2)}).is_ok());
  const Job before = job(id);

  auto b2 = add_worker("b");  // the link is back: the old daemon registers again
  TaskEvent eval;
  eval.kind = TaskEvent::Kind::kEval;
  eval.task = old1;
  eval.test_accuracy = 0.99;
  auto n = core_->report_events("b", b2.session,
                                {progress(old1, 50, 100, 0.1), eval, log_chunk(old1, 10, "late\n"),
                                 exited(old1, 4, "connection closed\n")});
  ASSERT_TRUE(n.is_ok()) << n.status().to_string();
  EXPECT_EQ(*n, 0) << "nothing of the written-off generation is applied";
  const Job after = job(id);
  EXPECT_EQ(after.state, JobState::kRunning);
  EXPECT_EQ(after.generation, before.generation);
  EXPECT_EQ(after.ranks[1].worker_id, "c");
  EXPECT_EQ(after.ranks[1].step, 6);
  EXPECT_EQ(after.ranks[1].loss, 1.2);
  EXPECT_FALSE(after.ranks[1].test_accuracy.has_value());
  EXPECT_FALSE(after.ranks[1].exited);
  EXPECT_EQ(core_->get_logs(id, 1, 0, 0)->data, "b says hi\n");
  EXPECT_GE(core_->worker_plane_stats().events_dropped, 4u);
  const HeartbeatResult hb = beat(b2, {old1});
  const TaskCommand* stop = find_command(hb, TaskCommand::Kind::kStop);
  ASSERT_NE(stop, nullptr) << "the old trainer is told to stop";
  EXPECT_EQ(stop->task, old1);
}

// The same with the rank restarted on the very worker that came back (the only one with a
// free slot): the rank is assigned to that worker again, so only the generation tells the
// written-off trainer's bytes from the replacement's. A survivor's late chunks of its own older
// generation (sent before its daemon re-keyed it) still count.
TEST_F(CoreTest, AWrittenOffGenerationIsFencedOnTheSameWorker) {
  auto a = add_worker("a");
  auto b = add_worker("b");
  auto id = core_->submit_job(spec("fence", 2, "recovery: {mode: partial}\n"), {}, "f.yaml")->id;
  const TaskKey old0{id, 0, 1}, old1{id, 1, 1};
  ASSERT_TRUE(report(b, {log_chunk(old1, 0, "gen1\n")}).is_ok());
  clock_.advance_ms(600);
  beat(a, {old0});
  clock_.advance_ms(600);
  core_->tick();  // b lost; no free worker: rank 1 waits
  ASSERT_EQ(job(id).ranks[1].state, RankState::kUnassigned);
  auto b2 = add_worker("b");
  Job j = job(id);
  ASSERT_EQ(j.ranks[1].worker_id, "b");
  ASSERT_EQ(j.generation, 2);
  EXPECT_EQ(j.ranks[1].start_generation, 2);
  EXPECT_EQ(j.ranks[0].start_generation, 1) << "the survivor's trainer started at generation 1";

  // The old trainer (still alive on b) and the replacement both write rank 1's log.
  auto n = core_->report_events(
      "b", b2.session, {log_chunk(old1, 5, "old trainer\n"), progress(old1, 40, 100, 0.3)});
  ASSERT_TRUE(n.is_ok());
  EXPECT_EQ(*n, 0);
  ASSERT_TRUE(
      report(b2, {log_chunk({id, 1, 2}, 5, "gen2\n"), progress({id, 1, 2}, 7, 100, 1.1)}).is_ok());
  EXPECT_EQ(core_->get_logs(id, 1, 0, 0)->data, "gen1\ngen2\n");
  EXPECT_EQ(job(id).ranks[1].step, 7);
  const HeartbeatResult hb = beat(b2, {old1, {id, 1, 2}});
  const TaskCommand* stop = find_command(hb, TaskCommand::Kind::kStop);
  ASSERT_NE(stop, nullptr);
  EXPECT_EQ(stop->task, old1);

  // The survivor re-keys to generation 2 (its heartbeat says so), then its daemon flushes log
  // bytes it read before the re-key: they are its own and are kept.
  beat(a, {{id, 0, 2}});
  ASSERT_EQ(job(id).ranks[0].generation, 2);
  ASSERT_TRUE(report(a, {log_chunk(old0, 0, "survivor, late\n")}).is_ok());
  EXPECT_EQ(core_->get_logs(id, 0, 0, 0)->data, "survivor, late\n");

  // The fence survives a coordinator restart (journaled).
  reopen();
  n = core_->report_events("b", b2.session, {log_chunk(old1, 17, "after restart\n")});
  ASSERT_TRUE(n.is_ok());
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(job(id).ranks[1].start_generation, 2);
}

// The coordinator cut off from every worker for longer than a lease: every worker's lease
// runs out (one after another), every rank is written off. That is one recovery (the later
// hosts join the regroup waiting for workers), not one per host: with max_recoveries 2 the
// job must not fail. When the workers register again the whole group starts at a new
// generation.
TEST_F(CoreTest, EveryLeaseRunningOutIsOneRegroup) {
  std::vector<RegistrationResult> w;
  for (const char* n : {"a", "b", "c", "d"}) w.push_back(add_worker(n));
  auto id = core_
                ->submit_job(spec("cut", 4, "recovery: {mode: partial, max_recoveries: 2}\n"), {},
                             "c.yaml")
                ->id;
  ASSERT_EQ(job(id).generation, 1);
  for (size_t i = 0; i < w.size(); ++i) {  // staggered beats: the leases end in turn
    clock_.advance_ms(50);
    beat(w[i], {{id, static_cast<int>(i), 1}});
  }
  for (int k = 0; k < 12; ++k) {
    clock_.advance_ms(100);
    core_->tick();
  }
  Job j = job(id);
  ASSERT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.recoveries, 1) << j.reason;
  for (const RankInfo& r : j.ranks) EXPECT_EQ(r.state, RankState::kUnassigned) << r.rank;
  for (const char* n : {"a", "b", "c", "d"}) add_worker(n);
  j = job(id);
  EXPECT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_EQ(j.recoveries, 1);
  EXPECT_GE(j.generation, 2);
  for (const RankInfo& r : j.ranks) {
    EXPECT_EQ(r.state, RankState::kAssigned) << r.rank;
    EXPECT_EQ(r.start_generation, j.generation) << r.rank;
  }
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

// Group commit (journal_writer.h): submits from many threads are acknowledged once on disk, and
// every acknowledged one is there after a restart.
TEST_F(CoreTest, ConcurrentSubmitsAreAllDurableAndShareCommits) {
  constexpr int kThreads = 8;
  constexpr int kEach = 16;
  std::mutex mu;
  std::set<std::string> ids;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto r = core_->submit_job(spec("c" + std::to_string(t) + "-" + std::to_string(i), 2), {},
                                   "jobs/c.yaml");
        ASSERT_TRUE(r.is_ok()) << r.status().to_string();
        std::lock_guard<std::mutex> lock(mu);
        ids.insert(r->id);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(ids.size(), static_cast<size_t>(kThreads * kEach));
  const JournalWriterStats st = core_->journal_stats();
  EXPECT_GE(st.records_written, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_GE(st.commits, 1u);
  reopen();
  std::set<std::string> restored;
  for (const Job& j : core_->list_jobs()) restored.insert(j.id);
  EXPECT_EQ(restored, ids);
}

// A journal write that fails (the file-size limit: EFBIG) is never acknowledged: that change and
// every later one answer UNAVAILABLE, /metrics says so, and a restart has exactly what was
// acknowledged.
TEST_F(CoreTest, AJournalThatCannotBeWrittenRefusesEveryChange) {
  auto first = core_->submit_job(spec("kept", 2), {}, "jobs/kept.yaml");
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto previous = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(fs::file_size(dir_ / "journal" / "journal.log") + 8);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
  auto lost = core_->submit_job(spec("lost", 2), {}, "jobs/lost.yaml");
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
  ::signal(SIGXFSZ, previous);
  EXPECT_EQ(lost.status().code(), StatusCode::kUnavailable) << lost.status().to_string();
  EXPECT_NE(lost.status().message().find("restart"), std::string::npos) << lost.status().message();
  EXPECT_EQ(core_->cancel_job(first->id, "").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(core_->submit_job(spec("later", 2), {}, "jobs/later.yaml").status().code(),
            StatusCode::kUnavailable);
  EXPECT_NE(render_coordinator_metrics(*core_, nullptr).find("tern_journal_healthy 0"),
            std::string::npos);
  reopen();
  std::vector<Job> jobs = core_->list_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].id, first->id);
  EXPECT_EQ(jobs[0].state, JobState::kPending);
  auto next = core_->submit_job(spec("next", 2), {}, "jobs/next.yaml");
  ASSERT_TRUE(next.is_ok()) << next.status().to_string();
}

}  // namespace
}  // namespace tern
