#include "trainer/workloads/dlrm/shard_checkpoint.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "recovery/row_selection.h"

namespace tern {
namespace {

std::string prefix_of(int64_t table) { return "embedding." + std::to_string(table); }

int64_t rows_to_take(int64_t rows, double fraction) {
  return std::clamp<int64_t>(std::llround(fraction * static_cast<double>(rows)), 1, rows);
}

}  // namespace

Result<int64_t> append_shard(DlrmModel& model, ShardSave kind, const std::string& policy,
                             double row_fraction, std::mt19937_64& rng, NamedTensors* out) {
  int64_t saved = 0;
  for (int64_t t : model.owned_tables()) {
    at::Tensor weight = model.table(t);
    at::Tensor counts = model.access_counts(t);
    if (kind == ShardSave::kFull) {
      out->emplace_back(prefix_of(t) + ".weight", weight.detach());
      out->emplace_back(prefix_of(t) + ".access_count", counts);
      saved += weight.size(0);
      continue;
    }
    at::Tensor rows;
    if (policy == "mfu") {
      rows = select_rows_mfu(counts, rows_to_take(weight.size(0), row_fraction));
    } else if (policy == "ssu") {
      rows = select_rows_ssu(model.updated_rows(t), row_fraction, rng);
    } else {
      return invalid_argument("recovery.policy " + policy + " does not save rows (mfu | ssu)");
    }
    TERN_RETURN_IF_ERROR(append_rows(prefix_of(t), weight, rows, out));
    out->emplace_back(prefix_of(t) + "/counts", counts.index_select(0, rows).clone());
    saved += rows.numel();
  }
  model.mark_updates();
  return saved;
}

Result<ShardRestore> restore_shard(DlrmModel& model, const CheckpointStore& store,
                                   int64_t max_step) {
  std::vector<std::string> skipped;
  TERN_ASSIGN_OR_RETURN(std::vector<Manifest> complete, store.complete_steps(&skipped));
  // Newest first: walk back to the newest whole-shard save, then apply forward.
  const int64_t rank = model.rank();
  std::vector<Checkpoint> chain;
  ShardRestore out;
  for (const Manifest& m : complete) {
    if (m.step > max_step) continue;
    if (m.world != model.world()) {
      return failed_precondition(store.step_dir(m.step) + " was written by " +
                                 std::to_string(m.world) + " ranks; this job has " +
                                 std::to_string(model.world()));
    }
    LoadOptions lo;
    lo.replicated = false;
    lo.ranks = {rank};
    auto loaded = load_checkpoint_step(store, m.step, lo);
    if (!loaded.is_ok()) {
      spdlog::warn("shard restore: {}: {}; the chain stops at the save after it",
                   store.file_path(m.step, rank_file_name(rank)), loaded.status().message());
      break;
    }
    Checkpoint c = std::move(loaded->ranks.at(rank));
    auto kind = c.meta.extra.find("shard");
    if (kind == c.meta.extra.end()) {
      return failed_precondition(store.file_path(m.step, rank_file_name(rank)) +
                                 ": no embedding shard (not written by a DLRM job)");
    }
    const bool full = kind->second == "full";
    out.files.insert(out.files.begin(), store.file_path(m.step, rank_file_name(rank)));
    chain.insert(chain.begin(), std::move(c));
    if (full) {
      out.base_step = m.step;
      break;
    }
  }
  if (chain.empty()) {
    return not_found(store.dir() + ": no complete checkpoint at or before step " +
                     std::to_string(max_step) + " holds rank " + std::to_string(rank) +
                     "'s embedding shard");
  }
  for (const Checkpoint& c : chain) {
    if (c.meta.extra.at("shard") == "full") {
      NamedTensors shard;
      for (const auto& [name, t] : c.tensors) {
        if (name.rfind("embedding.", 0) == 0 && name.find('/') == std::string::npos)
          shard.emplace_back(name, t);
      }
      TERN_RETURN_IF_ERROR(model.load_sharded_state(shard).with_context(out.files.front()));
      for (int64_t t : model.owned_tables()) out.rows += model.table(t).size(0);
    } else {
      for (int64_t t : model.owned_tables()) {
        const at::Tensor* rows = c.find(prefix_of(t) + "/rows");
        const at::Tensor* values = c.find(prefix_of(t) + "/values");
        const at::Tensor* counts = c.find(prefix_of(t) + "/counts");
        if (rows == nullptr || values == nullptr) continue;
        TERN_RETURN_IF_ERROR(
            model.load_rows(t, *rows, *values).with_context("step " + std::to_string(c.meta.step)));
        if (counts != nullptr && counts->numel() == rows->numel()) {
          torch::NoGradGuard no_grad;
          model.access_counts(t).index_copy_(0, *rows, counts->to(at::kLong));
        }
        out.rows += rows->numel();
      }
      ++out.row_saves;
    }
    out.newest_step = c.meta.step;
  }
  for (int64_t t : model.owned_tables()) {
    out.captured_updates += static_cast<double>(model.access_counts(t).sum().item<int64_t>());
  }
  return out;
}

}  // namespace tern
