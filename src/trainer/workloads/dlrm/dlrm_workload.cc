#include "trainer/workloads/dlrm/dlrm_workload.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>

#include "trainer/loop/sampler.h"
#include "trainer/workloads/dlrm/shard_checkpoint.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kEvalBatch = 2048;

// The key of a defect's count in the summary: malformed_overlong, malformed_label, ...
std::string malformed_key(CriteoDefect d) {
  return std::string("malformed_") + criteo_defect_name(d);
}

// Samples of rank `rank`'s interleaved share of `total` (rank, rank + world, ...).
int64_t share_of(int64_t total, int rank, int world) {
  return total > rank ? (total - rank + world - 1) / world : 0;
}

}  // namespace

DlrmWorkload::~DlrmWorkload() = default;

Status DlrmWorkload::setup(const WorkloadContext& ctx) {
  spec_ = ctx.spec;
  rank_ = ctx.rank;
  world_ = ctx.world;
  ssu_rng_.seed(mix_seed(static_cast<uint64_t>(spec_->train.seed), 3000 + ctx.rank));
  if (!ctx.device.is_cpu())
    return invalid_argument("model.type dlrm runs on the CPU: use device cpu");
  TERN_ASSIGN_OR_RETURN(DlrmOptions mo, DlrmOptions::from_spec(*spec_));
  TERN_ASSIGN_OR_RETURN(model_, DlrmModel::create(mo, *ctx.comm));
  const DataSpec& data = spec_->data;
  if (data.source == DataSource::kSyntheticCtr) {
    synthetic_ = std::make_shared<const SyntheticCtr>(synthetic_ctr_options(data));
  } else {
    TERN_ASSIGN_OR_RETURN(train_stream_, make_ctr_stream(data, CtrSplit::kTrain, rank_, world_));
  }
  TERN_ASSIGN_OR_RETURN(test_, make_ctr_stream(data, CtrSplit::kTest, rank_, world_));
  // Samples in the training split: synthetic_ctr says; a Criteo file is scanned whole, on every
  // rank alike (local, no collective: a replacement rank does it before it meets the group), so
  // a file the malformed-line policy refuses fails every rank with the same data error before
  // the first step, and every rank knows the file's malformed count for the summary.
  int64_t total = data.train_size;
  if (data.source == DataSource::kCriteo) {
    MalformedOptions policy = criteo_malformed_options(data);
    policy.log = rank_ == 0;  // the first few malformed lines, once per job
    TERN_ASSIGN_OR_RETURN(CriteoScan scan, scan_criteo(data.path, data.holdout_every, policy));
    total = scan.train_valid;
    if (rank_ == 0) {
      spdlog::info(
          "criteo data {}: {} lines, {} train + {} test well-formed, {} malformed ({}; "
          "data.malformed {})",
          data.path, scan.lines, scan.train_valid, scan.test_valid, scan.malformed, scan.breakdown,
          name_of(data.malformed));
    }
    scan_ = std::move(scan);
  }
  share_ = share_of(total, 0, world_);
  if (share_ == 0 && data.source == DataSource::kCriteo) {
    return data_loss(data.path + ": no training lines (data.holdout_every " +
                     std::to_string(data.holdout_every) + ")");
  }
  if (share_ == 0) {
    return invalid_argument("data.train_size is too small for " + std::to_string(world_) +
                            " workers");
  }
  steps_per_epoch_ = (share_ + spec_->train.batch_size - 1) / spec_->train.batch_size;
  return Status::ok();
}

std::vector<std::pair<std::string, at::Tensor>> DlrmWorkload::named_parameters() const {
  return model_->replicated_state();
}

std::vector<int64_t> DlrmWorkload::part(int64_t step, int rank) {
  const int64_t batch = spec_->train.batch_size;
  const int64_t begin = (step % steps_per_epoch_) * batch;
  std::vector<int64_t> out;
  if (synthetic_) {
    const int64_t end = std::min(begin + batch, share_of(synthetic_->train_size(), rank, world_));
    for (int64_t p = begin; p < end; ++p) out.push_back(rank + p * world_);
  } else {
    // Positions in this rank's stream (the stream ends a short share early).
    for (int64_t p = begin; p < begin + batch; ++p) out.push_back(p);
  }
  return out;
}

Result<Batch> DlrmWorkload::batch_of(const StepPlan& plan) {
  if (plan.skip || plan.indices.empty()) return Batch{};
  if (synthetic_) return synthetic_->batch(CtrSplit::kTrain, plan.indices);
  const int64_t first = plan.indices.front();
  if (train_stream_->position() != first) {
    Status s = train_stream_->skip_to(first);
    if (s.code() == StatusCode::kOutOfRange) return Batch{};  // past the end of this rank's share
    TERN_RETURN_IF_ERROR(s);
  }
  return train_stream_->next(static_cast<int64_t>(plan.indices.size()));
}

Result<StepOutput> DlrmWorkload::compute(int64_t step, const StepPlan& plan,
                                         std::vector<at::Tensor>* grads) {
  TERN_ASSIGN_OR_RETURN(Batch batch, batch_of(plan));
  const bool weighted = !plan.weights.empty() && batch.size() > 0;
  std::vector<double> weights;
  if (weighted) weights.assign(plan.weights.begin(), plan.weights.begin() + batch.size());
  auto t0 = Clock::now();
  model_->set_step(step);
  TERN_ASSIGN_OR_RETURN(DlrmStepStats stats, model_->forward_backward(batch, weights));
  StepOutput out;
  out.compute_s = std::chrono::duration<double>(Clock::now() - t0).count();
  out.loss = stats.loss;
  out.samples = stats.samples;
  out.global_samples = stats.global_samples;
  out.finite = stats.finite;
  *grads = model_->dense_grads();
  return out;
}

Status DlrmWorkload::finish_step(bool apply) {
  if (!apply) {
    model_->drop_step();
    return Status::ok();
  }
  return model_->apply_embedding_update();
}

Result<Metrics> DlrmWorkload::evaluate() {
  // LazyDP: the model evaluated is eager DP-SGD's (lookups would flush the rows they read;
  // the evaluation at the end flushes every row, the end of training).
  model_->flush_noise();
  TERN_RETURN_IF_ERROR(test_->rewind());
  TERN_ASSIGN_OR_RETURN(DlrmMetrics m, model_->evaluate(*test_, kEvalBatch));
  return Metrics{{"test_accuracy", m.accuracy},
                 {"test_loss", m.logloss},
                 {"test_auc", m.auc},
                 {"test_logloss", m.logloss},
                 {"test_samples", static_cast<double>(m.samples)}};
}

Result<int64_t> DlrmWorkload::save_sharded(ShardSave kind, NamedTensors* out) {
  // LazyDP: a save holds every row with all its noise (so restoring needs no per-row record:
  // every restored row is noised until its save's step).
  model_->flush_noise();
  return append_shard(*model_, kind, spec_->recovery.policy, spec_->recovery.row_fraction, ssu_rng_,
                      out);
}

Status DlrmWorkload::restore_sharded(const CheckpointStore& store, int64_t step) {
  TERN_ASSIGN_OR_RETURN(ShardRestore shard, restore_shard(*model_, store, step));
  model_->reset_noise_bookkeeping(step);
  spdlog::info(
      "embedding shard of rank {} restored from {} (whole save of step {} + {} row saves, {} "
      "rows){}",
      rank_, shard.files.back(), shard.base_step, shard.row_saves, shard.rows,
      shard.resharded_from_world > 0
          ? "; re-sharded from the " + std::to_string(shard.resharded_from_world) +
                " ranks that wrote it"
          : std::string());
  return Status::ok();
}

nlohmann::json DlrmWorkload::restore_lost_state(const CheckpointStore* store,
                                                int64_t global_samples) {
  // Every training sample looks up one row of every table: the lost shard had this many
  // updates when its rank died.
  const double tables = static_cast<double>(model_->owned_tables().size());
  const double total = static_cast<double>(global_samples) * tables;
  double captured = 0;
  nlohmann::json event = nlohmann::json::object();
  if (store == nullptr) {
    spdlog::warn(
        "no checkpoints (recovery.checkpoint_every / interval): rank {}'s shard restarts from its "
        "seeded init",
        rank_);
  } else {
    auto r = restore_shard(*model_, *store, std::numeric_limits<int64_t>::max());
    if (!r.is_ok()) {
      spdlog::warn("rank {}'s shard restarts from its seeded init: {}", rank_,
                   r.status().to_string());
    } else {
      captured = r->captured_updates;
      spdlog::info(
          "restored rank {}'s embedding shard (partial recovery) from {} (whole save of step {} + "
          "{} row "
          "saves, {} rows)",
          rank_, r->files.back(), r->base_step, r->row_saves, r->rows);
      event["shard_from_step"] = r->newest_step;
      event["base_step"] = r->base_step;
      event["row_saves"] = r->row_saves;
      event["rows"] = r->rows;
    }
  }
  // LazyDP: the restored rows hold their noise (saves are flushed); the steps lost with the
  // shard take their noise with their updates. Counted from the next step.
  model_->reset_noise_bookkeeping(-1);
  const double lost = std::max(0.0, total - captured);
  lost_updates_ += lost;
  lost_samples_ += lost / std::max(1.0, tables);
  shard_updates_ += total;
  event["lost_updates"] = lost;
  event["shard_pls"] = total > 0 ? lost / total : 0.0;
  spdlog::info("the shard lost {:.0f} of its {:.0f} updates ({:.4f})", lost, total,
               total > 0 ? lost / total : 0.0);
  return event;
}

Result<nlohmann::json> DlrmWorkload::summary(Communicator& comm, int64_t global_samples) {
  // Only a replacement rank has lost updates: the sums are the job's.
  std::vector<at::Tensor> sum{at::tensor(
      {lost_updates_, shard_updates_, lost_samples_, static_cast<double>(model_->noised_rows())},
      at::kDouble)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(comm, sum).with_context("summary"));
  auto s = sum[0].accessor<double, 1>();
  const double all_updates =
      static_cast<double>(global_samples) * static_cast<double>(model_->owners().size());
  // PLS (docs/algorithms.md §5): updates of lost shards that no checkpoint had, as a fraction of
  // those shards' updates at the failure (shard_pls) and of the whole model's over the job
  // (pls, the paper's measure: comparable with recovery.pls_target).
  nlohmann::json out{{"lost_updates", s[0]},
                     {"lost_samples", s[2]},  // each sample updates one row per table
                     {"shard_pls", s[1] > 0 ? s[0] / s[1] : 0.0},
                     {"pls", all_updates > 0 ? s[0] / all_updates : 0.0}};
  if (spec_->train.dp.enabled) out["dp_noised_rows"] = s[3];  // row noise draws, all owners
  if (scan_) {
    // The whole file's figures (every rank scanned it alike): lines, and the malformed lines
    // data.malformed skip left out, in all and by defect.
    out["data_lines"] = scan_->lines;
    out["malformed_lines"] = scan_->malformed;
    for (int k = 1; k < kCriteoDefectKinds; ++k) {
      out[malformed_key(static_cast<CriteoDefect>(k))] = scan_->by_defect[k];
    }
  }
  return out;
}

std::string DlrmWorkload::describe() const {
  std::string owned;
  for (int64_t t : model_->owned_tables()) owned += (owned.empty() ? "" : ",") + std::to_string(t);
  return "tables=" + std::to_string(model_->owners().size()) + " (this rank owns " + owned +
         ") dim=" + std::to_string(spec_->model.embedding_dim) +
         " data=" + name_of(spec_->data.source);
}

}  // namespace tern
