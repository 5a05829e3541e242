// The body of the tern-trainer process, separate from argument parsing so tests can run it.
#pragma once

#include <string>
#include <vector>

#include "common/trainer_protocol.h"

namespace tern {

struct TrainerArgs {
  std::string spec_file;
  int rank = 0;
  int world = 1;
  std::string master;
  int64_t generation = 0;
  std::string job_id = "local";
  std::string work_dir = ".";
  std::string cluster_file;
  std::vector<std::string> regions;
  std::string bind_host = "127.0.0.1";
  std::vector<int> members;  // the group's ranks (empty: all); --rank is the job rank
  bool standby = false;
};

// Returns the process exit code (TrainerExit).
int trainer_main(const TrainerArgs& args);

}  // namespace tern
