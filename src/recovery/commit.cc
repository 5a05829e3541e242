#include "recovery/commit.h"

#include <algorithm>

namespace tern {
namespace {

// Per rank: [ok, step, rank_bytes, rank_digest, has_replicated, rep_bytes, rep_digest, 0].
constexpr int64_t kSlots = 8;

}  // namespace

Result<Manifest> gather_manifest(Communicator& comm, const std::optional<WrittenStep>& mine,
                                 int64_t step, int64_t generation, const std::string& job_id,
                                 const at::Device& device) {
  const int world = comm.size();
  const std::string rank_file = rank_file_name(comm.rank());
  at::Tensor local = at::zeros({kSlots}, at::kLong);
  auto* v = local.data_ptr<int64_t>();
  if (mine && mine->step == step) {
    for (const auto& f : mine->files) {
      if (f.name == rank_file) {
        v[0] = 1;
        v[2] = static_cast<int64_t>(f.bytes);
        v[3] = f.digest;
      } else if (f.name == kReplicatedFile) {
        v[4] = 1;
        v[5] = static_cast<int64_t>(f.bytes);
        v[6] = f.digest;
      }
    }
  }
  v[1] = step;
  std::vector<at::Tensor> all;
  for (int r = 0; r < world; ++r) all.push_back(at::zeros({kSlots}, at::kLong).to(device));
  at::Tensor sent = local.to(device);
  TERN_RETURN_IF_ERROR(all_gather_sync(comm, all, sent));
  for (auto& t : all) t = t.cpu();

  Manifest m;
  m.step = step;
  m.world = world;
  m.generation = generation;
  m.job_id = job_id;
  std::string missing, replicated_by;
  int replicated_count = 0;
  for (int r = 0; r < world; ++r) {
    const auto* g = all[r].data_ptr<int64_t>();
    if (g[0] != 1 || g[1] != step) {
      missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      continue;
    }
    m.files.push_back(
        {rank_file_name(r), static_cast<uint64_t>(g[2]), static_cast<uint32_t>(g[3])});
    if (g[4] == 1) {
      ++replicated_count;
      replicated_by += (replicated_by.empty() ? "" : ", ") + std::to_string(r);
      m.files.push_back(
          {kReplicatedFile, static_cast<uint64_t>(g[5]), static_cast<uint32_t>(g[6])});
    }
  }
  if (!missing.empty()) {
    return aborted("checkpoint step " + std::to_string(step) + " not committed: rank(s) " +
                   missing + " did not write it");
  }
  if (replicated_count != 1) {
    return aborted("checkpoint step " + std::to_string(step) +
                   " not committed: " + std::string(kReplicatedFile) + " written by " +
                   (replicated_count == 0 ? std::string("no rank") : "ranks " + replicated_by) +
                   " (exactly one rank must write it)");
  }
  std::sort(m.files.begin(), m.files.end(),
            [](const ManifestFile& a, const ManifestFile& b) { return a.name < b.name; });
  return m;
}

}  // namespace tern
