// CoordinatorCore: the coordinator's business logic, without gRPC (STYLE.md's first layer).
//
// Owns the worker registry (heartbeat leases on an injected Clock), the job table with its
// state machine (PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, each with a reason),
// the strict-FIFO gang scheduler (the oldest pending job is placed first; nothing overtakes
// it), the journal (every job state change and registration is fsynced before the call that
// caused it returns) and the per-rank copies of trainer logs.
//
// Worker daemons pull: heartbeat() renews the lease and returns the commands that reconcile
// what the worker reports running with what should run there (start missing tasks, stop
// tasks of ended jobs, regroup survivors), so a lost reply or a restarted coordinator heals
// on the next beat.
//
// Elastic regroup (recovery.mode partial | full; none fails the job at the first lost rank):
// a rank of a RUNNING job is lost when its trainer exits non-zero (except bad-spec and data
// errors, which a new worker would repeat), its worker's lease expires or its daemon
// re-registers. While fewer than recovery.max_recoveries regroups happened, the lost ranks
// move to replacement workers (the same worker if it is READY with a free slot, else one in
// the rank's region, else any unless placement is pack), the generation is bumped and rank
// 0's worker hands out a new master port. Survivors keep running: their daemons get a
// Regroup command on their next heartbeat (and re-key the task to the new generation); the
// replacements get a Start. No free worker: the job stays RUNNING and waits, placed by a
// later tick or heartbeat before any pending job. A survivor that gives up (exit 4) before
// it regrouped joins the regroup under way instead of counting as a new one.
//
// Thread-safe: one mutex guards everything; any gRPC thread may call any method. tick() is
// meant to be called periodically (CoordinatorServer does, every 100 ms) to expire leases.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/path_policy.h"
#include "common/status.h"
#include "coordinator/journal.h"
#include "coordinator/types.h"

namespace tern {

struct SlotOffer;

struct CoordinatorOptions {
  std::string state_dir;       // journal/ and logs/ live below it
  int64_t heartbeat_ms = 500;  // told to workers at registration
  int64_t lease_ms = 3000;     // a worker without a heartbeat for this long is LOST
  int64_t max_queued_jobs =
      1000;  // SubmitJob answers RESOURCE_EXHAUSTED beyond this many PENDING jobs
  std::string
      cluster_yaml;  // the cluster file's text, handed to trainers (WAN model); may be empty
  size_t compact_every =
      2000;  // compact when the journal has this many records more than live entries
  // SubmitJob answers INVALID_ARGUMENT for a spec (plus overrides) larger than this.
  int64_t max_spec_bytes = 256 << 10;
  // Where a spec's paths may point on the workers (job_dir unknown here; the daemons check
  // again with theirs). No roots: paths are not checked.
  PathPolicy paths;
};

struct WorkerRegistration {
  std::string name;
  std::string host;
  std::string region;
  int slots = 1;
  std::vector<int> spare_ports;
  int cores = 0;  // CPU cores of its machine; 0: unknown (placement does not check it)
};

struct RegistrationResult {
  std::string worker_id;
  uint64_t session = 0;
  int64_t heartbeat_ms = 0;
  int64_t lease_ms = 0;
};

struct HeartbeatResult {
  int64_t lease_ms = 0;
  std::vector<TaskCommand> commands;
};

struct LogSlice {
  std::string data;
  int64_t next_offset = 0;
  bool complete = false;
};

class CoordinatorCore {
 public:
  // Opens the journal under options.state_dir and replays it. Workers restored from the
  // journal get a fresh lease (from now), so running jobs survive a coordinator restart.
  static Result<std::unique_ptr<CoordinatorCore>> open(const CoordinatorOptions& options,
                                                       Clock* clock);

  // --- client API ---
  Result<Job> submit_job(const std::string& spec_yaml, const std::vector<std::string>& overrides,
                         const std::string& source_name);
  Result<Job> get_job(const std::string& job_id) const;
  std::vector<Job> list_jobs() const;  // by submission order
  Result<Job> cancel_job(const std::string& job_id, const std::string& reason);
  // Returns the job once its version is > after_version, or at the timeout (whatever it is).
  Result<Job> wait_job_change(const std::string& job_id, uint64_t after_version,
                              std::chrono::milliseconds timeout);
  std::vector<Worker> list_workers() const;  // by id
  Result<LogSlice> get_logs(const std::string& job_id, int rank, int64_t offset,
                            int64_t max_bytes) const;

  // --- worker API ---
  Result<RegistrationResult> register_worker(const WorkerRegistration& registration);
  Result<HeartbeatResult> heartbeat(const std::string& worker_id, uint64_t session,
                                    const std::vector<TaskKey>& running,
                                    const std::vector<int>& spare_ports);
  // Applies events in order; returns how many were applied (stale ones are dropped).
  Result<int> report_events(const std::string& worker_id, uint64_t session,
                            const std::vector<TaskEvent>& events);

  // Expires leases (failing the jobs that had ranks there) and places pending jobs.
  void tick();

  // Tasks assigned to a worker that are not finished (used slots).
  std::vector<TaskKey> assigned_tasks(const std::string& worker_id) const;
  const JournalReplayStats& replay_stats() const { return replay_stats_; }

 private:
  CoordinatorCore(const CoordinatorOptions& options, Clock* clock);
  Status replay_record(const std::string& payload);
  Status journal_job(const Job& job);
  Status journal_worker(const Worker& worker);
  Status journal_meta();
  Status maybe_compact();
  void set_spare_ports(Worker* worker, const std::vector<int>& ports);
  Status check_session(const std::string& worker_id, uint64_t session, Worker** worker);
  void touch(Job* job);
  void schedule_locked();
  void expire_leases_locked();
  std::vector<TaskKey> assigned_tasks_locked(const std::string& worker_id) const;
  // Ends a running job: `rank_state` for its live ranks, reason recorded, journaled.
  Status finish_job_locked(Job* job, JobState state, const std::string& reason);
  Status apply_event_locked(Worker& worker, const TaskEvent& event, bool* journal);

  // Elastic regroup (see the file comment).
  struct LostRank {
    int rank = 0;
    std::string worker_id;  // where it ran: the preferred replacement
    std::string why;        // for the log line and the job's reason
  };
  // Whether `job` may replace a lost rank now (recovery on and regroups left, or joining one).
  static bool can_regroup(const Job& job, bool join);
  // Takes the lost ranks off their workers and places replacements (or leaves them waiting).
  // `join`: part of the regroup under way, not counted again. Journals the job.
  Status regroup_locked(Job* job, const std::vector<LostRank>& lost, bool join);
  // Places the job's UNASSIGNED ranks; false when it has to wait (reason set). Bumps the
  // generation and picks a new master unless `same_generation` and rank 0 stays put.
  bool place_replacements_locked(Job* job, bool same_generation);
  // Free slots of the READY workers heard from since this coordinator started.
  void slot_offers_locked(std::vector<SlotOffer>* offers, std::vector<Worker*>* workers);
  std::string log_path(const std::string& job_id, int rank) const;

  const CoordinatorOptions options_;
  Clock* const clock_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable changed_;
  std::unique_ptr<Journal> journal_;
  JournalReplayStats replay_stats_;
  std::map<std::string, Job> jobs_;
  std::map<std::string, Worker> workers_;
  std::set<std::string> awaiting_;  // RUNNING jobs with lost ranks waiting for a worker
  // FAILED jobs whose reason is a lost process (a peer's comm failure, a signal), with that
  // exit code: a later exit of the same job with a deterministic code, or one that died on
  // its own after a comm failure was reported, replaces it (the root cause). Not journaled:
  // after a restart the first reason stays.
  std::map<std::string, int> failed_on_loss_;
  int64_t next_job_seq_ = 1;
  uint64_t next_session_ = 1;
};

}  // namespace tern
