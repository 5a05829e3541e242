// PathPolicy: where a job spec may make a worker daemon's trainer read and write. A spec's
// path fields (data.path, recovery.dir, recovery.resume_from) name files on the worker; this
// keeps them inside the job's own directory and the configured data directories, so a
// submitted spec cannot read a daemon's keys or overwrite its files.
//
//   - relative paths are resolved against the job directory (trainers run there);
//   - writes (recovery.dir) must stay under a write root;
//   - reads (data.path, recovery.resume_from) under a write root or a read root.
//
// The coordinator checks at SubmitJob without knowing the job directory (job_dir empty:
// relative paths must not climb out with ".."); the daemon checks again before it spawns
// the trainer, with the real job directory and symlinks resolved.
#pragma once

#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"

namespace tern {

struct PathPolicy {
  std::string job_dir;                   // absolute; empty = unknown (coordinator)
  std::vector<std::string> write_roots;  // absolute
  std::vector<std::string> read_roots;   // absolute (data dirs)
  bool resolve_symlinks = false;         // the daemon: check where paths really lead
};

// OK, or INVALID_ARGUMENT naming the field, the path and where it may point.
Status check_job_paths(const JobSpec& spec, const PathPolicy& policy);

// True when `path` is `root` or below it (both absolute and normalised).
bool path_is_under(const std::string& path, const std::string& root);

}  // namespace tern
