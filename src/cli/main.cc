// tern: the command-line interface (see README.md).
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/run_command.h"

int main(int argc, char** argv) {
  CLI::App app{"tern: distributed training across the world"};
  app.require_subcommand(1);

  tern::RunOptions run;
  auto* run_cmd = app.add_subcommand("run", "Run a job on this machine with N local trainer processes");
  run_cmd->add_option("job", run.job_file, "job spec (YAML)")->required()->check(CLI::ExistingFile);
  run_cmd->add_option("--workers,-n", run.workers, "number of ranks (default: the spec's workers)");
  run_cmd->add_option("--set", run.overrides, "override a spec field: a.b=c (repeatable)");
  run_cmd->add_flag("--json", run.json, "print one JSON summary object");
  run_cmd->add_flag("--verbose,-v", run.verbose, "show the trainers' logs");
  run_cmd->add_option("--cluster", run.cluster_file, "cluster file: regions and network model (WAN emulation)");
  run_cmd->add_option("--trainer", run.trainer_path, "tern-trainer binary");
  run_cmd->add_option("--run-dir", run.run_dir, "where logs and the effective spec go");
  run_cmd->add_option("--timeout", run.timeout_s, "stop the job after this many seconds");

  CLI11_PARSE(app, argc, argv);
  if (*run_cmd) return tern::run_local_job(run);
  return 0;
}
