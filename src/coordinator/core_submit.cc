// CoordinatorCore: job submission (`tern submit`, `tern submit --resume`).
#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/job_spec.h"
#include "common/utf8.h"
#include "coordinator/coordinator_core.h"
#include "coordinator/core_lock.h"
#include "coordinator/journal_records.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

// `s` as a YAML double-quoted scalar (an override's value that must stay one string).
std::string yaml_quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// What submit_job checks before it takes the lock: UTF-8, no spec with --resume, the size.
Status check_submission(const std::string& spec_yaml, const std::vector<std::string>& overrides,
                        const std::string& source_name, const std::string& resume_job,
                        const std::string& name, int64_t max_spec_bytes) {
  // Names and text end up in protobuf strings (replies, the journal, StartTask): UTF-8 only.
  // The spec text and overrides are checked by the YAML loader, naming the first bad byte.
  if (first_invalid_utf8(source_name) != std::string::npos) {
    return invalid_argument("source_name is not valid UTF-8");
  }
  if (first_invalid_utf8(resume_job) != std::string::npos) {
    return invalid_argument("resume_job is not valid UTF-8");
  }
  if (!resume_job.empty() && !spec_yaml.empty()) {
    return invalid_argument(
        "--resume " + printable(resume_job) +
        " starts from that job's own spec: send no spec with it (change fields with --set)");
  }
  size_t size = spec_yaml.size();
  for (const auto& o : overrides) size += o.size();
  if (static_cast<int64_t>(size) > max_spec_bytes) {
    return invalid_argument(name + ": the job spec is " + std::to_string(size) +
                            " bytes; the coordinator accepts at most " +
                            std::to_string(max_spec_bytes) + " (coordinator.max_spec_bytes)");
  }
  return Status::ok();
}

}  // namespace

Result<Job> CoordinatorCore::submit_job(const std::string& spec_yaml,
                                        const std::vector<std::string>& overrides,
                                        const std::string& source_name,
                                        const std::string& resume_job) {
  std::string name = source_name.empty() ? "<submitted spec>" : source_name;
  TERN_RETURN_IF_ERROR(check_submission(spec_yaml, overrides, source_name, resume_job, name,
                                        options_.max_spec_bytes));
  // Under the lock from here: the job's id (its checkpoint directory's name) is the next one.
  return durable([&]() -> Result<Job> {
    CoreLock lock(mu_);
    const std::string id = "j-" + std::to_string(next_job_seq_);
    Job job;  // resumed_job / resumed_step of the new job
    TERN_ASSIGN_OR_RETURN(LoadedJobSpec loaded,
                          load_submission_locked(id, spec_yaml, overrides, resume_job,
                                                 !source_name.empty(), &name, &job));
    int64_t pending = 0;
    for (const auto& [jid, j] : jobs_) pending += j.state == JobState::kPending;
    if (pending >= options_.max_queued_jobs) {
      return resource_exhausted("the queue is full: " + std::to_string(pending) +
                                " jobs are pending (coordinator.max_queued_jobs)");
    }
    // The id is durable as handed out before the job is acknowledged (never reused, even if
    // the journal is lost); a failure below burns it.
    journal_->advance_job_ids(static_cast<uint64_t>(next_job_seq_));
    job.seq = next_job_seq_;
    job.id = id;
    job.name = loaded.spec.name;
    job.spec_yaml = loaded.yaml;
    job.world = static_cast<int>(loaded.spec.workers);
    job.placement = loaded.spec.placement;
    job.recovery_mode = loaded.spec.recovery.mode;
    job.min_workers = loaded.spec.recovery.min_workers;
    job.max_recoveries = loaded.spec.recovery.max_recoveries;
    job.threads = loaded.spec.train.threads;
    job.created_at = clock_->unix_seconds();
    job.reason = "queued";
    const std::string& dir = loaded.spec.recovery.dir;
    if (!options_.checkpoint_root.empty() && fs::path(dir).is_absolute() &&
        path_is_under(dir, options_.checkpoint_root)) {
      job.checkpoint_dir = fs::path(dir).lexically_normal().string();
    }
    // In the table before it is journaled: a compaction triggered by this append must see it.
    Job& stored = jobs_[id] = std::move(job);
    ++next_job_seq_;
    Status s = journal_job(stored);
    if (!s.is_ok()) {
      jobs_.erase(id);
      return s;
    }
    if (stored.resumed_job.empty()) {
      spdlog::info(
          "job {} ({}) submitted: {} ranks, placement {}{}", id, stored.name, stored.world,
          name_of(stored.placement),
          stored.checkpoint_dir.empty() ? "" : ", checkpoints in " + stored.checkpoint_dir);
    } else {
      spdlog::info(
          "job {} ({}) submitted: {} ranks, placement {}, resuming job {} from its committed step "
          "{}",
          id, stored.name, stored.world, name_of(stored.placement), stored.resumed_job,
          stored.resumed_step);
    }
    touch(&stored);
    schedule_locked();
    return jobs_.at(id);
  }());
}

Result<LoadedJobSpec> CoordinatorCore::load_submission_locked(
    const std::string& id, const std::string& spec_yaml, const std::vector<std::string>& overrides,
    const std::string& resume_job, bool named, std::string* name, Job* resumed) {
  std::string text = spec_yaml;
  std::vector<std::string> all_overrides = overrides;
  if (!resume_job.empty()) {
    TERN_ASSIGN_OR_RETURN(std::vector<std::string> extra,
                          resume_overrides_locked(resume_job, id, overrides, resumed));
    text = jobs_.at(resume_job).spec_yaml;
    if (!named) *name = "the spec of " + resume_job;
    all_overrides.insert(all_overrides.end(), extra.begin(), extra.end());
  }
  auto loaded = load_job_spec_text(text, *name, all_overrides);
  if (loaded.is_ok() && resume_job.empty() && !options_.checkpoint_root.empty() &&
      loaded->spec.recovery.dir.empty()) {
    // Checkpoints go to the shared root, where any worker (of this or another cluster) finds
    // them; the spec says so, so that the journaled spec is what the trainers run.
    all_overrides.push_back("recovery.dir=" + yaml_quoted(options_.checkpoint_root + "/" + id));
    loaded = load_job_spec_text(text, *name, all_overrides);
  }
  if (!loaded.is_ok()) {
    const Status& s = loaded.status();
    return s.code() == StatusCode::kInvalidArgument ? s : invalid_argument(s.message());
  }
  if (!options_.paths.write_roots.empty() || !options_.paths.read_roots.empty() ||
      !options_.checkpoint_root.empty()) {
    PathPolicy policy = options_.paths;
    if (!options_.checkpoint_root.empty()) {
      policy.write_roots.push_back(options_.checkpoint_root + "/" + id);
      policy.read_roots.push_back(options_.checkpoint_root);
    }
    Status paths = check_job_paths(loaded->spec, policy);
    if (!paths.is_ok()) return invalid_argument(*name + ": " + paths.message());
  }
  return std::move(loaded).value();
}

Result<std::vector<std::string>> CoordinatorCore::resume_overrides_locked(
    const std::string& old_id, const std::string& new_id,
    const std::vector<std::string>& user_overrides, Job* resumed) {
  auto it = jobs_.find(old_id);
  if (it == jobs_.end()) {
    return not_found("--resume: no job '" + printable(old_id) + "' (tern jobs lists them)");
  }
  const Job& old = it->second;
  if (!is_terminal(old.state)) {
    return failed_precondition(
        "--resume: job " + old_id + " is " + job_state_name(old.state) +
        "; two jobs must not train from one checkpoint directory: cancel it first (tern cancel " +
        old_id + ")");
  }
  if (options_.checkpoint_root.empty()) {
    return failed_precondition(
        "--resume: this cluster has no checkpoint_root, so no job's checkpoints are where "
        "every worker can read them; set checkpoint_root in the cluster file (a directory "
        "every worker mounts at the same path)");
  }
  if (old.checkpoint_dir.empty()) {
    return failed_precondition(
        "--resume: job " + old_id +
        " did not checkpoint under a shared checkpoint_root (its trainers kept checkpoints in "
        "their own job directories, or in its spec's recovery.dir): no other worker can read "
        "them");
  }
  if (!path_is_under(old.checkpoint_dir, options_.checkpoint_root)) {
    return failed_precondition(
        "--resume: job " + old_id + " checkpointed into " + old.checkpoint_dir +
        ", which is not under this cluster's checkpoint_root " + options_.checkpoint_root);
  }
  if (old.checkpoint_step < 0) {
    return failed_precondition(
        "--resume: job " + old_id + " has no committed checkpoint in " + old.checkpoint_dir +
        " (it ended before its first; recovery.checkpoint_every sets how often a job saves)");
  }
  for (const auto& o : user_overrides) {
    const std::string key = o.substr(0, o.find('='));
    if (key == "recovery.dir" || key == "recovery.resume_from" || key == "recovery.resume_step") {
      return invalid_argument(
          "--resume: --set " + key +
          " is set by --resume (the new job checkpoints under checkpoint_root and resumes from "
          "job " +
          old_id + "'s directory)");
    }
  }
  resumed->resumed_job = old_id;
  resumed->resumed_step = old.checkpoint_step;
  // From the journaled step exactly (or the newest complete one before it, should that step be
  // damaged): a later step on disk was never reported committed.
  return std::vector<std::string>{
      "recovery.dir=" + yaml_quoted(options_.checkpoint_root + "/" + new_id),
      "recovery.resume_from=" + yaml_quoted(old.checkpoint_dir),
      "recovery.resume_step=" + std::to_string(old.checkpoint_step)};
}

}  // namespace tern
