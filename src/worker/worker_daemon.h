// WorkerDaemon: the `tern worker` process. Registers with the coordinator, heartbeats, and
// supervises one tern-trainer child per assigned rank (common/trainer_protocol.h), each a
// TrainerProcess (common/trainer_process.h, which speaks common/trainer_codec.h):
//   - StartTask: checks the spec's paths (common/path_policy.h: only the job directory, the
//     data dirs and the job's own directory under checkpoint_root), writes
//     <work_dir>/<job>/spec.yaml (and cluster.yaml), spawns the trainer without a shell in the job
//     directory, its stderr appended to <work_dir>/<job>/rank-<R>.log;
//   - relays the trainer's JSON-lines stdout events and the growth of its log file up with
//     ReportEvents (retried until acknowledged, so nothing is lost while the coordinator
//     restarts);
//   - StopTask / shutdown: the stop command on the trainer's stdin, SIGKILL after a grace;
//   - RegroupTask (elastic regroup): the regroup command on the trainer's stdin, and the
//     task is re-keyed to the new generation (heartbeats and events carry it from then on);
//     a regroup of a task it does not run is logged and ignored;
//   - a trainer that exits is reported with its exit code and the last lines of its log;
//   - network profiling (issue 24, worker/net_probe.h): it serves a probe endpoint on its
//     host, and its own thread reports it with ReportNetwork once registered, probes the
//     peers the reply names (one at a time, at most max_probe_peers), reports the figures,
//     and starts over after the coordinator's probe interval (5 minutes by default).
// Trainers die with the daemon (PR_SET_PDEATHSIG), so a kill -9 of the daemon orphans none.
//
// Threading: run() does everything on the calling thread (one loop that polls the trainers'
// pipes every few ms and talks to the coordinator with short deadlines); request_stop() may
// be called from any thread or a signal handler's flag.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/status.h"
#include "common/subprocess.h"
#include "common/trainer_process.h"
#include "rpc/client.h"
#include "worker/net_probe.h"

namespace tern {

struct WorkerDaemonOptions {
  std::string coordinator = "127.0.0.1:7070";  // HOST:PORT of the coordinator
  std::string name;                // worker id to register as; empty = coordinator picks
  std::string host = "127.0.0.1";  // address peers reach this machine's trainers at
  std::string region = "local";
  int slots = 1;
  std::string work_dir = ".tern/worker";       // per-job directories, specs and trainer logs
  std::string trainer_path;                    // empty: tern-trainer next to this executable
  std::chrono::milliseconds stop_grace{5000};  // stop command -> SIGKILL
  std::chrono::milliseconds rpc_deadline{2000};
  size_t log_tail_lines = 20;  // lines of log sent with a failed exit
  // TLS material and bearer token for the coordinator; null = plain text (loopback only).
  std::shared_ptr<const ClientSecurity> security;
  // Directories a job spec may read from besides its job directory (data.path,
  // recovery.resume_from); writes stay inside the job directory. Absolute.
  std::vector<std::string> data_dirs = {"/usr/share/datasets"};
  // The cluster's checkpoint_root (absolute; "" = off): a job may also write below
  // <checkpoint_root>/<job id> (its recovery.dir, set by the coordinator) and read
  // (recovery.resume_from) anywhere below the root.
  std::string checkpoint_root;
  // Cores reported at registration (the scheduler gives this worker no job whose
  // train.threads exceeds them); 0: std::thread::hardware_concurrency().
  int cores = 0;
  // Trainers run this much nicer than the daemon (setpriority before exec), so that a
  // trainer's threads cannot starve the daemon's heartbeats.
  int trainer_nice = 10;
  // Network profiling: serve a probe endpoint and measure the peers (false: neither).
  bool network_probe = true;
  ProbeOptions probe;        // one probe's pings, bulk bytes and timeout
  int max_probe_peers = 64;  // peers probed per round; the rest wait for theirs to probe us
};

class WorkerDaemon {
 public:
  explicit WorkerDaemon(WorkerDaemonOptions options);
  ~WorkerDaemon();
  WorkerDaemon(const WorkerDaemon&) = delete;
  WorkerDaemon& operator=(const WorkerDaemon&) = delete;

  // Runs until request_stop(); then stops every trainer and flushes their exit events.
  // Returns an error only for unusable options (e.g. the work directory cannot be created).
  Status run();
  void request_stop() { stop_.store(true); }

  // For tests: the worker id once registered ("" before).
  std::string worker_id() const;
  // For tests: pids of the trainers alive now.
  std::vector<pid_t> trainer_pids() const;
  // For tests: the probe endpoint's port (0: none) and the probe rounds reported so far.
  int probe_port() const { return probe_server_ ? probe_server_->port() : 0; }
  int64_t probe_rounds() const { return probe_rounds_.load(); }

 private:
  struct Task {
    v1::TaskRef ref;
    std::unique_ptr<TrainerProcess> proc;
    std::string log_path;
    int64_t log_sent = 0;
    bool stopping = false;
    std::chrono::steady_clock::time_point kill_at;
  };
  using Key = std::tuple<std::string, int, int64_t>;
  static Key key_of(const v1::TaskRef& t) { return {t.job_id(), t.rank(), t.generation()}; }

  bool register_once();
  void heartbeat_once();
  // Sends the outbox; false when the coordinator refused or could not be reached (retry later).
  bool flush_events(bool final_flush);
  void start_task(const v1::StartTask& start);
  void stop_task(const v1::TaskRef& ref, const std::string& reason);
  void regroup_task(const v1::RegroupTask& regroup);
  void poll_tasks();
  // Queues the events the coordinator tracks; logs regroup events and other stdout lines.
  void relay(const Task& task, const TrainerOutput& out);
  // Queues the task's new log bytes as log events: at most `max_bytes` per call (the rest on
  // the next turn of the loop, so a trainer writing fast never holds up the heartbeat).
  void ship_log(Task* task, int64_t max_bytes = std::numeric_limits<int64_t>::max());
  void push_event(v1::TaskEvent event);
  void push_exit(const v1::TaskRef& ref, int code, const std::string& tail);
  void stop_all_tasks(std::chrono::milliseconds grace);
  std::vector<int> spare_ports() const;
  // A fresh channel after a transport failure (no reconnect backoff carried over).
  void reconnect();
  // The AwaitWork long poll (its own thread and channel): sets beat_now_ when the coordinator
  // has new commands, so they run at once instead of at the next heartbeat.
  void await_work_loop();
  // The network profiling thread (its own channel): ReportNetwork, probes, ReportNetwork.
  void network_loop();

  const WorkerDaemonOptions options_;
  std::string trainer_;
  std::unique_ptr<WorkerServiceClient> client_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> beat_now_{false};
  std::atomic<uint64_t> await_session_{0};     // session_ for the AwaitWork thread (0: none)
  std::unique_ptr<ProbeServer> probe_server_;  // set in run(); its own thread
  std::atomic<int64_t> probe_rounds_{0};
  mutable std::mutex mu_;  // guards worker_id_ and pids_, read by the test accessors
  std::string worker_id_;
  std::vector<pid_t> pids_;
  // Everything below is touched by the run() thread only.
  uint64_t session_ = 0;
  // The last session the coordinator gave this name (also kept in <work_dir>/.session-<name>):
  // sent when registering again, so a restarted daemon may take its live name back.
  uint64_t previous_session_ = 0;
  std::chrono::milliseconds heartbeat_every_{500};
  std::map<Key, Task> tasks_;
  std::set<Key> started_;             // every task ever started (StartTask is idempotent)
  std::deque<v1::TaskEvent> outbox_;  // events not yet acknowledged by the coordinator
  std::chrono::steady_clock::time_point next_flush_;  // an exit moves it to now
  std::chrono::steady_clock::time_point last_warning_;
  std::chrono::steady_clock::time_point last_refusal_;
};

}  // namespace tern
