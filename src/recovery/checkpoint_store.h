// CheckpointStore: the on-disk layout of a job's checkpoints, the per-step MANIFEST and
// retention. Torch-free.
//
//   <dir>/step-000000000120/
//       replicated.ckpt   state every rank shares (parameters, optimizer momentum under SSGD),
//                         written by one rank
//       rank-0.ckpt ...   per-rank state (error-feedback memories, DGC velocities, embedding
//                         shards, data position), one file per rank
//       MANIFEST          written last, atomically, by one rank: every file's size and digest
//
// A step counts only when its MANIFEST parses and every file it lists exists with the listed
// size and a matching header digest (checkpoint_format.h). A crash at any point leaves either
// a complete step or a directory without (valid) MANIFEST, which loaders skip and retention
// later deletes. `dir` must be storage every rank (and a replacement node) can reach: the
// local disk on one machine, a shared file system across machines.
//
// Thread-compatible: const methods may run concurrently with each other; the owner serialises
// commit() and apply_retention() (the async writer runs them on its thread).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tern {

struct ManifestFile {
  std::string name;  // file name inside the step directory
  uint64_t bytes = 0;
  uint32_t digest = 0;
};

struct Manifest {
  int64_t step = -1;
  int64_t world = 0;
  int64_t generation = 0;
  std::string job_id;
  std::vector<ManifestFile> files;  // sorted by name
};

// Text form ("tern-checkpoint-manifest 1", one key or file per line, a CRC-32 line last).
std::string encode_manifest(const Manifest& manifest);
// DATA_LOSS naming `name` for anything malformed, a bad CRC or a duplicate/unsafe file name.
Result<Manifest> parse_manifest(std::string_view text, const std::string& name);

inline constexpr char kManifestFile[] = "MANIFEST";
inline constexpr char kReplicatedFile[] = "replicated.ckpt";
std::string rank_file_name(int64_t rank);  // "rank-3.ckpt"

class CheckpointStore {
 public:
  explicit CheckpointStore(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  std::string step_dir(int64_t step) const;  // <dir>/step-%012d
  std::string file_path(int64_t step, const std::string& file) const;
  // Creates the step directory (and `dir`), fsyncing the parent so the directory survives.
  Status prepare_step(int64_t step) const;

  // Checks that the listed files are present with the listed sizes and digests, then writes
  // MANIFEST atomically: from then on the step counts.
  Status commit(const Manifest& manifest) const;

  // Step numbers of every step directory, complete or not, ascending.
  Result<std::vector<int64_t>> list_steps() const;
  // The step's manifest when it is complete (structural check of every file: headers,
  // sizes, digests; payload checksums are verified when a file is loaded).
  Result<Manifest> check_step(int64_t step) const;
  // Complete steps, newest first; each incomplete or damaged one is appended to `skipped`
  // (when given) as a message naming the file and what is wrong.
  Result<std::vector<Manifest>> complete_steps(std::vector<std::string>* skipped = nullptr) const;

  // Keeps the newest `keep` complete steps (at least 1) and deletes every step directory
  // older than the oldest one kept, complete or not. Step directories newer than the newest
  // complete step are left alone (a write may be in flight). With no complete step nothing
  // is deleted. Returns the deleted steps.
  Result<std::vector<int64_t>> apply_retention(int64_t keep) const;

 private:
  std::string dir_;
};

}  // namespace tern
