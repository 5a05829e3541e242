// CoordinatorCore: the worker plane (registration, heartbeats, event reports, leases) and what
// happens to a job when one of its workers is gone.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "common/host_name.h"
#include "coordinator/coordinator_core.h"
#include "coordinator/core_internal.h"
#include "coordinator/core_lock.h"
#include "coordinator/port_leases.h"

namespace tern {
namespace {

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  }
  return s != "." && s != "..";
}

constexpr int kMaxSlots = 4096;

// A worker's session secret: 64 bits from the kernel's CSPRNG (getrandom(2), else
// /dev/urandom), never 0 (the daemons' "no session").
Result<uint64_t> random_session() {
  for (int attempt = 0; attempt < 4; ++attempt) {
    uint64_t v = 0;
    ssize_t n = ::getrandom(&v, sizeof(v), 0);
    if (n != static_cast<ssize_t>(sizeof(v))) {
      int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
      n = fd >= 0 ? ::read(fd, &v, sizeof(v)) : -1;
      if (fd >= 0) ::close(fd);
    }
    if (n == static_cast<ssize_t>(sizeof(v)) && v != 0) return v;
  }
  return unavailable("cannot read random bytes for a worker session (getrandom, /dev/urandom)");
}

// Tells a survivor's daemon to move task `t` (an older generation) to the job's current one.
TaskCommand regroup_command(const Job& job, const TaskKey& t) {
  TaskCommand c;
  c.kind = TaskCommand::Kind::kRegroup;
  c.task = t;
  c.generation = job.generation;
  c.world = job.world;
  c.master_addr = job.master_addr;
  c.rollback = job.recovery_mode == RecoveryMode::kFull;
  if (job.elastic()) {
    c.members = job.members();
    c.world = static_cast<int>(c.members.size());
  }
  return c;
}

}  // namespace

Result<RegistrationResult> CoordinatorCore::register_worker(const WorkerRegistration& reg) {
  if (reg.slots < 1 || reg.slots > kMaxSlots) {
    return invalid_argument("slots must be in [1, " + std::to_string(kMaxSlots) + "], got " +
                            std::to_string(reg.slots));
  }
  if (reg.cores < 0 || reg.cores > 65536)
    return invalid_argument("cores must be in [0, 65536] (0: unknown), got " +
                            std::to_string(reg.cores));
  if (!valid_name(reg.region))
    return invalid_argument("region must be a name ([A-Za-z0-9._-]), got '" + reg.region + "'");
  if (!options_.regions.empty() && std::find(options_.regions.begin(), options_.regions.end(),
                                             reg.region) == options_.regions.end()) {
    std::string known;
    for (const auto& r : options_.regions) known += (known.empty() ? "" : ", ") + r;
    return invalid_argument("region '" + reg.region +
                            "' is not one of the cluster file's regions (" + known + ")");
  }
  if (!host_problem(reg.host).empty()) {
    return invalid_argument("host must be a host name or an IP address, got '" +
                            reg.host.substr(0, 256) + "'");
  }
  if (!reg.name.empty() && !valid_name(reg.name)) {
    return invalid_argument("worker name must be [A-Za-z0-9._-]+, got '" + reg.name.substr(0, 256) +
                            "'");
  }
  TERN_RETURN_IF_ERROR(check_spare_ports(reg.spare_ports));
  TERN_ASSIGN_OR_RETURN(const uint64_t session, random_session());
  return durable([&]() -> Result<RegistrationResult> {
    CoreLock lock(mu_);
    if (auto it = workers_.find(reg.name); !reg.name.empty() && it != workers_.end()) {
      const Worker& old = it->second;
      // The session is the worker's secret: only the daemon that holds it (or one that kept it
      // across a restart) may replace a live registration. A LOST worker's name is free.
      if (old.state == WorkerState::kReady && reg.session != old.session) {
        ++worker_stats_.registrations_refused;
        spdlog::warn(
            "refused to re-register worker {} from host {}: it is alive and the caller "
            "does not hold its session",
            reg.name, reg.host.substr(0, 256));
        return already_exists(
            "worker '" + reg.name + "' is registered and alive (host " + old.host +
            "); re-registering it needs its current session, which its daemon keeps in its work "
            "directory. Pick another --name, stop the other daemon, or wait until its lease (" +
            std::to_string(options_.lease_ms) + " ms) expires");
      }
    }
    std::string id = reg.name;
    if (id.empty()) {
      for (size_t n = workers_.size() + 1;; ++n) {
        id = "w-" + std::to_string(n);
        if (!workers_.count(id)) break;
      }
    }
    // A new session of a known worker: whatever its previous daemon ran is gone. Jobs with
    // recovery regroup once the worker is registered again (it may host the replacements).
    LostByJob regroups;
    if (workers_.count(id)) {
      TERN_RETURN_IF_ERROR(
          worker_gone_locked(id, "worker " + id + " restarted", 0, false, &regroups));
    }
    network_.forget(id);  // a new session may be another machine: measure it again
    Worker& w = workers_[id];
    w.id = id;
    w.probe_port = 0;
    w.host = reg.host;
    w.region = reg.region;
    w.slots = reg.slots;
    w.cores = reg.cores;
    w.state = WorkerState::kReady;
    w.session = session;
    w.registered_at = clock_->unix_seconds();
    w.last_heartbeat = w.registered_at;
    w.lease_deadline_ms = clock_->monotonic_ms() + options_.lease_ms;
    set_spare_ports(&w, reg.spare_ports, clock_->monotonic_ms());
    w.reported_running.clear();
    w.heard = true;
    TERN_RETURN_IF_ERROR(journal_worker(w));
    spdlog::info("worker {} registered: host {}, region {}, {} slots", id, w.host, w.region,
                 w.slots);
    TERN_RETURN_IF_ERROR(regroup_lost_locked(regroups, false));
    RegistrationResult r{id, w.session, options_.heartbeat_ms, options_.lease_ms};
    schedule_locked();
    return r;
  }());
}

Status CoordinatorCore::worker_gone_locked(const std::string& worker_id, const std::string& why,
                                           double at, bool join_waiting, LostByJob* regroups) {
  Status first;
  for (const TaskKey& t : assigned_tasks_locked(worker_id)) {
    Job& job = jobs_.at(t.job_id);
    if (job.state != JobState::kRunning) continue;
    // One regroup per job, whatever number of its ranks the worker hosted.
    if (regroups->count(job.id) || can_regroup(job, join_waiting && awaiting_.count(job.id) > 0)) {
      (*regroups)[job.id].push_back({t.rank, worker_id, why, at});
      continue;
    }
    job.ranks[t.rank].state = RankState::kFailed;
    Status s = finish_job_locked(
        &job, JobState::kFailed,
        why + " while it hosted rank " + std::to_string(t.rank) + no_regroup_left(job));
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    if (first.is_ok()) first = s;
  }
  return first;
}

Status CoordinatorCore::regroup_lost_locked(const LostByJob& regroups, bool join_waiting) {
  Status first;
  for (const auto& [job_id, lost] : regroups) {
    // A regroup still waiting for workers takes these ranks as part of it (join_waiting): a
    // coordinator cut off from every worker sees their leases run out one after another within
    // a heartbeat, and that is one recovery, not one per host (which would fail the job).
    Status s = regroup_locked(&jobs_.at(job_id), lost, join_waiting && awaiting_.count(job_id) > 0);
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    if (first.is_ok()) first = s;
  }
  return first;
}

Status CoordinatorCore::check_session(const std::string& worker_id, uint64_t session,
                                      Worker** worker) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end())
    return failed_precondition("unknown worker '" + worker_id + "': register first");
  if (it->second.session != session) {
    return failed_precondition("worker '" + worker_id + "' has a newer session: register again");
  }
  if (it->second.state == WorkerState::kLost) {
    return failed_precondition("worker '" + worker_id + "' lost its lease: register again");
  }
  *worker = &it->second;
  return take_worker_call_locked(*worker);
}

Status CoordinatorCore::take_worker_call_locked(Worker* w) {
  const double rate =
      std::max(options_.worker_rate_per_s,
               2000.0 / static_cast<double>(std::max<int64_t>(1, options_.heartbeat_ms)) + 10);
  const double burst = std::max(options_.worker_rate_burst, rate);
  const int64_t now = clock_->monotonic_ms();
  if (w->call_tokens < 0) {
    w->call_tokens = burst;
  } else if (now > w->call_tokens_ms) {
    w->call_tokens = std::min(
        burst, w->call_tokens + static_cast<double>(now - w->call_tokens_ms) * rate / 1000);
  }
  w->call_tokens_ms = std::max(w->call_tokens_ms, now);
  if (w->call_tokens < 1) {
    ++worker_stats_.calls_throttled;
    return resource_exhausted("worker '" + w->id + "' made more than " +
                              std::to_string(static_cast<int64_t>(rate)) + " calls/s (burst " +
                              std::to_string(static_cast<int64_t>(burst)) +
                              "; coordinator.worker_rate_limit): slow down and retry");
  }
  w->call_tokens -= 1;
  return Status::ok();
}

WorkerPlaneStats CoordinatorCore::worker_plane_stats() const {
  WorkerPlaneStats stats;
  {
    CoreLock lock(mu_);
    stats = worker_stats_;
  }
  stats.log_bytes_dropped += logs_.bytes_dropped();
  return stats;
}

Result<HeartbeatResult> CoordinatorCore::heartbeat(const std::string& worker_id, uint64_t session,
                                                   const std::vector<TaskKey>& running,
                                                   const std::vector<int>& spare_ports) {
  TERN_RETURN_IF_ERROR(check_spare_ports(spare_ports));
  return durable([&]() -> Result<HeartbeatResult> {
    CoreLock lock(mu_);
    Worker* w = nullptr;
    TERN_RETURN_IF_ERROR(check_session(worker_id, session, &w));
    w->lease_deadline_ms = clock_->monotonic_ms() + options_.lease_ms;
    w->last_heartbeat = clock_->unix_seconds();
    std::set<TaskKey> now_running(running.begin(), running.end());
    // Placement only needs another look when this beat changed what the scheduler sees (a
    // first beat, tasks started or ended, ports appearing); tick() covers everything else.
    // Scheduling on every beat made each heartbeat O(workers x jobs) and capped the
    // coordinator at a few hundred beats/s with 10,000 workers.
    bool relevant = !w->heard || now_running != w->reported_running ||
                    (w->spare_ports.empty() && !spare_ports.empty());
    w->reported_running = std::move(now_running);
    set_spare_ports(w, spare_ports, clock_->monotonic_ms());
    w->heard = true;
    if (relevant) schedule_locked();

    HeartbeatResult result;
    result.lease_ms = options_.lease_ms;
    std::set<std::string> to_journal;
    reconcile_running_locked(*w, &result.commands, &to_journal);
    start_missing_locked(*w, &result.commands, &to_journal);
    for (const std::string& id : to_journal) {
      Status s = journal_job(jobs_.at(id));
      if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    }
    return result;
  }());
}

void CoordinatorCore::reconcile_running_locked(const Worker& worker,
                                               std::vector<TaskCommand>* commands,
                                               std::set<std::string>* to_journal) {
  for (const TaskKey& t : worker.reported_running) {
    auto it = jobs_.find(t.job_id);
    std::string why;
    if (it == jobs_.end()) {
      why = "unknown job";
    } else {
      Job& job = it->second;
      RankInfo* r =
          t.rank >= 0 && t.rank < static_cast<int>(job.ranks.size()) ? &job.ranks[t.rank] : nullptr;
      if (job.state != JobState::kRunning) {
        why = std::string("job ") + job_state_name(job.state);
      } else if (t.generation > job.generation || (r && t.generation < r->generation)) {
        why = "stale generation " + std::to_string(t.generation);
      } else if (!r || r->worker_id != worker.id) {
        why = "rank not assigned to this worker";
      } else if (is_terminal(r->state)) {
        why = std::string("rank ") + rank_state_name(r->state);
      } else {
        // The rank's own trainer: at the job's generation, or a survivor of a regroup.
        if (t.generation > r->generation) {
          r->generation = t.generation;  // its daemon re-keyed it after a Regroup
          to_journal->insert(job.id);
        }
        if (t.generation < job.generation && !awaiting_.count(job.id)) {
          commands->push_back(regroup_command(job, t));
        }
      }
    }
    if (!why.empty()) {
      TaskCommand c;
      c.kind = TaskCommand::Kind::kStop;
      c.task = t;
      c.reason = why;
      commands->push_back(std::move(c));
    }
  }
}

void CoordinatorCore::start_missing_locked(const Worker& worker, std::vector<TaskCommand>* commands,
                                           std::set<std::string>* to_journal) {
  for (auto& [id, job] : jobs_) {
    if (job.state != JobState::kRunning) continue;
    for (RankInfo& r : job.ranks) {
      if (r.worker_id != worker.id || r.state != RankState::kAssigned) continue;
      // Running at its own generation or a later one (a survivor regrouping): no Start.
      auto run = worker.reported_running.lower_bound({job.id, r.rank, r.generation});
      if (run != worker.reported_running.end() && run->job_id == job.id && run->rank == r.rank) {
        continue;
      }
      if (awaiting_.count(job.id)) continue;  // replacements start once all are placed
      if (r.generation < job.generation) {
        // A survivor of a regroup that never started: start it at the new generation.
        r.generation = job.generation;
        r.start_generation = job.generation;
        to_journal->insert(job.id);
      }
      TaskKey key{job.id, r.rank, job.generation};
      TaskCommand c;
      c.kind = TaskCommand::Kind::kStart;
      c.task = key;
      c.world = job.world;
      c.master_addr = job.master_addr;
      if (job.elastic()) {
        c.members = job.members();
        c.standby = !r.member;
      }
      c.spec_yaml = job.spec_yaml;
      c.cluster_yaml = options_.cluster_yaml;
      // The regions feed the WAN model (with a cluster file) and hierarchical groups (also
      // measured ones, without).
      if (!options_.cluster_yaml.empty() || job.measured_groups) {
        for (const RankInfo& o : job.ranks) c.rank_regions.push_back(o.region);
      }
      commands->push_back(std::move(c));
    }
  }
}

Result<NetworkReportResult> CoordinatorCore::report_network(
    const std::string& worker_id, uint64_t session, int probe_port,
    const std::vector<LinkMeasurement>& links) {
  if (probe_port < 0 || probe_port > 65535)
    return invalid_argument("probe_port must be in [0, 65535] (0: none), got " +
                            std::to_string(probe_port));
  CoreLock lock(mu_);
  Worker* w = nullptr;
  TERN_RETURN_IF_ERROR(check_session(worker_id, session, &w));
  auto known = [&](const std::string& id) {
    auto it = workers_.find(id);
    return it != workers_.end() && it->second.state == WorkerState::kReady;
  };
  TERN_RETURN_IF_ERROR(network_.report(worker_id, links, known, clock_->unix_seconds()));
  w->probe_port = probe_port;
  if (!links.empty()) {
    spdlog::debug("worker {} reported {} network links", worker_id, links.size());
  }
  NetworkReportResult result;
  result.probe_interval_ms = options_.probe_interval_ms;
  const bool emulate = options_.has_network_model && options_.network.emulate;
  for (const auto& [id, peer] : workers_) {
    if (id == worker_id || peer.state != WorkerState::kReady || peer.probe_port == 0) continue;
    ProbePeerInfo p;
    p.worker_id = id;
    p.host = peer.host;
    p.probe_port = peer.probe_port;
    p.emulated = emulate;
    if (emulate) p.model = options_.network.link(w->region, peer.region);
    result.peers.push_back(std::move(p));
  }
  return result;
}

std::vector<std::pair<std::pair<std::string, std::string>, MeasuredLink>>
CoordinatorCore::network_links() const {
  CoreLock lock(mu_);
  const double now = clock_->unix_seconds();
  std::vector<std::pair<std::pair<std::string, std::string>, MeasuredLink>> out;
  for (const auto& [from, row] : network_.all()) {
    for (const auto& [to, link] : row) {
      MeasuredLink l = link;
      l.at = std::max(0.0, now - link.at);  // age
      out.push_back({{from, to}, l});
    }
  }
  return out;
}

Result<int> CoordinatorCore::report_events(const std::string& worker_id, uint64_t session,
                                           const std::vector<TaskEvent>& events) {
  Result<int> applied = apply_events(worker_id, session, events);
  logs_.flush();  // the log chunks it queued, written off the lock
  return durable(std::move(applied));
}

Result<int> CoordinatorCore::apply_events(const std::string& worker_id, uint64_t session,
                                          const std::vector<TaskEvent>& events) {
  CoreLock lock(mu_);
  Worker* w = nullptr;
  TERN_RETURN_IF_ERROR(check_session(worker_id, session, &w));
  int applied = 0;
  std::set<std::string> to_journal;
  for (const TaskEvent& e : events) {
    bool journal = false;
    // Non-finite numbers are not dropped with the event (an exit must never be lost): each
    // is kept out of the state (JSON, where the journal keeps it, has no NaN).
    Status s = apply_event_locked(*w, e, &journal);
    if (s.is_ok()) {
      ++applied;
      if (options_.observer && e.kind != TaskEvent::Kind::kLog) {
        if (auto j = jobs_.find(e.task.job_id); j != jobs_.end())
          options_.observer->on_event(j->second, e, clock_->unix_seconds());
      }
    } else {
      ++worker_stats_.events_dropped;
      spdlog::debug("worker {}: dropped an event of {}/rank {} gen {}: {}", worker_id,
                    e.task.job_id.substr(0, 64), e.task.rank, e.task.generation, s.message());
    }
    if (journal) to_journal.insert(e.task.job_id);
  }
  for (const std::string& id : to_journal) TERN_RETURN_IF_ERROR(journal_job(jobs_.at(id)));
  schedule_locked();  // an exit may have freed slots
  return applied;
}

Result<uint64_t> CoordinatorCore::await_work(const std::string& worker_id, uint64_t session,
                                             uint64_t seen, std::chrono::milliseconds wait) {
  CoreLock lock(mu_);
  Worker* w = nullptr;
  TERN_RETURN_IF_ERROR(check_session(worker_id, session, &w));
  wait = std::clamp(wait, std::chrono::milliseconds(0), std::chrono::milliseconds(30000));
  // A version this coordinator never handed out (a daemon that outlived a restart) counts as
  // new work: the daemon heartbeats once and adopts the current version.
  work_changed_.wait_for(lock.unique(), wait,
                         [&] { return waking_all_ || work_version_[worker_id] != seen; });
  return work_version_[worker_id];
}

void CoordinatorCore::wake_all() {
  CoreLock lock(mu_);
  waking_all_ = true;
  work_changed_.notify_all();
}

void CoordinatorCore::nudge_locked(const std::string& worker_id) {
  if (worker_id.empty()) return;
  ++work_version_[worker_id];
  work_changed_.notify_all();
}

void CoordinatorCore::nudge_job_locked(const Job& job) {
  for (const RankInfo& r : job.ranks) nudge_locked(r.worker_id);
}

void CoordinatorCore::tick() {
  CoreLock lock(mu_);
  expire_leases_locked();
  schedule_locked();
}

void CoordinatorCore::expire_leases_locked() {
  const int64_t now = clock_->monotonic_ms();
  for (auto& [id, w] : workers_) {
    if (w.state != WorkerState::kReady || now <= w.lease_deadline_ms) continue;
    w.state = WorkerState::kLost;
    w.reported_running.clear();
    network_.forget(id);
    spdlog::warn("worker {} lost: no heartbeat for {} ms", id, options_.lease_ms);
    Status s = journal_worker(w);
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    const std::string why =
        "worker " + id + " lost (no heartbeat for " + std::to_string(options_.lease_ms) + " ms)";
    LostByJob regroups;  // lost since its last beat
    // Errors are logged where they happen; a lease runs out whatever the journal says.
    static_cast<void>(worker_gone_locked(id, why, w.last_heartbeat, true, &regroups));
    static_cast<void>(regroup_lost_locked(regroups, true));
  }
}

std::vector<TaskKey> CoordinatorCore::assigned_tasks(const std::string& worker_id) const {
  CoreLock lock(mu_);
  return assigned_tasks_locked(worker_id);
}

std::vector<TaskKey> CoordinatorCore::assigned_tasks_locked(const std::string& worker_id) const {
  std::vector<TaskKey> out;
  for (const auto& [id, job] : jobs_) {
    if (job.state != JobState::kRunning) continue;
    for (const RankInfo& r : job.ranks) {
      if (r.worker_id == worker_id && !is_terminal(r.state))
        out.push_back({job.id, r.rank, job.generation});
    }
  }
  return out;
}

}  // namespace tern
