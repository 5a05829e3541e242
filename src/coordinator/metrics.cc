#include "coordinator/metrics.h"

#include <algorithm>

namespace tern {
namespace {

// Mean of a per-rank metric over the ranks that reported it; `fallback` when none did.
double rank_mean(const Job& job, const std::string& key, double fallback) {
  double sum = 0;
  int n = 0;
  for (const RankInfo& r : job.ranks) {
    auto it = r.metrics.find(key);
    if (it == r.metrics.end()) continue;
    sum += it->second;
    ++n;
  }
  return n ? sum / n : fallback;
}

double rank_sum(const Job& job, const std::string& key) {
  double sum = 0;
  for (const RankInfo& r : job.ranks) {
    auto it = r.metrics.find(key);
    if (it != r.metrics.end()) sum += it->second;
  }
  return sum;
}

// The worker plane's counters (what was dropped, throttled, refused) and the journal's.
void render_plane_metrics(const CoordinatorCore& core, PrometheusWriter& w) {
  const WorkerPlaneStats plane = core.worker_plane_stats();
  w.family("tern_worker_events_dropped_total", "counter",
           "Worker events not applied: stale, unknown task, or a task not assigned to the "
           "reporting worker.");
  w.sample("tern_worker_events_dropped_total", {}, static_cast<double>(plane.events_dropped));
  w.family("tern_worker_calls_throttled_total", "counter",
           "Heartbeat/ReportEvents calls refused by a worker's rate limit.");
  w.sample("tern_worker_calls_throttled_total", {}, static_cast<double>(plane.calls_throttled));
  w.family("tern_log_bytes_dropped_total", "counter",
           "Trainer log bytes dropped by the per-job quota or the per-chunk cap.");
  w.sample("tern_log_bytes_dropped_total", {}, static_cast<double>(plane.log_bytes_dropped));
  w.family("tern_worker_registrations_refused_total", "counter",
           "Registrations of a live worker's name without its session.");
  w.sample("tern_worker_registrations_refused_total", {},
           static_cast<double>(plane.registrations_refused));
  const JournalWriterStats journal = core.journal_stats();
  w.family("tern_journal_commits_total", "counter",
           "Batches of journal records written with one fdatasync (group commit).");
  w.sample("tern_journal_commits_total", {}, static_cast<double>(journal.commits));
  w.family("tern_journal_records_total", "counter", "Journal records appended since start.");
  w.sample("tern_journal_records_total", {}, static_cast<double>(journal.records_written));
  w.family("tern_journal_healthy", "gauge",
           "1 while every journal commit succeeded; 0 once one failed (restart the coordinator).");
  w.sample("tern_journal_healthy", {}, core.journal_health().is_ok() ? 1.0 : 0.0);
}

}  // namespace

std::string render_coordinator_metrics(const CoordinatorCore& core, const RpcMetrics* rpc) {
  const std::vector<Job> jobs = core.list_jobs();
  const std::vector<Worker> workers = core.list_workers();
  PrometheusWriter w;

  w.family("tern_jobs", "gauge", "Jobs known to the coordinator, by state.");
  for (JobState s : {JobState::kPending, JobState::kRunning, JobState::kSucceeded,
                     JobState::kFailed, JobState::kCancelled}) {
    auto n = std::count_if(jobs.begin(), jobs.end(), [s](const Job& j) { return j.state == s; });
    w.sample("tern_jobs", {{"state", job_state_name(s)}}, static_cast<double>(n));
  }
  w.family("tern_workers", "gauge", "Worker daemons, by state.");
  for (WorkerState s : {WorkerState::kReady, WorkerState::kLost}) {
    auto n = std::count_if(workers.begin(), workers.end(),
                           [s](const Worker& x) { return x.state == s; });
    w.sample("tern_workers", {{"state", s == WorkerState::kReady ? "READY" : "LOST"}},
             static_cast<double>(n));
  }
  int64_t slots = 0;
  for (const Worker& x : workers) slots += x.state == WorkerState::kReady ? x.slots : 0;
  w.family("tern_worker_slots", "gauge", "Rank slots on READY workers.");
  w.sample("tern_worker_slots", {}, static_cast<double>(slots));
  render_plane_metrics(core, w);

  // Per-job series for running jobs only: finished ones would pile up label sets forever.
  std::vector<const Job*> running;
  for (const Job& j : jobs) {
    if (j.state == JobState::kRunning) running.push_back(&j);
  }
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const Job&);
  };
  static const Family kFamilies[] = {
      {"tern_job_step", "gauge", "Optimizer steps done (slowest rank).",
       [](const Job& j) { return static_cast<double>(j.step()); }},
      {"tern_job_total_steps", "gauge", "Optimizer steps the job will run.",
       [](const Job& j) { return static_cast<double>(j.total_steps()); }},
      {"tern_job_samples_per_second", "gauge", "Training throughput, summed over ranks.",
       [](const Job& j) { return j.samples_per_s(); }},
      {"tern_job_loss", "gauge", "Training loss, mean over the ranks that reported.",
       [](const Job& j) { return j.loss(); }},
      {"tern_job_bytes_sent", "gauge", "Bytes sent by the job's collectives, summed over ranks.",
       [](const Job& j) {
         double b = 0;
         for (const RankInfo& r : j.ranks) b += r.bytes_sent;
         return b;
       }},
      {"tern_job_compression_ratio", "gauge",
       "Dense bytes / bytes sent (1 without compression), mean over ranks.",
       [](const Job& j) { return rank_mean(j, "compression_ratio", 1.0); }},
      {"tern_job_staleness_steps", "gauge",
       "Mean staleness of applied updates in steps (delayed/sparse sync; 0 for SSGD).",
       [](const Job& j) { return rank_mean(j, "staleness", 0.0); }},
      {"tern_job_wait_seconds", "gauge", "Time blocked on communication, mean over ranks.",
       [](const Job& j) { return rank_mean(j, "wait_s", 0.0); }},
      {"tern_job_generation", "gauge", "Placement generation (bumped on every regroup).",
       [](const Job& j) { return static_cast<double>(j.generation); }},
      {"tern_job_recoveries", "gauge",
       "Recoveries: regroups after a lost rank (recovery.mode partial | full).",
       [](const Job& j) { return static_cast<double>(j.recoveries); }},
      {"tern_job_straggler_drops", "gauge",
       "Contributions dropped by straggler mitigation, summed over ranks (0 until reported).",
       [](const Job& j) { return rank_sum(j, "straggler_drops"); }},
  };
  for (const Family& f : kFamilies) {
    w.family(f.name, f.type, f.help);
    for (const Job* j : running) w.sample(f.name, {{"job", j->id}, {"name", j->name}}, f.value(*j));
  }
  if (rpc) rpc->write(&w);
  return w.str();
}

}  // namespace tern
