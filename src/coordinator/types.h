// Domain types of the coordinator: jobs, ranks, workers, the commands it sends to worker
// daemons and the events they send back. Plain data without gRPC; the service adapter
// (service.h) converts them to and from proto/tern/v1.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/spec_enums.h"

namespace tern {

enum class JobState { kPending, kRunning, kSucceeded, kFailed, kCancelled };
enum class RankState { kUnassigned, kAssigned, kRunning, kSucceeded, kFailed, kStopped };
enum class WorkerState { kReady, kLost };

const char* job_state_name(JobState s);    // "PENDING", ...
const char* rank_state_name(RankState s);  // "ASSIGNED", ...
bool is_terminal(JobState s);
bool is_terminal(RankState s);

// One rank of one job at one generation.
struct TaskKey {
  std::string job_id;
  int rank = 0;
  int64_t generation = 0;
  bool operator<(const TaskKey& o) const {
    return std::tie(job_id, rank, generation) < std::tie(o.job_id, o.rank, o.generation);
  }
  bool operator==(const TaskKey& o) const {
    return job_id == o.job_id && rank == o.rank && generation == o.generation;
  }
};

struct RankInfo {
  int rank = 0;
  std::string worker_id;
  std::string region;
  std::string host;
  RankState state = RankState::kUnassigned;
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  double loss = 0;
  double samples_per_s = 0;
  double bytes_sent = 0;
  std::optional<double> test_accuracy;
  std::map<std::string, double> metrics;
  int exit_code = 0;
  bool exited = false;  // its trainer's exit was reported
  std::string error;
  double updated_at = 0;  // unix seconds
  // Generation of this rank's trainer: the job's once it started (or was told to regroup to)
  // it; lower for a survivor of a regroup whose daemon has not re-keyed it yet.
  int64_t generation = 0;
  // Why the rank was lost and the worker it ran on (the preferred replacement), while it
  // waits (UNASSIGNED) for a replacement.
  std::string lost;
  std::string lost_from;
  // Where its current worker's log offset 0 lies in the coordinator's copy of the rank's log
  // (non-zero once a regroup moved the rank to another worker).
  int64_t log_base = 0;
  // The generation its current trainer was started at on its current worker (0: not known, a
  // journal from before fencing). Anything older that names this rank — a log chunk, an event —
  // comes from a trainer a regroup wrote off (a partitioned host that came back) and is
  // dropped (CoordinatorCore::fenced_locked).
  int64_t start_generation = 0;
  // Elastic jobs (recovery.min_workers): whether the rank is in the current generation's group.
  // A lost rank leaves it at once (the survivors go on without it); its replacement starts as a
  // standby (assigned, not a member) and joins at the next generation once it reports ready.
  bool member = true;
  bool ready = false;  // a standby that reported ready (joins at the next regroup)
};

struct Job {
  std::string id;
  int64_t seq = 0;  // submission order (FIFO)
  std::string name;
  std::string spec_yaml;  // effective, validated
  int world = 1;
  PlacementPolicy placement = PlacementPolicy::kAny;
  JobState state = JobState::kPending;
  std::string reason;
  int64_t generation = 0;
  std::string master_addr;
  // Elastic regroup (the spec's recovery section): "none" fails the job at the first lost
  // rank; "partial" / "full" replace it, at most max_recoveries times.
  RecoveryMode recovery_mode = RecoveryMode::kNone;
  int64_t max_recoveries = 0;
  int64_t recoveries = 0;  // regroups so far
  int64_t threads = 1;     // train.threads: placed only on workers with at least this many cores
  // recovery.min_workers (> 0: elastic): the survivors of a lost rank continue at once at a
  // smaller group, not below this many ranks, and the job grows back as replacements are ready.
  int64_t min_workers = 0;
  // The ranks' regions are groups of the measured network ("<region>.m<k>", issue 24), not
  // the workers' regions: a replacement keeps the lost rank's group, so every trainer's
  // hierarchical groups stay the same.
  bool measured_groups = false;
  // The last recoveries' timelines (unix seconds of each stage, see RecoveryTimeline), newest
  // last, at most kMaxTimelines.
  std::vector<std::map<std::string, double>> timelines;
  // Checkpoints (journaled): the directory every rank checkpoints into when it is shared (the
  // spec's recovery.dir, <cluster checkpoint_root>/<job id> unless the spec named one; "" when
  // the trainers default to their own job directories) and the newest step the trainers
  // reported committed (-1: none yet; only ever grows).
  std::string checkpoint_dir;
  int64_t checkpoint_step = -1;
  // `tern submit --resume`: the job this one was started from and that job's committed step
  // at submission ("" / -1 for an ordinary job).
  std::string resumed_job;
  int64_t resumed_step = -1;
  std::vector<RankInfo> ranks;
  std::optional<double> test_accuracy;
  std::map<std::string, double> summary;
  double created_at = 0;
  double started_at = 0;
  double finished_at = 0;
  // Not journaled: change counter for WatchJob, and the first progress sample for the ETA.
  uint64_t version = 0;
  double rate_t0 = 0;
  int64_t rate_step0 = -1;

  bool elastic() const { return min_workers > 0 && recovery_mode == RecoveryMode::kPartial; }
  // The ranks of the current generation's group, in group order (all ranks unless elastic).
  std::vector<int> members() const;

  // Aggregates over ranks.
  int64_t step() const;  // slowest rank
  int64_t total_steps() const;
  double loss() const;             // mean over ranks that reported
  double samples_per_s() const;    // sum
  double eta_s(double now) const;  // < 0 when unknown
};

struct Worker {
  std::string id;
  std::string host;
  std::string region;
  int slots = 1;
  int cores = 0;  // reported at registration; 0: unknown (not checked)
  WorkerState state = WorkerState::kReady;
  uint64_t session = 0;
  double registered_at = 0;       // unix seconds
  double last_heartbeat = 0;      // unix seconds
  int64_t lease_deadline_ms = 0;  // monotonic
  std::deque<int> spare_ports;
  std::deque<std::pair<int, int64_t>> used_ports;  // (port, monotonic ms) recently handed out
  std::set<TaskKey> reported_running;              // from the last heartbeat
  bool heard = false;  // heartbeat or registration since this coordinator started
  int probe_port = 0;  // its network probe endpoint (ReportNetwork; not journaled); 0: none
  // Token bucket of its Heartbeat/ReportEvents calls (not journaled).
  double call_tokens = -1;  // < 0: full
  int64_t call_tokens_ms = 0;
};

// A command for a worker daemon (heartbeat reply).
struct TaskCommand {
  enum class Kind { kStart, kStop, kRegroup };
  Kind kind = Kind::kStart;
  TaskKey task;  // kRegroup: the running task, at its old generation
  // kStart, kRegroup
  int world = 0;
  std::string master_addr;
  // kRegroup: the generation to rebuild the process group at, and whether to roll back to
  // the last checkpoint (recovery.mode full) instead of keeping the in-memory state.
  int64_t generation = 0;
  bool rollback = false;
  // kStart
  std::string spec_yaml;
  std::string cluster_yaml;
  std::vector<std::string> rank_regions;
  // kStart, kRegroup: the group's ranks in group order (empty: all); kStart: a standby
  std::vector<int> members;
  bool standby = false;
  // kStop
  std::string reason;
};

// An event from a worker daemon about one of its tasks (trainer_protocol.h, relayed).
struct TaskEvent {
  enum class Kind {
    kStarted,
    kProgress,
    kEval,
    kFinished,
    kError,
    kExited,
    kLog,
    kCheckpoint,
    kReady
  };
  Kind kind = Kind::kProgress;
  TaskKey task;
  double time = 0;
  int pid = 0;              // kStarted
  int64_t step = 0;         // kProgress, kEval, kCheckpoint (the committed step)
  int64_t total_steps = 0;  // kProgress
  double epoch = 0, loss = 0, samples_per_s = 0, bytes_sent = 0, compute_s = 0, wait_s = 0;
  std::map<std::string, double> metrics;    // kProgress, kEval: other numeric fields
  double test_accuracy = 0, test_loss = 0;  // kEval
  std::map<std::string, double> summary;    // kFinished
  std::string message;                      // kError
  int exit_code = 0;                        // kError (announced), kExited
  std::string log_tail;                     // kExited
  int64_t log_offset = 0;                   // kLog
  std::string log_data;                     // kLog
  double setup_s = 0;                       // kReady
};

}  // namespace tern
