#include "trainer/dlrm_loop.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <limits>

#include "common/lr_schedule.h"
#include "common/trainer_protocol.h"
#include "recovery/checkpoint.h"
#include "trainer/checkpointer.h"
#include "trainer/nonfinite.h"
#include "trainer/sampler.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr int64_t kEvalBatch = 2048;

// Samples in the largest rank share of the training split (ranks get interleaved shares, so
// rank 0's). Local, no collective: a replacement rank computes it before it meets the group.
Result<int64_t> largest_share(const DataSpec& data, int world) {
  int64_t total = 0;
  if (data.source == "synthetic_ctr") {
    total = data.train_size;
  } else {
    // Criteo: one streaming pass over the split as a single rank.
    TERN_ASSIGN_OR_RETURN(auto all, make_ctr_stream(data, CtrSplit::kTrain, 0, 1));
    for (;;) {
      TERN_ASSIGN_OR_RETURN(Batch b, all->next(1 << 16));
      if (b.size() == 0) break;
      total += b.size();
    }
  }
  return (total + world - 1) / world;
}

}  // namespace

DlrmLoop::DlrmLoop(TrainerOptions options, std::shared_ptr<Communicator> comm, EventSink* sink)
    : options_(std::move(options)),
      spec_(options_.spec),
      counting_(std::make_shared<CountingCommunicator>(std::move(comm))),
      sink_(sink),
      ssu_rng_(mix_seed(static_cast<uint64_t>(options_.spec.train.seed), 3000 + options_.rank)) {}

DlrmLoop::~DlrmLoop() = default;

Status DlrmLoop::setup() {
  if (spec_.sync.strategy != "ssgd" || spec_.compress.method != "none" ||
      spec_.straggler.mode != "none") {
    return invalid_argument(
        "model.type dlrm averages its MLPs with plain SSGD: use sync.strategy ssgd, "
        "compress.method none and straggler.mode none (got " +
        spec_.sync.strategy + ", " + spec_.compress.method + ", " + spec_.straggler.mode + ")");
  }
  if (!options_.device.is_cpu())
    return invalid_argument("model.type dlrm runs on the CPU: use device cpu");
  if (!spec_.recovery.resume_from.empty()) {
    return invalid_argument("recovery.resume_from is not supported for model.type dlrm yet");
  }
  TERN_ASSIGN_OR_RETURN(DlrmOptions mo, DlrmOptions::from_spec(spec_));
  TERN_ASSIGN_OR_RETURN(model_, DlrmTrainer::create(mo, *counting_));
  TERN_ASSIGN_OR_RETURN(
      train_, make_ctr_stream(spec_.data, CtrSplit::kTrain, options_.rank, options_.world));
  TERN_ASSIGN_OR_RETURN(
      test_, make_ctr_stream(spec_.data, CtrSplit::kTest, options_.rank, options_.world));
  TERN_ASSIGN_OR_RETURN(int64_t share, largest_share(spec_.data, options_.world));
  if (share == 0 && spec_.data.source == "criteo")
    return data_loss(spec_.data.path + ": no training lines (data.holdout_every " +
                     std::to_string(spec_.data.holdout_every) + ")");
  if (share == 0)
    return invalid_argument("data.train_size is too small for " + std::to_string(options_.world) +
                            " workers");
  steps_per_epoch_ = (share + spec_.train.batch_size - 1) / spec_.train.batch_size;
  total_steps_ = spec_.train.steps > 0 ? spec_.train.steps : spec_.train.epochs * steps_per_epoch_;

  const RecoverySpec& rs = spec_.recovery;
  if (rs.interval == "fixed" && rs.checkpoint_every > 0) {
    interval_steps_ = first_step_ = rs.checkpoint_every;
  } else if (rs.interval != "fixed") {
    // Measure over the first steps (the first one warms up and is left out), then plan.
    plan_step_ = std::clamp<int64_t>(total_steps_ / 10, 2, 20);
  }
  if (interval_steps_ > 0 || plan_step_ > 0) {
    CheckpointerOptions co;
    co.dir = rs.dir.empty() ? (options_.work_dir.empty() ? std::string(".") : options_.work_dir) +
                                  "/checkpoints"
                            : rs.dir;
    // The loop schedules saves itself (checkpoint_due); `every` only bounds the commit lag.
    co.every = std::numeric_limits<int64_t>::max();
    // Row saves build on the newest whole-shard save: keep one in the store.
    co.keep = rs.policy == "full" ? rs.keep : std::max(rs.keep, rs.full_every + 1);
    co.rank = options_.rank;
    co.job_id = options_.job_id;
    checkpointer_ = std::make_unique<Checkpointer>(std::move(co), sink_);
  }
  if (options_.generation > 1) {
    Status joined =
        rs.mode == "full" ? rollback(/*have_state=*/false) : sync_state(/*have_state=*/false);
    TERN_RETURN_IF_ERROR(
        joined.with_context("joining generation " + std::to_string(options_.generation)));
    if (rs.mode == "partial") restore_lost_shard();
  }
  TERN_RETURN_IF_ERROR(seek(step_));
  std::string owned;
  for (int64_t t : model_->owned_tables()) owned += (owned.empty() ? "" : ",") + std::to_string(t);
  spdlog::info(
      "setup done: model=dlrm tables={} (this rank owns {}) dim={} steps/epoch={} total_steps={} "
      "checkpoints: interval={} policy={} {}",
      mo.table_sizes.size(), owned, mo.embedding_dim, steps_per_epoch_, total_steps_, rs.interval,
      rs.policy,
      interval_steps_ > 0 ? "every " + std::to_string(interval_steps_) + " steps"
      : plan_step_ > 0    ? "planned at step " + std::to_string(plan_step_)
                          : "off");
  return Status::ok();
}

Status DlrmLoop::seek(int64_t step) {
  TERN_RETURN_IF_ERROR(train_->rewind());
  return train_->skip_to((step % steps_per_epoch_) * spec_.train.batch_size);
}

Status DlrmLoop::train_step() {
  if (step_ % steps_per_epoch_ == 0 && train_->position() > 0)
    TERN_RETURN_IF_ERROR(train_->rewind());
  TERN_ASSIGN_OR_RETURN(Batch batch, train_->next(spec_.train.batch_size));
  auto t0 = Clock::now();
  model_->set_lr(scheduled_lr(spec_.train, step_, total_steps_));
  TERN_ASSIGN_OR_RETURN(DlrmStepStats stats, model_->step(batch));
  compute_s_ += seconds_since(t0);
  if (!stats.nonfinite_ranks.empty()) {
    // Every rank has the same list (DlrmTrainer agreed on it) and nothing was updated.
    const std::string mine =
        std::find(stats.nonfinite_ranks.begin(), stats.nonfinite_ranks.end(), options_.rank) !=
                stats.nonfinite_ranks.end()
            ? " (loss " + loss_text(stats.loss) + " here)"
            : "";
    if (spec_.train.on_nonfinite != "skip_step") {
      nonfinite_stop_ = true;
      return Status(StatusCode::kOutOfRange,  // run() puts "step N: " in front
                    "non-finite loss or gradient on rank " +
                        rank_list(stats.nonfinite_ranks) + mine +
                        "; lower train.lr, or set train.on_nonfinite: skip_step to leave such "
                        "steps out");
    }
    ++skipped_steps_;
    std::string message = "step " + std::to_string(step_) +
                          ": non-finite loss or gradient on rank " +
                          rank_list(stats.nonfinite_ranks) + mine +
                          "; update skipped on every rank (train.on_nonfinite: skip_step, " +
                          std::to_string(skipped_steps_) + " skipped so far)";
    if (skipped_steps_ <= 10 || skipped_steps_ % 100 == 0) spdlog::warn("{}", message);
    std::vector<int64_t> ranks(stats.nonfinite_ranks.begin(), stats.nonfinite_ranks.end());
    sink_->emit({{"event", "skipped"},
                 {"step", step_},
                 {"ranks", ranks},
                 {"skipped_steps", skipped_steps_},
                 {"message", message}});
    return Status::ok();
  }
  ++steps_computed_;
  samples_ += stats.samples;
  global_samples_ += stats.global_samples;
  window_samples_ += stats.global_samples;
  if (stats.samples > 0) {
    last_loss_ = stats.loss;
    window_loss_ += stats.loss;
    ++window_steps_;
  }
  return Status::ok();
}

// --- checkpoints -----------------------------------------------------------------------------

bool DlrmLoop::checkpoint_due(int64_t step) const {
  return interval_steps_ > 0 && step > 0 && step >= first_step_ &&
         (step - first_step_) % interval_steps_ == 0;
}

ShardSave DlrmLoop::save_kind(int64_t step) const {
  if (spec_.recovery.policy == "full") return ShardSave::kFull;
  int64_t k = (step - first_step_) / std::max<int64_t>(1, interval_steps_);
  return k % spec_.recovery.full_every == 0 ? ShardSave::kFull : ShardSave::kRows;
}

nlohmann::json DlrmLoop::counters() const {
  return {{"steps_per_epoch", steps_per_epoch_},
          {"total_steps", total_steps_},
          {"global_samples", global_samples_},
          {"compute_s", compute_s_},
          {"last_loss", last_loss_},
          {"interval_steps", interval_steps_},
          {"first_step", first_step_},
          {"plan_step", plan_step_}};
}

void DlrmLoop::load_counters(const nlohmann::json& c) {
  global_samples_ = c.value("global_samples", global_samples_);
  last_loss_ = c.value("last_loss", last_loss_);
  interval_steps_ = c.value("interval_steps", interval_steps_);
  first_step_ = c.value("first_step", first_step_);
  plan_step_ = c.value("plan_step", plan_step_);
}

Status DlrmLoop::save(ShardSave kind) {
  auto t0 = Clock::now();
  NamedTensors per_rank, replicated;
  TERN_ASSIGN_OR_RETURN(
      int64_t rows, append_shard(*model_, kind, spec_.recovery.policy, spec_.recovery.row_fraction,
                                 ssu_rng_, &per_rank));
  CheckpointMeta meta;
  meta.step = step_;
  meta.epoch = step_ / steps_per_epoch_;
  meta.sampler_position = (step_ % steps_per_epoch_) * spec_.train.batch_size;
  meta.world = options_.world;
  meta.generation = options_.generation;
  meta.job_id = options_.job_id;
  meta.extra["shard"] = shard_save_name(kind);
  meta.extra["policy"] = spec_.recovery.policy;
  meta.extra["trainer"] = counters().dump();
  if (options_.rank == 0) {
    for (auto& [name, t] : model_->replicated_state())
      replicated.emplace_back("param/" + name, t.detach());
  }
  spdlog::debug("checkpoint step {}: {} save of {} rows", step_, shard_save_name(kind), rows);
  checkpointer_->save(meta, per_rank, options_.rank == 0 ? &replicated : nullptr,
                      seconds_since(t0));
  last_checkpoint_step_ = step_;
  return Status::ok();
}

Status DlrmLoop::plan_interval(double probe_cost_s) {
  // Same inputs on every rank (the slowest rank's), so every rank plans the same interval.
  const double elapsed = seconds_since(measure_start_);
  std::vector<at::Tensor> t{at::tensor({probe_cost_s, elapsed}, at::kDouble)};
  TERN_RETURN_IF_ERROR(
      all_reduce_sync(*counting_, t, ReduceOp::kMax).with_context("checkpoint plan"));
  CheckpointPlanInputs in;
  in.n_shards = options_.world;
  in.pls_target = spec_.recovery.pls_target;
  in.mtbf_s = spec_.recovery.mtbf_s;
  in.checkpoint_cost_s = t[0][0].item<double>();
  const double measured = static_cast<double>(global_samples_ - measure_samples_);
  in.samples_per_s = measured / std::max(1e-9, t[0][1].item<double>());
  in.samples_per_step = spec_.train.batch_size * options_.world;
  auto planned = plan_checkpoint_interval(in);
  if (!planned.is_ok())
    return planned.status().with_context("recovery.interval " + spec_.recovery.interval);
  const CheckpointPlan& p = *planned;
  interval_steps_ =
      spec_.recovery.interval == "cpr" ? p.cpr_interval_steps : p.young_daly_interval_steps;
  first_step_ = step_;
  plan_ = {{"interval", spec_.recovery.interval},
           {"interval_steps", interval_steps_},
           {"n_shards", in.n_shards},
           {"pls_target", in.pls_target},
           {"mtbf_s", in.mtbf_s},
           {"checkpoint_cost_s", in.checkpoint_cost_s},
           {"measured_samples_per_s", in.samples_per_s},
           {"samples_per_step", in.samples_per_step},
           {"failures_per_sample", p.failures_per_sample},
           {"cpr_interval_samples", p.cpr_interval_samples},
           {"cpr_interval_steps", p.cpr_interval_steps},
           {"cpr_expected_pls", p.cpr_expected_pls},
           {"young_daly_interval_s", p.young_daly_interval_s},
           {"young_daly_interval_steps", p.young_daly_interval_steps}};
  spdlog::info(
      "checkpoint plan at step {} (measured over {} samples: {:.0f} samples/s, a synchronous "
      "whole-shard checkpoint blocks {:.4f} s; assumed MTBF {} s, PLS target {}): {}; using {} = "
      "every {} steps",
      step_, measured, in.samples_per_s, in.checkpoint_cost_s, in.mtbf_s, in.pls_target, p.summary,
      spec_.recovery.interval, interval_steps_);
  sink_->emit({{"event", "checkpoint_plan"}, {"step", step_}, {"plan", plan_}});
  return Status::ok();
}

Status DlrmLoop::checkpoint_point() {
  if (!checkpointer_) return Status::ok();
  if (interval_steps_ == 0 && step_ == plan_step_) {
    // The first checkpoint is a whole-shard save committed at once: its blocking time (snapshot,
    // waiting for the write, the manifest collective) is the cost C the plan uses, the cost of
    // a synchronous checkpoint (the async ones after it block less).
    const double before = checkpointer_->blocking_s();
    TERN_RETURN_IF_ERROR(save(ShardSave::kFull));
    TERN_RETURN_IF_ERROR(
        checkpointer_->commit_due(*counting_, step_, options_.generation, true, at::kCPU));
    return plan_interval(checkpointer_->blocking_s() - before);
  }
  if (plan_step_ >= 0 && interval_steps_ > 0) {
    // A long planned interval leaves the background write a few more steps before the commit
    // waits for it, but not many: until the commit a failure falls back to the save before
    // (more lost updates). From the shared interval, so every rank (a replacement too) commits
    // at the same step.
    checkpointer_->set_commit_lag(std::clamp<int64_t>(interval_steps_ / 8, 4, 16));
  }
  const bool due = checkpoint_due(step_) && step_ != last_checkpoint_step_;
  TERN_RETURN_IF_ERROR(
      checkpointer_->commit_due(*counting_, step_, options_.generation, due, at::kCPU));
  if (due) TERN_RETURN_IF_ERROR(save(save_kind(step_)));
  return Status::ok();
}

// --- recovery --------------------------------------------------------------------------------

Status DlrmLoop::recover(const Status& failure) {
  auto t0 = Clock::now();
  auto regrouped =
      regroup_after_failure(options_.regroup, spec_, options_.world, step_, failure, sink_,
                            {counting_.get(), nullptr, nullptr, &retired_comms_});
  if (!regrouped.is_ok()) return regrouped.status();
  RegroupRequest req = std::move(regrouped).value();
  options_.generation = req.generation;
  if (checkpointer_) {
    checkpointer_->abandon_pending();  // the new group never agreed on it
    last_checkpoint_step_ = -1;
  }
  const int64_t failed_at = step_;
  Status synced = req.rollback ? rollback(/*have_state=*/true) : sync_state(/*have_state=*/true);
  TERN_RETURN_IF_ERROR(
      synced.with_context("regroup at generation " + std::to_string(req.generation)));
  TERN_RETURN_IF_ERROR(seek(step_));
  ++recoveries_;
  double lost = seconds_since(t0);
  recovery_s_ += lost;
  sink_->emit({{"event", "regrouped"},
               {"generation", req.generation},
               {"step", step_},
               {"world", req.world},
               {"recovery_s", lost},
               {"recoveries", recoveries_},
               {"rollback", req.rollback},
               {"steps_rolled_back", steps_rolled_back_}});
  spdlog::info("regrouped at generation {}: training again from step {} after {:.2f} s ({})",
               req.generation, step_, lost,
               step_ < failed_at
                   ? "rolled back " + std::to_string(failed_at - step_) + " steps to the checkpoint"
                   : std::string("no rollback"));
  return Status::ok();
}

Status DlrmLoop::sync_state(bool have_state) {
  const int world = counting_->size();
  at::Tensor steps = at::zeros({world}, at::kLong);
  steps[options_.rank] =
      have_state ? step_ + 1 : 0;  // slot r ends as rank r's step + 1 (0: no state)
  std::vector<at::Tensor> t{steps};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, t));
  int src = 0;
  int64_t best = -1;
  for (int r = 0; r < world; ++r) {
    int64_t v = t[0][r].item<int64_t>() - 1;
    if (v > best) best = v, src = r;
  }
  if (best < 0) return Status::ok();  // nobody has state: the seeded init everywhere
  // The schedule and counters travel with the MLPs (doubles hold these integers exactly).
  std::vector<at::Tensor> c{
      at::tensor({static_cast<double>(global_samples_), static_cast<double>(interval_steps_),
                  static_cast<double>(first_step_), static_cast<double>(plan_step_), last_loss_},
                 at::kDouble)};
  TERN_RETURN_IF_ERROR(broadcast_tensors(*counting_, c, src)
                           .with_context("counters from rank " + std::to_string(src)));
  TERN_RETURN_IF_ERROR(
      model_->broadcast_replicated(src).with_context("MLPs from rank " + std::to_string(src)));
  auto v = c[0].accessor<double, 1>();
  global_samples_ = static_cast<int64_t>(v[0]);
  interval_steps_ = static_cast<int64_t>(v[1]);
  first_step_ = static_cast<int64_t>(v[2]);
  plan_step_ = static_cast<int64_t>(v[3]);
  last_loss_ = v[4];
  step_ = best;
  spdlog::info("state synced from rank {} at step {} ({} ranks)", src, best, world);
  return Status::ok();
}

Status DlrmLoop::rollback(bool have_state) {
  if (!checkpointer_) {
    spdlog::warn(
        "recovery.mode full without checkpoints: continuing from the group's furthest state");
    return sync_state(have_state);
  }
  const std::string dir = checkpointer_->store().dir();
  auto loaded = load_agreed_checkpoint(*counting_, dir);
  if (!loaded.is_ok()) {
    if (loaded.status().code() != StatusCode::kNotFound) return loaded.status();
    spdlog::warn(
        "no complete checkpoint to roll back to yet ({}); continuing from the group's furthest "
        "state",
        loaded.status().message());
    return sync_state(have_state);
  }
  const Checkpoint& rep = *loaded->replicated;
  const std::string rep_file = checkpointer_->store().file_path(loaded->step, kReplicatedFile);
  NamedTensors mlp;
  for (const auto& [name, t] : rep.tensors) {
    if (name.rfind("param/", 0) == 0) mlp.emplace_back(name.substr(6), t);
  }
  TERN_RETURN_IF_ERROR(model_->load_replicated_state(mlp).with_context(rep_file));
  TERN_ASSIGN_OR_RETURN(ShardRestore shard,
                        restore_shard(*model_, checkpointer_->store(), loaded->step));
  auto it = rep.meta.extra.find("trainer");
  if (it != rep.meta.extra.end()) load_counters(nlohmann::json::parse(it->second, nullptr, false));
  const int64_t before = step_;
  step_ = loaded->step;
  last_checkpoint_step_ = step_;  // on disk already
  if (have_state && before > step_) steps_rolled_back_ += before - step_;
  spdlog::info(
      "rolled back to step {} from {} (shard: whole save of step {} + {} row saves, {} rows)",
      step_, checkpointer_->store().step_dir(step_), shard.base_step, shard.row_saves, shard.rows);
  sink_->emit(
      {{"event", "rolled_back"}, {"step", step_}, {"dir", dir}, {"skipped", loaded->skipped}});
  return Status::ok();
}

void DlrmLoop::restore_lost_shard() {
  // Every training sample looks up one row of every table: the lost shard had this many
  // updates when its rank died.
  const double total =
      static_cast<double>(global_samples_) * static_cast<double>(model_->owned_tables().size());
  double captured = 0;
  nlohmann::json event = {{"event", "partial_restore"}, {"step", step_}};
  if (!checkpointer_) {
    spdlog::warn(
        "step {}: no checkpoints (recovery.checkpoint_every / interval): rank {}'s shard restarts "
        "from "
        "its seeded init",
        step_, options_.rank);
  } else {
    auto r = restore_shard(*model_, checkpointer_->store(), std::numeric_limits<int64_t>::max());
    if (!r.is_ok()) {
      spdlog::warn("step {}: rank {}'s shard restarts from its seeded init: {}", step_,
                   options_.rank, r.status().to_string());
    } else {
      captured = r->captured_updates;
      spdlog::info(
          "step {}: restored rank {}'s embedding shard (partial recovery) from {} (whole save of "
          "step {} + "
          "{} row saves, {} rows)",
          step_, options_.rank, r->files.back(), r->base_step, r->row_saves, r->rows);
      event["from_step"] = r->newest_step;
      event["base_step"] = r->base_step;
      event["row_saves"] = r->row_saves;
      event["rows"] = r->rows;
    }
  }
  const double lost = std::max(0.0, total - captured);
  lost_updates_ += lost;
  lost_samples_ += lost / std::max<double>(1.0, static_cast<double>(model_->owned_tables().size()));
  shard_updates_ += total;
  event["lost_updates"] = lost;
  event["shard_pls"] = total > 0 ? lost / total : 0.0;
  spdlog::info("step {}: the shard lost {:.0f} of its {:.0f} updates ({:.4f})", step_, lost, total,
               total > 0 ? lost / total : 0.0);
  sink_->emit(std::move(event));
}

// --- the loop --------------------------------------------------------------------------------

void DlrmLoop::emit_progress(bool force) {
  if (!force && (step_ + 1) % spec_.train.log_every != 0) return;
  if (window_steps_ == 0) return;
  double dt = seconds_since(window_start_);
  nlohmann::json e = {{"event", "progress"},
                      {"step", step_ + 1},
                      {"total_steps", total_steps_},
                      {"epoch", static_cast<double>(step_ + 1) / steps_per_epoch_},
                      {"loss", window_loss_ / window_steps_},
                      // this rank's share of the job's rate (the CLI multiplies by the world)
                      {"samples_per_s", dt > 0 ? window_samples_ / dt / options_.world : 0.0},
                      {"bytes_sent", counting_->counts().total()},
                      {"compute_s", compute_s_},
                      {"skipped_steps", skipped_steps_}};
  if (checkpointer_) {
    e["checkpoints"] = checkpointer_->committed();
    e["checkpoint_s"] = checkpointer_->blocking_s();
  }
  sink_->emit(std::move(e));
  window_loss_ = 0;
  window_steps_ = 0;
  window_samples_ = 0;
  window_start_ = Clock::now();
}

Result<DlrmMetrics> DlrmLoop::evaluate() {
  TERN_RETURN_IF_ERROR(test_->rewind());
  return model_->evaluate(*test_, kEvalBatch);
}

Status DlrmLoop::run() {
  sink_->emit({{"event", "started"},
               {"world", options_.world},
               {"pid", static_cast<int64_t>(getpid())},
               {"total_steps", total_steps_}});
  auto start = Clock::now();
  window_start_ = measure_start_ = start;
  measure_samples_ = global_samples_;
  for (; step_ < total_steps_; ++step_) {
    if (stop_.load()) return cancelled("stopped at step " + std::to_string(step_));
    inject_faults(spec_.debug, options_.rank, options_.generation, step_);
    if (step_ == 1) {  // throughput for the checkpoint plan: leave the warm-up step out
      measure_start_ = Clock::now();
      measure_samples_ = global_samples_;
    }
    const double blocked_before = checkpointer_ ? checkpointer_->blocking_s() : 0.0;
    if (Status st = checkpoint_point(); !st.is_ok()) {
      // A commit that failed on the dead peer waited for failure detection, not for a checkpoint.
      if (checkpointer_) failed_commit_s_ += checkpointer_->blocking_s() - blocked_before;
      TERN_RETURN_IF_ERROR(recover(st).with_context("checkpoint at step " + std::to_string(step_)));
      --step_;
      continue;
    }
    if (Status st = train_step(); !st.is_ok()) {
      TERN_RETURN_IF_ERROR(recover(st).with_context("step " + std::to_string(step_)));
      --step_;
      continue;
    }
    emit_progress((step_ + 1) % steps_per_epoch_ == 0 || step_ + 1 == total_steps_);
    if (spec_.train.eval_every > 0 && (step_ + 1) % spec_.train.eval_every == 0 &&
        step_ + 1 < total_steps_) {
      // As in the image trainer: evaluation time stays out of wall_s and samples_per_s.
      auto e0 = Clock::now();
      const double train_s = seconds_since(start) - eval_s_;
      TERN_ASSIGN_OR_RETURN(DlrmMetrics ev, evaluate());
      sink_->emit({{"event", "eval"},
                   {"step", step_ + 1},
                   {"test_auc", ev.auc},
                   {"test_logloss", ev.logloss},
                   {"test_accuracy", ev.accuracy},
                   {"test_loss", ev.logloss},
                   {"train_s", train_s}});
      eval_s_ += seconds_since(e0);
    }
  }
  if (checkpointer_) {
    TERN_RETURN_IF_ERROR(
        checkpointer_->commit_due(*counting_, step_, options_.generation, true, at::kCPU));
    if (Status st = checkpointer_->flush(); !st.is_ok()) {
      spdlog::warn("step {}: the last checkpoint writes failed: {}", step_, st.to_string());
    }
  }
  const double wall = seconds_since(start) - eval_s_;
  TERN_ASSIGN_OR_RETURN(DlrmMetrics ev, evaluate());
  sink_->emit({{"event", "eval"},
               {"step", step_},
               {"test_auc", ev.auc},
               {"test_logloss", ev.logloss},
               {"test_accuracy", ev.accuracy},
               {"test_loss", ev.logloss},
               {"train_s", wall}});

  // Job-wide figures, the same in every rank's summary: the worst rank's blocking time and
  // recovery, the lost shard's updates (only a replacement has any).
  const double blocking = checkpointer_ ? checkpointer_->blocking_s() - failed_commit_s_ : 0.0;
  std::vector<at::Tensor> mx{at::tensor({blocking, recovery_s_, static_cast<double>(recoveries_),
                                         static_cast<double>(steps_rolled_back_), wall},
                                        at::kDouble)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, mx, ReduceOp::kMax).with_context("summary"));
  std::vector<at::Tensor> sum{
      at::tensor({lost_updates_, shard_updates_, last_loss_, lost_samples_}, at::kDouble)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, sum).with_context("summary"));
  auto m = mx[0].accessor<double, 1>();
  auto s = sum[0].accessor<double, 1>();
  const double job_wall = m[4];
  const double step_s =
      steps_computed_ > 0 ? compute_s_ / static_cast<double>(steps_computed_) : 0.0;
  const double all_updates =
      static_cast<double>(global_samples_) * static_cast<double>(model_->owners().size());
  summary_ = {
      {"model", "dlrm"},
      {"steps", step_},
      {"epochs", static_cast<double>(step_) / steps_per_epoch_},
      {"samples", global_samples_},
      {"samples_per_s", job_wall > 0 ? global_samples_ / job_wall : 0.0},
      {"computed_samples", samples_},
      {"final_loss", s[2] / options_.world},
      {"test_logloss", ev.logloss},
      {"test_loss", ev.logloss},
      {"test_auc", ev.auc},
      {"test_accuracy", ev.accuracy},
      {"test_samples", ev.samples},
      {"bytes_sent_per_rank", counting_->counts().total()},
      {"wall_s", job_wall},
      {"eval_s", eval_s_},
      {"compute_s", compute_s_},
      {"strategy", "ssgd"},
      {"recoveries", static_cast<int64_t>(m[2])},
      {"recovery_s", m[1]},
      {"steps_rolled_back", static_cast<int64_t>(m[3])},
      // Wall time a failure cost: the regroup (waiting for and restoring the replacement) plus
      // the steps redone after a rollback.
      {"time_lost_s", m[1] + m[3] * step_s},
      {"generation", options_.generation},
      {"skipped_steps", skipped_steps_},
      {"recovery_mode", spec_.recovery.mode},
      {"checkpoint_policy", spec_.recovery.policy},
      {"checkpoint_interval", spec_.recovery.interval},
      {"checkpoint_interval_steps", interval_steps_},
      // PLS (ALGORITHMS.md §5): updates of lost shards that no checkpoint had, as a fraction of
      // those shards' updates at the failure (shard_pls) and of the whole model's over the job
      // (pls, the paper's measure: comparable with recovery.pls_target).
      {"lost_updates", s[0]},
      {"lost_samples", s[3]},  // lost updates in samples (each sample updates one row per table)
      {"shard_pls", s[1] > 0 ? s[0] / s[1] : 0.0},
      {"pls", all_updates > 0 ? s[0] / all_updates : 0.0},
  };
  if (!plan_.is_null()) summary_["checkpoint_plan"] = plan_;
  if (checkpointer_) {
    summary_.update(checkpointer_->summary());
    summary_["checkpoint_s"] = m[0];
    summary_["checkpoint_overhead"] = job_wall > 0 ? m[0] / job_wall : 0.0;
  } else {
    summary_["checkpoints"] = 0;
    summary_["checkpoint_s"] = 0.0;
    summary_["checkpoint_overhead"] = 0.0;
  }
  sink_->emit({{"event", "finished"}, {"summary", summary_}});
  return Status::ok();
}

}  // namespace tern
