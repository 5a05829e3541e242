#include "trainer/workloads/dlrm/shard_checkpoint.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "recovery/row_selection.h"

namespace tern {
namespace {

std::string prefix_of(int64_t table) { return "embedding." + std::to_string(table); }

int64_t rows_to_take(int64_t rows, double fraction) {
  return std::clamp<int64_t>(std::llround(fraction * static_cast<double>(rows)), 1, rows);
}

}  // namespace

Result<int64_t> append_shard(DlrmModel& model, ShardSave kind, RowPolicy policy,
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
    if (policy == RowPolicy::kMfu) {
      rows = select_rows_mfu(counts, rows_to_take(weight.size(0), row_fraction));
    } else if (policy == RowPolicy::kSsu) {
      rows = select_rows_ssu(model.updated_rows(t), row_fraction, rng);
    } else {
      return invalid_argument("recovery.policy " + name_of(policy) +
                              " does not save rows (mfu | ssu)");
    }
    TERN_RETURN_IF_ERROR(append_rows(prefix_of(t), weight, rows, out));
    out->emplace_back(prefix_of(t) + "/counts", counts.index_select(0, rows).clone());
    saved += rows.numel();
  }
  model.mark_updates();
  return saved;
}

namespace {

// One save of one table: a whole table (weight + access counts) or some of its rows.
struct TableSave {
  int64_t step = -1;
  bool full = false;
  at::Tensor weight, counts;            // full
  at::Tensor rows, values, row_counts;  // rows
  std::string file;
};

Status load_table(DlrmModel& model, int64_t t, const TableSave& save) {
  at::Tensor w = model.table(t);
  if (!save.weight.sizes().equals(w.sizes())) {
    return failed_precondition(save.file + ": " + prefix_of(t) + ".weight is " +
                               c10::str(save.weight.sizes()) + ", this job's table is " +
                               c10::str(w.sizes()) +
                               " (written for another data.table_sizes or model.embedding_dim)");
  }
  torch::NoGradGuard no_grad;
  w.copy_(save.weight);
  if (save.counts.defined() && save.counts.numel() == w.size(0)) {
    model.access_counts(t).copy_(save.counts.to(at::kLong));
  }
  return Status::ok();
}

// Adds the saves of the tables in `owned` (not yet based on a whole save) that rank file `c`
// of `step` holds to the front of their chains; returns whether it held any.
bool collect_table_saves(const Checkpoint& c, const std::vector<int64_t>& owned, int64_t step,
                         bool full, const std::string& file, std::set<int64_t>* based_set,
                         std::map<int64_t, std::vector<TableSave>>* chains_map) {
  std::set<int64_t>& based = *based_set;
  std::map<int64_t, std::vector<TableSave>>& chains = *chains_map;
  bool used = false;
  for (int64_t t : owned) {
    if (based.count(t)) continue;
    TableSave save;
    save.step = step;
    save.full = full;
    save.file = file;
    if (full) {
      const at::Tensor* w = c.find(prefix_of(t) + ".weight");
      if (w == nullptr) continue;
      save.weight = *w;
      if (const at::Tensor* n = c.find(prefix_of(t) + ".access_count")) save.counts = *n;
      based.insert(t);
    } else {
      const at::Tensor* rows = c.find(prefix_of(t) + "/rows");
      const at::Tensor* values = c.find(prefix_of(t) + "/values");
      if (rows == nullptr || values == nullptr) continue;
      save.rows = *rows;
      save.values = *values;
      if (const at::Tensor* n = c.find(prefix_of(t) + "/counts")) save.row_counts = *n;
    }
    chains[t].insert(chains[t].begin(), std::move(save));
    used = true;
  }
  return used;
}

// Applies every table's chain (its whole save, then the row saves after it) to the model.
Status apply_chains(DlrmModel& model, const std::map<int64_t, std::vector<TableSave>>& chains,
                    ShardRestore* out, std::set<int64_t>* row_steps,
                    std::set<int64_t>* base_steps) {
  for (const auto& [t, chain] : chains) {
    for (const TableSave& save : chain) {
      if (save.full) {
        TERN_RETURN_IF_ERROR(load_table(model, t, save));
        out->rows += save.weight.size(0);
        base_steps->insert(save.step);
      } else {
        TERN_RETURN_IF_ERROR(model.load_rows(t, save.rows, save.values).with_context(save.file));
        if (save.row_counts.defined() && save.row_counts.numel() == save.rows.numel()) {
          torch::NoGradGuard no_grad;
          model.access_counts(t).index_copy_(0, save.rows.to(at::kLong),
                                             save.row_counts.to(at::kLong));
        }
        out->rows += save.rows.numel();
        row_steps->insert(save.step);
      }
      out->newest_step = std::max(out->newest_step, save.step);
    }
  }
  return Status::ok();
}

}  // namespace

Result<ShardRestore> restore_shard(DlrmModel& model, const CheckpointStore& store,
                                   int64_t max_step) {
  std::vector<std::string> skipped;
  TERN_ASSIGN_OR_RETURN(std::vector<Manifest> complete, store.complete_steps(&skipped));
  const int64_t rank = model.rank();
  const std::vector<int64_t> owned = model.owned_tables();
  // Newest first, per owned table: its saves back to its newest whole save, then applied
  // forward. A step written by this world holds this rank's tables in its own rank file (the
  // owner map is a function of the tables and the world); one written by another world is
  // re-sharded: every rank file of the step is read and the tables this rank owns now taken.
  std::map<int64_t, std::vector<TableSave>> chains;
  std::set<int64_t> based;  // tables whose whole save was found
  std::set<int64_t> other_world_steps;
  ShardRestore out;
  bool stop = false;
  for (const Manifest& m : complete) {
    if (m.step > max_step) continue;
    if (stop || based.size() == owned.size()) break;
    std::vector<int64_t> ranks;
    if (m.world == model.world()) {
      ranks = {rank};
    } else {
      for (int64_t k = 0; k < m.world; ++k) ranks.push_back(k);
      other_world_steps.insert(m.step);
    }
    for (int64_t k : ranks) {
      const std::string file = store.file_path(m.step, rank_file_name(k));
      LoadOptions lo;
      lo.replicated = false;
      lo.ranks = {k};
      auto loaded = load_checkpoint_step(store, m.step, lo);
      if (!loaded.is_ok()) {
        spdlog::warn("shard restore: {}: {}; the chain stops at the save after it", file,
                     loaded.status().message());
        stop = true;
        break;
      }
      const Checkpoint& c = loaded->ranks.at(k);
      auto kind = c.meta.extra.find("shard");
      if (kind == c.meta.extra.end()) {
        return failed_precondition(file + ": no embedding shard (not written by a DLRM job)");
      }
      const bool full = kind->second == "full";
      if (collect_table_saves(c, owned, m.step, full, file, &based, &chains)) {
        out.files.insert(out.files.begin(), file);
      }
    }
  }
  if (chains.empty()) {
    return not_found(store.dir() + ": no complete checkpoint at or before step " +
                     std::to_string(max_step) + " holds rank " + std::to_string(rank) +
                     "'s embedding shard");
  }
  // Re-sharded from another world, every table this rank owns must have come from some rank
  // file: a table no file holds was written for another table layout.
  if (!other_world_steps.empty()) {
    for (int64_t t : owned) {
      if (chains.count(t) == 0) {
        return failed_precondition(store.dir() + ": no rank file of step(s) at or before " +
                                   std::to_string(max_step) + " holds embedding table " +
                                   std::to_string(t) + ", which rank " + std::to_string(rank) +
                                   " of " + std::to_string(model.world()) +
                                   " owns (written for another data.num_tables?)");
      }
    }
  }
  std::set<int64_t> row_steps, base_steps;
  TERN_RETURN_IF_ERROR(apply_chains(model, chains, &out, &row_steps, &base_steps));
  // The chain's base: the oldest whole save a table starts from (-1 when some table starts
  // from its seeded init).
  out.base_step = based.size() == owned.size() && !base_steps.empty() ? *base_steps.begin() : -1;
  out.row_saves = static_cast<int64_t>(row_steps.size());
  for (const Manifest& m : complete) {  // newest first: the world of the newest re-sharded save
    if (other_world_steps.count(m.step)) {
      out.resharded_from_world = m.world;
      break;
    }
  }
  for (int64_t t : owned) {
    out.captured_updates += static_cast<double>(model.access_counts(t).sum().item<int64_t>());
  }
  return out;
}

}  // namespace tern
