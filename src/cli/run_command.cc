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
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/progress.h"
#include "common/cluster_config.h"
#include "common/job_spec.h"
#include "common/ring_order.h"
#include "coordinator/network_map.h"
#include "common/json_fields.h"
#include "common/subprocess.h"
#include "common/trainer_protocol.h"
#include "rpc/proto_json.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};
void on_interrupt(int) { g_interrupted.store(true); }

struct Rank {
  std::unique_ptr<Subprocess> proc;
  std::unique_ptr<LineReader> reader;
  std::string log_path;
  std::optional<int> exit_status;
  json last_progress;
  json summary;
  std::string error;
};

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

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

void print_human_summary(const json& s) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << "job " << json_string(s, "job") << " " << json_string(s, "state") << " in " << json_number(s, "wall_s")
     << " s: " << json_int(s, "workers") << " workers, " << json_int(s, "steps") << " steps, ";
  os.precision(2);
  os << json_number(s, "epochs") << " epochs\n";
  if (json_string(s, "state") == "SUCCEEDED") {
    os.precision(4);
    os << "  test accuracy " << json_number(s, "test_accuracy");
    if (s.contains("test_auc")) os << "   AUC " << json_number(s, "test_auc") << "   logloss " << json_number(s, "test_logloss");
    os << "   final loss " << json_number(s, "final_loss");
    os.precision(0);
    os << "   samples/s " << json_number(s, "samples_per_s") << "   bytes sent/rank "
       << format_bytes(json_number(s, "bytes_sent_per_rank")) << "\n";
    if (s.contains("epsilon")) {  // train.dp
      os.precision(4);
      os << "  privacy: epsilon " << json_number(s, "epsilon") << " at delta " << std::scientific
         << json_number(s, "dp_delta") << std::fixed << " after " << json_int(s, "dp_steps") << " steps\n";
    }
  } else {
    os << "  reason: " << json_string(s, "reason") << "\n";
  }
  os << "  logs: " << json_string(s, "run_dir") << "\n";
  std::cout << os.str() << std::flush;
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
  std::vector<std::string> overrides = options.overrides;
  if (options.workers > 0) overrides.push_back("workers=" + std::to_string(options.workers));
  if (!options.resume_dir.empty()) {
    std::error_code abs_ec;
    overrides.push_back("recovery.resume_from=" + fs::absolute(options.resume_dir, abs_ec).lexically_normal().string());
  }
  auto loaded = load_job_spec_file(options.job_file, overrides);
  if (!loaded.is_ok()) return fail_early(loaded.status().message(), 2);
  std::string run_dir = options.run_dir.empty() ? ".tern/runs/" + loaded->spec.name + "-" + timestamp() + "-" +
                                                      std::to_string(getpid())
                                                : options.run_dir;
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return fail_early("cannot create run directory " + run_dir + ": " + ec.message(), 1);
  run_dir = fs::absolute(run_dir).lexically_normal().string();
  const RecoverySpec& rec = loaded->spec.recovery;
  if ((rec.checkpoint_every > 0 || rec.interval != "fixed") && rec.dir.empty()) {
    // Every rank must write to one store: the run directory, not each rank's work directory.
    overrides.push_back("recovery.dir=" + run_dir + "/checkpoints");
    loaded = load_job_spec_file(options.job_file, overrides);
    if (!loaded.is_ok()) return fail_early(loaded.status().message(), 2);
  }
  const JobSpec& spec = loaded->spec;
  const int64_t world = spec.workers;
  if (const unsigned cores = std::thread::hardware_concurrency(); cores > 0 && spec.train.threads > cores) {
    return fail_early("train.threads " + std::to_string(spec.train.threads) + " is more than this machine's " +
                          std::to_string(cores) + " cores: the trainers would starve everything else here",
                      2);
  }

  std::vector<std::string> regions;
  std::string cluster_path;
  if (!options.cluster_file.empty()) {
    auto cluster = load_cluster_config(options.cluster_file);
    if (!cluster.is_ok()) return fail_early(cluster.status().message(), 2);
    regions = assign_regions(*cluster, world);
    if (options.ring_order) {
      auto order = tern::ring_order(
          modelled_cost(cluster->network, regions, NetworkMapOptions{}.ring_bytes));
      if (!order.is_ok()) return fail_early(order.status().message(), 2);
      std::vector<std::string> ordered;
      for (int r : *order) ordered.push_back(regions[static_cast<size_t>(r)]);
      regions = std::move(ordered);
    }
    cluster_path = fs::absolute(options.cluster_file).string();
  }

  std::string trainer = options.trainer_path.empty() ? self_exe_dir() + "/tern-trainer" : options.trainer_path;
  if (access(trainer.c_str(), X_OK) != 0) {
    return fail_early("trainer binary " + trainer + " not found or not executable (build it, or pass --trainer)", 2);
  }
  std::string spec_path = run_dir + "/spec.yaml";
  std::ofstream(spec_path) << loaded->yaml;

  auto port = find_free_port();
  if (!port.is_ok()) return fail_early(port.status().message(), 1);
  std::string master = "127.0.0.1:" + std::to_string(*port);

  signal(SIGINT, on_interrupt);
  signal(SIGTERM, on_interrupt);
  signal(SIGPIPE, SIG_IGN);

  auto start = Clock::now();
  std::vector<Rank> ranks(static_cast<size_t>(world));
  // Starts rank r's trainer (again, at a later generation, as the replacement of a lost one).
  auto spawn_rank = [&](int64_t r, int64_t generation, const std::string& at) -> Status {
    Rank& rk = ranks[static_cast<size_t>(r)];
    SpawnOptions so;
    so.argv = {trainer, "--spec", spec_path, "--rank", std::to_string(r), "--world", std::to_string(world),
               "--master", at, "--job", spec.name, "--work-dir", run_dir + "/rank-" + std::to_string(r)};
    if (generation > 1) so.argv.insert(so.argv.end(), {"--generation", std::to_string(generation)});
    if (!cluster_path.empty()) {
      so.argv.insert(so.argv.end(), {"--cluster", cluster_path, "--regions", join(regions, ",")});
    }
    fs::create_directories(run_dir + "/rank-" + std::to_string(r), ec);
    rk.log_path = run_dir + "/rank-" + std::to_string(r) +
                  (generation > 1 ? "-gen" + std::to_string(generation) : std::string()) + ".log";
    so.stderr_file = options.verbose ? "" : rk.log_path;
    so.pipe_stdout = true;
    so.pipe_stdin = true;
    TERN_ASSIGN_OR_RETURN(rk.proc, Subprocess::spawn(so));
    rk.reader = std::make_unique<LineReader>(rk.proc->stdout_fd());
    rk.exit_status.reset();
    rk.error.clear();
    return Status::ok();
  };
  for (int64_t r = 0; r < world; ++r) {
    if (Status st = spawn_rank(r, 0, master); !st.is_ok()) return fail_early(st.message(), 1);
  }
  // recovery.mode partial | full: a lost rank is replaced (up to recovery.max_recoveries times),
  // as a worker daemon does on the coordinator's word: survivors get a regroup command for the
  // next generation on a new master address, and a new trainer takes the lost rank there.
  const bool elastic = spec.recovery.mode == "partial" || spec.recovery.mode == "full";
  if (spec.recovery.min_workers > 0) {
    // One machine, no worker to lose: `tern run` always replaces the lost rank at once.
    std::cerr << "tern run: recovery.min_workers is for clusters (tern submit); tern run replaces a lost rank in place"
              << std::endl;
  }
  int64_t generation = 1;
  int64_t recoveries = 0;
  auto replace_rank = [&](size_t lost) -> Status {
    TERN_ASSIGN_OR_RETURN(int port, find_free_port());
    const std::string at = "127.0.0.1:" + std::to_string(port);
    ++generation;
    ++recoveries;
    json cmd = {{"cmd", "regroup"}, {"generation", generation}, {"world", world}, {"master", at},
                {"rollback", spec.recovery.mode == "full"}};
    for (size_t r = 0; r < ranks.size(); ++r) {
      if (r != lost && !ranks[r].exit_status) (void)ranks[r].proc->write_stdin(cmd.dump() + "\n");
    }
    std::cerr << "tern run: rank " << lost << " lost (exit " << *ranks[lost].exit_status << "); regrouping at generation "
              << generation << " with a replacement (" << spec.recovery.mode << " recovery)" << std::endl;
    return spawn_rank(static_cast<int64_t>(lost), generation, at);
  };
  if (!options.json || isatty(STDERR_FILENO)) {
    std::cerr << "tern run: " << spec.name << " with " << world << " workers (" << spec.model.type << ", "
              << spec.sync.strategy << (spec.compress.method != "none" ? "+" + spec.compress.method : "")
              << "), logs in " << run_dir << std::endl;
  }

  ProgressLine progress(std::cerr, isatty(STDERR_FILENO) != 0);
  auto exit_reason = [&](size_t r) {
    const Rank& rk = ranks[r];
    std::string why = "rank " + std::to_string(r) + " exited with " + std::to_string(*rk.exit_status) + " (" +
                      trainer_exit_meaning(*rk.exit_status) + ")";
    if (!rk.error.empty()) why += ": " + rk.error;
    return why;
  };
  std::string reason;
  int failed_rank = -1;
  int failed_code = 0;
  bool stopping = false;
  auto stop_all = [&](const std::string& why) {
    if (stopping) return;
    stopping = true;
    if (reason.empty()) reason = why;
    for (auto& rk : ranks) {
      if (!rk.exit_status) (void)rk.proc->write_stdin("{\"cmd\":\"stop\"}\n");
    }
    for (auto& rk : ranks) {
      if (!rk.exit_status) rk.exit_status = rk.proc->terminate(std::chrono::seconds(5));
    }
  };

  size_t running = ranks.size();
  double started_at = 0;       // rank 0's "started" event (wall-clock seconds)
  json evals = json::array();  // rank 0's evaluations
  while (running > 0) {
    for (size_t r = 0; r < ranks.size(); ++r) {
      Rank& rk = ranks[r];
      std::vector<std::string> lines;
      rk.reader->read_lines(&lines, std::chrono::milliseconds(r == 0 ? 50 : 0));
      for (const auto& line : lines) {
        json e = json::parse(line, nullptr, false);
        if (e.is_discarded() || !e.is_object()) continue;
        std::string kind = json_string(e, "event");
        if (kind == "progress") {
          rk.last_progress = e;
          if (r == 0) {
            json shown = e;  // progress events carry the rank's own rate; show the job's
            shown["samples_per_s"] = json_number(e, "samples_per_s") * static_cast<double>(world);
            progress.update(shown);
          }
        } else if (kind == "started" && r == 0) {
          started_at = json_number(e, "time");
        } else if (kind == "eval" && r == 0) {
          progress.note_eval(e);
          // Rank 0's metrics over time (train.eval_every), for accuracy- or loss-vs-time curves:
          // train_s is training time (evaluations excluded), elapsed_s wall time since start;
          // every test_* metric the workload reports (accuracy, loss, perplexity, auc, ...).
          json point = {{"step", json_int(e, "step")},
                        {"train_s", json_number(e, "train_s")},
                        {"elapsed_s", started_at > 0 ? json_number(e, "time") - started_at : 0.0}};
          for (const auto& [k, v] : e.items()) {
            if (k.rfind("test_", 0) == 0 && v.is_number()) point[k] = v;
          }
          evals.push_back(std::move(point));
        } else if (kind == "finished") {
          rk.summary = e["summary"];
        } else if (kind == "error") {
          rk.error = json_string(e, "message");
        }
      }
    }
    running = 0;
    for (size_t r = 0; r < ranks.size(); ++r) {
      Rank& rk = ranks[r];
      if (!rk.exit_status) rk.exit_status = rk.proc->poll();
      if (!rk.exit_status) {
        ++running;
        continue;
      }
      // Only a lost process is worth a replacement: a deterministic failure (bad data, out of
      // memory, a non-finite loss, ...) would happen again.
      if (*rk.exit_status != 0 && failed_rank < 0 && !stopping && elastic && !rk.summary.is_object() &&
          trainer_exit_is_loss(*rk.exit_status) && recoveries < spec.recovery.max_recoveries) {
        if (Status st = replace_rank(r); st.is_ok()) {
          ++running;
          continue;
        } else {
          std::cerr << "tern run: cannot replace rank " << r << ": " << st.to_string() << std::endl;
        }
      }
      if (*rk.exit_status != 0 && failed_rank < 0 && !stopping) {
        failed_rank = static_cast<int>(r);
        failed_code = *rk.exit_status;
        stop_all(exit_reason(r));
      }
    }
    if (g_interrupted.load()) stop_all("interrupted");
    if (options.timeout_s > 0 && std::chrono::duration<double>(Clock::now() - start).count() > options.timeout_s) {
      stop_all("timed out after " + std::to_string(options.timeout_s) + " s");
    }
  }
  // Drain what the trainers wrote before exiting.
  for (auto& rk : ranks) {
    std::vector<std::string> lines;
    while (rk.reader->read_lines(&lines, std::chrono::milliseconds(0))) {
      if (lines.empty()) break;
    }
    for (const auto& line : lines) {
      json e = json::parse(line, nullptr, false);
      if (e.is_discarded() || !e.is_object()) continue;
      const std::string kind = json_string(e, "event");
      if (kind == "finished") rk.summary = e["summary"];
      if (kind == "error") rk.error = json_string(e, "message");
    }
  }
  progress.finish();
  if (failed_rank >= 0) {
    // The first rank seen to fail may only have lost its peer: the root cause is a rank that
    // failed for a reason of its own (its peers' collectives failed because it died).
    for (size_t r = 0; r < ranks.size(); ++r) {
      const int code = ranks[r].exit_status.value_or(0);
      if (trainer_exit_is_better_cause(code, failed_code)) {
        failed_rank = static_cast<int>(r);
        failed_code = code;
        reason = exit_reason(r);
      }
    }
  }


  double wall = std::chrono::duration<double>(Clock::now() - start).count();
  bool ok = failed_rank < 0 && reason.empty();
  for (auto& rk : ranks) ok = ok && rk.summary.is_object();
  json out;
  if (ok) {
    out = ranks[0].summary;
    double bytes = 0;
    for (auto& rk : ranks) bytes += json_number(rk.summary, "bytes_sent_per_rank");
    out["bytes_sent_per_rank"] = bytes / static_cast<double>(world);
    out["train_wall_s"] = json_number(ranks[0].summary, "wall_s");
    // Per-rank figures that differ between ranks (straggler drops, shares, speeds, waits).
    json per_rank = json::array();
    for (auto& rk : ranks) {
      json r = {{"computed_samples", json_number(rk.summary, "computed_samples")},
                {"wait_s", json_number(rk.summary, "wait_s")},
                {"injected_delay_s", json_number(rk.summary, "injected_delay_s")}};
      for (auto& [k, v] : rk.summary.items()) {
        if (k.rfind("straggler_", 0) == 0) r[k] = v;
      }
      per_rank.push_back(std::move(r));
    }
    out["ranks"] = std::move(per_rank);
    out["evals"] = std::move(evals);
  } else {
    if (reason.empty()) reason = "a trainer exited without a summary";
    out["reason"] = reason;
    if (failed_rank >= 0) {
      out["failed_rank"] = failed_rank;
      out["exit_code"] = failed_code;
      out["log_tail"] = tail_file_lines(ranks[static_cast<size_t>(failed_rank)].log_path, 10);
    }
    if (ranks[0].last_progress.is_object()) out["steps"] = json_int(ranks[0].last_progress, "step");
  }
  out["state"] = ok ? "SUCCEEDED" : "FAILED";
  if (recoveries > 0) out["replaced_ranks"] = recoveries;
  out["job"] = spec.name;
  out["workers"] = world;
  out["wall_s"] = wall;
  out["run_dir"] = run_dir;
  if (options.json) {
    std::cout << dump_json(out) << std::endl;
  } else {
    print_human_summary(out);
    if (!ok && out.contains("log_tail")) {
      std::cerr << "last lines of rank " << failed_rank << "'s log:\n" << out["log_tail"].get<std::string>();
    }
  }
  // A trainer that refused its input (a bad model or data file, exit kTrainerBadArgs) is the
  // user's to fix, like a bad spec: exit 2; any other failure 1.
  if (ok) return 0;
  return failed_code == kTrainerBadArgs ? 2 : 1;
}

}  // namespace tern
