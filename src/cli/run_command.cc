#include "cli/run_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli/progress.h"
#include "common/cluster_config.h"
#include "common/job_spec.h"
#include "common/json_fields.h"
#include "common/ring_order.h"
#include "common/subprocess.h"
#include "common/trainer_codec.h"
#include "common/trainer_process.h"
#include "common/trainer_protocol.h"
#include "coordinator/network_map.h"
#include "rpc/proto_json.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};
void on_interrupt(int) { g_interrupted.store(true); }

std::string timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

// Rank r's region: the cluster's regions expanded by their worker×slot counts, then
// round-robin if the job has more ranks than the cluster has slots.
std::vector<std::string> assign_regions(const ClusterConfig& c, int64_t world) {
  std::vector<std::string> slots;
  for (const auto& r : c.regions) {
    for (int64_t i = 0; i < r.workers * r.slots; ++i) slots.push_back(r.name);
  }
  std::vector<std::string> out;
  for (int64_t k = 0; k < world; ++k) {
    out.push_back(slots.empty() ? "local" : slots[static_cast<size_t>(k) % slots.size()]);
  }
  return out;
}

void print_human_summary(const json& s) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << "job " << json_string(s, "job") << " " << json_string(s, "state") << " in "
     << json_number(s, "wall_s") << " s: " << json_int(s, "workers") << " workers, "
     << json_int(s, "steps") << " steps, ";
  os.precision(2);
  os << json_number(s, "epochs") << " epochs\n";
  if (json_string(s, "state") == "SUCCEEDED") {
    os.precision(4);
    os << "  test accuracy " << json_number(s, "test_accuracy");
    if (s.contains("test_auc"))
      os << "   AUC " << json_number(s, "test_auc") << "   logloss "
         << json_number(s, "test_logloss");
    os << "   final loss " << json_number(s, "final_loss");
    os.precision(0);
    os << "   samples/s " << json_number(s, "samples_per_s") << "   bytes sent/rank "
       << format_bytes(json_number(s, "bytes_sent_per_rank")) << "\n";
    if (s.contains("epsilon")) {  // train.dp
      os.precision(4);
      os << "  privacy: epsilon " << json_number(s, "epsilon") << " at delta " << std::scientific
         << json_number(s, "dp_delta") << std::fixed << " after " << json_int(s, "dp_steps")
         << " steps\n";
    }
  } else {
    os << "  reason: " << json_string(s, "reason") << "\n";
  }
  os << "  logs: " << json_string(s, "run_dir") << "\n";
  std::cout << os.str() << std::flush;
}

// What `tern run` settled before starting any trainer. A failure's status code says how to
// exit: INVALID_ARGUMENT (the user's input) 2, anything else 1.
struct LocalRun {
  LoadedJobSpec loaded;
  std::string run_dir;
  std::string trainer;
  std::string spec_path;
  std::string cluster_path;
  std::vector<std::string> regions;
  std::string master;
};

// Loads the spec (with --workers, --resume and a run-wide recovery.dir), creates the run
// directory, and finds the trainer binary and the rendezvous port.
Result<LocalRun> prepare_run(const RunOptions& options) {
  LocalRun run;
  std::vector<std::string> overrides = options.overrides;
  if (options.workers > 0) overrides.push_back("workers=" + std::to_string(options.workers));
  if (!options.resume_dir.empty()) {
    std::error_code abs_ec;
    overrides.push_back("recovery.resume_from=" +
                        fs::absolute(options.resume_dir, abs_ec).lexically_normal().string());
  }
  auto loaded = load_job_spec_file(options.job_file, overrides);
  if (!loaded.is_ok()) return invalid_argument(loaded.status().message());
  run.run_dir = options.run_dir.empty() ? ".tern/runs/" + loaded->spec.name + "-" + timestamp() +
                                              "-" + std::to_string(getpid())
                                        : options.run_dir;
  std::error_code ec;
  fs::create_directories(run.run_dir, ec);
  if (ec) return internal_error("cannot create run directory " + run.run_dir + ": " + ec.message());
  run.run_dir = fs::absolute(run.run_dir).lexically_normal().string();
  const RecoverySpec& rec = loaded->spec.recovery;
  if ((rec.checkpoint_every > 0 || rec.interval != IntervalPolicy::kFixed) && rec.dir.empty()) {
    // Every rank must write to one store: the run directory, not each rank's work directory.
    overrides.push_back("recovery.dir=" + run.run_dir + "/checkpoints");
    loaded = load_job_spec_file(options.job_file, overrides);
    if (!loaded.is_ok()) return invalid_argument(loaded.status().message());
  }
  run.loaded = std::move(loaded).value();
  const JobSpec& spec = run.loaded.spec;
  if (const unsigned cores = std::thread::hardware_concurrency();
      cores > 0 && spec.train.threads > cores) {
    return invalid_argument("train.threads " + std::to_string(spec.train.threads) +
                            " is more than this machine's " + std::to_string(cores) +
                            " cores: the trainers would starve everything else here");
  }
  if (!options.cluster_file.empty()) {
    auto cluster = load_cluster_config(options.cluster_file);
    if (!cluster.is_ok()) return invalid_argument(cluster.status().message());
    run.regions = assign_regions(*cluster, spec.workers);
    if (options.ring_order) {
      auto order = tern::ring_order(
          modelled_cost(cluster->network, run.regions, NetworkMapOptions{}.ring_bytes));
      if (!order.is_ok()) return invalid_argument(order.status().message());
      std::vector<std::string> ordered;
      for (int r : *order) ordered.push_back(run.regions[static_cast<size_t>(r)]);
      run.regions = std::move(ordered);
    }
    run.cluster_path = fs::absolute(options.cluster_file).string();
  }
  run.trainer =
      options.trainer_path.empty() ? self_exe_dir() + "/tern-trainer" : options.trainer_path;
  if (access(run.trainer.c_str(), X_OK) != 0) {
    return invalid_argument("trainer binary " + run.trainer +
                            " not found or not executable (build it, or pass --trainer)");
  }
  run.spec_path = run.run_dir + "/spec.yaml";
  std::ofstream(run.spec_path) << run.loaded.yaml;
  auto port = find_free_port();
  if (!port.is_ok()) return internal_error(port.status().message());
  run.master = "127.0.0.1:" + std::to_string(*port);
  return run;
}

// Supervises the run's trainers (one TrainerProcess per rank) on the calling thread: relays
// rank 0's progress to the terminal, replaces a lost rank in an elastic job (a regroup command
// to the survivors, a new trainer at the next generation, as a worker daemon does on the
// coordinator's word), stops every rank when one fails, and builds the outcome.
class LocalRunner {
 public:
  LocalRunner(const RunOptions& options, LocalRun run)
      : options_(options),
        run_(std::move(run)),
        spec_(run_.loaded.spec),
        world_(spec_.workers),
        ranks_(static_cast<size_t>(world_)),
        progress_(std::cerr, isatty(STDERR_FILENO) != 0) {}

  Status start() {
    for (int64_t r = 0; r < world_; ++r) TERN_RETURN_IF_ERROR(spawn_rank(r, 0, run_.master));
    return Status::ok();
  }
  // Until every trainer exited (or was stopped: a failure, ^C, --timeout).
  void supervise();
  // The run's outcome (what --json prints) and the process exit code.
  json outcome(double wall_s) const;
  int exit_code(const json& outcome) const;
  const JobSpec& spec() const { return spec_; }
  const std::string& run_dir() const { return run_.run_dir; }

 private:
  struct Rank {
    std::unique_ptr<TrainerProcess> proc;
    std::string log_path;
    std::optional<int> exit_status;
    std::optional<ProgressEvent> last_progress;
    json summary;  // the finished event's (null until then)
    std::string error;
  };

  Status spawn_rank(int64_t r, int64_t generation, const std::string& master);
  Status replace_rank(size_t lost);
  void on_event(size_t r, const TrainerEvent& e);
  // Polls the ranks' exits: replaces a lost rank or stops the run. Returns how many still run.
  size_t check_exits();
  void stop_all(const std::string& why);
  void find_root_cause();
  std::string exit_reason(size_t r) const;
  json success_outcome() const;

  const RunOptions& options_;
  const LocalRun run_;
  const JobSpec& spec_;
  const int64_t world_;
  std::vector<Rank> ranks_;
  ProgressLine progress_;
  int64_t generation_ = 1;
  int64_t recoveries_ = 0;
  std::string reason_;
  int failed_rank_ = -1;
  int failed_code_ = 0;
  bool stopping_ = false;
  double started_at_ = 0;       // rank 0's "started" event (wall-clock seconds)
  json evals_ = json::array();  // rank 0's evaluations
};

Status LocalRunner::spawn_rank(int64_t r, int64_t generation, const std::string& master) {
  Rank& rk = ranks_[static_cast<size_t>(r)];
  const std::string work_dir = run_.run_dir + "/rank-" + std::to_string(r);
  TrainerProcessOptions to;
  to.program = run_.trainer;
  to.args.spec_file = run_.spec_path;
  to.args.rank = static_cast<int>(r);
  to.args.world = static_cast<int>(world_);
  to.args.master = master;
  to.args.generation = generation;
  to.args.job_id = spec_.name;
  to.args.work_dir = work_dir;
  to.args.cluster_file = run_.cluster_path;
  if (!run_.cluster_path.empty()) to.args.regions = run_.regions;
  std::error_code ec;
  fs::create_directories(work_dir, ec);
  rk.log_path =
      work_dir + (generation > 1 ? "-gen" + std::to_string(generation) : std::string()) + ".log";
  to.stderr_file = options_.verbose ? "" : rk.log_path;
  TERN_ASSIGN_OR_RETURN(rk.proc, TrainerProcess::start(to));
  rk.exit_status.reset();
  rk.error.clear();
  return Status::ok();
}

Status LocalRunner::replace_rank(size_t lost) {
  TERN_ASSIGN_OR_RETURN(int port, find_free_port());
  RegroupCommand cmd;
  cmd.master = "127.0.0.1:" + std::to_string(port);
  cmd.generation = ++generation_;
  cmd.world = static_cast<int>(world_);
  cmd.rollback = spec_.recovery.mode == RecoveryMode::kFull;
  ++recoveries_;
  for (size_t r = 0; r < ranks_.size(); ++r) {
    if (r != lost && !ranks_[r].exit_status) (void)ranks_[r].proc->send(cmd);
  }
  std::cerr << "tern run: rank " << lost << " lost (exit " << *ranks_[lost].exit_status
            << "); regrouping at generation " << generation_ << " with a replacement ("
            << name_of(spec_.recovery.mode) << " recovery)" << std::endl;
  return spawn_rank(static_cast<int64_t>(lost), generation_, cmd.master);
}

void LocalRunner::on_event(size_t r, const TrainerEvent& e) {
  Rank& rk = ranks_[r];
  if (const auto* p = std::get_if<ProgressEvent>(&e.body)) {
    rk.last_progress = *p;
    if (r == 0) {
      ProgressEvent shown = *p;  // progress events carry the rank's own rate; show the job's
      shown.samples_per_s *= static_cast<double>(world_);
      progress_.update(to_json(shown));
    }
  } else if (std::holds_alternative<StartedEvent>(e.body) && r == 0) {
    started_at_ = e.header.time;
  } else if (const auto* ev = std::get_if<EvalEvent>(&e.body); ev && r == 0) {
    const json shown = to_json(*ev);
    progress_.note_eval(shown);
    // Rank 0's metrics over time (train.eval_every), for accuracy- or loss-vs-time curves:
    // train_s is training time (evaluations excluded), elapsed_s wall time since start;
    // every test_* metric the workload reports (accuracy, loss, perplexity, auc, ...).
    auto train_s = ev->metrics.find("train_s");
    json point = {{"step", ev->step},
                  {"train_s", train_s == ev->metrics.end() ? 0.0 : train_s->second},
                  {"elapsed_s", started_at_ > 0 ? e.header.time - started_at_ : 0.0}};
    for (const auto& [k, v] : shown.items()) {
      if (k.rfind("test_", 0) == 0 && v.is_number()) point[k] = v;
    }
    evals_.push_back(std::move(point));
  } else if (const auto* f = std::get_if<FinishedEvent>(&e.body)) {
    rk.summary = f->summary;
  } else if (const auto* er = std::get_if<ErrorEvent>(&e.body)) {
    rk.error = er->message;
  }
}

size_t LocalRunner::check_exits() {
  const bool elastic =
      spec_.recovery.mode == RecoveryMode::kPartial || spec_.recovery.mode == RecoveryMode::kFull;
  size_t running = 0;
  for (size_t r = 0; r < ranks_.size(); ++r) {
    Rank& rk = ranks_[r];
    if (!rk.exit_status) rk.exit_status = rk.proc->poll();
    if (!rk.exit_status) {
      ++running;
      continue;
    }
    // Only a lost process is worth a replacement: a deterministic failure (bad data, out of
    // memory, a non-finite loss, ...) would happen again.
    if (*rk.exit_status != 0 && failed_rank_ < 0 && !stopping_ && elastic &&
        !rk.summary.is_object() && trainer_exit_is_loss(*rk.exit_status) &&
        recoveries_ < spec_.recovery.max_recoveries) {
      if (Status st = replace_rank(r); st.is_ok()) {
        ++running;
        continue;
      } else {
        std::cerr << "tern run: cannot replace rank " << r << ": " << st.to_string() << std::endl;
      }
    }
    if (*rk.exit_status != 0 && failed_rank_ < 0 && !stopping_) {
      failed_rank_ = static_cast<int>(r);
      failed_code_ = *rk.exit_status;
      stop_all(exit_reason(r));
    }
  }
  return running;
}

void LocalRunner::supervise() {
  auto start = Clock::now();
  size_t running = ranks_.size();
  while (running > 0) {
    for (size_t r = 0; r < ranks_.size(); ++r) {
      TrainerOutput out;
      ranks_[r].proc->read(&out, std::chrono::milliseconds(r == 0 ? 50 : 0));
      for (const auto& e : out.events) on_event(r, e);
    }
    running = check_exits();
    if (g_interrupted.load()) stop_all("interrupted");
    if (options_.timeout_s > 0 &&
        std::chrono::duration<double>(Clock::now() - start).count() > options_.timeout_s) {
      stop_all("timed out after " + std::to_string(options_.timeout_s) + " s");
    }
  }
  // Drain what the trainers wrote before exiting.
  for (size_t r = 0; r < ranks_.size(); ++r) {
    TrainerOutput out;
    ranks_[r].proc->drain(&out);
    for (const auto& e : out.events) {
      if (std::holds_alternative<FinishedEvent>(e.body) ||
          std::holds_alternative<ErrorEvent>(e.body))
        on_event(r, e);
    }
  }
  progress_.finish();
  find_root_cause();
}

void LocalRunner::stop_all(const std::string& why) {
  if (stopping_) return;
  stopping_ = true;
  if (reason_.empty()) reason_ = why;
  for (auto& rk : ranks_) {
    if (!rk.exit_status) rk.proc->request_stop();
  }
  for (auto& rk : ranks_) {
    if (!rk.exit_status) rk.exit_status = rk.proc->stop(std::chrono::seconds(5));
  }
}

void LocalRunner::find_root_cause() {
  if (failed_rank_ < 0) return;
  // The first rank seen to fail may only have lost its peer: the root cause is a rank that
  // failed for a reason of its own (its peers' collectives failed because it died).
  for (size_t r = 0; r < ranks_.size(); ++r) {
    const int code = ranks_[r].exit_status.value_or(0);
    if (trainer_exit_is_better_cause(code, failed_code_)) {
      failed_rank_ = static_cast<int>(r);
      failed_code_ = code;
      reason_ = exit_reason(r);
    }
  }
}

std::string LocalRunner::exit_reason(size_t r) const {
  const Rank& rk = ranks_[r];
  std::string why = "rank " + std::to_string(r) + " exited with " +
                    std::to_string(*rk.exit_status) + " (" + trainer_exit_meaning(*rk.exit_status) +
                    ")";
  if (!rk.error.empty()) why += ": " + rk.error;
  return why;
}

json LocalRunner::success_outcome() const {
  json out = ranks_[0].summary;
  double bytes = 0;
  for (const auto& rk : ranks_) bytes += json_number(rk.summary, "bytes_sent_per_rank");
  out["bytes_sent_per_rank"] = bytes / static_cast<double>(world_);
  out["train_wall_s"] = json_number(ranks_[0].summary, "wall_s");
  // Per-rank figures that differ between ranks (straggler drops, shares, speeds, waits).
  json per_rank = json::array();
  for (const auto& rk : ranks_) {
    json r = {{"computed_samples", json_number(rk.summary, "computed_samples")},
              {"wait_s", json_number(rk.summary, "wait_s")},
              {"injected_delay_s", json_number(rk.summary, "injected_delay_s")}};
    for (const auto& [k, v] : rk.summary.items()) {
      if (k.rfind("straggler_", 0) == 0) r[k] = v;
    }
    per_rank.push_back(std::move(r));
  }
  out["ranks"] = std::move(per_rank);
  out["evals"] = evals_;
  return out;
}

json LocalRunner::outcome(double wall_s) const {
  bool ok = failed_rank_ < 0 && reason_.empty();
  for (const auto& rk : ranks_) ok = ok && rk.summary.is_object();
  json out;
  if (ok) {
    out = success_outcome();
  } else {
    out["reason"] = reason_.empty() ? "a trainer exited without a summary" : reason_;
    if (failed_rank_ >= 0) {
      out["failed_rank"] = failed_rank_;
      out["exit_code"] = failed_code_;
      out["log_tail"] = tail_file_lines(ranks_[static_cast<size_t>(failed_rank_)].log_path, 10);
    }
    if (ranks_[0].last_progress) out["steps"] = ranks_[0].last_progress->step;
  }
  out["state"] = ok ? "SUCCEEDED" : "FAILED";
  if (recoveries_ > 0) out["replaced_ranks"] = recoveries_;
  out["job"] = spec_.name;
  out["workers"] = world_;
  out["wall_s"] = wall_s;
  out["run_dir"] = run_.run_dir;
  return out;
}

int LocalRunner::exit_code(const json& outcome) const {
  if (outcome["state"] == "SUCCEEDED") return 0;
  // A trainer that refused its input (a bad model or data file, exit kTrainerBadArgs) is the
  // user's to fix, like a bad spec: exit 2; any other failure 1.
  return failed_code_ == kTrainerBadArgs ? 2 : 1;
}

}  // namespace

int run_local_job(const RunOptions& options) {
  auto fail_early = [&](const std::string& msg, int code) {
    if (options.json) {
      std::cout << dump_json(json{{"state", "FAILED"}, {"reason", msg}}) << std::endl;
    }
    std::cerr << "tern run: " << msg << std::endl;
    return code;
  };
  auto prepared = prepare_run(options);
  if (!prepared.is_ok()) {
    return fail_early(prepared.status().message(),
                      prepared.status().code() == StatusCode::kInvalidArgument ? 2 : 1);
  }
  signal(SIGINT, on_interrupt);
  signal(SIGTERM, on_interrupt);
  signal(SIGPIPE, SIG_IGN);
  const auto start = Clock::now();
  LocalRunner runner(options, std::move(prepared).value());
  const JobSpec& spec = runner.spec();
  if (Status st = runner.start(); !st.is_ok()) return fail_early(st.message(), 1);
  if (spec.recovery.min_workers > 0) {
    // One machine, no worker to lose: `tern run` always replaces the lost rank at once.
    std::cerr << "tern run: recovery.min_workers is for clusters (tern submit); tern run replaces "
                 "a lost rank in place"
              << std::endl;
  }
  if (!options.json || isatty(STDERR_FILENO)) {
    std::cerr << "tern run: " << spec.name << " with " << spec.workers << " workers ("
              << name_of(spec.model.type) << ", " << name_of(spec.sync.strategy)
              << (spec.compress.method != CompressMethod::kNone
                      ? "+" + name_of(spec.compress.method)
                      : "")
              << "), logs in " << runner.run_dir() << std::endl;
  }
  runner.supervise();
  const json out = runner.outcome(std::chrono::duration<double>(Clock::now() - start).count());
  if (options.json) {
    std::cout << dump_json(out) << std::endl;
  } else {
    print_human_summary(out);
    if (out["state"] != "SUCCEEDED" && out.contains("log_tail")) {
      std::cerr << "last lines of rank " << out["failed_rank"].get<int>() << "'s log:\n"
                << out["log_tail"].get<std::string>();
    }
  }
  return runner.exit_code(out);
}

}  // namespace tern
