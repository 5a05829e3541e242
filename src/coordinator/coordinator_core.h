// CoordinatorCore: the coordinator's business logic, without gRPC (the first of the gRPC layers
// in docs/contributing.md, "Interfaces and seams"; its place in a job's life:
// docs/architecture.md, "The life of one job").
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
// Thread-safe: one mutex guards the state; any gRPC thread may call any method. tick() is
// meant to be called periodically (CoordinatorServer does, every 100 ms) to expire leases. The
// mutex is always taken through CoreLock (core_lock.h); trainer log files are written after it
// is released (LogStore::flush, which refuses to run under it). The journal is the exception:
// a state change is appended and fsynced before the mutex is released, so no other call can
// observe (and acknowledge) a change that a crash would lose.
//
// The implementation is split by responsibility: coordinator_core.cc (open, replay, repair,
// compaction, client reads), core_submit.cc (submission), core_workers.cc (registration,
// heartbeats, event reports, leases, a worker gone), core_events.cc (the job state machine),
// core_placement.cc (scheduling, regroups), with journal_records.h (the record codec),
// log_store.h (trainer logs) and port_leases.h (rendezvous ports).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "common/cluster_config.h"
#include "common/path_policy.h"
#include "common/status.h"
#include "coordinator/journal.h"
#include "coordinator/journal_writer.h"
#include "coordinator/log_store.h"
#include "coordinator/network_map.h"
#include "coordinator/types.h"

namespace tern {

struct SlotOffer;
struct LoadedJobSpec;

// Sees every trainer event the core applied, with the job as it stands after it (the
// dashboard's time series, job_series.h). Called with the core's mutex held: it must be quick,
// do no file or network I/O, and never call back into the core.
class JobEventObserver {
 public:
  virtual ~JobEventObserver() = default;
  virtual void on_event(const Job& job, const TaskEvent& event, double now) = 0;
};

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
  // The cluster's checkpoint_root (cluster_config.h; absolute, "" = off). When set, a job
  // whose spec leaves recovery.dir unset gets <checkpoint_root>/<job id>, the only place
  // below the root it may write; it may read (recovery.resume_from) anywhere below it.
  std::string checkpoint_root;
  // The cluster's region names: a worker registering with another one is refused. Empty:
  // any region name is accepted (no cluster file).
  std::vector<std::string> regions;
  // Per-worker token bucket over Heartbeat and ReportEvents (after the session check, so a
  // caller without the session cannot drain a worker's bucket). The rate is raised to at
  // least twice the heartbeat rate plus 10/s so a daemon's own beats always fit.
  double worker_rate_per_s = 50;
  double worker_rate_burst = 200;
  // Trainer log bytes the coordinator keeps per job (all ranks together). Beyond it the rank's
  // log gets one marker line and later bytes are dropped; the job goes on.
  int64_t max_log_bytes_per_job = int64_t{64} << 20;
  // One log chunk (one event) keeps at most this many bytes; the rest is replaced by a marker.
  int64_t max_log_chunk_bytes = int64_t{1} << 20;
  // Told about every applied trainer event (may be null); must outlive the core.
  JobEventObserver* observer = nullptr;
  // The cluster file's network (WAN emulation model): with network.emulate, ReportNetwork
  // hands each daemon the modelled link to every peer, which its probes add (issue 24).
  NetworkSpec network;
  bool has_network_model = false;  // a cluster file gave `network` (else no model is handed out)
  // How often daemons re-probe their peers (ReportNetworkReply.probe_interval_ms).
  int64_t probe_interval_ms = 300000;
  // Order a job's ranks by ring_order over the measured network (when every link among its
  // workers is measured); false keeps the plain order (region, worker id).
  bool network_aware_order = true;
  NetworkMapOptions network_map;
  // Measured clusters become hierarchical groups (group_by_network_locked) only when every hop
  // between two of them costs at least this many seconds: a LAN's hops (under a millisecond,
  // with noise that can look like a 4x gap) never split a job.
  double measured_group_min_s = 0.005;
};

// What the worker plane refused or dropped (rendered on /metrics).
struct WorkerPlaneStats {
  uint64_t events_dropped = 0;         // events not applied: stale, unknown task, not this worker's
  uint64_t calls_throttled = 0;        // Heartbeat/ReportEvents over a worker's rate
  uint64_t log_bytes_dropped = 0;      // beyond a job's log quota or a chunk's cap
  uint64_t registrations_refused = 0;  // a live worker's name without its session
};

struct WorkerRegistration {
  std::string name;
  std::string host;
  std::string region;
  int slots = 1;
  std::vector<int> spare_ports;
  // The session secret of this worker's previous registration (0: none). Re-registering the
  // name of a READY worker needs it; a LOST worker's name may be taken over without.
  uint64_t session = 0;
  int cores = 0;  // CPU cores of its machine; 0: unknown (placement does not check it)
};

struct RegistrationResult {
  std::string worker_id;
  uint64_t session = 0;  // 64 bits from the kernel's CSPRNG, never 0: the worker's secret
  int64_t heartbeat_ms = 0;
  int64_t lease_ms = 0;
};

// A peer a daemon should probe (ReportNetwork's reply).
struct ProbePeerInfo {
  std::string worker_id;
  std::string host;
  int probe_port = 0;
  bool emulated = false;  // the trainers emulate `model` between the two workers' regions
  LinkSpec model;
};

struct NetworkReportResult {
  std::vector<ProbePeerInfo> peers;
  int64_t probe_interval_ms = 0;
};

struct HeartbeatResult {
  int64_t lease_ms = 0;
  std::vector<TaskCommand> commands;
};

// What `tern coordinator --repair` did (CoordinatorCore::repair).
struct CoordinatorRepairReport {
  JournalRepairReport journal;
  std::string job_ids_path;  // the job id high-water mark file
  std::string job_ids_note;  // what was wrong with it, if anything
  int64_t last_job_seq = 0;  // the largest job id ever handed out, as recorded now
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

  // Salvages a damaged journal under options.state_dir (Journal::repair, keeping only records
  // the coordinator can read) and rebuilds the job id high-water mark from the salvaged
  // records, the old mark and logs/jobs/, so no job id is ever handed out twice. Refuses while
  // a coordinator runs on the state directory. `unix_time` names the kept damaged file.
  static Result<CoordinatorRepairReport> repair(const CoordinatorOptions& options,
                                                int64_t unix_time);

  // --- client API ---
  // `resume_job` non-empty (`tern submit --resume`): the new job is `resume_job`'s journaled
  // spec (spec_yaml must be empty) plus `overrides`, with recovery.resume_from set to that
  // job's checkpoint directory; see resume_overrides_locked() for what is refused.
  Result<Job> submit_job(const std::string& spec_yaml, const std::vector<std::string>& overrides,
                         const std::string& source_name, const std::string& resume_job = "");
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
  // Registers a daemon under `registration.name` (empty: a fresh "w-N"). Refuses a region
  // that is not one of options.regions (when given), a host that is not a host name or IP
  // address, slots outside [1, 4096], spare ports outside [1, 65535], and the name of a READY
  // worker unless `registration.session` is its current session (ALREADY_EXISTS): a daemon
  // that restarts keeps its session in its work directory; one that lost it waits for the
  // old lease to expire, after which the name is free.
  Result<RegistrationResult> register_worker(const WorkerRegistration& registration);
  // Network profiling: stores the worker's measurements (NetworkMap::report's checks, nothing
  // stored on an error) and probe port (0: none; else [1, 65535]), and returns the READY
  // peers with a probe endpoint, each with the emulated link to it when the cluster emulates.
  Result<NetworkReportResult> report_network(const std::string& worker_id, uint64_t session,
                                             int probe_port,
                                             const std::vector<LinkMeasurement>& links);
  // The measured links (by reporter, then peer), for ListWorkers; each one's `at` holds its
  // age in seconds instead of the time it arrived.
  std::vector<std::pair<std::pair<std::string, std::string>, MeasuredLink>> network_links() const;
  Result<HeartbeatResult> heartbeat(const std::string& worker_id, uint64_t session,
                                    const std::vector<TaskKey>& running,
                                    const std::vector<int>& spare_ports);
  // Applies events in order; returns how many were applied. An event is applied only for a
  // task assigned to this worker at a current generation (log chunks: any generation of a
  // rank assigned here since its trainer started there, so a survivor's late chunks count and
  // a written-off trainer's do not: fence_locked); anything else is dropped and counted
  // (WorkerPlaneStats). Both this and heartbeat() answer RESOURCE_EXHAUSTED beyond the
  // worker's rate.
  Result<int> report_events(const std::string& worker_id, uint64_t session,
                            const std::vector<TaskEvent>& events);

  // Long poll for a daemon: returns this worker's command version as soon as it is above
  // `seen` (the coordinator has new commands for it: heartbeat now) or after `wait`.
  // FAILED_PRECONDITION for an unknown or expired session.
  Result<uint64_t> await_work(const std::string& worker_id, uint64_t session, uint64_t seen,
                              std::chrono::milliseconds wait);
  // Ends every await_work() under way (server shutdown).
  void wake_all();

  // Expires leases (failing the jobs that had ranks there) and places pending jobs.
  void tick();

  // Tasks assigned to a worker that are not finished (used slots).
  std::vector<TaskKey> assigned_tasks(const std::string& worker_id) const;
  const JournalReplayStats& replay_stats() const { return replay_stats_; }
  WorkerPlaneStats worker_plane_stats() const;
  // The journal's group commit: batches and records written; OK while no commit has failed.
  JournalWriterStats journal_stats() const { return journal_->stats(); }
  Status journal_health() const { return journal_->health(); }

 private:
  CoordinatorCore(const CoordinatorOptions& options, Clock* clock);
  Status replay_record(const std::string& payload);
  // The answer of a call whose changes were queued for the journal under the mutex (released
  // by now): given once they are on disk (JournalWriter::sync), else the journal's failure.
  template <typename T>
  Result<T> durable(Result<T> answer) const {
    if (answer.is_ok()) TERN_RETURN_IF_ERROR(journal_->sync());
    return answer;
  }
  // Waits until the changes queued so far are on disk (listings).
  void shown_when_durable() const;
  Status journal_job(const Job& job);
  Status journal_worker(const Worker& worker);
  // Rewrites the journal as one record per worker and job (compacted_journal_records).
  Status compact_journal();
  // compact_journal() once the journal has options_.compact_every records more than live ones.
  Status maybe_compact();
  Status check_session(const std::string& worker_id, uint64_t session, Worker** worker);
  // Takes one call from the worker's token bucket; RESOURCE_EXHAUSTED when it is empty.
  Status take_worker_call_locked(Worker* worker);
  // submit_job's spec: the text (or `resume_job`'s journaled spec plus the resume overrides)
  // loaded and checked against the path policy. `named`: the caller named the source; `name`
  // is what messages call it (changed for a resume without a name).
  Result<LoadedJobSpec> load_submission_locked(const std::string& id, const std::string& spec_yaml,
                                               const std::vector<std::string>& overrides,
                                               const std::string& resume_job, bool named,
                                               std::string* name, Job* resumed);
  // report_events under the lock (log chunks are queued in logs_, written by the caller).
  Result<int> apply_events(const std::string& worker_id, uint64_t session,
                           const std::vector<TaskEvent>& events);
  // Heartbeat reconciliation: Stop or Regroup for what the worker runs, Start for what it
  // should run and does not. Jobs whose ranks changed are added to `to_journal`.
  void reconcile_running_locked(const Worker& worker, std::vector<TaskCommand>* commands,
                                std::set<std::string>* to_journal);
  void start_missing_locked(const Worker& worker, std::vector<TaskCommand>* commands,
                            std::set<std::string>* to_journal);
  // Queues a log chunk of rank `rank` for the coordinator's copy (LogStore: quota and cap).
  Status append_log_locked(Job& job, const Worker& worker, const TaskEvent& event);
  // Generation fencing: ABORTED for an event or log chunk of `r` from a generation older than
  // the one its current trainer started at (RankInfo::start_generation) — a written-off
  // trainer on a worker that came back — and one warning per (worker, job, rank, generation).
  Status fence_locked(const Job& job, const RankInfo& r, const Worker& worker,
                      const TaskEvent& event);
  void touch(Job* job);
  void schedule_locked();
  // The strict-FIFO part of schedule_locked: places pending jobs until one does not fit.
  void schedule_pending_locked();
  void expire_leases_locked();
  std::vector<TaskKey> assigned_tasks_locked(const std::string& worker_id) const;
  // Ends a running job: `rank_state` for its live ranks, reason recorded, journaled.
  Status finish_job_locked(Job* job, JobState state, const std::string& reason);
  Status apply_event_locked(Worker& worker, const TaskEvent& event, bool* journal);
  // Parts of apply_event_locked, one per event kind with more than a few lines. `journal`: set
  // when the job must be journaled by the caller.
  void apply_progress_locked(Job& job, RankInfo& r, const TaskEvent& e, double now, bool* journal);
  void apply_finished_locked(Job& job, RankInfo& r, const TaskEvent& e);
  // An exit: nullopt when the event is applied and the job only needs a touch, else what
  // apply_event_locked returns (the job ended or regrouped, journaled already).
  std::optional<Status> apply_exit_locked(Worker& worker, Job& job, RankInfo& r, const TaskEvent& e,
                                          bool* journal);
  // A non-zero exit of a running rank: a regroup when it is a loss and one is left, else the
  // job fails with the root cause. Journals the job.
  Status rank_failed_locked(const Worker& worker, Job& job, RankInfo& r, const TaskEvent& e);
  // `tern submit --resume`: the overrides that start a new job `new_id` from job `old_id`'s
  // newest committed checkpoint (recovery.dir and recovery.resume_from), after checking that
  // `old_id` exists, has ended, has a journaled committed step and checkpoints under
  // options_.checkpoint_root (NOT_FOUND / FAILED_PRECONDITION saying which and what to do).
  // `user_overrides` may not set those two fields themselves (INVALID_ARGUMENT).
  Result<std::vector<std::string>> resume_overrides_locked(
      const std::string& old_id, const std::string& new_id,
      const std::vector<std::string>& user_overrides, Job* resumed);

  // Elastic regroup (see the file comment).
  struct LostRank {
    int rank = 0;
    std::string worker_id;  // where it ran: the preferred replacement
    std::string why;        // for the log line and the job's reason
    double at = 0;          // unix seconds the loss happened (0: now)
  };
  using LostByJob = std::map<std::string, std::vector<LostRank>>;
  // A worker is gone (its lease expired: `join_waiting`; its daemon restarted): each unfinished
  // rank it hosted in a RUNNING job is lost (`why`, at unix time `at`, 0: now). A job that may
  // regroup collects them in `regroups` (one regroup per job, however many ranks were there;
  // with `join_waiting` a job already waiting for replacements counts them as part of that
  // regroup); the others fail naming the rank. Returns the first journal error (logged).
  Status worker_gone_locked(const std::string& worker_id, const std::string& why, double at,
                            bool join_waiting, LostByJob* regroups);
  // Runs the regroups worker_gone_locked collected (after the caller recorded the worker's new
  // state, so a re-registered worker may host replacements). Returns the first error (logged).
  Status regroup_lost_locked(const LostByJob& regroups, bool join_waiting);
  // Whether `job` may replace a lost rank now (recovery on and regroups left, or joining one).
  static bool can_regroup(const Job& job, bool join);
  // Takes the lost ranks off their workers and places replacements (or leaves them waiting).
  // `join`: part of the regroup under way, not counted again. Journals the job.
  Status regroup_locked(Job* job, const std::vector<LostRank>& lost, bool join);
  // Places the job's UNASSIGNED ranks; false when it has to wait (reason set). Bumps the
  // generation and picks a new master unless `same_generation` and rank 0 stays put.
  bool place_replacements_locked(Job* job, bool same_generation);
  // Rank `r` of `job` goes to worker `w` at the job's current generation.
  void assign_rank_locked(const Job& job, RankInfo& r, const Worker& w);
  // The job waits for replacements (reason `why`); returns false.
  bool wait_for_replacements_locked(Job* job, const std::string& why);
  // The generation bump of place_replacements_locked (`choice`: rank -> offer index): a new
  // master port on rank 0's worker; false when it has to wait.
  bool next_generation_locked(Job* job, const std::map<int, size_t>& choice,
                              const std::vector<Worker*>& offer_workers, bool same_generation);
  // Elastic jobs (Job::elastic): moves the group to a new generation made of the member ranks
  // (a shrink after a loss, a grow when standbys are ready), master on the first member's
  // worker; records the timeline (`kind`: shrink | grow, `lost_at` the loss) and tells the
  // members' daemons at once. False when it has to wait (no port): retried by schedule_locked.
  bool elastic_regroup_locked(Job* job, const std::string& kind, double lost_at);
  // Starts standbys for the UNASSIGNED ranks of an elastic job where slots are free.
  void place_standbys_locked(Job* job);
  // New commands for the worker (await_work returns).
  void nudge_locked(const std::string& worker_id);
  void nudge_job_locked(const Job& job);
  // Free slots of the READY workers heard from since this coordinator started.
  void slot_offers_locked(std::vector<SlotOffer>* offers, std::vector<Worker*>* workers);

  const CoordinatorOptions options_;
  Clock* const clock_;
  // The trainer logs (logs/jobs/ under the state directory); its own locks, never file I/O
  // under mu_. Mutable: get_logs() (const) writes what is queued before it reads.
  mutable LogStore logs_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable changed_;
  // The journal and <state_dir>/job_ids (the largest job id ever handed out, durable before a
  // job is acknowledged, so ids are never reused even when the journal is damaged or lost),
  // written off the mutex by group commit: records are queued under mu_, and every public call
  // that changed something answers only once they are on disk (durable()).
  std::unique_ptr<JournalWriter> journal_;
  JournalReplayStats replay_stats_;
  std::map<std::string, Job> jobs_;
  std::map<std::string, Worker> workers_;
  NetworkMap network_;  // measured links between workers (not journaled: network_map.h)
  // Reorders `placed` (indices into offer_workers, rank order) by ring_order over the
  // measured network; leaves it when a link among its workers is unmeasured.
  void order_by_network_locked(const Job& job, const std::vector<Worker*>& offer_workers,
                               std::vector<size_t>* placed) const;
  // When no cluster file names regions and all of the job's workers registered with the same
  // one: the ranks' regions become "<region>.m<k>", k the worker's group in cluster_by_cost of
  // the measured matrix (hierarchical sync groups by region), when that finds 2 groups or more.
  void group_by_network_locked(Job* job) const;
  std::set<std::string> awaiting_;  // RUNNING jobs with lost ranks waiting for a worker
  // Elastic jobs whose group change waits for a port (kind, loss time). Not journaled.
  std::map<std::string, std::pair<std::string, double>> elastic_pending_;
  // Fixed-size regroups under way: when their first loss happened (for the timeline).
  std::map<std::string, double> replace_lost_at_;
  // Command versions per worker (await_work) and the wake-up for their long polls.
  std::map<std::string, uint64_t> work_version_;
  std::condition_variable work_changed_;
  bool waking_all_ = false;
  // FAILED jobs whose reason is a lost process (a peer's comm failure, a signal), with that
  // exit code: a later exit of the same job with a deterministic code, or one that died on
  // its own after a comm failure was reported, replaces it (the root cause). Not journaled:
  // after a restart the first reason stays.
  std::map<std::string, int> failed_on_loss_;
  int64_t next_job_seq_ = 1;
  WorkerPlaneStats worker_stats_;
  // (worker, job, rank, generation) already warned about by fence_locked. Not journaled.
  std::set<std::tuple<std::string, std::string, int, int64_t>> fenced_;
};

}  // namespace tern
