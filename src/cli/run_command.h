// `tern run`: the standalone launcher (like `torchrun --standalone`). Starts N tern-trainer
// processes on this machine, which rendezvous through tern's store hosted by rank 0 on
// 127.0.0.1, shows a live progress line, and prints a summary (or one JSON object with --json).
#pragma once

#include <string>
#include <vector>

namespace tern {

struct RunOptions {
  std::string job_file;
  int64_t workers = 0;                 // 0 = the spec's `workers`
  std::vector<std::string> overrides;  // --set a.b=c
  bool json = false;
  bool verbose = false;      // trainers' logs to the terminal too
  std::string cluster_file;  // --cluster: regions + network (WAN emulation)
  std::string trainer_path;  // default: tern-trainer next to this binary
  std::string run_dir;       // default: .tern/runs/<name>-<time>
  double timeout_s = 0;      // 0 = none: kill the run after this long
  std::string resume_dir;    // --resume: recovery.resume_from (a checkpoint directory)
  // --ring-order: order the ranks by ring_order over the cluster's modelled links (what the
  // daemons measure under emulation, issue 24) instead of the file's region order.
  bool ring_order = false;
};

// Returns the process exit code (0 = the job SUCCEEDED).
int run_local_job(const RunOptions& options);

}  // namespace tern
