// `tern coordinator` and `tern worker`: the long-running control-plane processes. Both run
// until SIGTERM or SIGINT and then shut down cleanly (the worker stops its trainers first).
// `tern coordinator --repair` instead salvages a damaged journal and exits.
#pragma once

#include <string>

#include "worker/worker_daemon.h"

namespace tern {

struct CoordinatorCommandOptions {
  std::string config_file;  // cluster file: listen address, state_dir, lease, network model
  std::string listen;       // overrides the file's coordinator.listen
  std::string state_dir;    // overrides the file's state_dir (required without a file)
  std::string log_level = "info";
  int metrics_port = -1;  // overrides the file's coordinator.metrics_port when >= 0
  // --repair: salvage a damaged journal (and the job id high-water mark) of the state
  // directory, print what was kept and lost, and exit instead of serving.
  bool repair = false;
  bool json = false;  // --json: the repair report as one JSON object
};
int coordinator_command(const CoordinatorCommandOptions& options);

int worker_command(const WorkerDaemonOptions& options, const std::string& log_level);

}  // namespace tern
