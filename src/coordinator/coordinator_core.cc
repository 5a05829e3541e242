#include "coordinator/coordinator_core.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "coordinator/core_lock.h"
#include "coordinator/journal_records.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

// The largest N of the logs/jobs/j-N directories under `state_dir` (0 when none): jobs whose
// logs exist were handed out, whatever happened to the journal since.
int64_t max_logged_job_seq(const std::string& state_dir) {
  int64_t best = 0;
  std::error_code ec;
  for (fs::directory_iterator it(state_dir + "/logs/jobs", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() < 3 || name.compare(0, 2, "j-") != 0) continue;
    int64_t v = 0;
    auto [ptr, err] = std::from_chars(name.data() + 2, name.data() + name.size(), v);
    if (err == std::errc() && ptr == name.data() + name.size() && v > 0) best = std::max(best, v);
  }
  return best;
}

std::string job_ids_path(const std::string& state_dir) { return state_dir + "/job_ids"; }

int64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_size);
}

}  // namespace

CoordinatorCore::CoordinatorCore(const CoordinatorOptions& options, Clock* clock)
    : options_(options),
      clock_(clock),
      logs_(LogStoreOptions{options.state_dir + "/logs/jobs", options.max_log_bytes_per_job,
                            options.max_log_chunk_bytes}),
      network_(options.network_map) {}

Result<std::unique_ptr<CoordinatorCore>> CoordinatorCore::open(const CoordinatorOptions& options,
                                                               Clock* clock) {
  if (options.state_dir.empty()) return invalid_argument("coordinator: state_dir is empty");
  std::unique_ptr<CoordinatorCore> core(new CoordinatorCore(options, clock));
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<Journal> journal,
                        Journal::open(options.state_dir + "/journal"));
  auto ids = HighWaterMark::open(job_ids_path(options.state_dir));
  if (!ids.is_ok()) {
    return Status(
        ids.status().code(),
        ids.status().message() +
            " (the largest job id ever handed out); the coordinator does not start "
            "without it so that no job id is reused. `tern coordinator --repair` (with "
            "the same --config or --state-dir) rebuilds it from the journal and logs/jobs/");
  }
  std::unique_ptr<HighWaterMark> job_ids = std::move(ids).value();
  // Not shared with any other thread yet: the journal is replayed and the log sizes read
  // without the mutex (no file I/O ever happens under it).
  core->logs_.load();
  TERN_RETURN_IF_ERROR(journal->replay([&](const std::string& p) { return core->replay_record(p); },
                                       &core->replay_stats_));
  if (core->replay_stats_.torn_tail) {
    spdlog::warn(
        "journal {}: dropped a torn last record of {} bytes at byte {} (a crash during an "
        "append that was never acknowledged)",
        journal->path(), core->replay_stats_.torn_bytes, core->replay_stats_.valid_bytes);
  }
  if (core->replay_stats_.version == 1) {
    spdlog::info("journal {}: rewritten in format 2 (sequence-numbered records)", journal->path());
  }
  // Job ids are never reused: the next one is above every id the journal, the high-water mark
  // and the job log directories know of.
  const int64_t highest = std::max({core->next_job_seq_ - 1, static_cast<int64_t>(job_ids->value()),
                                    max_logged_job_seq(options.state_dir)});
  core->next_job_seq_ = highest + 1;
  TERN_RETURN_IF_ERROR(job_ids->advance(static_cast<uint64_t>(highest)));
  core->journal_ = std::make_unique<JournalWriter>(std::move(journal), std::move(job_ids));
  const int64_t now = clock->monotonic_ms();
  for (auto& [id, w] : core->workers_) {
    // A restored worker keeps its session; it is trusted again once it heartbeats. Its daemon
    // may be backing off its reconnects: allow more than one lease before calling it lost.
    w.lease_deadline_ms = now + std::max<int64_t>(3 * options.lease_ms, 10000);
    w.heard = false;
  }
  for (const auto& [id, job] : core->jobs_) {
    if (job.state != JobState::kRunning) continue;
    for (const RankInfo& r : job.ranks) {
      if (r.state == RankState::kUnassigned) core->awaiting_.insert(id);
    }
  }
  // Compaction at start: one record per job and worker.
  if (core->journal_->record_count() > core->jobs_.size() + core->workers_.size()) {
    TERN_RETURN_IF_ERROR(core->compact_journal());
    TERN_RETURN_IF_ERROR(core->journal_->sync());
  }
  spdlog::info("coordinator state {}: {} jobs, {} workers restored from the journal",
               options.state_dir, core->jobs_.size(), core->workers_.size());
  return core;
}

Status CoordinatorCore::replay_record(const std::string& payload) {
  std::optional<Job> job;
  std::optional<Worker> worker;
  TERN_RETURN_IF_ERROR(decode_journal_record(payload, &job, &worker));
  if (job) {
    next_job_seq_ = std::max(next_job_seq_, job->seq + 1);
    jobs_[job->id] = std::move(*job);
  } else {
    workers_[worker->id] = std::move(*worker);
  }
  return Status::ok();
}

Result<CoordinatorRepairReport> CoordinatorCore::repair(const CoordinatorOptions& options,
                                                        int64_t unix_time) {
  if (options.state_dir.empty()) return invalid_argument("coordinator: state_dir is empty");
  CoordinatorRepairReport report;
  int64_t journal_max = 0;
  JournalRepairOptions jo;
  jo.unix_time = unix_time;
  jo.accept = [&](const std::string& payload) {
    std::optional<Job> job;
    std::optional<Worker> worker;
    Status s = decode_journal_record(payload, &job, &worker);
    if (s.is_ok() && job) journal_max = std::max(journal_max, job->seq);
    return s;
  };
  TERN_ASSIGN_OR_RETURN(report.journal, Journal::repair(options.state_dir + "/journal", jo));
  report.job_ids_path = job_ids_path(options.state_dir);
  auto old = HighWaterMark::read(report.job_ids_path);
  int64_t recorded = 0;
  if (old.is_ok()) {
    recorded =
        static_cast<int64_t>(std::min<uint64_t>(*old, std::numeric_limits<int64_t>::max() / 2));
  } else {
    report.job_ids_note = old.status().message();
  }
  report.last_job_seq = std::max({journal_max, recorded, max_logged_job_seq(options.state_dir)});
  if (!old.is_ok() || report.last_job_seq != recorded) {
    TERN_RETURN_IF_ERROR(
        HighWaterMark::reset(report.job_ids_path, static_cast<uint64_t>(report.last_job_seq)));
  }
  return report;
}

Status CoordinatorCore::compact_journal() {
  return journal_->rewrite(compacted_journal_records(jobs_, workers_));
}

Status CoordinatorCore::maybe_compact() {
  size_t live = jobs_.size() + workers_.size();
  if (journal_->record_count() < live + options_.compact_every) return Status::ok();
  return compact_journal();
}

Status CoordinatorCore::journal_job(const Job& job) {
  TERN_RETURN_IF_ERROR(journal_->append(encode_job_record(job)));
  return maybe_compact();
}

Status CoordinatorCore::journal_worker(const Worker& worker) {
  TERN_RETURN_IF_ERROR(journal_->append(encode_worker_record(worker)));
  return maybe_compact();
}

void CoordinatorCore::touch(Job* job) {
  ++job->version;
  changed_.notify_all();
}

// ---------------------------------------------------------------- client API

Result<Job> CoordinatorCore::get_job(const std::string& job_id) const {
  return durable([&]() -> Result<Job> {
    CoreLock lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return not_found("no job '" + job_id + "' (tern jobs lists them)");
    return it->second;
  }());
}

std::vector<Job> CoordinatorCore::list_jobs() const {
  std::vector<Job> out;
  {
    CoreLock lock(mu_);
    for (const auto& [id, j] : jobs_) out.push_back(j);
  }
  std::sort(out.begin(), out.end(), [](const Job& a, const Job& b) { return a.seq < b.seq; });
  shown_when_durable();
  return out;
}

Result<Job> CoordinatorCore::cancel_job(const std::string& job_id, const std::string& reason) {
  return durable([&]() -> Result<Job> {
    CoreLock lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return not_found("no job '" + job_id + "' (tern jobs lists them)");
    Job& job = it->second;
    if (is_terminal(job.state)) {
      return failed_precondition("job " + job_id + " already ended: " + job_state_name(job.state));
    }
    TERN_RETURN_IF_ERROR(finish_job_locked(&job, JobState::kCancelled,
                                           reason.empty() ? "cancelled by user" : reason));
    schedule_locked();
    return job;
  }());
}

Result<Job> CoordinatorCore::wait_job_change(const std::string& job_id, uint64_t after_version,
                                             std::chrono::milliseconds timeout) {
  return durable([&]() -> Result<Job> {
    CoreLock lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return not_found("no job '" + job_id + "' (tern jobs lists them)");
    changed_.wait_for(lock.unique(), timeout, [&] { return it->second.version > after_version; });
    return it->second;
  }());
}

std::vector<Worker> CoordinatorCore::list_workers() const {
  std::vector<Worker> out;
  {
    CoreLock lock(mu_);
    for (const auto& [id, w] : workers_) out.push_back(w);
  }
  shown_when_durable();
  return out;
}

void CoordinatorCore::shown_when_durable() const {
  // A failed journal is reported by every change the coordinator refuses; a listing still
  // shows the tables as they are.
  static_cast<void>(journal_->sync());
}

Result<LogSlice> CoordinatorCore::get_logs(const std::string& job_id, int rank, int64_t offset,
                                           int64_t max_bytes) const {
  bool terminal = false;
  bool settled = false;
  {
    CoreLock lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return not_found("no job '" + job_id + "' (tern jobs lists them)");
    const Job& job = it->second;
    if (rank < 0 || rank >= job.world) {
      return invalid_argument("rank must be in [0, " + std::to_string(job.world) + ") for job " +
                              job_id + ", got " + std::to_string(rank));
    }
    terminal = is_terminal(job.state);
    // No more bytes will come once the trainer's exit was reported, it never started, or the
    // job ended a while ago (its worker may be gone for good).
    const RankInfo* r = rank < static_cast<int>(job.ranks.size()) ? &job.ranks[rank] : nullptr;
    settled =
        !r || r->exited || r->worker_id.empty() || clock_->unix_seconds() - job.finished_at > 10;
  }
  // The chunks queued before the state read above are in the file once this returns (a
  // report_events that queued them may not have written them yet), so `complete` never cuts
  // the last bytes of a log off.
  logs_.flush();
  if (offset < 0) return invalid_argument("offset must be >= 0");
  if (max_bytes <= 0) max_bytes = 1 << 20;
  LogSlice slice;
  std::string path = logs_.path(job_id, rank);
  int64_t size = file_size(path);
  slice.next_offset = std::min(offset, size);
  if (offset < size) {
    std::ifstream in(path, std::ios::binary);
    in.seekg(offset);
    slice.data.resize(static_cast<size_t>(std::min(max_bytes, size - offset)));
    in.read(slice.data.data(), static_cast<std::streamsize>(slice.data.size()));
    slice.data.resize(static_cast<size_t>(in.gcount()));
    slice.next_offset = offset + static_cast<int64_t>(slice.data.size());
  }
  slice.complete = terminal && settled && slice.next_offset >= size;
  return slice;
}

}  // namespace tern
