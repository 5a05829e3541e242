// `tern cluster up|down FILE`: a cluster of local processes from one cluster file.
//
// up:   validates the file (an invalid file starts nothing), starts `tern coordinator` and one
//       `tern worker` per configured worker, each in its own session (setsid) so they outlive
//       the CLI, writes pid files to <state_dir>/run/, waits until every worker registered,
//       and prints where the logs are. On any failure it stops what it started.
// down: SIGTERM to the workers (which stop their trainers), then the coordinator; SIGKILL to
//       each process group still alive after the grace period; removes the pid files.
#pragma once

#include <string>

namespace tern {

struct ClusterCommandOptions {
  std::string file;
  double timeout_s = 30;  // up: how long to wait for registration
  double grace_s = 10;    // down: SIGTERM -> SIGKILL
  bool json = false;
};

int cluster_up_command(const ClusterCommandOptions& options);
int cluster_down_command(const ClusterCommandOptions& options);

}  // namespace tern
