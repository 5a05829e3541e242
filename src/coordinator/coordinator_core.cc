#include "coordinator/coordinator_core.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "common/host_name.h"
#include "common/job_spec.h"
#include "common/json_fields.h"
#include "common/trainer_protocol.h"
#include "common/utf8.h"
#include "coordinator/scheduler.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// --- journal encoding: one JSON object per record, the latest record of an id wins ---

// The finite numbers of the object at `key` (others dropped: null, text, NaN).
std::map<std::string, double> number_map(const json& j, const char* key) {
  std::map<std::string, double> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return out;
  for (auto m = it->begin(); m != it->end(); ++m) {
    if (m.value().is_number() && std::isfinite(m.value().get<double>()))
      out[m.key()] = m.value().get<double>();
  }
  return out;
}

json rank_to_json(const RankInfo& r) {
  json j{{"rank", r.rank},
         {"worker", r.worker_id},
         {"region", r.region},
         {"host", r.host},
         {"state", static_cast<int>(r.state)},
         {"step", r.step},
         {"total_steps", r.total_steps},
         {"epoch", r.epoch},
         {"loss", r.loss},
         {"samples_per_s", r.samples_per_s},
         {"bytes_sent", r.bytes_sent},
         {"metrics", r.metrics},
         {"exit_code", r.exit_code},
         {"exited", r.exited},
         {"error", r.error},
         {"updated_at", r.updated_at},
         {"generation", r.generation}};
  if (r.test_accuracy) j["test_accuracy"] = *r.test_accuracy;
  if (!r.lost.empty()) j["lost"] = r.lost;
  if (!r.lost_from.empty()) j["lost_from"] = r.lost_from;
  if (r.log_base != 0) j["log_base"] = r.log_base;
  if (r.start_generation != 0) j["start_generation"] = r.start_generation;
  if (!r.member) j["member"] = false;
  if (r.ready) j["ready"] = true;
  return j;
}

RankInfo rank_from_json(const json& j) {
  RankInfo r;
  r.rank = j.value("rank", 0);
  r.worker_id = j.value("worker", "");
  r.region = j.value("region", "");
  r.host = j.value("host", "");
  r.state = static_cast<RankState>(j.value("state", 0));
  r.step = j.value("step", int64_t{0});
  r.total_steps = j.value("total_steps", int64_t{0});
  // Numbers written by an older coordinator may be null (a NaN it took from a worker).
  r.epoch = json_number(j, "epoch");
  r.loss = json_number(j, "loss");
  r.samples_per_s = json_number(j, "samples_per_s");
  r.bytes_sent = json_number(j, "bytes_sent");
  r.metrics = number_map(j, "metrics");
  r.exit_code = j.value("exit_code", 0);
  r.exited = j.value("exited", false);
  r.error = j.value("error", "");
  r.updated_at = json_number(j, "updated_at");
  r.generation = j.value("generation", int64_t{-1});  // -1: a journal from before regroups
  r.lost = j.value("lost", "");
  r.lost_from = j.value("lost_from", "");
  r.log_base = j.value("log_base", int64_t{0});
  r.start_generation = j.value("start_generation", int64_t{0});
  r.member = j.value("member", true);
  r.ready = j.value("ready", false);
  if (j.contains("test_accuracy") && j["test_accuracy"].is_number())
    r.test_accuracy = json_number(j, "test_accuracy");
  return r;
}

std::string encode_job(const Job& job) {
  json ranks = json::array();
  for (const auto& r : job.ranks) ranks.push_back(rank_to_json(r));
  json j{{"type", "job"},
         {"id", job.id},
         {"seq", job.seq},
         {"name", job.name},
         {"spec", job.spec_yaml},
         {"world", job.world},
         {"placement", job.placement},
         {"state", static_cast<int>(job.state)},
         {"reason", job.reason},
         {"generation", job.generation},
         {"master", job.master_addr},
         {"recovery_mode", job.recovery_mode},
         {"max_recoveries", job.max_recoveries},
         {"recoveries", job.recoveries},
         {"threads", job.threads},
         {"min_workers", job.min_workers},
         {"timelines", job.timelines},
         {"ranks", ranks},
         {"summary", job.summary},
         {"created_at", job.created_at},
         {"started_at", job.started_at},
         {"finished_at", job.finished_at}};
  if (job.test_accuracy) j["test_accuracy"] = *job.test_accuracy;
  if (!job.checkpoint_dir.empty()) j["checkpoint_dir"] = job.checkpoint_dir;
  if (job.checkpoint_step >= 0) j["checkpoint_step"] = job.checkpoint_step;
  if (!job.resumed_job.empty()) {
    j["resumed_job"] = job.resumed_job;
    j["resumed_step"] = job.resumed_step;
  }
  return j.dump();
}

Job decode_job(const json& j) {
  Job job;
  job.id = j.at("id").get<std::string>();
  job.seq = j.value("seq", int64_t{0});
  job.name = j.value("name", "");
  job.spec_yaml = j.value("spec", "");
  job.world = j.value("world", 1);
  job.placement = j.value("placement", "any");
  job.state = static_cast<JobState>(j.value("state", 0));
  job.reason = j.value("reason", "");
  job.generation = j.value("generation", int64_t{0});
  job.master_addr = j.value("master", "");
  job.recovery_mode = j.value("recovery_mode", "none");
  job.max_recoveries = j.value("max_recoveries", int64_t{0});
  job.recoveries = j.value("recoveries", int64_t{0});
  job.threads = j.value("threads", int64_t{1});
  job.min_workers = j.value("min_workers", int64_t{0});
  if (auto t = j.find("timelines"); t != j.end() && t->is_array()) {
    for (const auto& one : *t) {
      if (one.is_object()) job.timelines.push_back(number_map(json{{"m", one}}, "m"));
    }
  }
  for (const auto& r : j.value("ranks", json::array())) {
    job.ranks.push_back(rank_from_json(r));
    if (job.ranks.back().generation < 0) job.ranks.back().generation = job.generation;
  }
  job.summary = number_map(j, "summary");
  job.created_at = j.value("created_at", 0.0);
  job.started_at = j.value("started_at", 0.0);
  job.finished_at = j.value("finished_at", 0.0);
  if (j.contains("test_accuracy") && j["test_accuracy"].is_number())
    job.test_accuracy = json_number(j, "test_accuracy");
  // Checkpoint fields (issue 22; absent in older journals). A wrong type throws (the record is
  // then reported, never dropped); values no coordinator writes are refused the same way.
  const auto integer_field = [&](const char* key) -> int64_t {
    auto it = j.find(key);
    if (it == j.end()) return -1;
    if (!it->is_number_integer()) throw std::out_of_range(std::string(key) + " is not an integer");
    return it->get<int64_t>();
  };
  job.checkpoint_dir = j.value("checkpoint_dir", std::string());
  job.checkpoint_step = integer_field("checkpoint_step");
  job.resumed_job = j.value("resumed_job", std::string());
  job.resumed_step = integer_field("resumed_step");
  if (job.checkpoint_step < -1 || job.resumed_step < -1) {
    throw std::out_of_range("job " + job.id + ": a checkpoint step below -1 (" +
                            std::to_string(std::min(job.checkpoint_step, job.resumed_step)) + ")");
  }
  if (!job.checkpoint_dir.empty() && !fs::path(job.checkpoint_dir).is_absolute()) {
    throw std::out_of_range("job " + job.id + ": checkpoint_dir '" + job.checkpoint_dir.substr(0, 80) +
                            "' is not absolute");
  }
  return job;
}

std::string encode_worker(const Worker& w) {
  return json{{"type", "worker"},
              {"id", w.id},
              {"host", w.host},
              {"region", w.region},
              {"slots", w.slots},
              {"cores", w.cores},
              {"session", w.session},
              {"state", static_cast<int>(w.state)},
              {"registered_at", w.registered_at}}
      .dump();
}

Worker decode_worker(const json& j) {
  Worker w;
  w.id = j.at("id").get<std::string>();
  w.host = j.value("host", "");
  w.region = j.value("region", "");
  w.slots = j.value("slots", 1);
  w.cores = j.value("cores", 0);
  w.session = j.value("session", uint64_t{0});
  w.state = static_cast<WorkerState>(j.value("state", 0));
  w.registered_at = j.value("registered_at", 0.0);
  return w;
}

// `s` as a YAML double-quoted scalar (an override's value that must stay one string).
std::string yaml_quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A journal payload as it may appear in an error message: at most 80 bytes, printable.
std::string printable(const std::string& payload) {
  std::string out;
  for (char c : payload.substr(0, 80)) out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
  if (payload.size() > 80) out += "...";
  return out;
}

// Decodes one journal record; `job` or `worker` is set by its type. Never throws: a record
// with a valid checksum can still be something else (a false match when repair resyncs).
Status decode_record(const std::string& payload, std::optional<Job>* job,
                     std::optional<Worker>* worker) {
  json j = json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string() ||
      !j.contains("type") || !j["type"].is_string()) {
    return data_loss("a record with a valid checksum is not a journal entry (" +
                     std::to_string(payload.size()) + " bytes: '" + printable(payload) + "')");
  }
  const std::string type = j["type"].get<std::string>();
  try {
    if (type == "job") {
      *job = decode_job(j);
    } else if (type == "worker") {
      *worker = decode_worker(j);
    } else {
      return data_loss("unknown record type '" + printable(type) + "'");
    }
  } catch (const json::exception& e) {
    return data_loss("a " + type + " record that cannot be read (" + e.what() + ")");
  } catch (const std::out_of_range& e) {
    return data_loss("a " + type + " record that cannot be read (" + e.what() + ")");
  }
  return Status::ok();
}

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

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  }
  return s != "." && s != "..";
}

constexpr int kMaxSlots = 4096;
constexpr size_t kMaxSparePorts = 64;
constexpr int64_t kMaxLogOffset = int64_t{1} << 50;

Status check_ports(const std::vector<int>& ports) {
  if (ports.size() > kMaxSparePorts) {
    return invalid_argument("spare_ports lists " + std::to_string(ports.size()) +
                            " ports; at most " + std::to_string(kMaxSparePorts));
  }
  for (int p : ports) {
    if (p < 1 || p > 65535)
      return invalid_argument("spare_ports must be in [1, 65535], got " + std::to_string(p));
  }
  return Status::ok();
}

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

double finite_or(double v, double fallback) { return std::isfinite(v) ? v : fallback; }

// `offers` with no free slot on workers that reported fewer cores than `threads` (a worker
// that reported none is not checked).
std::vector<SlotOffer> offers_with_cores(std::vector<SlotOffer> offers,
                                         const std::vector<Worker*>& workers, int64_t threads) {
  for (size_t i = 0; i < offers.size(); ++i) {
    if (workers[i]->cores > 0 && workers[i]->cores < threads) offers[i].free_slots = 0;
  }
  return offers;
}

// Why `job` can run on none of the READY `workers` because of train.threads ("" when one of
// them has the cores, reported none, or there is no worker to judge by).
std::string threads_never_fit(const Job& job, const std::vector<Worker*>& workers) {
  if (workers.empty()) return "";
  const Worker* largest = nullptr;
  for (const Worker* w : workers) {
    if (w->cores == 0 || w->cores >= job.threads) return "";
    if (!largest || w->cores > largest->cores) largest = w;
  }
  return "train.threads " + std::to_string(job.threads) + " is more than the cores of every worker (the largest, " +
         largest->id + ", has " + std::to_string(largest->cores) +
         "): a trainer would starve its worker; lower train.threads";
}

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

// The end of a failure reason when recovery is on but used up ("" for recovery.mode none).
std::string no_regroup_left(const Job& job) {
  if (job.recovery_mode == "none") return "";
  return "; no regroup left (" + std::to_string(job.recoveries) + " of recovery.max_recoveries " +
         std::to_string(job.max_recoveries) + " used)";
}

// Tells a survivor's daemon to move task `t` (an older generation) to the job's current one.
TaskCommand regroup_command(const Job& job, const TaskKey& t) {
  TaskCommand c;
  c.kind = TaskCommand::Kind::kRegroup;
  c.task = t;
  c.generation = job.generation;
  c.world = job.world;
  c.master_addr = job.master_addr;
  c.rollback = job.recovery_mode == "full";
  if (job.elastic()) {
    c.members = job.members();
    c.world = static_cast<int>(c.members.size());
  }
  return c;
}

// The first member of the job's group (its summary and evaluation speak for the job).
int first_member(const Job& job) {
  for (const RankInfo& r : job.ranks) {
    if (r.member) return r.rank;
  }
  return 0;
}

constexpr size_t kMaxTimelines = 32;

}  // namespace

CoordinatorCore::CoordinatorCore(const CoordinatorOptions& options, Clock* clock)
    : options_(options), clock_(clock) {}

Result<std::unique_ptr<CoordinatorCore>> CoordinatorCore::open(const CoordinatorOptions& options,
                                                               Clock* clock) {
  if (options.state_dir.empty()) return invalid_argument("coordinator: state_dir is empty");
  std::unique_ptr<CoordinatorCore> core(new CoordinatorCore(options, clock));
  TERN_ASSIGN_OR_RETURN(core->journal_, Journal::open(options.state_dir + "/journal"));
  auto ids = HighWaterMark::open(job_ids_path(options.state_dir));
  if (!ids.is_ok()) {
    return Status(
        ids.status().code(),
        ids.status().message() +
            " (the largest job id ever handed out); the coordinator does not start "
            "without it so that no job id is reused. `tern coordinator --repair` (with "
            "the same --config or --state-dir) rebuilds it from the journal and logs/jobs/");
  }
  core->job_ids_ = std::move(ids).value();
  std::lock_guard<std::mutex> lock(core->mu_);
  TERN_RETURN_IF_ERROR(core->journal_->replay(
      [&](const std::string& p) { return core->replay_record(p); }, &core->replay_stats_));
  if (core->replay_stats_.torn_tail) {
    spdlog::warn(
        "journal {}: dropped a torn last record of {} bytes at byte {} (a crash during an "
        "append that was never acknowledged)",
        core->journal_->path(), core->replay_stats_.torn_bytes, core->replay_stats_.valid_bytes);
  }
  if (core->replay_stats_.version == 1) {
    spdlog::info("journal {}: rewritten in format 2 (sequence-numbered records)",
                 core->journal_->path());
  }
  // Job ids are never reused: the next one is above every id the journal, the high-water mark
  // and the job log directories know of.
  const int64_t highest =
      std::max({core->next_job_seq_ - 1, static_cast<int64_t>(core->job_ids_->value()),
                max_logged_job_seq(options.state_dir)});
  core->next_job_seq_ = highest + 1;
  TERN_RETURN_IF_ERROR(core->job_ids_->advance(static_cast<uint64_t>(highest)));
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
    std::vector<std::string> live;
    for (const auto& [id, w] : core->workers_) live.push_back(encode_worker(w));
    std::vector<const Job*> by_seq;
    for (const auto& [id, j] : core->jobs_) by_seq.push_back(&j);
    std::sort(by_seq.begin(), by_seq.end(),
              [](const Job* a, const Job* b) { return a->seq < b->seq; });
    for (const Job* j : by_seq) live.push_back(encode_job(*j));
    TERN_RETURN_IF_ERROR(core->journal_->rewrite(live));
  }
  spdlog::info("coordinator state {}: {} jobs, {} workers restored from the journal",
               options.state_dir, core->jobs_.size(), core->workers_.size());
  return core;
}

Status CoordinatorCore::replay_record(const std::string& payload) {
  std::optional<Job> job;
  std::optional<Worker> worker;
  TERN_RETURN_IF_ERROR(decode_record(payload, &job, &worker));
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
    Status s = decode_record(payload, &job, &worker);
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

Status CoordinatorCore::maybe_compact() {
  size_t live = jobs_.size() + workers_.size();
  if (journal_->record_count() < live + options_.compact_every) return Status::ok();
  std::vector<std::string> records;
  for (const auto& [id, w] : workers_) records.push_back(encode_worker(w));
  std::vector<const Job*> by_seq;
  for (const auto& [id, j] : jobs_) by_seq.push_back(&j);
  std::sort(by_seq.begin(), by_seq.end(),
            [](const Job* a, const Job* b) { return a->seq < b->seq; });
  for (const Job* j : by_seq) records.push_back(encode_job(*j));
  spdlog::info("compacting journal: {} records -> {}", journal_->record_count(), records.size());
  return journal_->rewrite(records);
}

Status CoordinatorCore::journal_job(const Job& job) {
  TERN_RETURN_IF_ERROR(journal_->append(encode_job(job)));
  return maybe_compact();
}

Status CoordinatorCore::journal_worker(const Worker& worker) {
  TERN_RETURN_IF_ERROR(journal_->append(encode_worker(worker)));
  return maybe_compact();
}

void CoordinatorCore::touch(Job* job) {
  ++job->version;
  changed_.notify_all();
}

// ---------------------------------------------------------------- client API

Result<Job> CoordinatorCore::submit_job(const std::string& spec_yaml,
                                        const std::vector<std::string>& overrides,
                                        const std::string& source_name,
                                        const std::string& resume_job) {
  // Names and text end up in protobuf strings (replies, the journal, StartTask): UTF-8 only.
  // The spec text and overrides are checked by the YAML loader, naming the first bad byte.
  if (first_invalid_utf8(source_name) != std::string::npos) {
    return invalid_argument("source_name is not valid UTF-8");
  }
  if (first_invalid_utf8(resume_job) != std::string::npos) {
    return invalid_argument("resume_job is not valid UTF-8");
  }
  if (!resume_job.empty() && !spec_yaml.empty()) {
    return invalid_argument("--resume " + printable(resume_job) +
                            " starts from that job's own spec: send no spec with it (change fields with --set)");
  }
  std::string name = source_name.empty() ? "<submitted spec>" : source_name;
  size_t size = spec_yaml.size();
  for (const auto& o : overrides) size += o.size();
  if (static_cast<int64_t>(size) > options_.max_spec_bytes) {
    return invalid_argument(name + ": the job spec is " + std::to_string(size) +
                            " bytes; the coordinator accepts at most " +
                            std::to_string(options_.max_spec_bytes) +
                            " (coordinator.max_spec_bytes)");
  }
  // Under the lock from here: the job's id (its checkpoint directory's name) is the next one.
  std::lock_guard<std::mutex> lock(mu_);
  const std::string id = "j-" + std::to_string(next_job_seq_);
  std::string text = spec_yaml;
  std::vector<std::string> all_overrides = overrides;
  Job resumed;  // resumed_job / resumed_step of the new job
  if (!resume_job.empty()) {
    TERN_ASSIGN_OR_RETURN(std::vector<std::string> extra,
                          resume_overrides_locked(resume_job, id, overrides, &resumed));
    text = jobs_.at(resume_job).spec_yaml;
    if (source_name.empty()) name = "the spec of " + resume_job;
    all_overrides.insert(all_overrides.end(), extra.begin(), extra.end());
  }
  auto loaded = load_job_spec_text(text, name, all_overrides);
  if (loaded.is_ok() && resume_job.empty() && !options_.checkpoint_root.empty() &&
      loaded->spec.recovery.dir.empty()) {
    // Checkpoints go to the shared root, where any worker (of this or another cluster) finds
    // them; the spec says so, so that the journaled spec is what the trainers run.
    all_overrides.push_back("recovery.dir=" + yaml_quoted(options_.checkpoint_root + "/" + id));
    loaded = load_job_spec_text(text, name, all_overrides);
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
    if (!paths.is_ok()) return invalid_argument(name + ": " + paths.message());
  }
  int64_t pending = 0;
  for (const auto& [jid, j] : jobs_) pending += j.state == JobState::kPending;
  if (pending >= options_.max_queued_jobs) {
    return resource_exhausted("the queue is full: " + std::to_string(pending) +
                              " jobs are pending (coordinator.max_queued_jobs)");
  }
  // The id is durable as handed out before the job is acknowledged (never reused, even if
  // the journal is lost); a failure below burns it.
  Status reserved = job_ids_->advance(static_cast<uint64_t>(next_job_seq_));
  if (!reserved.is_ok()) return reserved;
  Job job;
  job.seq = next_job_seq_;
  job.id = id;
  job.name = loaded->spec.name;
  job.spec_yaml = loaded->yaml;
  job.world = static_cast<int>(loaded->spec.workers);
  job.placement = loaded->spec.placement;
  job.recovery_mode = loaded->spec.recovery.mode;
  job.min_workers = loaded->spec.recovery.min_workers;
  job.max_recoveries = loaded->spec.recovery.max_recoveries;
  job.threads = loaded->spec.train.threads;
  job.created_at = clock_->unix_seconds();
  job.reason = "queued";
  const std::string& dir = loaded->spec.recovery.dir;
  if (!options_.checkpoint_root.empty() && fs::path(dir).is_absolute() &&
      path_is_under(dir, options_.checkpoint_root)) {
    job.checkpoint_dir = fs::path(dir).lexically_normal().string();
  }
  job.resumed_job = resumed.resumed_job;
  job.resumed_step = resumed.resumed_step;
  // In the table before it is journaled: a compaction triggered by this append must see it.
  Job& stored = jobs_[id] = std::move(job);
  ++next_job_seq_;
  Status s = journal_job(stored);
  if (!s.is_ok()) {
    jobs_.erase(id);
    return s;
  }
  if (stored.resumed_job.empty()) {
    spdlog::info("job {} ({}) submitted: {} ranks, placement {}{}", id, stored.name, stored.world,
                 stored.placement, stored.checkpoint_dir.empty() ? "" : ", checkpoints in " + stored.checkpoint_dir);
  } else {
    spdlog::info("job {} ({}) submitted: {} ranks, placement {}, resuming job {} from its committed step {}", id,
                 stored.name, stored.world, stored.placement, stored.resumed_job, stored.resumed_step);
  }
  touch(&stored);
  schedule_locked();
  return jobs_.at(id);
}

Result<std::vector<std::string>> CoordinatorCore::resume_overrides_locked(
    const std::string& old_id, const std::string& new_id, const std::vector<std::string>& user_overrides,
    Job* resumed) {
  auto it = jobs_.find(old_id);
  if (it == jobs_.end()) {
    return not_found("--resume: no job '" + printable(old_id) + "' (tern jobs lists them)");
  }
  const Job& old = it->second;
  if (!is_terminal(old.state)) {
    return failed_precondition("--resume: job " + old_id + " is " + job_state_name(old.state) +
                               "; two jobs must not train from one checkpoint directory: cancel it first (tern cancel " +
                               old_id + ")");
  }
  if (options_.checkpoint_root.empty()) {
    return failed_precondition("--resume: this cluster has no checkpoint_root, so no job's checkpoints are where "
                               "every worker can read them; set checkpoint_root in the cluster file (a directory "
                               "every worker mounts at the same path)");
  }
  if (old.checkpoint_dir.empty()) {
    return failed_precondition("--resume: job " + old_id +
                               " did not checkpoint under a shared checkpoint_root (its trainers kept checkpoints in "
                               "their own job directories, or in its spec's recovery.dir): no other worker can read "
                               "them");
  }
  if (!path_is_under(old.checkpoint_dir, options_.checkpoint_root)) {
    return failed_precondition("--resume: job " + old_id + " checkpointed into " + old.checkpoint_dir +
                               ", which is not under this cluster's checkpoint_root " + options_.checkpoint_root);
  }
  if (old.checkpoint_step < 0) {
    return failed_precondition("--resume: job " + old_id + " has no committed checkpoint in " + old.checkpoint_dir +
                               " (it ended before its first; recovery.checkpoint_every sets how often a job saves)");
  }
  for (const auto& o : user_overrides) {
    const std::string key = o.substr(0, o.find('='));
    if (key == "recovery.dir" || key == "recovery.resume_from" || key == "recovery.resume_step") {
      return invalid_argument("--resume: --set " + key +
                              " is set by --resume (the new job checkpoints under checkpoint_root and resumes from "
                              "job " + old_id + "'s directory)");
    }
  }
  resumed->resumed_job = old_id;
  resumed->resumed_step = old.checkpoint_step;
  // From the journaled step exactly (or the newest complete one before it, should that step be
  // damaged): a later step on disk was never reported committed.
  return std::vector<std::string>{"recovery.dir=" + yaml_quoted(options_.checkpoint_root + "/" + new_id),
                                  "recovery.resume_from=" + yaml_quoted(old.checkpoint_dir),
                                  "recovery.resume_step=" + std::to_string(old.checkpoint_step)};
}

Result<Job> CoordinatorCore::get_job(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return not_found("no job '" + job_id + "' (tern jobs lists them)");
  return it->second;
}

std::vector<Job> CoordinatorCore::list_jobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Job> out;
  for (const auto& [id, j] : jobs_) out.push_back(j);
  std::sort(out.begin(), out.end(), [](const Job& a, const Job& b) { return a.seq < b.seq; });
  return out;
}

Result<Job> CoordinatorCore::cancel_job(const std::string& job_id, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return not_found("no job '" + job_id + "' (tern jobs lists them)");
  Job& job = it->second;
  if (is_terminal(job.state)) {
    return failed_precondition("job " + job_id + " already ended: " + job_state_name(job.state));
  }
  TERN_RETURN_IF_ERROR(
      finish_job_locked(&job, JobState::kCancelled, reason.empty() ? "cancelled by user" : reason));
  schedule_locked();
  return job;
}

Result<Job> CoordinatorCore::wait_job_change(const std::string& job_id, uint64_t after_version,
                                             std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return not_found("no job '" + job_id + "' (tern jobs lists them)");
  changed_.wait_for(lock, timeout, [&] { return it->second.version > after_version; });
  return it->second;
}

std::vector<Worker> CoordinatorCore::list_workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Worker> out;
  for (const auto& [id, w] : workers_) out.push_back(w);
  return out;
}

std::string CoordinatorCore::log_path(const std::string& job_id, int rank) const {
  return options_.state_dir + "/logs/jobs/" + job_id + "/rank-" + std::to_string(rank) + ".log";
}

Result<LogSlice> CoordinatorCore::get_logs(const std::string& job_id, int rank, int64_t offset,
                                           int64_t max_bytes) const {
  bool terminal = false;
  bool settled = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
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
  if (offset < 0) return invalid_argument("offset must be >= 0");
  if (max_bytes <= 0) max_bytes = 1 << 20;
  LogSlice slice;
  std::string path = log_path(job_id, rank);
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

// ---------------------------------------------------------------- worker API

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
  TERN_RETURN_IF_ERROR(check_ports(reg.spare_ports));
  TERN_ASSIGN_OR_RETURN(const uint64_t session, random_session());
  std::lock_guard<std::mutex> lock(mu_);
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
  std::map<std::string, std::vector<LostRank>> regroups;
  if (workers_.count(id)) {
    for (const TaskKey& t : assigned_tasks_locked(id)) {
      Job& job = jobs_.at(t.job_id);
      if (job.state != JobState::kRunning) continue;
      if (regroups.count(job.id) || can_regroup(job, false)) {
        regroups[job.id].push_back({t.rank, id, "worker " + id + " restarted"});
        continue;
      }
      job.ranks[t.rank].state = RankState::kFailed;
      TERN_RETURN_IF_ERROR(finish_job_locked(&job, JobState::kFailed,
                                             "worker " + id + " restarted while it hosted rank " +
                                                 std::to_string(t.rank) + no_regroup_left(job)));
    }
  }
  Worker& w = workers_[id];
  w.id = id;
  w.host = reg.host;
  w.region = reg.region;
  w.slots = reg.slots;
  w.cores = reg.cores;
  w.state = WorkerState::kReady;
  w.session = session;
  w.registered_at = clock_->unix_seconds();
  w.last_heartbeat = w.registered_at;
  w.lease_deadline_ms = clock_->monotonic_ms() + options_.lease_ms;
  set_spare_ports(&w, reg.spare_ports);
  w.reported_running.clear();
  w.heard = true;
  TERN_RETURN_IF_ERROR(journal_worker(w));
  spdlog::info("worker {} registered: host {}, region {}, {} slots", id, w.host, w.region, w.slots);
  for (const auto& [job_id, lost] : regroups)
    TERN_RETURN_IF_ERROR(regroup_locked(&jobs_.at(job_id), lost, false));
  RegistrationResult r{id, w.session, options_.heartbeat_ms, options_.lease_ms};
  schedule_locked();
  return r;
}

void CoordinatorCore::set_spare_ports(Worker* w, const std::vector<int>& ports) {
  // A port handed out for a rendezvous looks free to the daemon until the trainer binds it:
  // do not hand it out again for a minute.
  const int64_t now = clock_->monotonic_ms();
  while (!w->used_ports.empty() && now - w->used_ports.front().second > 60000)
    w->used_ports.pop_front();
  w->spare_ports.clear();
  for (int p : ports) {
    bool used = std::any_of(w->used_ports.begin(), w->used_ports.end(),
                            [p](const auto& u) { return u.first == p; });
    if (!used && p > 0) w->spare_ports.push_back(p);
  }
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
  std::lock_guard<std::mutex> lock(mu_);
  return worker_stats_;
}

Result<HeartbeatResult> CoordinatorCore::heartbeat(const std::string& worker_id, uint64_t session,
                                                   const std::vector<TaskKey>& running,
                                                   const std::vector<int>& spare_ports) {
  TERN_RETURN_IF_ERROR(check_ports(spare_ports));
  std::lock_guard<std::mutex> lock(mu_);
  Worker* w = nullptr;
  TERN_RETURN_IF_ERROR(check_session(worker_id, session, &w));
  w->lease_deadline_ms = clock_->monotonic_ms() + options_.lease_ms;
  w->last_heartbeat = clock_->unix_seconds();
  std::set<TaskKey> now_running(running.begin(), running.end());
  // Placement only needs another look when this beat changed what the scheduler sees (a
  // first beat, tasks started or ended, ports appearing); tick() covers everything else.
  // Scheduling on every beat made each heartbeat O(workers x jobs) and capped the
  // coordinator at a few hundred beats/s with 10,000 workers.
  bool relevant = !w->heard || now_running != w->reported_running || (w->spare_ports.empty() && !spare_ports.empty());
  w->reported_running = std::move(now_running);
  set_spare_ports(w, spare_ports);
  w->heard = true;
  if (relevant) schedule_locked();

  HeartbeatResult result;
  result.lease_ms = options_.lease_ms;
  std::set<std::string> to_journal;
  for (const TaskKey& t : w->reported_running) {
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
      } else if (!r || r->worker_id != worker_id) {
        why = "rank not assigned to this worker";
      } else if (is_terminal(r->state)) {
        why = std::string("rank ") + rank_state_name(r->state);
      } else {
        // The rank's own trainer: at the job's generation, or a survivor of a regroup.
        if (t.generation > r->generation) {
          r->generation = t.generation;  // its daemon re-keyed it after a Regroup
          to_journal.insert(job.id);
        }
        if (t.generation < job.generation && !awaiting_.count(job.id)) {
          result.commands.push_back(regroup_command(job, t));
        }
      }
    }
    if (!why.empty()) {
      TaskCommand c;
      c.kind = TaskCommand::Kind::kStop;
      c.task = t;
      c.reason = why;
      result.commands.push_back(std::move(c));
    }
  }
  for (auto& [id, job] : jobs_) {
    if (job.state != JobState::kRunning) continue;
    for (RankInfo& r : job.ranks) {
      if (r.worker_id != worker_id || r.state != RankState::kAssigned) continue;
      // Running at its own generation or a later one (a survivor regrouping): no Start.
      auto run = w->reported_running.lower_bound({job.id, r.rank, r.generation});
      if (run != w->reported_running.end() && run->job_id == job.id && run->rank == r.rank) {
        continue;
      }
      if (awaiting_.count(job.id)) continue;  // replacements start once all are placed
      if (r.generation < job.generation) {
        // A survivor of a regroup that never started: start it at the new generation.
        r.generation = job.generation;
        r.start_generation = job.generation;
        to_journal.insert(job.id);
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
      if (!options_.cluster_yaml.empty()) {
        for (const RankInfo& o : job.ranks) c.rank_regions.push_back(o.region);
      }
      result.commands.push_back(std::move(c));
    }
  }
  for (const std::string& id : to_journal) {
    Status s = journal_job(jobs_.at(id));
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
  }
  return result;
}

Result<int> CoordinatorCore::report_events(const std::string& worker_id, uint64_t session,
                                           const std::vector<TaskEvent>& events) {
  std::lock_guard<std::mutex> lock(mu_);
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
      if (is_terminal(r.state)) break;
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
          if (t["generation"] == g->second) t["training_again"] = std::max(t["training_again"], r.updated_at);
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
    case TaskEvent::Kind::kFinished: {
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
      *journal = true;
      break;
    }
    case TaskEvent::Kind::kCheckpoint:
      // Every rank reports the same committed step: the first report of a newer one is
      // journaled, the others change nothing. A step no trainer writes is refused.
      if (e.step < 1 || e.step > (int64_t{1} << 53)) return invalid_argument("checkpoint step out of range");
      if (e.step > job.checkpoint_step) {
        job.checkpoint_step = e.step;
        *journal = true;
      }
      break;
    case TaskEvent::Kind::kError:
      r.error = e.message;
      break;
    case TaskEvent::Kind::kExited: {
      worker.reported_running.erase(e.task);  // its process is gone: the slot is free
      if (r.exited) break;                    // a retried batch
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
        break;
      }
      if (is_terminal(r.state) || job.state != JobState::kRunning) {
        if (!is_terminal(r.state)) r.state = RankState::kStopped;
        break;
      }
      if (e.exit_code == 0) {
        r.state = RankState::kSucceeded;
        // Every member of the group finished (an elastic job may end smaller than it began;
        // its standbys are stopped with the job).
        bool all = std::all_of(job.ranks.begin(), job.ranks.end(), [](const RankInfo& x) {
          return !x.member || x.state == RankState::kSucceeded;
        });
        if (all) {
          const size_t n = job.members().size();
          Status s = finish_job_locked(
              &job, JobState::kSucceeded,
              "all " + std::to_string(n) + " ranks finished" +
                  (static_cast<int>(n) < job.world ? " (of " + std::to_string(job.world) + ")" : ""));
          *journal = false;  // finish_job_locked journaled it
          return s;
        }
      } else {
        const std::string exit = "exited with code " + std::to_string(e.exit_code) + " (" +
                                 trainer_exit_meaning(e.exit_code) + ")";
        // Only a lost process or machine is worth a replacement: a bad spec, bad data, out of
        // memory, a non-finite loss or a bug fails the same way on any worker.
        const bool replaceable = trainer_exit_is_loss(e.exit_code);
        // A survivor that gave up on its peers before it regrouped (its generation is older,
        // or the replacements still wait for a worker) is part of the regroup under way.
        const bool join = e.exit_code == kTrainerCommFailure &&
                          (e.task.generation < job.generation || awaiting_.count(job.id));
        if (replaceable && can_regroup(job, join)) {
          *journal = false;  // regroup_locked journals it
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
        Status s = finish_job_locked(&job, JobState::kFailed, reason);
        *journal = false;
        return s;
      }
      break;
    }
    case TaskEvent::Kind::kReady:
      // A standby of an elastic job is loaded: it joins the group at a new generation (with
      // every other standby ready by then).
      if (!job.elastic() || r.member || r.state == RankState::kUnassigned || is_terminal(r.state)) {
        return failed_precondition("ready from a rank that is not a standby");
      }
      r.ready = true;
      if (r.state == RankState::kAssigned) r.state = RankState::kRunning;
      spdlog::info("job {}: standby rank {} ready after {:.2f} s; growing the group", job.id, r.rank,
                   finite_or(e.setup_s, 0.0));
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

Status CoordinatorCore::append_log_locked(Job& job, const Worker& worker, const TaskEvent& e) {
  // Log bytes are kept whatever the generation (the file is per job and rank), but only from
  // the worker the rank is assigned to. A rank that a regroup moved to another worker
  // continues the file from where the last one left it.
  const RankInfo* r =
      e.task.rank < static_cast<int>(job.ranks.size()) ? &job.ranks[e.task.rank] : nullptr;
  if (!r || r->worker_id != worker.id)
    return permission_denied("log of a rank not assigned to this worker");
  if (e.task.generation > job.generation) return aborted("stale generation");
  TERN_RETURN_IF_ERROR(fence_locked(job, *r, worker, e));
  if (e.log_offset < 0 || e.log_offset > kMaxLogOffset)
    return invalid_argument("log offset out of range");
  if (e.log_data.empty()) return Status::ok();
  const std::string path = log_path(job.id, e.task.rank);
  const int64_t size = file_size(path);
  const int64_t offset = e.log_offset + r->log_base;
  const int64_t end = offset + static_cast<int64_t>(e.log_data.size());
  if (end <= size) return Status::ok();  // a retried batch: already have it
  std::string data =
      offset < size ? e.log_data.substr(static_cast<size_t>(size - offset)) : e.log_data;
  const int64_t chunk_cap = std::max<int64_t>(256, options_.max_log_chunk_bytes);
  std::string marker;
  if (static_cast<int64_t>(data.size()) > chunk_cap) {
    marker = "\n[tern: " + std::to_string(static_cast<int64_t>(data.size()) - chunk_cap + 100) +
             " bytes of one log chunk dropped (coordinator.max_log_chunk_bytes)]\n";
    worker_stats_.log_bytes_dropped += data.size() - static_cast<size_t>(chunk_cap - 100);
    data.resize(static_cast<size_t>(chunk_cap - 100));  // marker included, under the cap
  }
  auto used = log_bytes_.find(job.id);
  if (used == log_bytes_.end()) {
    int64_t total = 0;
    for (int k = 0; k < job.world; ++k) total += file_size(log_path(job.id, k));
    used = log_bytes_.emplace(job.id, total).first;
  }
  const int64_t quota = options_.max_log_bytes_per_job;
  const int64_t room = std::max<int64_t>(0, quota - used->second);
  if (static_cast<int64_t>(data.size()) > room) {
    worker_stats_.log_bytes_dropped += data.size() - static_cast<size_t>(room);
    data.resize(static_cast<size_t>(room));
    marker.clear();
    if (log_capped_.insert({job.id, e.task.rank}).second) {
      marker = "\n[tern: log truncated: job " + job.id + " reached its log quota of " +
               std::to_string(quota) +
               " bytes (coordinator.max_log_bytes_per_job); later output is dropped]\n";
      spdlog::warn("job {} rank {}: log quota of {} bytes reached; dropping later output", job.id,
                   e.task.rank, quota);
    }
  }
  if (data.empty() && marker.empty()) return Status::ok();
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << data << marker;
  used->second += static_cast<int64_t>(data.size() + marker.size());
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

// ---------------------------------------------------------------- scheduling and leases

std::vector<TaskKey> CoordinatorCore::assigned_tasks(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(mu_);
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

// ---------------------------------------------------------------- elastic regroup

bool CoordinatorCore::can_regroup(const Job& job, bool join) {
  if (job.state != JobState::kRunning || job.recovery_mode == "none") return false;
  return join || job.recoveries < job.max_recoveries;
}

Status CoordinatorCore::regroup_locked(Job* job, const std::vector<LostRank>& lost, bool join) {
  // Joining a regroup whose replacements are placed already keeps its generation (unless rank
  // 0 moves); one still waiting for a worker is placed as a whole.
  const bool same_generation = join && !awaiting_.count(job->id);
  if (!join) ++job->recoveries;
  bool member_lost = false;
  double lost_at = 0;
  for (const LostRank& l : lost) {
    RankInfo& r = job->ranks[l.rank];
    member_lost = member_lost || r.member;
    if (l.at > 0) lost_at = lost_at > 0 ? std::min(lost_at, l.at) : l.at;
    if (job->elastic()) r.member = false;
    r.ready = false;
    r.worker_id.clear();
    r.state = RankState::kUnassigned;
    r.exited = false;
    r.exit_code = 0;
    r.error.clear();
    r.lost = l.why;
    r.lost_from = l.worker_id;
    spdlog::warn("job {}: rank {} lost ({}){}", job->id, l.rank, l.why,
                 join ? ", part of the regroup under way"
                      : "; regroup " + std::to_string(job->recoveries) + " of " +
                            std::to_string(job->max_recoveries));
  }
  if (job->elastic()) {
    if (static_cast<int64_t>(job->members().size()) >= job->min_workers) {
      // The survivors go on at once; replacements start as standbys and join when ready.
      if (member_lost) elastic_regroup_locked(job, "shrink", lost_at);
      place_standbys_locked(job);
      touch(job);
      return journal_job(*job);
    }
    spdlog::warn("job {}: {} ranks left, fewer than recovery.min_workers {}: waiting for replacements",
                 job->id, job->members().size(), job->min_workers);
    elastic_pending_.erase(job->id);
    for (RankInfo& r : job->ranks) r.member = true, r.ready = false;
  }
  if (lost_at > 0 && !replace_lost_at_.count(job->id)) replace_lost_at_[job->id] = lost_at;
  if (!place_replacements_locked(job, same_generation)) {
    touch(job);
    return journal_job(*job);
  }
  return Status::ok();  // placed and journaled
}

bool CoordinatorCore::elastic_regroup_locked(Job* job, const std::string& kind, double lost_at) {
  const std::vector<int> members = job->members();
  const double now = clock_->unix_seconds();
  auto wait = [&](const std::string& why) {
    elastic_pending_[job->id] = {kind, lost_at > 0 ? lost_at : now};
    if (job->reason != why) {
      job->reason = why;
      touch(job);
    }
    return false;
  };
  if (members.empty()) return wait("regroup: no rank left");
  const RankInfo& lead = job->ranks[members.front()];
  auto it = workers_.find(lead.worker_id);
  if (it == workers_.end() || it->second.state != WorkerState::kReady) {
    return wait("regroup: waiting for rank " + std::to_string(lead.rank) + "'s worker " + lead.worker_id);
  }
  Worker& w0 = it->second;
  if (w0.spare_ports.empty()) return wait("regroup: waiting for a free port from worker " + w0.id);
  elastic_pending_.erase(job->id);
  job->generation += 1;
  job->master_addr = take_port_locked(&w0);
  std::string list;
  for (int m : members) list += (list.empty() ? "" : ",") + std::to_string(m);
  job->reason = kind + " to " + std::to_string(members.size()) + " of " + std::to_string(job->world) +
                " ranks (" + list + ") at generation " + std::to_string(job->generation);
  std::map<std::string, double> t{{"generation", static_cast<double>(job->generation)},
                                  {"world", static_cast<double>(members.size())},
                                  {"grow", kind == "grow" ? 1.0 : 0.0},
                                  {"decided", now}};
  if (lost_at > 0) t["lost"] = lost_at;
  job->timelines.push_back(std::move(t));
  if (job->timelines.size() > kMaxTimelines) job->timelines.erase(job->timelines.begin());
  spdlog::info("job {} elastic {}: generation {} with ranks {} (world {} of {}), master {}", job->id, kind,
               job->generation, list, members.size(), job->world, job->master_addr);
  nudge_job_locked(*job);
  touch(job);
  return true;
}

void CoordinatorCore::place_standbys_locked(Job* job) {
  std::vector<SlotOffer> offers;
  std::vector<Worker*> offer_workers;
  slot_offers_locked(&offers, &offer_workers);
  offers = offers_with_cores(offers, offer_workers, job->threads);
  bool placed = false;
  for (RankInfo& r : job->ranks) {
    if (r.state != RankState::kUnassigned || r.member) continue;
    std::optional<size_t> pick;
    for (int pass = 0; pass < 3 && !pick; ++pass) {
      for (size_t i = 0; i < offers.size() && !pick; ++i) {  // its old worker, its region, any
        if (offers[i].free_slots <= 0) continue;
        if (pass == 0 && offers[i].worker_id != r.lost_from) continue;
        if (pass == 1 && offers[i].region != r.region) continue;
        if (pass == 2 && job->placement == "pack") continue;
        pick = i;
      }
    }
    if (!pick) continue;  // retried when a slot frees up (schedule_locked)
    --offers[*pick].free_slots;
    const Worker* w = offer_workers[*pick];
    r.worker_id = w->id;
    r.region = w->region;
    r.host = w->host;
    r.state = RankState::kAssigned;
    r.generation = job->generation;
    r.start_generation = job->generation;
    r.exited = false;
    if (w->id != r.lost_from) r.log_base = file_size(log_path(job->id, r.rank));
    spdlog::info("job {}: standby for rank {} ({}) on worker {} at generation {}", job->id, r.rank, r.lost,
                 w->id, job->generation);
    r.lost.clear();
    r.lost_from.clear();
    nudge_locked(w->id);
    placed = true;
  }
  if (placed) {
    touch(job);
    Status s = journal_job(*job);
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
  }
}

std::string CoordinatorCore::take_port_locked(Worker* w) {
  const int port = w->spare_ports.front();
  w->spare_ports.pop_front();
  w->used_ports.emplace_back(port, clock_->monotonic_ms());
  return w->host + ":" + std::to_string(port);
}

void CoordinatorCore::nudge_locked(const std::string& worker_id) {
  if (worker_id.empty()) return;
  ++work_version_[worker_id];
  work_changed_.notify_all();
}

void CoordinatorCore::nudge_job_locked(const Job& job) {
  for (const RankInfo& r : job.ranks) nudge_locked(r.worker_id);
}

Result<uint64_t> CoordinatorCore::await_work(const std::string& worker_id, uint64_t session, uint64_t seen,
                                             std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  Worker* w = nullptr;
  TERN_RETURN_IF_ERROR(check_session(worker_id, session, &w));
  wait = std::clamp(wait, std::chrono::milliseconds(0), std::chrono::milliseconds(30000));
  // A version this coordinator never handed out (a daemon that outlived a restart) counts as
  // new work: the daemon heartbeats once and adopts the current version.
  work_changed_.wait_for(lock, wait, [&] { return waking_all_ || work_version_[worker_id] != seen; });
  return work_version_[worker_id];
}

void CoordinatorCore::wake_all() {
  std::lock_guard<std::mutex> lock(mu_);
  waking_all_ = true;
  work_changed_.notify_all();
}

bool CoordinatorCore::place_replacements_locked(Job* job, bool same_generation) {
  std::vector<int> lost;
  for (const RankInfo& r : job->ranks) {
    if (r.state == RankState::kUnassigned) lost.push_back(r.rank);
  }
  if (lost.empty()) {
    awaiting_.erase(job->id);
    return true;
  }
  auto wait = [&](const std::string& why) {
    awaiting_.insert(job->id);
    if (job->reason != why) {
      job->reason = why;
      touch(job);
    }
    return false;
  };
  std::vector<SlotOffer> offers;
  std::vector<Worker*> offer_workers;
  slot_offers_locked(&offers, &offer_workers);
  offers = offers_with_cores(offers, offer_workers, job->threads);
  std::map<int, size_t> choice;  // rank -> offer
  for (int rank : lost) {
    const RankInfo& r = job->ranks[rank];
    std::optional<size_t> pick;
    auto free_where = [&](const auto& match) -> std::optional<size_t> {
      for (size_t i = 0; i < offers.size(); ++i) {  // by worker id
        if (offers[i].free_slots > 0 && match(offers[i])) return i;
      }
      return std::nullopt;
    };
    pick = free_where([&](const SlotOffer& o) { return o.worker_id == r.lost_from; });
    // The rank's region keeps the rank order grouped by region (hierarchical sync).
    if (!pick) pick = free_where([&](const SlotOffer& o) { return o.region == r.region; });
    if (!pick && job->placement != "pack") {
      auto placed = place_gang(1, job->placement, offers);
      if (placed.is_ok()) pick = (*placed)[0];
    }
    if (!pick) {
      return wait(
          "regroup: rank " + std::to_string(rank) + " lost (" + r.lost +
          "); waiting for a worker with a free slot" +
          (job->placement == "pack" ? " in region " + r.region + " (placement: pack)" : ""));
    }
    --offers[*pick].free_slots;
    choice[rank] = *pick;
  }
  // Rank 0's worker hosts the rendezvous store: a new generation gets a new port there.
  Worker* w0 = nullptr;
  bool bump = !same_generation;
  if (auto c = choice.find(0); c != choice.end()) {
    w0 = offer_workers[c->second];
    if (job->ranks[0].lost_from != w0->id) bump = true;
  } else if (auto it = workers_.find(job->ranks[0].worker_id); it != workers_.end()) {
    w0 = &it->second;
  }
  if (bump) {
    if (!w0 || w0->state != WorkerState::kReady) {
      return wait("regroup: waiting for rank 0's worker " + job->ranks[0].worker_id);
    }
    if (w0->spare_ports.empty()) {
      return wait("regroup: waiting for a free port from worker " + w0->id);
    }
    job->generation += 1;
    job->master_addr = take_port_locked(w0);
    std::map<std::string, double> t{{"generation", static_cast<double>(job->generation)},
                                    {"world", static_cast<double>(job->world)},
                                    {"decided", clock_->unix_seconds()}};
    if (auto l = replace_lost_at_.find(job->id); l != replace_lost_at_.end()) t["lost"] = l->second;
    job->timelines.push_back(std::move(t));
    if (job->timelines.size() > kMaxTimelines) job->timelines.erase(job->timelines.begin());
  }
  replace_lost_at_.erase(job->id);
  std::string ranks;
  for (const auto& [rank, o] : choice) {
    RankInfo& r = job->ranks[rank];
    const Worker* w = offer_workers[o];
    r.worker_id = w->id;
    r.region = w->region;
    r.host = w->host;
    r.state = RankState::kAssigned;
    r.generation = job->generation;
    r.start_generation = job->generation;
    if (w->id != r.lost_from) r.log_base = file_size(log_path(job->id, rank));
    spdlog::info(
        "job {} regroup: rank {} lost ({}) -> generation {}, rank {} on worker {}, master {}",
        job->id, rank, r.lost, job->generation, rank, w->id, job->master_addr);
    r.lost.clear();
    r.lost_from.clear();
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(rank);
  }
  job->reason = "regroup " + std::to_string(job->recoveries) + " of " +
                std::to_string(job->max_recoveries) + ": rank " + ranks +
                " replaced at generation " + std::to_string(job->generation);
  awaiting_.erase(job->id);
  nudge_job_locked(*job);
  touch(job);
  Status s = journal_job(*job);
  if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
  return true;
}

void CoordinatorCore::tick() {
  std::lock_guard<std::mutex> lock(mu_);
  expire_leases_locked();
  schedule_locked();
}

void CoordinatorCore::expire_leases_locked() {
  const int64_t now = clock_->monotonic_ms();
  for (auto& [id, w] : workers_) {
    if (w.state != WorkerState::kReady || now <= w.lease_deadline_ms) continue;
    w.state = WorkerState::kLost;
    w.reported_running.clear();
    spdlog::warn("worker {} lost: no heartbeat for {} ms", id, options_.lease_ms);
    Status s = journal_worker(w);
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    const std::string why =
        "worker " + id + " lost (no heartbeat for " + std::to_string(options_.lease_ms) + " ms)";
    // One regroup per job, whatever number of its ranks the worker hosted.
    std::map<std::string, std::vector<LostRank>> regroups;
    for (const TaskKey& t : assigned_tasks_locked(id)) {
      Job& job = jobs_.at(t.job_id);
      if (job.state != JobState::kRunning) continue;
      if (regroups.count(job.id) || can_regroup(job, awaiting_.count(job.id) > 0)) {
        regroups[job.id].push_back({t.rank, id, why, w.last_heartbeat});  // lost since its last beat
        continue;
      }
      job.ranks[t.rank].state = RankState::kFailed;
      s = finish_job_locked(
          &job, JobState::kFailed,
          why + " while it hosted rank " + std::to_string(t.rank) + no_regroup_left(job));
      if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    }
    for (const auto& [job_id, lost] : regroups) {
      // A regroup still waiting for workers takes these ranks as part of it: a coordinator cut
      // off from every worker sees their leases run out one after another within a heartbeat,
      // and that is one recovery, not one per host (which would fail the job).
      s = regroup_locked(&jobs_.at(job_id), lost, awaiting_.count(job_id) > 0);
      if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    }
  }
}

void CoordinatorCore::slot_offers_locked(std::vector<SlotOffer>* offers,
                                         std::vector<Worker*>* offer_workers) {
  for (auto& [id, w] : workers_) {
    if (w.state != WorkerState::kReady || !w.heard) continue;
    std::set<TaskKey> used(w.reported_running);
    for (const TaskKey& t : assigned_tasks_locked(id)) used.insert(t);
    offers->push_back({id, w.region, w.slots - static_cast<int>(used.size())});
    offer_workers->push_back(&w);
  }
}

void CoordinatorCore::schedule_locked() {
  // Running jobs waiting for replacements hold their survivors' slots: they go first.
  for (const std::string& id : std::vector<std::string>(awaiting_.begin(), awaiting_.end())) {
    auto job = jobs_.find(id);
    if (job == jobs_.end() || job->second.state != JobState::kRunning) {
      awaiting_.erase(id);
    } else {
      place_replacements_locked(&job->second, false);
    }
  }
  // Elastic jobs: a group change that waited for a port, and standbys for vacant ranks.
  for (const auto& [id, why] : std::map<std::string, std::pair<std::string, double>>(elastic_pending_)) {
    auto job = jobs_.find(id);
    if (job == jobs_.end() || job->second.state != JobState::kRunning) {
      elastic_pending_.erase(id);
    } else if (elastic_regroup_locked(&job->second, why.first, why.second)) {
      Status s = journal_job(job->second);
      if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    }
  }
  for (auto& [id, job] : jobs_) {
    if (job.state != JobState::kRunning || !job.elastic()) continue;
    if (std::any_of(job.ranks.begin(), job.ranks.end(),
                    [](const RankInfo& r) { return r.state == RankState::kUnassigned && !r.member; })) {
      place_standbys_locked(&job);
    }
  }
  std::vector<Job*> pending;
  for (auto& [id, job] : jobs_) {
    if (job.state == JobState::kPending) pending.push_back(&job);
  }
  if (pending.empty()) return;
  std::sort(pending.begin(), pending.end(),
            [](const Job* a, const Job* b) { return a->seq < b->seq; });
  std::vector<SlotOffer> offers;
  std::vector<Worker*> offer_workers;
  slot_offers_locked(&offers, &offer_workers);
  for (Job* job : pending) {  // strict FIFO: stop at the first job that does not fit
    if (std::string why = threads_never_fit(*job, offer_workers); !why.empty()) {
      // No worker here could ever run it: failing it keeps the queue behind it moving.
      Status s = finish_job_locked(job, JobState::kFailed, why);
      if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
      continue;
    }
    // Workers with fewer cores than train.threads offer no slot to this job (indices stay
    // those of `offers`, whose free slots the placed jobs use up).
    auto placed = place_gang(job->world, job->placement,
                             offers_with_cores(offers, offer_workers, job->threads));
    if (!placed.is_ok()) {
      if (job->reason != placed.status().message()) {
        job->reason = placed.status().message();
        touch(job);
      }
      return;
    }
    Worker* w0 = offer_workers[(*placed)[0]];
    if (w0->spare_ports.empty()) {
      std::string why = "waiting for a free port from worker " + w0->id;
      if (job->reason != why) {
        job->reason = why;
        touch(job);
      }
      return;
    }
    const std::string master = take_port_locked(w0);
    job->ranks.clear();
    for (size_t r = 0; r < placed->size(); ++r) {
      size_t o = (*placed)[r];
      --offers[o].free_slots;
      RankInfo info;
      info.rank = static_cast<int>(r);
      info.worker_id = offer_workers[o]->id;
      info.region = offer_workers[o]->region;
      info.host = offer_workers[o]->host;
      info.state = RankState::kAssigned;
      job->ranks.push_back(std::move(info));
    }
    job->state = JobState::kRunning;
    job->generation += 1;
    for (RankInfo& r : job->ranks) r.generation = r.start_generation = job->generation;
    job->master_addr = master;
    job->started_at = clock_->unix_seconds();
    job->reason = "placed";
    job->rate_step0 = -1;
    std::string where;
    for (const auto& r : job->ranks) where += (where.empty() ? "" : ",") + r.worker_id;
    spdlog::info("job {} placed (generation {}): ranks on {}, master {}", job->id, job->generation,
                 where, job->master_addr);
    nudge_job_locked(*job);
    touch(job);
    Status s = journal_job(*job);
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
  }
}

}  // namespace tern
