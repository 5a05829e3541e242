#include "worker/worker_daemon.h"

#include <arpa/inet.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/file_util.h"
#include "common/job_spec.h"
#include "common/path_policy.h"
#include "common/trainer_protocol.h"
#include "common/utf8.h"
#include "worker/trainer_events.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

constexpr size_t kMaxLogChunk = 256 * 1024;
constexpr size_t kMaxOutbox = 20000;
constexpr size_t kMaxBatch = 500;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

std::string task_name(const v1::TaskRef& t) {
  return t.job_id() + "/rank " + std::to_string(t.rank()) + " gen " +
         std::to_string(t.generation());
}

// Where a named daemon keeps its session secret, so that it can re-register its name after
// its own restart while its lease is still live (the coordinator refuses the name of a READY
// worker without its session). Readable by this user only.
std::string session_file(const WorkerDaemonOptions& o) {
  return o.name.empty() ? "" : o.work_dir + "/.session-" + o.name;
}

uint64_t load_session(const std::string& path) {
  if (path.empty()) return 0;
  std::ifstream in(path);
  uint64_t v = 0;
  if (!(in >> v)) return 0;
  return v;
}

void save_session(const std::string& path, uint64_t session) {
  if (path.empty()) return;
  AtomicWriteOptions options;
  options.mode = 0600;  // the worker's secret
  options.tmp_suffix = ".tmp";
  Status s = atomic_write_file(path, std::to_string(session) + "\n", options);
  if (!s.is_ok()) spdlog::warn("cannot keep the worker session in {}: {}", path, s.message());
}
// Where a task's spec may point on this worker: it writes below its job directory (and its
// checkpoint directory under the cluster's checkpoint_root), reads the data directories (and
// the checkpoint root); symlinks resolved.
PathPolicy task_path_policy(const WorkerDaemonOptions& o, const std::string& job_dir,
                            const std::string& job_id) {
  PathPolicy paths;
  paths.job_dir = fs::path(job_dir).lexically_normal().string();
  paths.write_roots = {paths.job_dir};
  paths.read_roots = o.data_dirs;
  if (!o.checkpoint_root.empty()) {
    paths.write_roots.push_back(o.checkpoint_root + "/" + job_id);
    paths.read_roots.push_back(o.checkpoint_root);
  }
  paths.resolve_symlinks = true;
  return paths;
}

// Trainers run in their job directory: every path handed to them must be absolute.
WorkerDaemonOptions absolute_paths(WorkerDaemonOptions o) {
  std::error_code ec;
  o.work_dir = fs::absolute(o.work_dir, ec).lexically_normal().string();
  if (!o.trainer_path.empty())
    o.trainer_path = fs::absolute(o.trainer_path, ec).lexically_normal().string();
  return o;
}

}  // namespace

WorkerDaemon::WorkerDaemon(WorkerDaemonOptions options)
    : options_(absolute_paths(std::move(options))),
      trainer_(options_.trainer_path.empty() ? self_exe_dir() + "/tern-trainer"
                                             : options_.trainer_path),
      client_() {
  reconnect();
}

void WorkerDaemon::reconnect() {
  RpcClientOptions o{options_.rpc_deadline, 0, std::chrono::milliseconds(100)};
  o.security = options_.security;
  client_ = std::make_unique<WorkerServiceClient>(options_.coordinator, o);
}

WorkerDaemon::~WorkerDaemon() { stop_all_tasks(std::chrono::milliseconds(0)); }

std::string WorkerDaemon::worker_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return worker_id_;
}

std::vector<pid_t> WorkerDaemon::trainer_pids() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pids_;
}

std::vector<int> WorkerDaemon::spare_ports() const {
  in_addr addr{};
  std::string bind_host =
      inet_pton(AF_INET, options_.host.c_str(), &addr) == 1 ? options_.host : "0.0.0.0";
  std::vector<int> ports;
  for (int i = 0; i < 3; ++i) {
    auto p = find_free_port(bind_host);
    if (p.is_ok()) ports.push_back(*p);
  }
  return ports;
}

Status WorkerDaemon::run() {
  std::error_code ec;
  fs::create_directories(options_.work_dir, ec);
  if (ec)
    return internal_error("cannot create work dir " + options_.work_dir + ": " + ec.message());
  if (access(trainer_.c_str(), X_OK) != 0) {
    spdlog::warn("trainer binary {} is not executable; tasks will fail until it is", trainer_);
  }
  auto next_beat = SteadyClock::now();
  next_flush_ = SteadyClock::now();
  bool registered = false;
  if (options_.network_probe) {
    ProbeServerOptions po;
    po.host = options_.host;
    po.max_bulk_bytes = std::max<int64_t>(options_.probe.bulk_bytes, 1);
    auto server = ProbeServer::start(po);
    if (server.is_ok()) {
      probe_server_ = std::move(*server);
      spdlog::info("network probe endpoint on {}:{}", options_.host, probe_server_->port());
    } else {
      // Placement then keeps the plain order for jobs on this worker; nothing else depends on it.
      spdlog::warn("no network probe endpoint: {}", server.status().message());
    }
  }
  std::thread prober;
  if (probe_server_) prober = std::thread(&WorkerDaemon::network_loop, this);
  std::thread poller(&WorkerDaemon::await_work_loop, this);
  while (!stop_.load()) {
    auto now = SteadyClock::now();
    if (!registered && now >= next_beat) {
      registered = register_once();
      next_beat =
          now + (registered ? std::chrono::milliseconds(0) : std::chrono::milliseconds(500));
    }
    poll_tasks();
    now = SteadyClock::now();
    if (registered && (now >= next_beat || beat_now_.exchange(false))) {
      heartbeat_once();
      registered = session_ != 0;
      next_beat = SteadyClock::now() + heartbeat_every_;
    }
    if (registered && !outbox_.empty() && now >= next_flush_) {
      // Refused or unreachable: back off (an exit in the outbox must not turn the retry into a
      // busy loop that drains this worker's call rate and starves its heartbeats).
      next_flush_ =
          SteadyClock::now() + std::chrono::milliseconds(flush_events(false) ? 200 : 1000);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      pids_.clear();
      for (auto& [k, t] : tasks_) pids_.push_back(t.proc->pid());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(tasks_.empty() ? 50 : 10));
  }
  await_session_.store(0);
  poller.join();
  if (prober.joinable()) prober.join();
  spdlog::info("worker {} stopping: {} trainers to stop", worker_id(), tasks_.size());
  stop_all_tasks(options_.stop_grace);
  if (session_ != 0) flush_events(true);
  return Status::ok();
}

void WorkerDaemon::await_work_loop() {
  // Held at most this long per call, so stopping the daemon waits for it no longer.
  constexpr int64_t kHoldMs = 1000;
  RpcClientOptions o{options_.rpc_deadline, 0, std::chrono::milliseconds(100)};
  o.security = options_.security;
  auto client = std::make_unique<WorkerServiceClient>(options_.coordinator, o);
  uint64_t seen = 0, seen_session = 0;
  while (!stop_.load()) {
    const uint64_t session = await_session_.load();
    if (session == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (session != seen_session) seen = 0, seen_session = session;
    v1::AwaitWorkRequest req;
    req.set_worker_id(worker_id());
    req.set_session(session);
    req.set_seen_version(seen);
    req.set_wait_ms(kHoldMs);
    auto reply = client->await_work(req);
    if (!reply.is_ok()) {
      // The heartbeat loop handles a lost session or coordinator; this thread only backs off
      // (an older coordinator without AwaitWork answers UNIMPLEMENTED: heartbeats alone then).
      spdlog::debug("await work: {}", reply.status().to_string());
      if (reply.status().code() == StatusCode::kUnavailable)
        client = std::make_unique<WorkerServiceClient>(options_.coordinator, o);
      for (int i = 0; i < 20 && !stop_.load(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (reply->version() != seen) {
      seen = reply->version();
      beat_now_.store(true);
    }
  }
}

void WorkerDaemon::network_loop() {
  RpcClientOptions o;
  o.deadline = options_.rpc_deadline;
  o.retries = 0;  // the next round retries
  o.security = options_.security;
  auto client = std::make_unique<WorkerServiceClient>(options_.coordinator, o);
  auto pause = [&](std::chrono::milliseconds d, uint64_t session) {
    auto until = SteadyClock::now() + d;
    while (!stop_.load() && SteadyClock::now() < until && await_session_.load() == session)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  };
  uint64_t round_session = 0;  // the session the current round belongs to
  auto next_round = SteadyClock::now();
  std::vector<v1::LinkReport> measured;  // this round's figures, not yet reported
  while (!stop_.load()) {
    const uint64_t session = await_session_.load();
    if (session == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (session != round_session) {  // registered (again): a round at once
      round_session = session;
      measured.clear();
      next_round = SteadyClock::now();
    }
    if (SteadyClock::now() < next_round) {
      pause(std::chrono::milliseconds(500), session);
      continue;
    }
    v1::ReportNetworkRequest req;
    req.set_worker_id(worker_id());
    req.set_session(session);
    req.set_probe_port(probe_server_->port());
    for (const auto& l : measured) *req.add_links() = l;
    const bool end_of_round = !measured.empty();
    auto reply = client->report_network(req);
    if (!reply.is_ok()) {
      const StatusCode code = reply.status().code();
      if (code == StatusCode::kUnimplemented) {
        spdlog::info("the coordinator takes no network reports: network profiling off");
        return;
      }
      // A peer that left between the probe and the report makes the coordinator refuse the
      // whole report (INVALID_ARGUMENT): drop it and start a fresh round later.
      spdlog::debug("network report: {}", reply.status().to_string());
      if (code == StatusCode::kInvalidArgument) measured.clear();
      if (code == StatusCode::kUnavailable)
        client = std::make_unique<WorkerServiceClient>(options_.coordinator, o);
      pause(std::chrono::milliseconds(2000), session);
      continue;
    }
    const auto interval = std::chrono::milliseconds(
        std::clamp<int64_t>(reply->probe_interval_ms(), 1000, 3600 * 1000));
    measured.clear();
    if (end_of_round) {
      probe_rounds_.fetch_add(1);
      next_round = SteadyClock::now() + interval;
      continue;
    }
    int probed = 0;
    for (const v1::ProbePeer& peer : reply->peers()) {
      if (stop_.load() || await_session_.load() != session) break;
      if (probed++ >= options_.max_probe_peers) break;
      auto r = probe_peer(peer.host(), peer.probe_port(), options_.probe);
      if (!r.is_ok()) {
        spdlog::debug("network probe of {}: {}", peer.worker_id(), r.status().message());
        continue;
      }
      ProbeResult figures = *r;
      if (peer.emulated())
        figures = with_emulated_link(figures, peer.model_latency_ms(), peer.model_bandwidth_mbps());
      v1::LinkReport l;
      l.set_peer(peer.worker_id());
      l.set_rtt_ms(figures.rtt_ms);
      l.set_bandwidth_mbps(figures.bandwidth_mbps);
      l.set_emulated(peer.emulated());
      measured.push_back(std::move(l));
    }
    if (measured.empty()) {
      probe_rounds_.fetch_add(1);  // nobody to probe (yet): the peers probe us
      next_round = SteadyClock::now() + interval;
    }
  }
}

bool WorkerDaemon::register_once() {
  v1::RegisterWorkerRequest req;
  req.set_name(options_.name);
  req.set_host(options_.host);
  req.set_region(options_.region);
  req.set_slots(options_.slots);
  req.set_version("0.1.0");
  if (previous_session_ == 0) previous_session_ = load_session(session_file(options_));
  req.set_session(previous_session_);
  req.set_cores(options_.cores > 0 ? options_.cores
                                   : static_cast<int32_t>(std::thread::hardware_concurrency()));
  for (int p : spare_ports()) req.add_spare_ports(p);
  auto reply = client_->register_worker(req);
  if (!reply.is_ok()) {
    reconnect();
    auto now = SteadyClock::now();
    if (now - last_warning_ > std::chrono::seconds(10)) {
      spdlog::warn("cannot register with the coordinator: {} (retrying)",
                   reply.status().to_string());
      last_warning_ = now;
    }
    if (reply.status().code() == StatusCode::kInvalidArgument ||
        reply.status().code() == StatusCode::kAlreadyExists ||
        reply.status().code() == StatusCode::kPermissionDenied) {
      if (now - last_refusal_ > std::chrono::seconds(10)) {
        spdlog::error("registration refused: {}", reply.status().message());
        last_refusal_ = now;
      }
    }
    return false;
  }
  // The session is on disk (fsynced) before the daemon counts as registered: a restart from
  // here on takes the name back.
  save_session(session_file(options_), reply->session());
  {
    std::lock_guard<std::mutex> lock(mu_);
    worker_id_ = reply->worker_id();
  }
  session_ = reply->session();
  await_session_.store(session_);
  previous_session_ = session_;
  heartbeat_every_ =
      std::chrono::milliseconds(std::max<int64_t>(10, reply->heartbeat_interval_ms()));
  // Events of a previous session are about tasks the coordinator has already written off.
  outbox_.clear();
  spdlog::info("registered as {}, heartbeat every {} ms", reply->worker_id(),
               heartbeat_every_.count());
  return true;
}

void WorkerDaemon::heartbeat_once() {
  v1::HeartbeatRequest req;
  req.set_worker_id(worker_id());
  req.set_session(session_);
  for (auto& [k, t] : tasks_) *req.add_running() = t.ref;
  for (int p : spare_ports()) req.add_spare_ports(p);
  auto reply = client_->heartbeat(req);
  if (!reply.is_ok()) {
    if (reply.status().code() == StatusCode::kFailedPrecondition) {
      // Our session is gone (lease expired, or another daemon took our name): whatever we
      // run was written off, so stop it and register afresh.
      spdlog::warn("heartbeat refused: {}; stopping {} trainers and registering again",
                   reply.status().message(), tasks_.size());
      stop_all_tasks(options_.stop_grace);
      session_ = 0;
      await_session_.store(0);
      return;
    }
    reconnect();
    auto now = SteadyClock::now();
    if (now - last_warning_ > std::chrono::seconds(10)) {
      spdlog::warn("heartbeat failed: {} (trainers keep running; retrying)",
                   reply.status().to_string());
      last_warning_ = now;
    }
    return;
  }
  for (const auto& c : reply->commands()) {
    if (c.has_start()) start_task(c.start());
    if (c.has_stop()) stop_task(c.stop().task(), c.stop().reason());
    if (c.has_regroup()) regroup_task(c.regroup());
  }
}

bool WorkerDaemon::flush_events(bool final_flush) {
  // A backlog (a chatty trainer, a coordinator that was away) is sent over several turns of
  // the loop: never so long in one go that the next heartbeat is late.
  const auto until = SteadyClock::now() + heartbeat_every_ / 2;
  while (!outbox_.empty()) {
    if (!final_flush && SteadyClock::now() >= until) return true;
    v1::ReportEventsRequest req;
    req.set_worker_id(worker_id());
    req.set_session(session_);
    size_t n = std::min(outbox_.size(), kMaxBatch);
    for (size_t i = 0; i < n; ++i) *req.add_events() = outbox_[i];
    auto reply = client_->report_events(req);
    if (!reply.is_ok()) {
      if (reply.status().code() == StatusCode::kFailedPrecondition) {
        outbox_.clear();  // the session is gone; the next heartbeat re-registers
        return true;
      }
      if (!final_flush) spdlog::debug("report events: {} (will retry)", reply.status().to_string());
      return false;
    }
    outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  return true;
}

void WorkerDaemon::push_event(v1::TaskEvent event) {
  if (outbox_.size() >= kMaxOutbox) {
    // The coordinator has been away for long: drop the oldest progress event, never an exit.
    for (auto it = outbox_.begin(); it != outbox_.end(); ++it) {
      if (it->has_progress()) {
        outbox_.erase(it);
        break;
      }
    }
  }
  // An exit or a standby's ready changes the job's group: sent at once.
  if (event.has_exited() || event.has_ready())
    next_flush_ = std::min(next_flush_, SteadyClock::now());
  outbox_.push_back(std::move(event));
}

void WorkerDaemon::push_exit(const v1::TaskRef& ref, int code, const std::string& tail) {
  v1::TaskEvent e;
  *e.mutable_task() = ref;
  e.set_time(unix_now());
  e.mutable_exited()->set_exit_code(code);
  // A trainer's log is bytes; the tail goes into a proto `string`, which must be UTF-8 (an
  // ill-formed one would make the coordinator refuse the whole batch, again on every retry).
  e.mutable_exited()->set_log_tail(to_valid_utf8(tail));
  push_event(std::move(e));
}

void WorkerDaemon::start_task(const v1::StartTask& start) {
  const v1::TaskRef& ref = start.task();
  Key key = key_of(ref);
  if (started_.count(key)) return;  // a repeated command: it already runs (or ran)
  started_.insert(key);
  const std::string job_dir = options_.work_dir + "/" + ref.job_id();
  const std::string log_path = job_dir + "/rank-" + std::to_string(ref.rank()) + ".log";
  // The task ends before a trainer ran: its error (what the coordinator shows as the job's
  // reason) and an exit with a code that says why — kTrainerRefused when any worker would
  // refuse it, kTrainerNotStarted when this machine could not start it.
  auto fail = [&](const std::string& why, int code = kTrainerNotStarted) {
    spdlog::error("cannot start {}: {}", task_name(ref), why);
    std::ofstream(log_path, std::ios::app)
        << "tern worker: cannot start the trainer: " << why << "\n";
    v1::TaskEvent e;
    *e.mutable_task() = ref;
    e.set_time(unix_now());
    e.mutable_error()->set_message(to_valid_utf8(why));
    e.mutable_error()->set_code(code);
    push_event(std::move(e));
    push_exit(ref, code, why + "\n");
  };
  if (ref.job_id().empty() || ref.job_id().find('/') != std::string::npos ||
      ref.job_id().find("..") != std::string::npos) {
    // Not even a log file under a name like that.
    spdlog::error("cannot start {}: bad job id", task_name(ref));
    push_exit(ref, kTrainerRefused, "bad job id '" + ref.job_id() + "'\n");
    return;
  }
  std::error_code ec;
  fs::create_directories(job_dir, ec);
  if (ec) return fail("cannot create " + job_dir + ": " + ec.message());
  // The coordinator checked the spec's paths without knowing this directory; check again
  // with it (symlinks resolved) before anything runs.
  auto spec = load_job_spec_text(start.spec_yaml(), ref.job_id() + " spec");
  if (!spec.is_ok()) return fail(spec.status().message(), kTrainerRefused);
  const PathPolicy paths = task_path_policy(options_, job_dir, ref.job_id());
  if (Status s = check_job_paths(spec->spec, paths); !s.is_ok())
    return fail("refused by the worker's path check: " + s.message(), kTrainerRefused);
  const std::string spec_path = job_dir + "/spec.yaml";
  if (Status s = atomic_write_file(spec_path, start.spec_yaml()); !s.is_ok())
    return fail(s.message());
  TrainerProcessOptions to;
  to.program = trainer_;
  to.args.spec_file = spec_path;
  to.args.rank = ref.rank();
  to.args.world = start.world_size();
  to.args.master = start.master_addr();
  to.args.generation = ref.generation();
  to.args.job_id = ref.job_id();
  to.args.work_dir = job_dir;
  to.args.bind_host = options_.host;  // Gloo pairs listen on this worker's address only
  if (!start.cluster_yaml().empty()) {
    const std::string cluster_path = job_dir + "/cluster.yaml";
    if (Status s = atomic_write_file(cluster_path, start.cluster_yaml()); !s.is_ok())
      return fail(s.message());
    to.args.cluster_file = cluster_path;
  }
  // The ranks' regions: the cluster file's, or without one the measured groups (issue 24).
  if (start.rank_regions_size() > 0) {
    to.args.regions.assign(start.rank_regions().begin(), start.rank_regions().end());
  }
  to.args.members.assign(start.members().begin(), start.members().end());
  to.args.standby = start.standby();
  if (access(trainer_.c_str(), X_OK) != 0) {
    return fail("trainer binary " + trainer_ + " not found or not executable");
  }
  std::ofstream(log_path, std::ios::app) << "";  // exists even if the trainer never writes
  to.stderr_file = log_path;
  to.cwd = job_dir;  // relative spec paths resolve inside the job directory
  to.nice_increment = options_.trainer_nice;
  auto proc = TrainerProcess::start(to);
  if (!proc.is_ok()) return fail(proc.status().message());
  Task task;
  task.ref = ref;
  task.proc = std::move(proc).value();
  task.log_path = log_path;
  spdlog::info("started {} (pid {}): master {}", task_name(ref), task.proc->pid(),
               start.master_addr());
  tasks_.emplace(key, std::move(task));
}

void WorkerDaemon::stop_task(const v1::TaskRef& ref, const std::string& reason) {
  auto it = tasks_.find(key_of(ref));
  if (it == tasks_.end() || it->second.stopping) return;
  spdlog::info("stopping {}: {}", task_name(ref), reason);
  Task& t = it->second;
  t.stopping = true;
  t.kill_at = SteadyClock::now() + options_.stop_grace;
  t.proc->request_stop();
}

void WorkerDaemon::regroup_task(const v1::RegroupTask& regroup) {
  const v1::TaskRef& ref = regroup.task();
  auto it = tasks_.find(key_of(ref));
  if (it == tasks_.end() || it->second.stopping) {
    spdlog::warn("ignoring regroup of {} to generation {}: not running here", task_name(ref),
                 regroup.generation());
    return;
  }
  if (regroup.generation() <= ref.generation()) {
    spdlog::warn("ignoring regroup of {} to generation {}: not newer", task_name(ref),
                 regroup.generation());
    return;
  }
  RegroupCommand command;
  command.generation = regroup.generation();
  command.world = regroup.world_size();
  command.master = regroup.master_addr();
  command.rollback = regroup.rollback();
  command.members.assign(regroup.members().begin(), regroup.members().end());
  spdlog::info("regrouping {} to generation {} (world {}, master {}{})", task_name(ref),
               regroup.generation(), regroup.world_size(), regroup.master_addr(),
               regroup.rollback() ? ", rollback" : "");
  if (Status s = it->second.proc->send(command); !s.is_ok()) {
    // Its exit is on the way (the pipe is closed): it is reported at its old generation.
    spdlog::warn("cannot send the regroup to {}: {}", task_name(ref), s.to_string());
    return;
  }
  // From now on the trainer is this rank at the new generation: heartbeats and events say so.
  Task task = std::move(it->second);
  tasks_.erase(it);
  task.ref.set_generation(regroup.generation());
  Key key = key_of(task.ref);
  started_.insert(key);
  tasks_.emplace(key, std::move(task));
}

void WorkerDaemon::ship_log(Task* t, int64_t max_bytes) {
  int64_t size = file_size(t->log_path);
  if (size - t->log_sent > max_bytes) size = t->log_sent + max_bytes;
  while (t->log_sent < size) {
    std::ifstream in(t->log_path, std::ios::binary);
    in.seekg(t->log_sent);
    std::string data(static_cast<size_t>(std::min<int64_t>(size - t->log_sent, kMaxLogChunk)),
                     '\0');
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    data.resize(static_cast<size_t>(in.gcount()));
    if (data.empty()) break;
    v1::TaskEvent e;
    *e.mutable_task() = t->ref;
    e.set_time(unix_now());
    e.mutable_log()->set_offset(t->log_sent);
    t->log_sent += static_cast<int64_t>(data.size());
    e.mutable_log()->set_data(std::move(data));
    push_event(std::move(e));
  }
}

void WorkerDaemon::relay(const Task& t, const TrainerOutput& out) {
  for (const auto& event : out.events) {
    if (auto e = to_task_event(event, t.ref)) {
      push_event(std::move(*e));
    } else if (std::holds_alternative<PeerLostEvent>(event.body) ||
               std::holds_alternative<RegroupedEvent>(event.body)) {
      // Elastic regroup, trainer side.
      spdlog::info("{}: {}", task_name(t.ref), encode(event));
    }
  }
  for (const auto& line : out.other_lines) spdlog::debug("{}: stdout: {}", task_name(t.ref), line);
}

void WorkerDaemon::poll_tasks() {
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    Task& t = it->second;
    TrainerOutput out;
    t.proc->read(&out, std::chrono::milliseconds(0));
    relay(t, out);
    ship_log(&t, 4 * static_cast<int64_t>(kMaxLogChunk));
    if (t.stopping && SteadyClock::now() >= t.kill_at) t.proc->kill();
    auto code = t.proc->poll();
    if (!code) {
      ++it;
      continue;
    }
    // Exited: drain what is left on its stdout and in its log, then report the exit.
    TrainerOutput rest;
    t.proc->drain(&rest);
    relay(t, rest);
    ship_log(&t);
    std::string tail = *code == 0 ? "" : tail_file_lines(t.log_path, options_.log_tail_lines);
    spdlog::info("{} exited with code {} ({})", task_name(t.ref), *code,
                 trainer_exit_meaning(*code));
    push_exit(t.ref, *code, tail);
    it = tasks_.erase(it);
  }
}

void WorkerDaemon::stop_all_tasks(std::chrono::milliseconds grace) {
  if (tasks_.empty()) return;
  for (auto& [k, t] : tasks_) {
    if (!t.stopping) stop_task(t.ref, "worker shutting down");
    t.kill_at = std::min(t.kill_at, SteadyClock::now() + grace);
  }
  while (!tasks_.empty()) {
    poll_tasks();
    if (!tasks_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace tern
