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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern: distributed training across the world"};
  app.require_subcommand(1);
  app.footer("Exit codes: 0 ok, 1 failed, 2 bad input, 3 coordinator unreachable.");

  // --- tern run: standalone, no coordinator ---
  tern::RunOptions run;
  auto* run_cmd =
      app.add_subcommand("run", "Run a job on this machine with N local trainer processes");
  run_cmd->add_option("job", run.job_file, "job spec (YAML)")->required()->check(CLI::ExistingFile);
  run_cmd->add_option("--workers,-n", run.workers, "number of ranks (default: the spec's workers)");
  run_cmd->add_option("--set", run.overrides, "override a spec field: a.b=c (repeatable)");
  run_cmd->add_flag("--json", run.json, "print one JSON summary object");
  run_cmd->add_flag("--verbose,-v", run.verbose, "show the trainers' logs");
  run_cmd->add_option("--cluster", run.cluster_file,
                      "cluster file: regions and network model (WAN emulation)");
  run_cmd->add_option("--trainer", run.trainer_path, "tern-trainer binary");
  run_cmd->add_option("--run-dir", run.run_dir, "where logs and the effective spec go");
  run_cmd->add_option("--timeout", run.timeout_s, "stop the job after this many seconds");
  run_cmd->add_flag("--ring-order", run.ring_order,
                    "with --cluster: ranks in the ring order of the modelled links (as a "
                    "coordinator places them from measurements) instead of the file's order");
  run_cmd->add_option("--resume", run.resume_dir,
                      "resume from the newest valid checkpoint in DIR (recovery.resume_from)");

  // --- daemons ---
  tern::CoordinatorCommandOptions coord;
  auto* coord_cmd = app.add_subcommand("coordinator", "Run the coordinator (until SIGTERM)");
  coord_cmd
      ->add_option("--config", coord.config_file,
                   "cluster file (listen address, state_dir, leases)")
      ->check(CLI::ExistingFile);
  coord_cmd->add_option("--listen", coord.listen, "HOST:PORT to serve on (overrides the file)");
  coord_cmd->add_option("--state-dir", coord.state_dir,
                        "journal and logs directory (overrides the file)");
  coord_cmd->add_option("--log-level", coord.log_level, "trace|debug|info|warn|error");
  coord_cmd->add_option("--metrics-port", coord.metrics_port,
                        "HTTP port for /metrics and /healthz (overrides the file; 0 = off)");
  coord_cmd->add_flag("--repair", coord.repair,
                      "salvage every intact record of a damaged journal into a new one (the "
                      "damaged file is kept), rebuild the job id high-water mark, report, exit");
  coord_cmd->add_flag("--json", coord.json, "with --repair: the report as one JSON object");

  tern::WorkerDaemonOptions worker;
  tern::ClientOptions worker_client;
  worker_client.worker = true;
  std::string worker_log_level = "info";
  int64_t grace_ms = 5000;
  auto* worker_cmd = app.add_subcommand("worker", "Run a worker daemon (until SIGTERM)");
  worker_cmd->add_option("--coordinator", worker_client.coordinator, "coordinator HOST:PORT");
  worker_cmd->add_option("--cluster", worker_client.cluster_file,
                         "cluster file: the coordinator to join, TLS, token file, data dirs");
  worker_cmd->add_option("--token", worker_client.token,
                         "bearer token (default: $TERN_TOKEN, then the cluster file's "
                         "auth.token_file)");
  std::vector<std::string> data_dirs;
  worker_cmd->add_option("--data-dir", data_dirs,
                         "directory jobs may read data from (repeatable; default: the cluster "
                         "file's data_dirs, else /usr/share/datasets)");
  worker_cmd->add_option("--region", worker.region, "region this machine is in")
      ->capture_default_str();
  worker_cmd->add_option("--slots", worker.slots, "ranks this worker runs at once")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  worker_cmd->add_option("--name", worker.name, "worker id (default: assigned by the coordinator)");
  worker_cmd->add_option("--host", worker.host, "address peers reach this machine at")
      ->capture_default_str();
  worker_cmd->add_option("--work-dir", worker.work_dir, "job directories and trainer logs")
      ->capture_default_str();
  worker_cmd->add_option("--trainer", worker.trainer_path,
                         "tern-trainer binary (default: next to tern)");
  worker_cmd->add_option("--stop-grace-ms", grace_ms, "stop command -> SIGKILL")
      ->capture_default_str();
  worker_cmd->add_option("--log-level", worker_log_level, "trace|debug|info|warn|error");

  // --- cluster ---
  tern::ClusterCommandOptions cluster;
  auto* cluster_cmd =
      app.add_subcommand("cluster", "Start or stop a local cluster from a cluster file");
  cluster_cmd->require_subcommand(1);
  auto* up_cmd = cluster_cmd->add_subcommand("up", "Start the coordinator and worker daemons");
  up_cmd->add_option("file", cluster.file, "cluster file (YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  up_cmd->add_option("--timeout", cluster.timeout_s, "seconds to wait for every worker to register")
      ->capture_default_str();
  up_cmd->add_flag("--json", cluster.json, "machine-readable JSON output");
  auto* down_cmd = cluster_cmd->add_subcommand("down", "Stop the daemons (and their trainers)");
  down_cmd->add_option("file", cluster.file, "cluster file (YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  down_cmd->add_option("--grace", cluster.grace_s, "seconds between SIGTERM and SIGKILL")
      ->capture_default_str();
  down_cmd->add_flag("--json", cluster.json, "machine-readable JSON output");

  // --- client commands ---
  tern::ClientOptions client;
  tern::SubmitOptions submit;
  auto* submit_cmd = app.add_subcommand("submit", "Submit a job to the coordinator");
  auto* submit_file = submit_cmd->add_option("job", submit.job_file, "job spec (YAML)")->check(CLI::ExistingFile);
  auto* submit_resume = submit_cmd->add_option(
      "--resume", submit.resume_job,
      "start a new job from job JOB's spec and newest committed checkpoint (the cluster's checkpoint_root; "
      "--set workers=N for another worker count)");
  submit_resume->excludes(submit_file);
  submit_cmd->add_option("--set", submit.overrides, "override a spec field: a.b=c (repeatable)");
  submit_cmd->add_flag("--watch,-w", submit.watch,
                       "follow the job to its end with a live progress bar");
  add_client_flags(submit_cmd, &client);

  auto* jobs_cmd = app.add_subcommand("jobs", "List jobs");
  add_client_flags(jobs_cmd, &client);

  std::string job_id;
  auto* status_cmd = app.add_subcommand("status", "Show a job: state, per-rank progress, accuracy");
  tern::StatusOptions status;
  status_cmd->add_option("job", status.job_id, "job id")->required();
  status_cmd->add_flag("--watch,-w", status.watch,
                       "live per-rank table, redrawn every --interval until the job ends");
  status_cmd->add_option("--interval", status.interval_s, "seconds between redraws with --watch")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  add_client_flags(status_cmd, &client);

  auto* workers_cmd = app.add_subcommand("workers", "List worker daemons");
  bool network = false;
  workers_cmd->add_flag("--network", network,
                        "the measured round-trip times and bandwidths between workers and the "
                        "ring order placement uses");
  add_client_flags(workers_cmd, &client);

  int rank = 0;
  bool follow = false;
  auto* logs_cmd = app.add_subcommand("logs", "Print a rank's trainer log");
  logs_cmd->add_option("job", job_id, "job id")->required();
  logs_cmd->add_option("--rank,-r", rank, "rank")->capture_default_str();
  logs_cmd->add_flag("--follow,-f", follow, "keep printing until the job ends");
  add_client_flags(logs_cmd, &client);

  auto* cancel_cmd = app.add_subcommand("cancel", "Cancel a pending or running job");
  cancel_cmd->add_option("job", job_id, "job id")->required();
  add_client_flags(cancel_cmd, &client);

  CLI11_PARSE(app, argc, argv);
  if (*run_cmd) return tern::run_local_job(run);
  if (*coord_cmd) return tern::coordinator_command(coord);
  if (*worker_cmd) {
    auto conn = tern::resolve_connection(worker_client);
    if (!conn.is_ok()) {
      std::cerr << "tern worker: " << conn.status().message() << std::endl;
      return tern::kExitBadInput;
    }
    worker.coordinator = conn->address;
    worker.security = conn->rpc.security;
    worker.rpc_deadline = std::min(worker.rpc_deadline, conn->rpc.deadline);
    if (conn->cluster) {
      worker.data_dirs = conn->cluster->data_dirs;
      worker.checkpoint_root = conn->cluster->checkpoint_root;
    }
    if (!data_dirs.empty()) {
      worker.data_dirs.clear();
      for (const auto& d : data_dirs)
        worker.data_dirs.push_back(std::filesystem::absolute(d).lexically_normal().string());
    }
    worker.stop_grace = std::chrono::milliseconds(grace_ms);
    return tern::worker_command(worker, worker_log_level);
  }
  if (*up_cmd) return tern::cluster_up_command(cluster);
  if (*down_cmd) return tern::cluster_down_command(cluster);
  if (*submit_cmd) {
    if (submit.job_file.empty() && submit.resume_job.empty()) {
      std::cerr << "tern submit: give a job spec (tern submit FILE) or a job to resume (tern submit --resume JOB)"
                << std::endl;
      return tern::kExitBadInput;
    }
    return tern::submit_command(client, submit);
  }
  if (*jobs_cmd) return tern::jobs_command(client);
  if (*status_cmd) return tern::status_command(client, status);
  if (*workers_cmd) return tern::workers_command(client, network);
  if (*logs_cmd) return tern::logs_command(client, job_id, rank, follow);
  if (*cancel_cmd) return tern::cancel_command(client, job_id);
  return 0;
}
