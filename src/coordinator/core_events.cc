// CoordinatorCore: the job state machine driven by trainer events (started, progress, eval,
// finished, checkpoint, error, exited, ready; log chunks go to the LogStore), generation fencing
// and the end of a job.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "common/trainer_protocol.h"
#include "coordinator/coordinator_core.h"
#include "coordinator/core_internal.h"

namespace tern {
namespace {

constexpr int64_t kMaxLogOffset = int64_t{1} << 50;

double finite_or(double v, double fallback) { return std::isfinite(v) ? v : fallback; }

// A job's reason for a rank that failed for a reason of its own (not a lost peer): its rank,
// worker and exit, then the error it reported, then its last log lines.
std::string failure_reason(const RankInfo& r, const std::string& worker_id, const TaskEvent& e) {
  std::string reason = "rank " + std::to_string(r.rank) + " on worker " + worker_id + ": " +
                       trainer_exit_meaning(e.exit_code) + " (exit code " +
                       std::to_string(e.exit_code) + ")";
  if (!r.error.empty()) reason += ": " + r.error;
  if (!e.log_tail.empty()) reason += "\nlast log lines:\n" + e.log_tail;
  return reason;
}

// The first member of the job's group (its summary and evaluation speak for the job).
int first_member(const Job& job) {
  for (const RankInfo& r : job.ranks) {
    if (r.member) return r.rank;
  }
  return 0;
}

}  // namespace

Status CoordinatorCore::apply_event_locked(Worker& worker, const TaskEvent& e, bool* journal) {
  auto it = jobs_.find(e.task.job_id);
  if (it == jobs_.end()) return not_found("unknown job");
  Job& job = it->second;
  if (e.task.rank < 0 || e.task.rank >= job.world) return invalid_argument("rank out of range");
  if (e.kind == TaskEvent::Kind::kLog) return append_log_locked(job, worker, e);
  if (e.task.rank >= static_cast<int>(job.ranks.size())) return aborted("stale generation");
  RankInfo& r = job.ranks[e.task.rank];
  if (r.worker_id == worker.id) TERN_RETURN_IF_ERROR(fence_locked(job, r, worker, e));
  // The rank's trainer speaks at the job's generation, or at an older one while it survives a
  // regroup its daemon has not re-keyed it to yet.
  if (e.task.generation > job.generation || e.task.generation < r.generation) {
    return aborted("stale generation");
  }
  if (r.worker_id != worker.id) return aborted("rank not assigned to this worker");
  if (e.task.generation > r.generation) {
    r.generation = e.task.generation;
    *journal = true;
  }
  const double now = clock_->unix_seconds();
  // A worker's clock is not trusted either: an implausible timestamp reads as "now".
  r.updated_at = std::isfinite(e.time) && e.time > 0 && e.time < 1e11 ? e.time : now;
  switch (e.kind) {
    case TaskEvent::Kind::kStarted:
      if (r.state == RankState::kAssigned) r.state = RankState::kRunning;
      break;
    case TaskEvent::Kind::kProgress:
      apply_progress_locked(job, r, e, now, journal);
      break;
    case TaskEvent::Kind::kEval:
      if (!std::isfinite(e.test_accuracy)) break;
      r.test_accuracy = e.test_accuracy;
      r.metrics["test_loss"] = finite_or(e.test_loss, 0.0);
      for (const auto& [k, v] : e.metrics) {
        if (std::isfinite(v)) r.metrics[k] = v;  // test_auc (DLRM), ...
      }
      if (e.task.rank == first_member(job)) job.test_accuracy = e.test_accuracy;
      break;
    case TaskEvent::Kind::kFinished:
      apply_finished_locked(job, r, e);
      *journal = true;
      break;
    case TaskEvent::Kind::kCheckpoint:
      // Every rank reports the same committed step: the first report of a newer one is
      // journaled, the others change nothing. A step no trainer writes is refused.
      if (e.step < 1 || e.step > (int64_t{1} << 53))
        return invalid_argument("checkpoint step out of range");
      if (e.step > job.checkpoint_step) {
        job.checkpoint_step = e.step;
        *journal = true;
      }
      break;
    case TaskEvent::Kind::kError:
      r.error = e.message;
      break;
    case TaskEvent::Kind::kExited:
      if (std::optional<Status> done = apply_exit_locked(worker, job, r, e, journal)) return *done;
      break;
    case TaskEvent::Kind::kReady:
      // A standby of an elastic job is loaded: it joins the group at a new generation (with
      // every other standby ready by then).
      if (!job.elastic() || r.member || r.state == RankState::kUnassigned || is_terminal(r.state)) {
        return failed_precondition("ready from a rank that is not a standby");
      }
      r.ready = true;
      if (r.state == RankState::kAssigned) r.state = RankState::kRunning;
      spdlog::info("job {}: standby rank {} ready after {:.2f} s; growing the group", job.id,
                   r.rank, finite_or(e.setup_s, 0.0));
      for (RankInfo& o : job.ranks) {
        if (o.ready) o.member = true, o.ready = false;
      }
      *journal = false;
      elastic_regroup_locked(&job, "grow", 0);
      return journal_job(job);
    case TaskEvent::Kind::kLog:
      break;
  }
  touch(&job);
  return Status::ok();
}

void CoordinatorCore::apply_progress_locked(Job& job, RankInfo& r, const TaskEvent& e, double now,
                                            bool* journal) {
  if (is_terminal(r.state)) return;
  if (r.state == RankState::kAssigned) r.state = RankState::kRunning;
  // A worker's numbers are not trusted to be finite (JSON, where the journal keeps them,
  // has no NaN): a non-finite one keeps the last value.
  r.step = e.step;
  r.total_steps = e.total_steps;
  r.epoch = finite_or(e.epoch, r.epoch);
  r.loss = finite_or(e.loss, r.loss);
  r.samples_per_s = finite_or(e.samples_per_s, r.samples_per_s);
  r.bytes_sent = finite_or(e.bytes_sent, r.bytes_sent);
  for (const auto& [k, v] : e.metrics) {
    if (std::isfinite(v)) r.metrics[k] = v;
  }
  if (auto g = r.metrics.find("regroup_generation"); g != r.metrics.end()) {
    // A member trains again after a regroup: the recovery's timeline ends when the last
    // member of that generation does.
    for (auto& t : job.timelines) {
      if (t["generation"] == g->second)
        t["training_again"] = std::max(t["training_again"], r.updated_at);
    }
    r.metrics.erase(g);
    r.metrics.erase("regroup_s");
    *journal = true;
  }
  r.metrics["compute_s"] = finite_or(e.compute_s, r.metrics["compute_s"]);
  r.metrics["wait_s"] = finite_or(e.wait_s, r.metrics["wait_s"]);
  if (job.rate_step0 < 0) {
    job.rate_step0 = job.step();
    job.rate_t0 = now;
  }
}

void CoordinatorCore::apply_finished_locked(Job& job, RankInfo& r, const TaskEvent& e) {
  std::map<std::string, double> summary;
  for (const auto& [k, v] : e.summary) {
    if (std::isfinite(v)) summary[k] = v;
  }
  const bool speaks = e.task.rank == first_member(job);
  if (speaks) job.summary = summary;
  if (auto a = summary.find("test_accuracy"); a != summary.end()) {
    r.test_accuracy = a->second;
    if (speaks) job.test_accuracy = a->second;
  }
  if (auto s = summary.find("steps"); s != summary.end() && std::abs(s->second) < 9e18)
    r.step = static_cast<int64_t>(s->second);
}

std::optional<Status> CoordinatorCore::apply_exit_locked(Worker& worker, Job& job, RankInfo& r,
                                                         const TaskEvent& e, bool* journal) {
  worker.reported_running.erase(e.task);  // its process is gone: the slot is free
  if (r.exited) return std::nullopt;      // a retried batch
  r.exited = true;
  r.exit_code = e.exit_code;
  *journal = true;
  if (auto first = failed_on_loss_.find(job.id);
      job.state == JobState::kFailed && first != failed_on_loss_.end() &&
      trainer_exit_is_better_cause(e.exit_code, first->second)) {
    // The job failed on a lost peer, reported first, and this is the rank that failed for
    // a reason of its own (its peers lost it): the root cause becomes the reason.
    failed_on_loss_.erase(first);
    if (!is_terminal(r.state)) r.state = RankState::kFailed;
    std::string reason = failure_reason(r, worker.id, e);
    reason += "\n(reported after: " + job.reason.substr(0, job.reason.find('\n')) + ")";
    job.reason = reason;
    spdlog::info("job {} FAILED: root cause: {}", job.id, reason);
    touch(&job);
    return std::nullopt;
  }
  if (is_terminal(r.state) || job.state != JobState::kRunning) {
    if (!is_terminal(r.state)) r.state = RankState::kStopped;
    return std::nullopt;
  }
  if (e.exit_code != 0) {
    *journal = false;  // regroup_locked or finish_job_locked journals it
    return rank_failed_locked(worker, job, r, e);
  }
  r.state = RankState::kSucceeded;
  // Every member of the group finished (an elastic job may end smaller than it began; its
  // standbys are stopped with the job).
  bool all = std::all_of(job.ranks.begin(), job.ranks.end(), [](const RankInfo& x) {
    return !x.member || x.state == RankState::kSucceeded;
  });
  if (!all) return std::nullopt;
  const size_t n = job.members().size();
  *journal = false;  // finish_job_locked journals it
  return finish_job_locked(
      &job, JobState::kSucceeded,
      "all " + std::to_string(n) + " ranks finished" +
          (static_cast<int>(n) < job.world ? " (of " + std::to_string(job.world) + ")" : ""));
}

Status CoordinatorCore::rank_failed_locked(const Worker& worker, Job& job, RankInfo& r,
                                           const TaskEvent& e) {
  const std::string exit = "exited with code " + std::to_string(e.exit_code) + " (" +
                           trainer_exit_meaning(e.exit_code) + ")";
  // Only a lost process or machine is worth a replacement: a bad spec, bad data, out of
  // memory, a non-finite loss or a bug fails the same way on any worker.
  const bool replaceable = trainer_exit_is_loss(e.exit_code);
  // A survivor that gave up on its peers before it regrouped (its generation is older, or the
  // replacements still wait for a worker) is part of the regroup under way.
  const bool join = e.exit_code == kTrainerCommFailure &&
                    (e.task.generation < job.generation || awaiting_.count(job.id));
  if (replaceable && can_regroup(job, join)) {
    std::string why = "worker " + worker.id + ": " + exit;
    if (!r.error.empty()) why += ": " + r.error;
    return regroup_locked(&job, {{r.rank, worker.id, why, e.time}}, join);
  }
  r.state = RankState::kFailed;
  std::string reason;
  if (replaceable) {
    reason = "rank " + std::to_string(r.rank) + " on worker " + worker.id + " " + exit;
    if (!r.error.empty()) reason += ": " + r.error;
    reason += no_regroup_left(job);
    if (!e.log_tail.empty()) reason += "\nlast log lines:\n" + e.log_tail;
    failed_on_loss_[job.id] = e.exit_code;  // a later exit may be the root cause
  } else {
    reason = failure_reason(r, worker.id, e);
  }
  return finish_job_locked(&job, JobState::kFailed, reason);
}

Status CoordinatorCore::append_log_locked(Job& job, const Worker& worker, const TaskEvent& e) {
  // Log bytes are kept whatever the generation (the file is per job and rank), but only from
  // the worker the rank is assigned to. A rank that a regroup moved to another worker
  // continues the file from where the last one left it (log_base). Queued here, written by
  // report_events once the core's mutex is released (LogStore).
  const RankInfo* r =
      e.task.rank < static_cast<int>(job.ranks.size()) ? &job.ranks[e.task.rank] : nullptr;
  if (!r || r->worker_id != worker.id)
    return permission_denied("log of a rank not assigned to this worker");
  if (e.task.generation > job.generation) return aborted("stale generation");
  TERN_RETURN_IF_ERROR(fence_locked(job, *r, worker, e));
  if (e.log_offset < 0 || e.log_offset > kMaxLogOffset)
    return invalid_argument("log offset out of range");
  if (e.log_data.empty()) return Status::ok();
  logs_.append(job.id, e.task.rank, e.log_offset + r->log_base, e.log_data);
  return Status::ok();
}

Status CoordinatorCore::fence_locked(const Job& job, const RankInfo& r, const Worker& worker,
                                     const TaskEvent& e) {
  if (e.task.generation >= r.start_generation) return Status::ok();
  // A trainer of a generation the rank was restarted after: its worker was written off (a lost
  // lease, a restarted daemon) and has come back. One line per (worker, job, rank, generation).
  if (fenced_.insert({worker.id, job.id, e.task.rank, e.task.generation}).second) {
    spdlog::warn(
        "job {} rank {}: fenced generation {} from worker {}: the rank restarted at generation "
        "{}; its events and logs are dropped",
        job.id, e.task.rank, e.task.generation, worker.id, r.start_generation);
  }
  return aborted("generation " + std::to_string(e.task.generation) + " of rank " +
                 std::to_string(e.task.rank) + " was written off (restarted at generation " +
                 std::to_string(r.start_generation) + ")");
}

Status CoordinatorCore::finish_job_locked(Job* job, JobState state, const std::string& reason) {
  job->state = state;
  job->reason = reason;
  job->finished_at = clock_->unix_seconds();
  for (RankInfo& r : job->ranks) {
    if (!is_terminal(r.state)) r.state = RankState::kStopped;
  }
  spdlog::info("job {} {}: {}", job->id, job_state_name(state), reason);
  elastic_pending_.erase(job->id);
  nudge_job_locked(*job);
  touch(job);
  return journal_job(*job);
}

}  // namespace tern
