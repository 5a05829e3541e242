#include "cli/daemon_commands.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/cluster_config.h"
#include "common/logging.h"
#include "coordinator/coordinator_server.h"
#include "rpc/proto_json.h"
#include "rpc/security.h"

namespace tern {
namespace {

// Blocks SIGINT/SIGTERM in this thread and every thread created after (gRPC's), so that
// wait_for_termination() receives them synchronously.
sigset_t block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return set;
}

int wait_for_termination(const sigset_t& set) {
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

std::string ranges_text(const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                        const std::string& sep) {
  std::string out;
  for (const auto& [a, b] : ranges) {
    if (!out.empty()) out += ", ";
    out += a == b ? std::to_string(a) : std::to_string(a) + sep + std::to_string(b);
  }
  return out;
}

// `tern coordinator --repair`: salvage, report, exit 0 (1 when the repair itself fails).
int repair_command(const CoordinatorCommandOptions& options, const CoordinatorOptions& core) {
  SystemClock clock;
  auto r = CoordinatorCore::repair(core, static_cast<int64_t>(clock.unix_seconds()));
  if (!r.is_ok()) {
    std::cerr << "tern coordinator --repair: " << r.status().message() << std::endl;
    return 1;
  }
  const JournalRepairReport& j = r->journal;
  const std::string last = "j-" + std::to_string(r->last_job_seq);
  const std::string next = "j-" + std::to_string(r->last_job_seq + 1);
  if (options.json) {
    nlohmann::json out{{"journal", j.path},
                       {"changed", j.changed},
                       {"problem", j.problem},
                       {"damaged_copy", j.damaged_copy},
                       {"format", j.version},
                       {"file_bytes", j.file_bytes},
                       {"records_kept", j.records_kept},
                       {"records_known_lost", j.records_known_lost()},
                       {"bytes_lost", j.bytes_lost()},
                       {"damaged_ranges", j.damaged_ranges},
                       {"missing_sequences", j.missing_sequences},
                       {"refused", j.refused},
                       {"torn_bytes", j.torn_bytes},
                       {"duplicates_dropped", j.duplicates_dropped},
                       {"reordered", j.reordered},
                       {"job_ids", r->job_ids_path},
                       {"job_ids_note", r->job_ids_note},
                       {"last_job_id", last},
                       {"next_job_id", next}};
    std::cout << dump_json(out) << std::endl;
    return 0;
  }
  std::cout << "tern coordinator --repair: " << j.path << "\n";
  if (!j.changed) {
    std::cout << "  intact: " << j.records_kept << " records (format " << j.version
              << "); nothing to repair";
    if (j.torn_bytes > 0)
      std::cout << " (a torn last append of " << j.torn_bytes << " bytes is dropped at start)";
    std::cout << "\n";
  } else {
    std::cout << "  problem: " << j.problem << "\n";
    std::cout << "  kept: " << j.records_kept << " records (format " << j.version
              << " in, format 2 out)\n";
    std::cout << "  lost: " << j.bytes_lost() << " damaged bytes"
              << (j.damaged_ranges.empty()
                      ? ""
                      : " (byte ranges " + ranges_text(j.damaged_ranges, "-") + ")")
              << "; records known lost: " << j.records_known_lost();
    if (!j.missing_sequences.empty())
      std::cout << " (sequence numbers " << ranges_text(j.missing_sequences, "..") << ")";
    if (!j.damaged_ranges.empty() && j.damaged_ranges.back().second == j.file_bytes)
      std::cout << ", plus whatever the damaged bytes at the end held";
    std::cout << "\n";
    for (const auto& why : j.refused) std::cout << "  refused: " << why << "\n";
    if (j.torn_bytes > 0)
      std::cout << "  torn tail: " << j.torn_bytes
                << " bytes of an append that was never acknowledged, dropped\n";
    if (j.duplicates_dropped > 0)
      std::cout << "  duplicates dropped: " << j.duplicates_dropped << "\n";
    if (j.reordered) std::cout << "  reordered records were put back in sequence order\n";
    std::cout << "  the damaged file is kept as " << j.damaged_copy << "\n";
  }
  if (!r->job_ids_note.empty()) std::cout << "  job ids: rebuilt (" << r->job_ids_note << ")\n";
  std::cout << "  job ids: the largest ever handed out is " << last << "; the next job is " << next
            << "\n";
  return 0;
}

// The coordinator's server options from its cluster file (--config): listen address, state,
// leases, limits, TLS (unless repairing), the metrics endpoint and its token, regions.
Status server_options_from_cluster(const CoordinatorCommandOptions& options,
                                   CoordinatorServerOptions* out) {
  CoordinatorServerOptions& so = *out;
  auto cluster = load_cluster_config(options.config_file, {}, ClusterLoadOptions{true});
  if (!cluster.is_ok()) return cluster.status();
  if (!options.repair) {  // repairing needs no certificates
    auto security = make_server_security(*cluster);
    if (!security.is_ok()) return security.status();
    so.security = std::move(security).value();
  }
  so.listen = cluster->listen;
  so.core.state_dir = cluster->state_dir;
  so.core.heartbeat_ms = cluster->heartbeat_ms;
  so.core.lease_ms = cluster->lease_ms;
  so.core.max_queued_jobs = cluster->max_queued_jobs;
  so.core.max_spec_bytes = cluster->limits.max_spec_bytes;
  so.core.paths.write_roots = {cluster->work_dir()};
  so.core.paths.read_roots = cluster->data_dirs;
  so.core.checkpoint_root = cluster->checkpoint_root;
  so.max_message_bytes = cluster->limits.max_message_bytes;
  so.guard.rate_per_s = cluster->limits.rate_per_s;
  so.guard.rate_burst = static_cast<double>(cluster->limits.rate_burst);
  so.metrics_port = static_cast<int>(cluster->metrics_port);
  so.cluster_name = cluster->name;
  so.metrics_host = cluster->metrics.host;
  if (!cluster->metrics.token_file.empty()) {
    auto token = read_secret_file(cluster->metrics.token_file,
                                  cluster->path + ": coordinator.metrics_token_file");
    if (!token.is_ok()) return token.status();
    std::string t = *token;
    t.erase(t.find_last_not_of(" \t\r\n") + 1);
    t.erase(0, t.find_first_not_of(" \t\r\n"));
    if (t.size() < 16) {
      return invalid_argument(cluster->path + ": coordinator.metrics_token_file: the token is " +
                              std::to_string(t.size()) +
                              " characters; use at least 16 (openssl rand -hex 32)");
    }
    so.metrics_token = t;
  }
  for (const auto& r : cluster->regions) so.core.regions.push_back(r.name);
  so.core.network = cluster->network;  // the emulated links daemons add to their probes
  so.core.has_network_model = true;
  so.core.worker_rate_per_s = cluster->limits.worker_rate_per_s;
  so.core.worker_rate_burst = static_cast<double>(cluster->limits.worker_rate_burst);
  so.core.max_log_bytes_per_job = cluster->limits.max_log_bytes_per_job;
  so.core.max_log_chunk_bytes = cluster->limits.max_log_chunk_bytes;
  bool roles = false;
  for (const auto& t : cluster->auth.tokens) roles = roles || !t.role.empty();
  if (!cluster->auth.tokens.empty() && !roles) {
    spdlog::warn(
        "{}: no auth.tokens entry has a role, so every token may call every RPC "
        "(submit, cancel and the worker API); give each one role: user, worker or "
        "admin",
        cluster->path);
  }
  std::ifstream in(options.config_file);
  std::stringstream text;
  text << in.rdbuf();
  so.core.cluster_yaml = text.str();
  return Status::ok();
}

}  // namespace

int coordinator_command(const CoordinatorCommandOptions& options) {
  setup_logging("coordinator", options.log_level);
  sigset_t signals = block_termination_signals();
  CoordinatorServerOptions so;
  if (!options.config_file.empty()) {
    if (Status s = server_options_from_cluster(options, &so); !s.is_ok()) {
      spdlog::error("cannot start: {}", s.message());
      std::cerr << "tern coordinator: " << s.message() << std::endl;
      return 2;
    }
  }
  if (!options.listen.empty()) so.listen = options.listen;
  if (options.metrics_port >= 0) so.metrics_port = options.metrics_port;
  if (!options.state_dir.empty()) {
    so.core.state_dir = std::filesystem::absolute(options.state_dir).lexically_normal().string();
  }
  if (so.core.state_dir.empty()) {
    std::cerr << "tern coordinator: give --config FILE or --state-dir DIR" << std::endl;
    return 2;
  }
  if (options.repair) return repair_command(options, so.core);
  SystemClock clock;
  auto server = CoordinatorServer::start(so, &clock);
  if (!server.is_ok()) {
    std::string message = server.status().message();
    if (server.status().code() == StatusCode::kDataLoss) {
      message += "\nto salvage it: tern coordinator " +
                 (options.config_file.empty() ? "--state-dir " + so.core.state_dir
                                              : "--config " + options.config_file) +
                 " --repair";
    }
    spdlog::error("cannot start: {}", message);
    std::cerr << "tern coordinator: " << message << std::endl;
    return 1;
  }
  int sig = wait_for_termination(signals);
  spdlog::info("signal {}: shutting down", sig);
  (*server)->shutdown();
  return 0;
}

int worker_command(const WorkerDaemonOptions& options, const std::string& log_level) {
  setup_logging("worker " + (options.name.empty() ? options.region : options.name), log_level);
  if (!options.security || !options.security->tls) {
    spdlog::warn("talking plain-text gRPC (no TLS) to the coordinator at {}: loopback only",
                 options.coordinator);
  }
  if (is_loopback_host(options.host) && !is_loopback_host(options.coordinator)) {
    // The coordinator hands this address to every peer of this worker's trainers (Gloo pairs,
    // rank 0's rendezvous store): on another machine 127.0.0.1 is that machine.
    spdlog::warn(
        "--host {} is a loopback address but the coordinator {} is not: trainers on other "
        "machines cannot reach this worker's trainers; pass --host with this machine's address",
        options.host, options.coordinator);
  }
  sigset_t signals = block_termination_signals();
  WorkerDaemon daemon(options);
  std::thread waiter([&] {
    int sig = wait_for_termination(signals);
    if (sig != 0) spdlog::info("signal {}: stopping", sig);
    daemon.request_stop();
  });
  Status s = daemon.run();
  // run() returns only after a stop request, or at once on a setup error: then wake the
  // waiter ourselves.
  if (!s.is_ok()) pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  if (!s.is_ok()) {
    std::cerr << "tern worker: " << s.message() << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace tern
