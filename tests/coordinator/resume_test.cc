// Resume on any cluster, the coordinator's side (issue 22): with a checkpoint_root a job's
// checkpoints go to <root>/<job id> (its journaled spec says so); the newest committed step the
// trainers report is journaled (a damaged or ill-typed record stops the start, it is never
// dropped); `submit --resume JOB` starts a new job from JOB's spec and checkpoints and refuses,
// saying why, a job that is unknown, still running, without a committed step or with
// checkpoints outside the root; the path policy keeps a job to its own directory below the root.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/job_spec.h"
#include "coordinator/coordinator_core.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

std::string spec(const std::string& name, int workers, const std::string& extra = "") {
  return "name: " + name + "\nworkers: " + std::to_string(workers) +
         "\nmodel: {type: mlp}\ndata: {source: synthetic, train_size: 512, test_size: 128}\n"
         "recovery: {checkpoint_every: 5}\n" +
         extra;
}

class ResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_resume_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    root_ = (dir_ / "ckpt").string();
    options_.state_dir = (dir_ / "state").string();
    options_.lease_ms = 1000;
    options_.heartbeat_ms = 100;
    options_.paths.write_roots = {(dir_ / "state" / "work").string()};
    options_.paths.read_roots = {"/usr/share/datasets"};
    options_.checkpoint_root = root_;
    ASSERT_TRUE(reopen().is_ok());
  }
  void TearDown() override {
    core_.reset();
    fs::remove_all(dir_);
  }
  Status reopen() {
    core_.reset();
    auto c = CoordinatorCore::open(options_, &clock_);
    if (!c.is_ok()) return c.status();
    core_ = std::move(c).value();
    return Status::ok();
  }
  RegistrationResult add_worker(const std::string& name) {
    auto r = core_->register_worker(
        {name, "127.0.0.1", "local", 1, {40000 + static_cast<int>(next_port_++)}, 0});
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return *r;
  }
  static TaskEvent committed(const std::string& job, int rank, int64_t step) {
    TaskEvent e;
    e.kind = TaskEvent::Kind::kCheckpoint;
    e.task = {job, rank, 1};
    e.step = step;
    return e;
  }
  Job job(const std::string& id) {
    auto j = core_->get_job(id);
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    return j.is_ok() ? *j : Job{};
  }
  // A 2-rank job on workers a and b that committed `step` (0: none), then was cancelled.
  std::string ended_job(int64_t step) {
    auto j = core_->submit_job(spec("old", 2), {}, "old.yaml");
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    if (!j.is_ok()) return "";
    if (step > 0) {
      auto n = core_->report_events(a_.worker_id, a_.session, {committed(j->id, 0, step)});
      EXPECT_TRUE(n.is_ok() && *n == 1) << n.status().to_string();
    }
    EXPECT_TRUE(core_->cancel_job(j->id, "the cluster went down").is_ok());
    return j->id;
  }
  fs::path journal() const { return dir_ / "state" / "journal" / "journal.log"; }
  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void write(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  }

  fs::path dir_;
  std::string root_;
  ManualClock clock_;
  CoordinatorOptions options_;
  std::unique_ptr<CoordinatorCore> core_;
  size_t next_port_ = 0;
  RegistrationResult a_, b_;
};

TEST_F(ResumeTest, CheckpointsGoUnderTheRootAndTheNewestCommittedStepIsJournaled) {
  a_ = add_worker("a");
  b_ = add_worker("b");
  auto j = core_->submit_job(spec("ckpt", 2), {}, "ckpt.yaml");
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ(j->checkpoint_dir, root_ + "/" + j->id);
  EXPECT_EQ(j->checkpoint_step, -1);
  auto effective = load_job_spec_text(j->spec_yaml, "journaled");
  ASSERT_TRUE(effective.is_ok()) << effective.status().to_string();
  EXPECT_EQ(effective->spec.recovery.dir, root_ + "/" + j->id)
      << "the trainers run what is journaled";

  // Every rank reports each commit; only a newer step changes (and journals) anything.
  auto n = core_->report_events(a_.worker_id, a_.session,
                                {committed(j->id, 0, 5), committed(j->id, 0, 10)});
  ASSERT_TRUE(n.is_ok());
  EXPECT_EQ(*n, 2);
  ASSERT_TRUE(core_->report_events(b_.worker_id, b_.session, {committed(j->id, 1, 5)}).is_ok());
  EXPECT_EQ(job(j->id).checkpoint_step, 10)
      << "a late report of an older step does not move it back";
  // Steps no trainer commits are dropped, not applied.
  const uint64_t dropped = core_->worker_plane_stats().events_dropped;
  for (int64_t bad : {int64_t{0}, int64_t{-3}, int64_t{1} << 60}) {
    ASSERT_TRUE(core_->report_events(a_.worker_id, a_.session, {committed(j->id, 0, bad)}).is_ok());
  }
  EXPECT_EQ(core_->worker_plane_stats().events_dropped, dropped + 3);
  EXPECT_EQ(job(j->id).checkpoint_step, 10);
  // Nor from a worker the rank is not assigned to.
  ASSERT_TRUE(core_->report_events(b_.worker_id, b_.session, {committed(j->id, 0, 15)}).is_ok());
  EXPECT_EQ(job(j->id).checkpoint_step, 10);

  ASSERT_TRUE(reopen().is_ok());  // as after kill -9: the journal is all that survives
  Job after = job(j->id);
  EXPECT_EQ(after.checkpoint_step, 10);
  EXPECT_EQ(after.checkpoint_dir, root_ + "/" + j->id);
}

TEST_F(ResumeTest, WithoutARootCheckpointsStayOnTheWorkers) {
  options_.checkpoint_root.clear();
  ASSERT_TRUE(reopen().is_ok());
  auto j = core_->submit_job(spec("local", 1), {}, "local.yaml");
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ(j->checkpoint_dir, "");
  auto effective = load_job_spec_text(j->spec_yaml, "journaled");
  ASSERT_TRUE(effective.is_ok());
  EXPECT_EQ(effective->spec.recovery.dir, "");
}

// A flipped bit in the record that carries the committed step stops the start naming the
// record; so does a record whose checksums hold but whose checkpoint fields are of the wrong
// type or impossible (written by something else): never dropped, never half-read.
TEST_F(ResumeTest, ADamagedOrIllTypedCheckpointRecordStopsTheStartAndIsNeverDropped) {
  a_ = add_worker("a");
  b_ = add_worker("b");
  const std::string id = ended_job(10);
  core_.reset();
  const std::string bytes = read(journal());
  auto scan = scan_journal(bytes, journal().string());
  ASSERT_TRUE(scan.is_ok()) << scan.status().to_string();
  // The newest record of the job holds "checkpoint_step":10.
  const JournalRecord* with_step = nullptr;
  for (const auto& r : scan->records) {
    if (r.payload.find("\"checkpoint_step\":10") != std::string_view::npos) with_step = &r;
  }
  ASSERT_NE(with_step, nullptr) << "the committed step is journaled";
  const size_t at = with_step->offset + 20 + with_step->payload.find("\"checkpoint_step\":10") + 19;
  std::string damaged = bytes;
  damaged[at] ^= 0x01;  // 10 -> 11 (or another digit): the record CRC no longer holds
  write(journal(), damaged);
  Status s = reopen();
  ASSERT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  EXPECT_NE(s.message().find("at byte " + std::to_string(with_step->offset)), std::string::npos)
      << s.message();
  EXPECT_EQ(read(journal()), damaged) << "a refused start changes nothing";

  const std::string prefix = bytes.substr(0, with_step->offset);
  const uint64_t seq = with_step->seq;
  for (const std::string& field :
       {std::string("\"checkpoint_step\":\"ten\""), std::string("\"checkpoint_step\":-7"),
        std::string("\"checkpoint_step\":1.5e300"), std::string("\"checkpoint_dir\":7"),
        std::string("\"checkpoint_dir\":\"relative/dir\""), std::string("\"resumed_step\":[1]")}) {
    SCOPED_TRACE(field);
    std::string payload(with_step->payload);
    payload.insert(payload.size() - 1, "," + field);  // a later key wins in nlohmann's parser
    write(journal(), prefix + Journal::frame(payload, seq));
    Status bad = reopen();
    ASSERT_EQ(bad.code(), StatusCode::kDataLoss) << bad.to_string();
    EXPECT_NE(bad.message().find("at byte " + std::to_string(with_step->offset)), std::string::npos)
        << bad.message();
  }
  write(journal(), bytes);
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(job(id).checkpoint_step, 10);
}

TEST_F(ResumeTest, ResumeStartsANewJobFromTheOldSpecAndCheckpoints) {
  a_ = add_worker("a");
  b_ = add_worker("b");
  add_worker("c");
  const std::string old_id = ended_job(10);
  auto j = core_->submit_job("", {"workers=3", "train.lr=0.01"}, "", old_id);
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_NE(j->id, old_id);
  EXPECT_EQ(j->world, 3);
  EXPECT_EQ(j->resumed_job, old_id);
  EXPECT_EQ(j->resumed_step, 10);
  EXPECT_EQ(j->checkpoint_dir, root_ + "/" + j->id)
      << "the new job checkpoints into its own directory";
  auto effective = load_job_spec_text(j->spec_yaml, "journaled");
  ASSERT_TRUE(effective.is_ok()) << effective.status().to_string();
  EXPECT_EQ(effective->spec.recovery.resume_from, root_ + "/" + old_id);
  EXPECT_EQ(effective->spec.recovery.resume_step, 10) << "the journaled committed step";
  EXPECT_EQ(effective->spec.recovery.dir, root_ + "/" + j->id);
  EXPECT_EQ(effective->spec.name, "old");
  EXPECT_DOUBLE_EQ(effective->spec.train.lr, 0.01);
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(job(j->id).resumed_job, old_id);
  EXPECT_EQ(job(j->id).resumed_step, 10);
}

TEST_F(ResumeTest, ResumeRefusesEveryJobItCannotResumeSayingWhy) {
  a_ = add_worker("a");
  b_ = add_worker("b");
  const std::string with_step = ended_job(10);
  const std::string without_step = ended_job(0);
  auto expect_refused = [&](const std::string& resume, std::vector<std::string> overrides,
                            const std::string& spec_yaml, StatusCode code, const std::string& why) {
    SCOPED_TRACE("--resume " + resume);
    const size_t jobs = core_->list_jobs().size();
    auto j = core_->submit_job(spec_yaml, overrides, "", resume);
    ASSERT_FALSE(j.is_ok()) << "accepted as " << j->id;
    EXPECT_EQ(j.status().code(), code) << j.status().to_string();
    EXPECT_NE(j.status().message().find(why), std::string::npos) << j.status().to_string();
    EXPECT_EQ(core_->list_jobs().size(), jobs) << "a refused resume adds no job";
  };
  expect_refused("j-99", {}, "", StatusCode::kNotFound, "no job 'j-99'");
  expect_refused(without_step, {}, "", StatusCode::kFailedPrecondition,
                 "has no committed checkpoint");
  expect_refused(with_step, {}, spec("x", 1), StatusCode::kInvalidArgument, "send no spec");
  expect_refused(with_step, {"recovery.resume_from=/tmp"}, "", StatusCode::kInvalidArgument,
                 "recovery.resume_from is set by --resume");
  expect_refused(with_step, {"recovery.dir=/tmp/x"}, "", StatusCode::kInvalidArgument,
                 "recovery.dir is set by --resume");
  expect_refused(with_step, {"workers=0"}, "", StatusCode::kInvalidArgument, "workers");

  // Still running: two jobs must not share one checkpoint directory.
  auto running = core_->submit_job(spec("run", 1), {}, "run.yaml");
  ASSERT_TRUE(running.is_ok());
  ASSERT_TRUE(
      core_->report_events(a_.worker_id, a_.session, {committed(running->id, 0, 5)}).is_ok());
  expect_refused(running->id, {}, "", StatusCode::kFailedPrecondition, "cancel it first");
  ASSERT_TRUE(core_->cancel_job(running->id, "").is_ok());

  // Checkpoints on the workers' own disks (a job from before the root, or its own recovery.dir).
  // (New daemons after each restart: the old ones' names stay theirs until their leases end.)
  options_.checkpoint_root.clear();
  ASSERT_TRUE(reopen().is_ok());
  a_ = add_worker("c");
  b_ = add_worker("d");
  expect_refused(with_step, {}, "", StatusCode::kFailedPrecondition, "has no checkpoint_root");
  const std::string local = ended_job(10);
  options_.checkpoint_root = root_;
  ASSERT_TRUE(reopen().is_ok());
  expect_refused(local, {}, "", StatusCode::kFailedPrecondition,
                 "did not checkpoint under a shared checkpoint_root");
  // Another cluster with another root: the old directory is not where its workers look.
  options_.checkpoint_root = (dir_ / "elsewhere").string();
  ASSERT_TRUE(reopen().is_ok());
  expect_refused(with_step, {}, "", StatusCode::kFailedPrecondition,
                 "not under this cluster's checkpoint_root");
}

// The path policy with a root: a job writes only its own directory below it and may read
// (recovery.resume_from) anywhere below it.
TEST_F(ResumeTest, AJobMayWriteOnlyItsOwnDirectoryBelowTheRoot) {
  auto other = core_->submit_job(spec("w", 1), {"recovery.dir=" + root_ + "/j-77"}, "w.yaml");
  ASSERT_FALSE(other.is_ok());
  EXPECT_EQ(other.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(other.status().message().find("recovery.dir"), std::string::npos)
      << other.status().to_string();
  auto escape =
      core_->submit_job(spec("e", 1), {"recovery.resume_from=" + root_ + "/../secrets"}, "e.yaml");
  ASSERT_FALSE(escape.is_ok());
  EXPECT_NE(escape.status().message().find("recovery.resume_from"), std::string::npos)
      << escape.status().to_string();
  auto read =
      core_->submit_job(spec("r", 1), {"recovery.resume_from=" + root_ + "/j-77"}, "r.yaml");
  ASSERT_TRUE(read.is_ok()) << read.status().to_string();
  EXPECT_EQ(read->checkpoint_dir, root_ + "/" + read->id);
}

}  // namespace
}  // namespace tern
