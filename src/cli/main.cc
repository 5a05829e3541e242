// tern: the command-line interface (see README.md). Thin: parses flags and hands over to
// cli/*_command.h.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "cli/client_commands.h"
#include "cli/cluster_command.h"
#include "cli/daemon_commands.h"
#include "cli/run_command.h"

namespace {

// --coordinator, --cluster and --json, shared by every client subcommand.
void add_client_flags(CLI::App* cmd, tern::ClientOptions* o) {
  cmd->add_option(
      "--coordinator", o->coordinator,
      "coordinator HOST:PORT (default: --cluster's listen, $TERN_COORDINATOR, 127.0.0.1:7070)");
  cmd->add_option("--cluster", o->cluster_file,
                  "cluster file: the coordinator's address, TLS and token file");
  cmd->add_option("--token", o->token,
                  "bearer token (default: $TERN_TOKEN, then the cluster file's auth.token_file; "
                  "prefer those: a flag shows in ps)");
  cmd->add_flag("--json", o->json, "machine-readable JSON output");
}

// Every subcommand's options and handles, filled in by CLI11 while it parses.
struct Cli {
  tern::RunOptions run;
  tern::CoordinatorCommandOptions coord;
  tern::WorkerDaemonOptions worker;
  tern::ClientOptions worker_client;
  std::string worker_log_level = "info";
  int64_t grace_ms = 5000;
  std::vector<std::string> data_dirs;
  tern::ClusterCommandOptions cluster;
  tern::ClientOptions client;
  tern::SubmitOptions submit;
  tern::StatusOptions status;
  std::string job_id;
  int rank = 0;
  bool follow = false;
  bool network = false;  // tern workers --network
  CLI::App* run_cmd = nullptr;
  CLI::App* coord_cmd = nullptr;
  CLI::App* worker_cmd = nullptr;
  CLI::App* up_cmd = nullptr;
  CLI::App* down_cmd = nullptr;
  CLI::App* submit_cmd = nullptr;
  CLI::App* jobs_cmd = nullptr;
  CLI::App* status_cmd = nullptr;
  CLI::App* workers_cmd = nullptr;
  CLI::App* logs_cmd = nullptr;
  CLI::App* cancel_cmd = nullptr;
};

// tern run: standalone, no coordinator.
void add_run_command(CLI::App& app, Cli& c) {
  c.run_cmd = app.add_subcommand("run", "Run a job on this machine with N local trainer processes");
  c.run_cmd->add_option("job", c.run.job_file, "job spec (YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  c.run_cmd->add_option("--workers,-n", c.run.workers,
                        "number of ranks (default: the spec's workers)");
  c.run_cmd->add_option("--set", c.run.overrides, "override a spec field: a.b=c (repeatable)");
  c.run_cmd->add_flag("--json", c.run.json, "print one JSON summary object");
  c.run_cmd->add_flag("--verbose,-v", c.run.verbose, "show the trainers' logs");
  c.run_cmd->add_option("--cluster", c.run.cluster_file,
                        "cluster file: regions and network model (WAN emulation)");
  c.run_cmd->add_option("--trainer", c.run.trainer_path, "tern-trainer binary");
  c.run_cmd->add_option("--run-dir", c.run.run_dir, "where logs and the effective spec go");
  c.run_cmd->add_option("--timeout", c.run.timeout_s, "stop the job after this many seconds");
  c.run_cmd->add_flag("--ring-order", c.run.ring_order,
                      "with --cluster: ranks in the ring order of the modelled links (as a "
                      "coordinator places them from measurements) instead of the file's order");
  c.run_cmd->add_option("--resume", c.run.resume_dir,
                        "resume from the newest valid checkpoint in DIR (recovery.resume_from)");
}

// tern coordinator and tern worker: the daemons.
void add_daemon_commands(CLI::App& app, Cli& c) {
  c.worker_client.worker = true;
  c.coord_cmd = app.add_subcommand("coordinator", "Run the coordinator (until SIGTERM)");
  c.coord_cmd
      ->add_option("--config", c.coord.config_file,
                   "cluster file (listen address, state_dir, leases)")
      ->check(CLI::ExistingFile);
  c.coord_cmd->add_option("--listen", c.coord.listen, "HOST:PORT to serve on (overrides the file)");
  c.coord_cmd->add_option("--state-dir", c.coord.state_dir,
                          "journal and logs directory (overrides the file)");
  c.coord_cmd->add_option("--log-level", c.coord.log_level, "trace|debug|info|warn|error");
  c.coord_cmd->add_option("--metrics-port", c.coord.metrics_port,
                          "HTTP port for /metrics and /healthz (overrides the file; 0 = off)");
  c.coord_cmd->add_flag("--repair", c.coord.repair,
                        "salvage every intact record of a damaged journal into a new one (the "
                        "damaged file is kept), rebuild the job id high-water mark, report, exit");
  c.coord_cmd->add_flag("--json", c.coord.json, "with --repair: the report as one JSON object");

  c.worker_cmd = app.add_subcommand("worker", "Run a worker daemon (until SIGTERM)");
  c.worker_cmd->add_option("--coordinator", c.worker_client.coordinator, "coordinator HOST:PORT");
  c.worker_cmd->add_option("--cluster", c.worker_client.cluster_file,
                           "cluster file: the coordinator to join, TLS, token file, data dirs");
  c.worker_cmd->add_option("--token", c.worker_client.token,
                           "bearer token (default: $TERN_TOKEN, then the cluster file's "
                           "auth.token_file)");
  c.worker_cmd->add_option("--data-dir", c.data_dirs,
                           "directory jobs may read data from (repeatable; default: the cluster "
                           "file's data_dirs, else /usr/share/datasets)");
  c.worker_cmd->add_option("--region", c.worker.region, "region this machine is in")
      ->capture_default_str();
  c.worker_cmd->add_option("--slots", c.worker.slots, "ranks this worker runs at once")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  c.worker_cmd->add_option("--name", c.worker.name,
                           "worker id (default: assigned by the coordinator)");
  c.worker_cmd->add_option("--host", c.worker.host, "address peers reach this machine at")
      ->capture_default_str();
  c.worker_cmd->add_option("--work-dir", c.worker.work_dir, "job directories and trainer logs")
      ->capture_default_str();
  c.worker_cmd->add_option("--trainer", c.worker.trainer_path,
                           "tern-trainer binary (default: next to tern)");
  c.worker_cmd->add_option("--stop-grace-ms", c.grace_ms, "stop command -> SIGKILL")
      ->capture_default_str();
  c.worker_cmd->add_option("--log-level", c.worker_log_level, "trace|debug|info|warn|error");
}

// tern cluster up | down.
void add_cluster_commands(CLI::App& app, Cli& c) {
  CLI::App* cluster_cmd =
      app.add_subcommand("cluster", "Start or stop a local cluster from a cluster file");
  cluster_cmd->require_subcommand(1);
  c.up_cmd = cluster_cmd->add_subcommand("up", "Start the coordinator and worker daemons");
  c.up_cmd->add_option("file", c.cluster.file, "cluster file (YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  c.up_cmd
      ->add_option("--timeout", c.cluster.timeout_s, "seconds to wait for every worker to register")
      ->capture_default_str();
  c.up_cmd->add_flag("--json", c.cluster.json, "machine-readable JSON output");
  c.down_cmd = cluster_cmd->add_subcommand("down", "Stop the daemons (and their trainers)");
  c.down_cmd->add_option("file", c.cluster.file, "cluster file (YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  c.down_cmd->add_option("--grace", c.cluster.grace_s, "seconds between SIGTERM and SIGKILL")
      ->capture_default_str();
  c.down_cmd->add_flag("--json", c.cluster.json, "machine-readable JSON output");
}

// submit, jobs, status, workers, logs, cancel: clients of a running coordinator.
void add_client_commands(CLI::App& app, Cli& c) {
  c.submit_cmd = app.add_subcommand("submit", "Submit a job to the coordinator");
  auto* submit_file = c.submit_cmd->add_option("job", c.submit.job_file, "job spec (YAML)")
                          ->check(CLI::ExistingFile);
  auto* submit_resume =
      c.submit_cmd->add_option("--resume", c.submit.resume_job,
                               "start a new job from job JOB's spec and newest committed "
                               "checkpoint (the cluster's checkpoint_root; "
                               "--set workers=N for another worker count)");
  submit_resume->excludes(submit_file);
  c.submit_cmd->add_option("--set", c.submit.overrides,
                           "override a spec field: a.b=c (repeatable)");
  c.submit_cmd->add_flag("--watch,-w", c.submit.watch,
                         "follow the job to its end with a live progress bar");
  add_client_flags(c.submit_cmd, &c.client);

  c.jobs_cmd = app.add_subcommand("jobs", "List jobs");
  add_client_flags(c.jobs_cmd, &c.client);

  c.status_cmd = app.add_subcommand("status", "Show a job: state, per-rank progress, accuracy");
  c.status_cmd->add_option("job", c.status.job_id, "job id")->required();
  c.status_cmd->add_flag("--watch,-w", c.status.watch,
                         "live per-rank table, redrawn every --interval until the job ends");
  c.status_cmd
      ->add_option("--interval", c.status.interval_s, "seconds between redraws with --watch")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  add_client_flags(c.status_cmd, &c.client);

  c.workers_cmd = app.add_subcommand("workers", "List worker daemons");
  c.workers_cmd->add_flag("--network", c.network,
                          "the measured round-trip times and bandwidths between workers and the "
                          "ring order placement uses");
  add_client_flags(c.workers_cmd, &c.client);

  c.logs_cmd = app.add_subcommand("logs", "Print a rank's trainer log");
  c.logs_cmd->add_option("job", c.job_id, "job id")->required();
  c.logs_cmd->add_option("--rank,-r", c.rank, "rank")->capture_default_str();
  c.logs_cmd->add_flag("--follow,-f", c.follow, "keep printing until the job ends");
  add_client_flags(c.logs_cmd, &c.client);

  c.cancel_cmd = app.add_subcommand("cancel", "Cancel a pending or running job");
  c.cancel_cmd->add_option("job", c.job_id, "job id")->required();
  add_client_flags(c.cancel_cmd, &c.client);
}

// tern worker: the coordinator, TLS and data directories from the flags and the cluster file.
int run_worker(Cli& c) {
  auto conn = tern::resolve_connection(c.worker_client);
  if (!conn.is_ok()) {
    std::cerr << "tern worker: " << conn.status().message() << std::endl;
    return tern::kExitBadInput;
  }
  c.worker.coordinator = conn->address;
  c.worker.security = conn->rpc.security;
  c.worker.rpc_deadline = std::min(c.worker.rpc_deadline, conn->rpc.deadline);
  if (conn->cluster) {
    c.worker.data_dirs = conn->cluster->data_dirs;
    c.worker.checkpoint_root = conn->cluster->checkpoint_root;
  }
  if (!c.data_dirs.empty()) {
    c.worker.data_dirs.clear();
    for (const auto& d : c.data_dirs)
      c.worker.data_dirs.push_back(std::filesystem::absolute(d).lexically_normal().string());
  }
  c.worker.stop_grace = std::chrono::milliseconds(c.grace_ms);
  return tern::worker_command(c.worker, c.worker_log_level);
}

// Runs the subcommand that was parsed.
int dispatch(Cli& c) {
  if (*c.run_cmd) return tern::run_local_job(c.run);
  if (*c.coord_cmd) return tern::coordinator_command(c.coord);
  if (*c.worker_cmd) return run_worker(c);
  if (*c.up_cmd) return tern::cluster_up_command(c.cluster);
  if (*c.down_cmd) return tern::cluster_down_command(c.cluster);
  if (*c.submit_cmd) {
    if (c.submit.job_file.empty() && c.submit.resume_job.empty()) {
      std::cerr << "tern submit: give a job spec (tern submit FILE) or a job to resume (tern "
                   "submit --resume JOB)"
                << std::endl;
      return tern::kExitBadInput;
    }
    return tern::submit_command(c.client, c.submit);
  }
  if (*c.jobs_cmd) return tern::jobs_command(c.client);
  if (*c.status_cmd) return tern::status_command(c.client, c.status);
  if (*c.workers_cmd) return tern::workers_command(c.client, c.network);
  if (*c.logs_cmd) return tern::logs_command(c.client, c.job_id, c.rank, c.follow);
  if (*c.cancel_cmd) return tern::cancel_command(c.client, c.job_id);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern: distributed training across the world"};
  app.require_subcommand(1);
  app.footer("Exit codes: 0 ok, 1 failed, 2 bad input, 3 coordinator unreachable.");
  Cli c;
  add_run_command(app, c);
  add_daemon_commands(app, c);
  add_cluster_commands(app, c);
  add_client_commands(app, c);
  CLI11_PARSE(app, argc, argv);
  return dispatch(c);
}
