#include "trainer/loop/training_loop.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <thread>

#include "common/clock.h"
#include "common/lr_schedule.h"
#include "common/trainer_codec.h"
#include "common/trainer_protocol.h"
#include "compress/factory.h"
#include "privacy/dp_sgd.h"
#include "recovery/checkpoint.h"
#include "recovery/cpr.h"
#include "straggler/straggler_sync.h"
#include "trainer/loop/checkpointer.h"
#include "trainer/loop/nonfinite.h"
#include "trainer/loop/sampler.h"

namespace tern {
namespace {

using SteadyClock = std::chrono::steady_clock;

// The tensors whose names start with `prefix`, named without it.
NamedTensors with_prefix(const NamedTensors& tensors, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [name, t] : tensors) {
    if (name.rfind(prefix, 0) == 0) out.emplace_back(name.substr(prefix.size()), t);
  }
  return out;
}

// The event of a reload from a checkpoint: `kind` is "resumed" or "rolled_back".
nlohmann::json restore_event(const std::string& kind, RestoreFields fields) {
  if (kind == "rolled_back") return to_json(RolledBackEvent{std::move(fields)});
  return to_json(ResumedEvent{std::move(fields)});
}

}  // namespace

TrainingLoop::TrainingLoop(TrainerOptions options, std::shared_ptr<Communicator> comm,
                           EventSink* sink, std::unique_ptr<Workload> workload)
    : options_(std::move(options)),
      spec_(options_.spec),
      counting_(std::make_shared<CountingCommunicator>(std::move(comm))),
      sink_(sink),
      workload_(std::move(workload)),
      straggler_rng_(
          mix_seed(static_cast<uint64_t>(options_.spec.train.seed), 1000 + options_.rank)) {}

TrainingLoop::~TrainingLoop() = default;

int64_t TrainingLoop::bytes_sent() const {
  int64_t n = counting_->counts().total();
  if (intra_counting_) n += intra_counting_->counts().total();
  if (inter_counting_) n += inter_counting_->counts().total();
  return n;
}

Status TrainingLoop::prepare() {
  if (prepared_) return Status::ok();
  if (!workload_)
    return invalid_argument("model.type '" + name_of(spec_.model.type) +
                            "': no workload trains it");
  members_ = options_.members;
  min_world_ = members_.empty() ? options_.world : static_cast<int64_t>(members_.size());
  WorkloadContext wc;
  wc.spec = &spec_;
  wc.rank = options_.rank;
  wc.world = options_.world;
  wc.device = options_.device;
  wc.comm = counting_.get();
  TERN_RETURN_IF_ERROR(workload_->setup(wc));
  traits_ = workload_->traits();
  for (auto& [name, p] : workload_->named_parameters()) {
    param_names_.push_back(name);
    params_.push_back(p);
  }
  prepared_ = true;
  return Status::ok();
}

void TrainingLoop::attach_group(int64_t generation, std::vector<int> members,
                                std::shared_ptr<Communicator> world) {
  options_.generation = generation;
  options_.members = members;
  members_ = std::move(members);
  min_world_ = members_.empty() ? options_.world : static_cast<int64_t>(members_.size());
  counting_->replace_inner(std::move(world));
}

Status TrainingLoop::share_initial_parameters(std::vector<at::Tensor>& data) {
  NamedState named;
  for (size_t i = 0; i < data.size(); ++i) named.emplace_back(std::to_string(i), data[i]);
  TERN_ASSIGN_OR_RETURN(
      auto hashes,
      exchange_hashes(*counting_, hash_named_tensors(named),
                      hash_named_tensors(named, /*layout_only=*/true), options_.device));
  if (std::all_of(hashes.begin(), hashes.end(), [&](const auto& h) { return h == hashes[0]; })) {
    spdlog::info("initial parameters are identical on all {} ranks: no broadcast", hashes.size());
    return Status::ok();
  }
  std::vector<uint64_t> values;
  for (const auto& h : hashes) values.push_back(h.first);
  spdlog::info("initial parameters differ across ranks ({}): broadcasting rank 0's",
               groups_text(group_ranks_by_hash(values)));
  return broadcast_tensors(*counting_, data, 0).with_context("initial broadcast");
}

Status TrainingLoop::setup() {
  TERN_RETURN_IF_ERROR(prepare());
  {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> data;
    for (auto& p : params_) data.push_back(p.data());
    // (A rank joining a running job at a later generation takes the group's state instead.)
    if (options_.generation <= 1) TERN_RETURN_IF_ERROR(share_initial_parameters(data));
  }
  TERN_ASSIGN_OR_RETURN(optimizer_, make_optimizer(spec_.train, params_));
  if (spec_.train.optimizer == OptimizerKind::kAdamw) {
    spdlog::info(
        "optimizer adamw on {} parameters: lr {} betas [{}, {}] eps {} weight_decay {} "
        "(decoupled){}",
        params_.size(), spec_.train.lr, spec_.train.betas.at(0), spec_.train.betas.at(1),
        spec_.train.eps, spec_.train.weight_decay,
        spec_.train.momentum != 0 ? "; train.momentum is SGD's and not used" : "");
  }
  steps_per_epoch_ =
      (workload_->samples_per_rank() + spec_.train.batch_size - 1) / spec_.train.batch_size;
  total_steps_ = spec_.train.steps > 0 ? spec_.train.steps : spec_.train.epochs * steps_per_epoch_;
  // The region and leader groups are metered too, so bytes_sent covers every hop.
  if (options_.intra_comm)
    intra_counting_ = std::make_shared<CountingCommunicator>(options_.intra_comm);
  if (options_.inter_comm)
    inter_counting_ = std::make_shared<CountingCommunicator>(options_.inter_comm);

  const RecoverySpec& rs = spec_.recovery;
  if (rs.interval == IntervalPolicy::kFixed && rs.checkpoint_every > 0) {
    interval_steps_ = first_step_ = rs.checkpoint_every;
  } else if (rs.interval != IntervalPolicy::kFixed) {
    // Measure over the first steps (the first one warms up and is left out), then plan.
    plan_step_ = std::clamp<int64_t>(total_steps_ / 10, 2, 20);
  }
  if (interval_steps_ > 0 || plan_step_ > 0) {
    CheckpointerOptions co;
    co.dir = rs.dir.empty() ? (options_.work_dir.empty() ? std::string(".") : options_.work_dir) +
                                  "/checkpoints"
                            : rs.dir;
    // The loop schedules saves itself (checkpoint_due); `every` bounds the commit lag.
    co.every = interval_steps_ > 0 ? interval_steps_ : std::numeric_limits<int64_t>::max();
    // Row saves build on the newest whole-shard save: keep one in the store.
    co.keep = rs.policy == RowPolicy::kFull ? rs.keep : std::max(rs.keep, rs.full_every + 1);
    co.rank = options_.rank;
    co.job_id = options_.job_id;
    checkpointer_ = std::make_unique<Checkpointer>(std::move(co), sink_);
  }

  replicas_ = std::make_unique<ReplicaChecker>(
      ReplicaCheckOptions{spec_.sync.verify_every, spec_.sync.on_mismatch, options_.rank,
                          options_.device},
      sink_);

  // Resume (a replacement rank joining a running job takes the group's state instead).
  std::unique_ptr<LoadedCheckpoint> resume;
  const std::string& resume_dir = rs.resume_from;
  if (!resume_dir.empty() && options_.generation <= 1) {
    // Any world: a job resumed on another cluster may have another number of workers.
    auto loaded = load_agreed_checkpoint(
        *counting_, resume_dir, options_.device, /*any_world=*/true,
        rs.resume_step > 0 ? rs.resume_step : std::numeric_limits<int64_t>::max());
    if (!loaded.is_ok()) return loaded.status().with_context("recovery.resume_from");
    resume = std::make_unique<LoadedCheckpoint>(std::move(loaded).value());
    TERN_RETURN_IF_ERROR(
        restore_replicated(*resume, resume_dir).with_context("recovery.resume_from"));
    resumed_from_ = resume->step;
  }
  TERN_RETURN_IF_ERROR(build_sync(/*first=*/true));
  if (resume) {
    TERN_RETURN_IF_ERROR(
        restore_per_rank(*resume, resume_dir, "resumed").with_context("recovery.resume_from"));
  }
  if (options_.generation > 1) {
    // A replacement rank joining a running job: take the survivors' state, or with
    // recovery.mode full roll back to the last checkpoint together with them.
    Status joined = rs.mode == RecoveryMode::kFull ? rollback(/*have_state=*/false)
                                                   : sync_state(/*have_state=*/false);
    TERN_RETURN_IF_ERROR(
        joined.with_context("joining generation " + std::to_string(options_.generation)));
    TERN_RETURN_IF_ERROR(verify_replicas(step_, VerifyPoint::kJoin));
    if (rs.mode == RecoveryMode::kPartial) restore_lost_rank_state();
  }
  spdlog::info(
      "setup done: model={} {} params={} steps/epoch={} total_steps={} strategy={} compressor={} "
      "checkpoints: interval={} policy={} {}",
      name_of(spec_.model.type), workload_->describe(), params_.size(), steps_per_epoch_,
      total_steps_, strategy_->name(), reducer_->name(), name_of(rs.interval), name_of(rs.policy),
      interval_steps_ > 0 ? "every " + std::to_string(interval_steps_) + " steps"
      : plan_step_ > 0    ? "planned at step " + std::to_string(plan_step_)
                          : "off");
  return Status::ok();
}

Status TrainingLoop::build_sync(bool first) {
  ReducerContext rctx;
  rctx.steps_per_epoch = steps_per_epoch_;
  rctx.seed =
      static_cast<int64_t>(mix_seed(static_cast<uint64_t>(spec_.train.seed), 2000 + options_.rank));
  // A rebuilt strategy (a regroup) keeps the replicated state the survivors share (an outer
  // optimizer's momentum); an automatic d and T is chosen again for the new group.
  NamedState carried;
  if (strategy_ && !first) {
    for (auto& [name, t] : without_auto_plan(strategy_->replicated_state()))
      carried.emplace_back(name, t.clone());
  }
  strategy_.reset();  // borrows the reducer: goes first
  TERN_ASSIGN_OR_RETURN(reducer_, make_gradient_reducer(spec_, *counting_, rctx));
  if (first && reducer_->owns_momentum()) {  // DGC applies momentum itself (momentum correction)
    TERN_ASSIGN_OR_RETURN(optimizer_,
                          make_optimizer(spec_.train, params_, /*momentum_in_reducer=*/true));
  }
  StrategyContext ctx{*counting_, reducer_.get(), spec_};
  // sync.average_momentum: SGD's momentum buffers, AdamW's first moment (optimizer.h).
  ctx.momentum_buffers = optimizer_->averaged_state();
  ctx.intra_comm = intra_counting_;
  ctx.inter_comm = inter_counting_;
  ctx.make_reducer = [this, rctx]() { return make_gradient_reducer(spec_, *counting_, rctx); };
  if (spec_.straggler.mode != StragglerMode::kNone) {
    TERN_ASSIGN_OR_RETURN(strategy_,
                          StragglerSync::make(*counting_, reducer_.get(), spec_, total_steps_));
  } else {
    TERN_ASSIGN_OR_RETURN(strategy_, make_sync_strategy(std::move(ctx)));
  }
  TERN_RETURN_IF_ERROR(strategy_->begin(params_));
  if (!carried.empty())
    TERN_RETURN_IF_ERROR(strategy_->load_replicated_state(carried).with_context("regroup"));
  return Status::ok();
}

nlohmann::json TrainingLoop::counters() const {
  return {{"steps_per_epoch", steps_per_epoch_},
          {"total_steps", total_steps_},
          {"global_samples", global_samples_},
          {"samples", samples_},
          {"compute_s", compute_s_},
          {"injected_delay_s", injected_delay_s_},
          {"last_loss", last_loss_},
          {"skipped_steps", skipped_steps_},
          {"interval_steps", interval_steps_},
          {"first_step", first_step_},
          {"plan_step", plan_step_},
          {"world", options_.world},
          {"batch_size", spec_.train.batch_size},
          {"privacy", privacy_.to_json()}};
}

Status TrainingLoop::sync_state(bool have_state) {
  const int world = counting_->size();
  // Every rank's step (-1: no state), via a sum of one-hot slots.
  at::Tensor steps = at::full({world}, -1, at::kLong);
  steps[counting_->rank()] = have_state ? step_ : -1;
  std::vector<at::Tensor> t{(steps + 1).to(options_.device)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, t));
  // (all_reduce sums: every slot but ours is 0 on each rank, so slot r ends as rank r's value + 1.)
  at::Tensor all = t[0].cpu() - 1;
  int src = 0;
  int64_t best = -1;
  for (int r = 0; r < world; ++r) {
    int64_t v = all[r].item<int64_t>();
    if (v > best) best = v, src = r;
  }
  if (best < 0) return Status::ok();  // nobody has state: everyone keeps the seeded init
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> state;
  for (auto& p : params_) state.push_back(p.data());
  // The optimizer's whole state, the same list on every rank (state not created yet comes as
  // zeros, which behave the same); integer state (AdamW's step counts) travels as doubles, which
  // hold it exactly, and everything goes back through load_state().
  Optimizer::NamedTensors opt_state = optimizer_->state(param_names_, /*materialize=*/true);
  const size_t opt_begin = state.size();
  for (auto& [name, t] : opt_state) {
    state.push_back(t.is_floating_point() ? t.to(options_.device)
                                          : t.to(options_.device, at::kDouble));
  }
  for (auto& [name, b] : workload_->named_buffers()) state.push_back(b.detach());
  // The strategy's replicated state (outer momentum); an automatic plan is made anew.
  for (auto& [name, t] : without_auto_plan(strategy_->replicated_state())) state.push_back(t);
  // The job's counters and checkpoint schedule travel with them (doubles hold these integers
  // exactly).
  state.push_back(
      at::tensor({static_cast<double>(global_samples_), static_cast<double>(interval_steps_),
                  static_cast<double>(first_step_), static_cast<double>(plan_step_), last_loss_},
                 at::kDouble)
          .to(options_.device));
  TERN_RETURN_IF_ERROR(broadcast_tensors(*counting_, state, src)
                           .with_context("state from rank " + std::to_string(src)));
  for (size_t i = 0; i < opt_state.size(); ++i) opt_state[i].second = state[opt_begin + i];
  TERN_RETURN_IF_ERROR(optimizer_->load_state(opt_state, param_names_,
                                              "optimizer state from rank " + std::to_string(src)));
  at::Tensor c = state.back().cpu();
  auto v = c.accessor<double, 1>();
  global_samples_ = static_cast<int64_t>(v[0]);
  interval_steps_ = static_cast<int64_t>(v[1]);
  first_step_ = static_cast<int64_t>(v[2]);
  plan_step_ = static_cast<int64_t>(v[3]);
  last_loss_ = v[4];
  if (spec_.train.dp.enabled) {
    // The privacy accountant's history (train.dp) from the same rank: its length, then its
    // (q, sigma, steps) segments, so that a joiner reports the job's epsilon, not its own.
    std::vector<double> h;
    for (const auto& seg : privacy_.history()) {
      h.insert(h.end(), {seg.q, seg.sigma, static_cast<double>(seg.steps)});
    }
    std::vector<at::Tensor> len{
        at::tensor({static_cast<double>(h.size())}, at::kDouble).to(options_.device)};
    TERN_RETURN_IF_ERROR(broadcast_tensors(*counting_, len, src)
                             .with_context("privacy accountant from rank " + std::to_string(src)));
    const int64_t n = static_cast<int64_t>(len[0].cpu().item<double>());
    RdpAccountant synced;
    if (n > 0) {
      std::vector<at::Tensor> body{counting_->rank() == src
                                       ? at::tensor(h, at::kDouble).to(options_.device)
                                       : at::zeros({n}, at::kDouble).to(options_.device)};
      TERN_RETURN_IF_ERROR(
          broadcast_tensors(*counting_, body, src)
              .with_context("privacy accountant from rank " + std::to_string(src)));
      at::Tensor b = body[0].cpu();
      auto a = b.accessor<double, 1>();
      for (int64_t i = 0; i + 2 < n; i += 3)
        synced.step(a[i], a[i + 1], static_cast<int64_t>(a[i + 2]));
    }
    privacy_ = std::move(synced);
    spdlog::info("privacy accountant from rank {}: {} steps, epsilon {:.4f} at delta {}", src,
                 privacy_.steps(), privacy_.epsilon(spec_.train.dp.delta), spec_.train.dp.delta);
  }
  if (have_state && step_ < best)
    spdlog::info("state from rank {}: step {} -> {}", src, step_, best);
  step_ = best;
  // The strategy restarts from the synced parameters (periodic sync's last sync point).
  TERN_RETURN_IF_ERROR(strategy_->begin(params_));
  spdlog::info("state synced from rank {} at step {} ({} ranks)", src, best, world);
  return Status::ok();
}

Status TrainingLoop::recover(const Status& failure) {
  auto t0 = SteadyClock::now();
  auto regrouped = regroup_after_failure(
      options_.regroup, spec_, options_.rank, options_.world, step_, failure, sink_,
      {counting_.get(), intra_counting_.get(), inter_counting_.get(), &retired_comms_});
  if (!regrouped.is_ok()) return regrouped.status();
  RegroupRequest req = std::move(regrouped).value();
  options_.generation = req.generation;
  members_ = req.members;
  min_world_ = std::min<int64_t>(min_world_, req.world);
  if (checkpointer_) {
    // The new group never agreed on the pending step (a replacement never wrote it): drop it,
    // and let every rank, replacement included, take the next due checkpoint alike.
    checkpointer_->abandon_pending();
    last_checkpoint_step_ = -1;
  }
  TERN_RETURN_IF_ERROR(build_sync(/*first=*/false));
  const int64_t failed_at = step_;
  Status synced = req.rollback ? rollback(/*have_state=*/true) : sync_state(/*have_state=*/true);
  TERN_RETURN_IF_ERROR(
      synced.with_context("regroup at generation " + std::to_string(req.generation)));
  // The new generation works: the old ones' threads and sockets can go.
  release_retired(&retired_comms_);
  TERN_RETURN_IF_ERROR(verify_replicas(step_, VerifyPoint::kRegroup));
  ++recoveries_;
  double lost = seconds_since(t0);
  recovery_s_ += lost;
  regroup_times_.push_back(lost);
  announce_regroup_ = req.generation;
  announce_regroup_s_ = lost;
  RegroupedEvent done;  // at req.generation: the sink's generation since connect()
  done.step = step_;
  done.world = req.world;
  done.recovery_s = lost;
  done.recoveries = recoveries_;
  done.rollback = req.rollback;
  done.steps_rolled_back = steps_rolled_back_;
  sink_->emit(to_json(done));
  spdlog::info("regrouped at generation {}: training again from step {} after {:.2f} s ({})",
               req.generation, step_, lost,
               step_ < failed_at
                   ? "rolled back " + std::to_string(failed_at - step_) + " steps to the checkpoint"
                   : std::string("no rollback"));
  return Status::ok();
}

Status TrainingLoop::rollback(bool have_state) {
  if (!checkpointer_) {
    spdlog::warn(
        "recovery.mode full without checkpoints (recovery.checkpoint_every / interval): no "
        "checkpoint to "
        "roll back to; continuing from the group's furthest state");
    return sync_state(have_state);
  }
  const std::string dir = checkpointer_->store().dir();
  auto loaded = load_agreed_checkpoint(*counting_, dir, options_.device);
  if (!loaded.is_ok()) {
    if (loaded.status().code() != StatusCode::kNotFound) return loaded.status();
    // Lost before the first complete checkpoint: nothing older to return to.
    spdlog::warn(
        "no complete checkpoint to roll back to yet ({}); continuing from the group's furthest "
        "state",
        loaded.status().message());
    return sync_state(have_state);
  }
  const int64_t before = step_;
  TERN_RETURN_IF_ERROR(restore_replicated(*loaded, dir));
  // Strategies remember parameters (periodic averaging's last sync point): rebuild on the
  // restored ones, then give the fresh reducer its state back.
  TERN_RETURN_IF_ERROR(build_sync(/*first=*/false));
  TERN_RETURN_IF_ERROR(restore_per_rank(*loaded, dir, "rolled_back"));
  if (have_state && before > step_) steps_rolled_back_ += before - step_;
  return Status::ok();
}

Status TrainingLoop::verify_replicas(int64_t step, VerifyPoint point) {
  if (!replicas_ || !replicas_->enabled()) return Status::ok();
  ReplicaSources src;
  src.strategy = strategy_.get();
  src.params = &params_;
  src.param_names = &param_names_;
  src.optimizer = optimizer_.get();
  src.buffers = workload_->named_buffers();
  // A partial regroup broadcasts the optimizer's state; a rollback reloads it, the same on every
  // rank only where it is replicated (ssgd). The same rule on survivors and the replacement.
  src.optimizer_synced = spec_.recovery.mode == RecoveryMode::kPartial || momentum_replicated();
  return replicas_->verify(*counting_, step, point, src);
}

void TrainingLoop::restore_lost_rank_state() {
  PartialRestoreEvent event;
  event.step = step_;
  if (checkpointer_) {
    LoadOptions lo;
    lo.replicated = false;
    lo.ranks = {options_.rank};
    auto c = load_latest_checkpoint(checkpointer_->store(), lo);
    if (!c.is_ok() || c->manifest.world != options_.world) {
      spdlog::warn(
          "step {}: no checkpointed per-rank state of rank {} to restore ({}); its reducer starts "
          "empty",
          step_, options_.rank,
          c.is_ok() ? "the checkpoint has world " + std::to_string(c->manifest.world)
                    : c.status().message());
    } else {
      const NamedTensors& tensors = c->ranks.at(options_.rank).tensors;
      NamedTensors reducer_state = with_prefix(tensors, "reducer/");
      const std::string file =
          checkpointer_->store().file_path(c->step, rank_file_name(options_.rank));
      Status s = reducer_->load_state(reducer_state);
      if (s.is_ok()) s = strategy_->load_rank_state(with_prefix(tensors, "sync/"));
      if (!s.is_ok()) {
        spdlog::warn("step {}: {}: per-rank state not restored: {}", step_, file, s.to_string());
      } else {
        spdlog::info(
            "step {}: restored rank {}'s per-rank state ({} reducer tensors) from {} (partial "
            "recovery)",
            step_, options_.rank, reducer_state.size(), file);
        event.from_step = c->step;
        event.tensors = static_cast<int64_t>(reducer_state.size());
      }
    }
  }
  if (traits_.sharded_state) {
    event.state = workload_->restore_lost_state(checkpointer_ ? &checkpointer_->store() : nullptr,
                                                global_samples_);
  }
  const bool restored = event.from_step || (event.state.is_object() && !event.state.empty());
  if (restored) sink_->emit(to_json(event));
}

// --- checkpoints -----------------------------------------------------------------------------

bool TrainingLoop::momentum_replicated() const {
  // Only SSGD applies the same (all-reduced) update everywhere; delayed, periodic,
  // hierarchical and straggler-tolerant updates leave each rank its own optimizer state (SGD's
  // momentum, AdamW's moments).
  return spec_.sync.strategy == StrategyKind::kSsgd && spec_.straggler.mode == StragglerMode::kNone;
}

bool TrainingLoop::checkpoint_due(int64_t step) const {
  return interval_steps_ > 0 && step > 0 && step >= first_step_ &&
         (step - first_step_) % interval_steps_ == 0;
}

ShardSave TrainingLoop::save_kind(int64_t step) const {
  if (spec_.recovery.policy == RowPolicy::kFull) return ShardSave::kFull;
  int64_t k = (step - first_step_) / std::max<int64_t>(1, interval_steps_);
  return k % spec_.recovery.full_every == 0 ? ShardSave::kFull : ShardSave::kRows;
}

Status TrainingLoop::checkpoint_point() {
  if (!checkpointer_) return Status::ok();
  if (shrunk()) {
    // A checkpoint names every rank of the job; a smaller group cannot write one (the vacant
    // ranks' files): none until the group is whole again. The newest whole one stays.
    if (!skipped_checkpoints_logged_) {
      spdlog::warn("step {}: no checkpoints while the group has {} of {} ranks", step_,
                   members_.size(), options_.world);
      skipped_checkpoints_logged_ = true;
    }
    return Status::ok();
  }
  skipped_checkpoints_logged_ = false;
  if (interval_steps_ == 0 && step_ == plan_step_) {
    // The first checkpoint is a whole save committed at once: its blocking time (drain,
    // snapshot, waiting for the write, the manifest collective) is the cost C the plan uses,
    // the cost of a synchronous checkpoint (the async ones after it block less).
    const double before = checkpointer_->blocking_s();
    TERN_RETURN_IF_ERROR(checkpoint(ShardSave::kFull));
    TERN_RETURN_IF_ERROR(
        checkpointer_->commit_due(*counting_, step_, options_.generation, true, options_.device));
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
  TERN_RETURN_IF_ERROR(checkpointer_->commit_due(*counting_, step_, options_.generation,
                                                 /*force=*/due, options_.device));
  if (due) TERN_RETURN_IF_ERROR(checkpoint(save_kind(step_)));
  return Status::ok();
}

Status TrainingLoop::plan_interval(double probe_cost_s) {
  // Same inputs on every rank (the slowest rank's), so every rank plans the same interval.
  const double elapsed = seconds_since(measure_start_);
  std::vector<at::Tensor> t{at::tensor({probe_cost_s, elapsed}, at::kDouble).to(options_.device)};
  TERN_RETURN_IF_ERROR(
      all_reduce_sync(*counting_, t, ReduceOp::kMax).with_context("checkpoint plan"));
  at::Tensor host = t[0].cpu();
  CheckpointPlanInputs in;
  // The state a failure loses lives on every rank (sharded state, or the per-rank reducer and
  // momentum state of a replicated model).
  in.n_shards = options_.world;
  in.pls_target = spec_.recovery.pls_target;
  in.mtbf_s = spec_.recovery.mtbf_s;
  in.checkpoint_cost_s = host[0].item<double>();
  const double measured = static_cast<double>(global_samples_ - measure_samples_);
  in.samples_per_s = measured / std::max(1e-9, host[1].item<double>());
  in.samples_per_step = spec_.train.batch_size * options_.world;
  auto planned = plan_checkpoint_interval(in);
  if (!planned.is_ok())
    return planned.status().with_context("recovery.interval " + name_of(spec_.recovery.interval));
  const CheckpointPlan& p = *planned;
  interval_steps_ = spec_.recovery.interval == IntervalPolicy::kCpr ? p.cpr_interval_steps
                                                                    : p.young_daly_interval_steps;
  first_step_ = step_;
  plan_ = {{"interval", name_of(spec_.recovery.interval)},
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
      "checkpoint plan at step {} (measured over {} samples: {:.0f} samples/s, a synchronous whole "
      "checkpoint blocks {:.4f} s; assumed MTBF {} s, PLS target {}): {}; using {} = every {} "
      "steps",
      step_, measured, in.samples_per_s, in.checkpoint_cost_s, in.mtbf_s, in.pls_target, p.summary,
      name_of(spec_.recovery.interval), interval_steps_);
  CheckpointPlanEvent planned_event;
  planned_event.step = step_;
  planned_event.plan = plan_;
  sink_->emit(to_json(planned_event));
  return Status::ok();
}

Status TrainingLoop::checkpoint(ShardSave kind) {
  // Replicas must be identical where replicated state is taken from rank 0: the strategy
  // completes its in-flight collectives and averages parameters if they may differ (a no-op
  // for SSGD). Every rank runs it at the same step.
  auto t0 = SteadyClock::now();
  TERN_RETURN_IF_ERROR(strategy_->drain(params_).with_context(
      "drain before the checkpoint of step " + std::to_string(step_)));
  const bool shared_momentum = momentum_replicated();
  CheckpointMeta meta;
  meta.step = step_;
  meta.epoch = step_ / steps_per_epoch_;
  meta.sampler_position = (step_ % steps_per_epoch_) * spec_.train.batch_size;
  meta.world = options_.world;
  meta.generation = options_.generation;
  meta.job_id = options_.job_id;
  // Where the optimizer's state is (the key's name predates AdamW) and whose state it is.
  meta.extra["momentum"] = shared_momentum ? "replicated" : "per_rank";
  meta.extra["optimizer"] = optimizer_->name();
  meta.extra["strategy"] = strategy_->name();
  meta.extra["reducer"] = reducer_->name();
  meta.extra["policy"] = name_of(spec_.recovery.policy);
  meta.extra["trainer"] = counters().dump();
  TERN_RETURN_IF_ERROR(workload_->sync_buffers().with_context(
      "buffers before the checkpoint of step " + std::to_string(step_)));
  NamedTensors replicated, per_rank;
  for (auto& [name, b] : workload_->named_buffers())
    replicated.emplace_back("buffer/" + name, b.detach());
  for (size_t i = 0; i < params_.size(); ++i)
    replicated.emplace_back("param/" + param_names_[i], params_[i].detach());
  size_t optimizer_rank_tensors = 0, reducer_tensors = 0, sync_rank_tensors = 0;
  for (auto& [name, t] : optimizer_->state(param_names_, /*materialize=*/false)) {
    (shared_momentum ? replicated : per_rank).emplace_back(name, t);
    optimizer_rank_tensors += shared_momentum ? 0 : 1;
  }
  for (auto& [name, t] : reducer_->state())
    per_rank.emplace_back("reducer/" + name, t), ++reducer_tensors;
  for (auto& [name, t] : strategy_->replicated_state()) replicated.emplace_back("sync/" + name, t);
  for (auto& [name, t] : strategy_->rank_state())
    per_rank.emplace_back("sync/" + name, t), ++sync_rank_tensors;
  // What each rank kept for itself (rank 0's count stands for all): a resume at another world
  // drops it and says what (restore_at_other_world).
  meta.extra["optimizer_rank_tensors"] = std::to_string(optimizer_rank_tensors);
  meta.extra["reducer_tensors"] = std::to_string(reducer_tensors);
  meta.extra["sync_rank_tensors"] = std::to_string(sync_rank_tensors);
  if (traits_.sharded_state) {
    meta.extra["shard"] = shard_save_name(kind);
    TERN_ASSIGN_OR_RETURN(int64_t rows, workload_->save_sharded(kind, &per_rank));
    spdlog::debug("checkpoint step {}: {} save of {} rows", step_, shard_save_name(kind), rows);
  }
  checkpointer_->save(meta, per_rank, options_.rank == 0 ? &replicated : nullptr,
                      seconds_since(t0));
  last_checkpoint_step_ = step_;
  return Status::ok();
}

// The parameters and buffers of a replicated checkpoint file, checked against the model's
// names, shapes and dtypes before each copy.
Status TrainingLoop::load_model_tensors(const Checkpoint& rep, const std::string& file) {
  at::NoGradGuard no_grad;
  size_t in_file = 0;
  for (const auto& [name, t] : rep.tensors) in_file += name.rfind("param/", 0) == 0 ? 1 : 0;
  if (in_file != params_.size()) {
    return failed_precondition(file + ": holds " + std::to_string(in_file) + " parameters, model." +
                               name_of(spec_.model.type) + " has " +
                               std::to_string(params_.size()));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i];
    const at::Tensor* t = rep.find("param/" + param_names_[i]);
    if (t == nullptr) {
      return failed_precondition(file + ": no parameter '" + param_names_[i] +
                                 "' (written for another model?)");
    }
    if (t->sizes() != p.sizes() || t->scalar_type() != p.scalar_type()) {
      return failed_precondition(
          file + ": parameter '" + param_names_[i] + "' is " + c10::str(t->sizes()) + " " +
          std::string(c10::toString(t->scalar_type())) + ", model." + name_of(spec_.model.type) +
          " has " + c10::str(p.sizes()) + " " + std::string(c10::toString(p.scalar_type())));
    }
    p.data().copy_(*t);
  }
  for (auto& [name, b] : workload_->named_buffers()) {
    const at::Tensor* t = rep.find("buffer/" + name);
    if (t == nullptr)
      return failed_precondition(file + ": no buffer '" + name + "' (written for another model?)");
    if (t->sizes() != b.sizes()) {
      return failed_precondition(file + ": buffer '" + name + "' is " + c10::str(t->sizes()) +
                                 ", the model's " + c10::str(b.sizes()));
    }
    b.copy_(*t);
  }
  return Status::ok();
}

Status TrainingLoop::restore_replicated(const LoadedCheckpoint& c, const std::string& dir) {
  const Checkpoint& rep = *c.replicated;
  const std::string file = CheckpointStore(dir).file_path(c.step, kReplicatedFile);
  auto it = rep.meta.extra.find("trainer");
  if (it == rep.meta.extra.end()) {
    return failed_precondition(
        file + ": no 'trainer' metadata (not a checkpoint of the tern training loop)");
  }
  nlohmann::json counters = nlohmann::json::parse(it->second, nullptr, false);
  if (!counters.is_object())
    return data_loss(file + ": the 'trainer' metadata is not a JSON object");
  // Before anything is loaded: another optimizer's state must not be half taken (its
  // parameters without its moments). Checkpoints from before train.optimizer are SGD's.
  auto opt = rep.meta.extra.find("optimizer");
  const std::string written = opt == rep.meta.extra.end() ? "sgd" : opt->second;
  if (written != optimizer_->name()) {
    return failed_precondition(file + ": written with train.optimizer " + written +
                               ", this job has " + optimizer_->name() +
                               " (its state cannot be carried over; resume with train.optimizer " +
                               written + ")");
  }
  int64_t spe = counters.value("steps_per_epoch", int64_t{-1});
  const int64_t written_world = c.manifest.world;
  int64_t at_step = c.step;
  if (written_world == options_.world) {
    if (spe != steps_per_epoch_) {
      return failed_precondition(file + ": written with " + std::to_string(spe) +
                                 " steps per epoch, this job has " +
                                 std::to_string(steps_per_epoch_) +
                                 " (resume needs the same data set, train.batch_size and workers)");
    }
  } else {
    // Another world (a job resumed on another cluster): the same place in the same data order,
    // from the sample count (sampler.h); the job-wide counters carry on.
    const int64_t written_batch = counters.value("batch_size", spec_.train.batch_size);
    auto mapped = step_at_other_world(c.step, spe, written_batch * written_world, steps_per_epoch_,
                                      spec_.train.batch_size * options_.world);
    if (!mapped.is_ok()) {
      return failed_precondition(file + ": written by " + std::to_string(written_world) +
                                 " ranks; " + mapped.status().message());
    }
    at_step = *mapped;
    spdlog::info(
        "{}: written by {} ranks at step {} ({} steps per epoch of {} samples); this job has {} "
        "ranks "
        "({} steps per epoch of {} samples): it continues at step {}",
        file, written_world, c.step, spe, written_batch * written_world, options_.world,
        steps_per_epoch_, spec_.train.batch_size * options_.world, at_step);
  }
  if (at_step > total_steps_) {
    return failed_precondition(file + ": step " + std::to_string(at_step) +
                               " is past this job's last step (" + std::to_string(total_steps_) +
                               "; raise train.steps or train.epochs)");
  }
  TERN_RETURN_IF_ERROR(load_model_tensors(rep, file));
  step_ = at_step;
  last_checkpoint_step_ = at_step;  // it is on disk already
  global_samples_ = counters.value("global_samples", int64_t{0});
  samples_ = counters.value("samples", int64_t{0});
  compute_s_ = counters.value("compute_s", 0.0);
  injected_delay_s_ = counters.value("injected_delay_s", 0.0);
  last_loss_ = counters.value("last_loss", 0.0);
  skipped_steps_ = counters.value("skipped_steps", int64_t{0});
  if (counters.contains("privacy")) {
    TERN_ASSIGN_OR_RETURN(privacy_, RdpAccountant::from_json(counters["privacy"], file));
  } else {
    privacy_ = RdpAccountant();  // written without train.dp: nothing spent on the data before
  }
  // The checkpoint schedule the run had (a planned interval is not planned again).
  interval_steps_ = counters.value("interval_steps", interval_steps_);
  first_step_ = counters.value("first_step", first_step_);
  plan_step_ = counters.value("plan_step", plan_step_);
  return Status::ok();
}

Status TrainingLoop::restore_per_rank(const LoadedCheckpoint& c, const std::string& dir,
                                      const std::string& event) {
  if (c.manifest.world != options_.world) return restore_at_other_world(c, dir, event);
  const Checkpoint& mine = c.ranks.at(options_.rank);
  CheckpointStore store(dir);
  const std::string rank_file = store.file_path(c.step, rank_file_name(options_.rank));
  auto it = c.replicated->meta.extra.find("momentum");
  const bool shared = it != c.replicated->meta.extra.end() && it->second == "replicated";
  const Checkpoint& msrc = shared ? *c.replicated : mine;
  const std::string mfile = shared ? store.file_path(c.step, kReplicatedFile) : rank_file;
  TERN_RETURN_IF_ERROR(optimizer_->load_state(msrc.tensors, param_names_, mfile));
  const size_t restored = optimizer_->state(param_names_, /*materialize=*/false).size();
  NamedTensors reducer_state = with_prefix(mine.tensors, "reducer/");
  if (!reducer_state.empty()) {
    TERN_RETURN_IF_ERROR(reducer_->load_state(reducer_state).with_context(rank_file));
  } else if (!reducer_->state().empty()) {
    spdlog::warn(
        "{}: no {} state in the checkpoint (written with another compressor?); starting it empty",
        rank_file, reducer_->name());
  }
  TERN_RETURN_IF_ERROR(strategy_->load_replicated_state(with_prefix(c.replicated->tensors, "sync/"))
                           .with_context(store.file_path(c.step, kReplicatedFile)));
  TERN_RETURN_IF_ERROR(
      strategy_->load_rank_state(with_prefix(mine.tensors, "sync/")).with_context(rank_file));
  if (traits_.sharded_state) TERN_RETURN_IF_ERROR(workload_->restore_sharded(store, c.step));
  std::string skipped;
  for (const auto& s : c.skipped) skipped += "; skipped " + s;
  spdlog::info(
      "{} from {} at step {} (epoch {}, {} of {} steps done; {} {} state tensors, {} reducer "
      "tensors){}",
      event == "resumed" ? "resumed" : "rolled back", store.step_dir(c.step), c.step,
      c.step / steps_per_epoch_, c.step, total_steps_, restored, optimizer_->name(),
      reducer_state.size(), skipped);
  RestoreFields fields;
  fields.step = c.step;
  fields.dir = dir;
  fields.skipped = c.skipped;
  sink_->emit(restore_event(event, std::move(fields)));
  return Status::ok();
}

Status TrainingLoop::restore_at_other_world(const LoadedCheckpoint& c, const std::string& dir,
                                            const std::string& event) {
  // Written by another number of ranks: what every rank shared reloads as it is; what each old
  // rank held for itself has no owner in this world and is dropped (logged); sharded state is
  // re-sharded from every rank file of the step.
  CheckpointStore store(dir);
  const std::string rep_file = store.file_path(c.step, kReplicatedFile);
  auto it = c.replicated->meta.extra.find("momentum");
  const bool shared = it != c.replicated->meta.extra.end() && it->second == "replicated";
  // What the old ranks kept for themselves (checkpoints from before these keys: what this
  // job's optimizer, reducer and strategy would keep).
  const auto count_of = [&](const char* key, size_t live) {
    auto k = c.replicated->meta.extra.find(key);
    return k == c.replicated->meta.extra.end() ? live
                                               : static_cast<size_t>(std::atoll(k->second.c_str()));
  };
  std::vector<std::string> dropped;
  if (shared) {
    TERN_RETURN_IF_ERROR(optimizer_->load_state(c.replicated->tensors, param_names_, rep_file));
  } else if (count_of("optimizer_rank_tensors", 1) > 0) {
    dropped.push_back(optimizer_->name() + " optimizer state (per rank: it starts empty)");
  }
  TERN_RETURN_IF_ERROR(strategy_->load_replicated_state(with_prefix(c.replicated->tensors, "sync/"))
                           .with_context(rep_file));
  const auto reducer_it = c.replicated->meta.extra.find("reducer");
  const std::string written_reducer =
      reducer_it == c.replicated->meta.extra.end() ? reducer_->name() : reducer_it->second;
  if (count_of("reducer_tensors", reducer_->state().size()) > 0) {
    dropped.push_back(written_reducer + " error feedback (starts at zero)");
  }
  if (count_of("sync_rank_tensors", strategy_->rank_state().size()) > 0) {
    dropped.push_back(strategy_->name() + " per-rank sync state (starts anew)");
  }
  if (traits_.sharded_state) TERN_RETURN_IF_ERROR(workload_->restore_sharded(store, c.step));
  std::string skipped;
  for (const auto& s : c.skipped) skipped += "; skipped " + s;
  std::string dropped_text;
  for (const auto& d : dropped) dropped_text += (dropped_text.empty() ? "" : ", ") + d;
  spdlog::info(
      "{} from {} at step {}, written by {} ranks, into {} ranks at step {} (epoch {}, {} of {} "
      "steps "
      "done): parameters{}{} reloaded{}; per-rank state dropped: {}{}",
      event == "resumed" ? "resumed" : "rolled back", store.step_dir(c.step), c.step,
      c.manifest.world, options_.world, step_, step_ / steps_per_epoch_, step_, total_steps_,
      shared ? ", " + optimizer_->name() + " state" : std::string(),
      workload_->named_buffers().empty() ? "" : ", buffers",
      traits_.sharded_state ? "; sharded state re-sharded" : "",
      dropped_text.empty() ? "none" : dropped_text, skipped);
  RestoreFields restored;
  restored.step = c.step;
  restored.at_step = step_;
  restored.dir = dir;
  restored.written_world = c.manifest.world;
  restored.world = options_.world;
  restored.dropped = dropped;
  restored.skipped = c.skipped;
  sink_->emit(restore_event(event, std::move(restored)));
  resumed_world_ = c.manifest.world;
  return Status::ok();
}

// --- the step --------------------------------------------------------------------------------

double TrainingLoop::maybe_inject_delay(double compute_s) {
  const DebugSpec& d = spec_.debug;
  double extra = 0;
  if (static_cast<size_t>(options_.rank) < d.slowdown.size()) {
    extra += (d.slowdown[static_cast<size_t>(options_.rank)] - 1.0) * compute_s;
  }
  if (d.transient_prob > 0) {
    std::uniform_real_distribution<double> u(0, 1);
    if (u(straggler_rng_) < d.transient_prob) {
      std::exponential_distribution<double> ex(1.0 / std::max(1e-6, d.transient_ms));
      extra += ex(straggler_rng_) / 1000.0;
    }
  }
  if (extra > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(extra));
    injected_delay_s_ += extra;
  }
  return extra;
}

Status TrainingLoop::train_step(int64_t step) {
  StepPlan plan;
  if (shrunk()) {
    // The vacant ranks' samples go to the members (global batch kept: larger shares).
    ElasticShare share = elastic_share([&](int r) { return workload_->part(step, r); },
                                       options_.world, members_, options_.rank);
    plan.indices = std::move(share.indices);
    plan.weights.assign(plan.indices.size(), share.weight);
    plan.global_samples = share.global_samples;
    ++shrunk_steps_;
  } else {
    TERN_ASSIGN_OR_RETURN(plan, strategy_->plan(step, options_.rank, options_.world,
                                                [&](int r) { return workload_->part(step, r); }));
  }
  const double lr = scheduled_lr(spec_.train, step, total_steps_);
  workload_->set_lr(lr);
  std::vector<at::Tensor> grads;
  TERN_ASSIGN_OR_RETURN(StepOutput out, workload_->compute(step, plan, &grads));
  if (out.samples > 0) {
    double delay = maybe_inject_delay(out.compute_s);
    strategy_->record_compute(out.samples, out.compute_s + delay);
  }
  const int64_t step_samples = out.global_samples >= 0 ? out.global_samples : plan.global_samples;
  if (spec_.train.dp.enabled) add_dp_noise(step, step_samples, grads);
  // Agreed: every rank learns whose step was not finite before anything is updated.
  const bool agreed = spec_.train.on_nonfinite == OnNonFinite::kSkipStep || traits_.collective_step;
  if (agreed) {
    // The group decides, so that every replica (and every shard) leaves the same step out.
    TERN_ASSIGN_OR_RETURN(std::vector<int> bad, agree_nonfinite(*counting_, out.finite));
    if (!bad.empty()) {
      TERN_RETURN_IF_ERROR(workload_->finish_step(false));
      return nonfinite_step(step, bad, out.finite ? std::string() : loss_text(out.loss), grads);
    }
  } else if (!out.finite) {
    // train.on_nonfinite fail: hand the poison on, so that peers that average gradients every
    // step (SSGD) stop at this same step with the same exit code instead of losing a peer.
    for (auto& g : grads) g.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  TERN_RETURN_IF_ERROR(workload_->finish_step(true));
  if (out.samples > 0 && out.finite) {
    last_loss_ = out.loss;
    window_loss_ += last_loss_;
    ++window_steps_;
  }
  TERN_RETURN_IF_ERROR(strategy_->on_gradients(step, grads));
  if (!agreed && (!out.finite || !all_finite(grads))) {
    nonfinite_stop_ = true;
    // (run() puts "step N: " in front.)
    return Status(
        StatusCode::kOutOfRange,
        (!out.finite ? "non-finite loss (" + loss_text(out.loss) + ") or gradient on rank " +
                           std::to_string(options_.rank)
                     : std::string("non-finite gradient after synchronisation (a peer's step "
                                   "was not finite)")) +
            "; lower train.lr, or set train.on_nonfinite: skip_step to leave such steps out");
  }
  auto t1 = SteadyClock::now();
  optimizer_->set_lr(lr);
  optimizer_->step(grads);
  TERN_RETURN_IF_ERROR(strategy_->after_step(step, params_));
  compute_s_ += out.compute_s + seconds_since(t1);
  ++steps_computed_;
  samples_ += out.samples;
  global_samples_ += step_samples;
  window_samples_ += step_samples / std::max(1, counting_->size());
  account_step();
  return Status::ok();
}

void TrainingLoop::add_dp_noise(int64_t step, int64_t global_samples,
                                std::vector<at::Tensor>& grads) {
  if (global_samples <= 0) return;
  const DpSpec& dp = spec_.train.dp;
  // m ranks each add N(0, (sigma C)^2 / m) to their partial sum (one draw of (sigma C)^2 over
  // the group); the gradients here are that sum times m / B (their mean is the step's).
  const double m = static_cast<double>(counting_->size());
  const double scale =
      dp.noise_multiplier * dp.clip / std::sqrt(m) * m / static_cast<double>(global_samples);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < grads.size(); ++i) {
    at::Tensor z = dp_gaussian(grads[i].sizes(), static_cast<uint64_t>(spec_.train.seed), step,
                               options_.rank, static_cast<int64_t>(i));
    grads[i] = grads[i] + z.to(grads[i].device(), grads[i].scalar_type()) * scale;
  }
}

double TrainingLoop::dp_sample_rate() const {
  const int64_t per_rank = workload_->samples_per_rank();
  return per_rank > 0 ? std::min(1.0, static_cast<double>(spec_.train.batch_size) /
                                          static_cast<double>(per_rank))
                      : 1.0;
}

void TrainingLoop::account_step() {
  if (spec_.train.dp.enabled) privacy_.step(dp_sample_rate(), spec_.train.dp.noise_multiplier);
}

void TrainingLoop::add_privacy_fields(nlohmann::json& e) const {
  if (!spec_.train.dp.enabled) return;
  PrivacySpent spent = privacy_.spent(spec_.train.dp.delta);
  e["epsilon"] = spent.epsilon;
  e["dp_delta"] = spec_.train.dp.delta;
  e["dp_order"] = spent.order;
  e["dp_steps"] = privacy_.steps();
  e["dp_sample_rate"] = dp_sample_rate();
}

Status TrainingLoop::nonfinite_step(int64_t step, const std::vector<int>& ranks,
                                    const std::string& my_loss, std::vector<at::Tensor>& grads) {
  const std::string where = "non-finite loss or gradient on rank " + rank_list(ranks) +
                            (my_loss.empty() ? "" : " (loss " + my_loss + " here)");
  if (spec_.train.on_nonfinite != OnNonFinite::kSkipStep) {
    nonfinite_stop_ = true;  // (run() puts "step N: " in front.)
    return Status(
        StatusCode::kOutOfRange,
        where + "; lower train.lr, or set train.on_nonfinite: skip_step to leave such steps out");
  }
  // Every rank: a zero gradient through the strategy (its collectives and in-flight state stay
  // matched across ranks, its error feedback unpoisoned), then no optimizer step.
  for (auto& g : grads) g = at::zeros_like(g);
  TERN_RETURN_IF_ERROR(strategy_->on_gradients(step, grads));
  TERN_RETURN_IF_ERROR(strategy_->after_step(step, params_));
  ++skipped_steps_;
  account_step();  // its noisy gradient was computed: counted, conservatively
  std::string message = "step " + std::to_string(step) + ": " + where +
                        "; update skipped on every rank (train.on_nonfinite: skip_step, " +
                        std::to_string(skipped_steps_) + " skipped so far)";
  if (skipped_steps_ <= 10 || skipped_steps_ % 100 == 0) spdlog::warn("{}", message);
  SkippedEvent skipped;
  skipped.step = step;
  skipped.ranks.assign(ranks.begin(), ranks.end());
  skipped.skipped_steps = skipped_steps_;
  skipped.message = message;
  sink_->emit(to_json(skipped));
  return Status::ok();
}

// --- events and the run ----------------------------------------------------------------------

void TrainingLoop::emit_progress(int64_t step, bool force) {
  if (!force && (step % spec_.train.log_every != 0)) return;
  if (window_steps_ == 0) return;
  double dt = seconds_since(window_start_);
  SyncMetrics m = strategy_->metrics();
  ProgressEvent e;
  e.step = step;
  e.total_steps = total_steps_;
  e.epoch = static_cast<double>(step) / steps_per_epoch_;
  e.loss = window_loss_ / window_steps_;
  e.samples_per_s = dt > 0 ? window_samples_ / dt : 0.0;  // this rank's share; the job's is the sum
  e.bytes_sent = bytes_sent();
  e.compute_s = compute_s_;
  e.wait_s = m.wait_s;
  e.world = counting_->size();
  e.metrics = m.extra;
  e.metrics["staleness"] = m.staleness;
  e.metrics["injected_delay_s"] = injected_delay_s_;
  e.metrics["skipped_steps"] = static_cast<double>(skipped_steps_);
  if (announce_regroup_ >= 0) {
    // The first progress after a regroup: the coordinator's recovery timeline ends here.
    e.metrics["regroup_generation"] = static_cast<double>(announce_regroup_);
    e.metrics["regroup_s"] = announce_regroup_s_;
    announce_regroup_ = -1;
  }
  nlohmann::json privacy = nlohmann::json::object();
  add_privacy_fields(privacy);
  for (const auto& [k, v] : privacy.items()) {
    if (v.is_number()) e.metrics[k] = v.get<double>();
  }
  e.metrics["compression_ratio"] = reducer_->stats().compression_ratio(options_.world);
  e.metrics["compress_s"] = reducer_->stats().compress_s;
  if (checkpointer_) {
    e.metrics["checkpoints"] = static_cast<double>(checkpointer_->committed());
    e.metrics["checkpoint_s"] = checkpointer_->blocking_s();
  }
  sink_->emit(to_json(e));
  window_loss_ = 0;
  window_steps_ = 0;
  window_samples_ = 0;
  window_start_ = SteadyClock::now();
}

Status TrainingLoop::evaluate_and_emit(int64_t step, double train_s, Metrics* out) {
  TERN_RETURN_IF_ERROR(workload_->sync_buffers().with_context("buffers before the evaluation"));
  TERN_ASSIGN_OR_RETURN(*out, workload_->evaluate());
  // Every metric the workload reports (test_accuracy, test_loss, test_auc, ...) by name: the
  // codec files them (its typed fields or the metrics map).
  MetricMap metrics(out->begin(), out->end());
  metrics["train_s"] = train_s;
  EvalEvent e;
  e.step = step;
  if (auto a = metrics.find("test_accuracy"); a != metrics.end())
    e.test_accuracy = a->second, metrics.erase(a);
  if (auto l = metrics.find("test_loss"); l != metrics.end())
    e.test_loss = l->second, metrics.erase(l);
  e.metrics = std::move(metrics);
  sink_->emit(to_json(e));
  return Status::ok();
}

Status TrainingLoop::train_steps(SteadyClock::time_point start, double* recent_loss) {
  for (; step_ < total_steps_; ++step_) {
    if (stop_.load()) return cancelled("stopped at step " + std::to_string(step_));
    inject_faults(spec_.debug, options_.rank, options_.generation, step_);
    inject_corruption(spec_.debug, options_.rank, options_.generation, step_,
                      [this] { return corruption_target(*strategy_, params_); });
    if (step_ == 1) {  // throughput for the checkpoint plan: leave the warm-up step out
      measure_start_ = SteadyClock::now();
      measure_samples_ = global_samples_;
    }
    const double blocked_before = checkpointer_ ? checkpointer_->blocking_s() : 0.0;
    if (Status st = checkpoint_point(); !st.is_ok()) {
      // A commit that failed on the dead peer waited for failure detection, not for a checkpoint.
      if (checkpointer_) failed_commit_s_ += checkpointer_->blocking_s() - blocked_before;
      TERN_RETURN_IF_ERROR(recover(st).with_context("checkpoint at step " + std::to_string(step_)));
      --step_;  // the loop's ++ lands on the step the group agreed on
      continue;
    }
    Status st = train_step(step_);
    if (st.is_ok() && replicas_->due(step_)) st = verify_replicas(step_, VerifyPoint::kStep);
    if (!st.is_ok()) {
      TERN_RETURN_IF_ERROR(recover(st).with_context("step " + std::to_string(step_)));
      --step_;
      continue;
    }
    *recent_loss = last_loss_;
    bool epoch_end = (step_ + 1) % steps_per_epoch_ == 0;
    emit_progress(step_ + 1, epoch_end || step_ + 1 == total_steps_ || announce_regroup_ >= 0);
    if (spec_.train.eval_every > 0 && (step_ + 1) % spec_.train.eval_every == 0 &&
        step_ + 1 < total_steps_) {
      // Evaluations are not training: their time (a collective too, over the WAN) is kept out
      // of wall_s and samples_per_s; train_s is the training time so far.
      auto e0 = SteadyClock::now();
      Metrics ev;
      TERN_RETURN_IF_ERROR(evaluate_and_emit(step_ + 1, seconds_since(start) - eval_s_, &ev));
      const double took = seconds_since(e0);
      eval_s_ += took;
      strategy_->exclude_time(took);
    }
  }
  return Status::ok();
}

Status TrainingLoop::finish_checkpoints() {
  if (checkpointer_) {
    // The last step's checkpoint (when due) and the commit of whatever is pending.
    TERN_RETURN_IF_ERROR(checkpoint_point());
    TERN_RETURN_IF_ERROR(checkpointer_->commit_due(*counting_, step_, options_.generation,
                                                   /*force=*/true, options_.device));
    if (Status st = checkpointer_->flush(); !st.is_ok()) {
      spdlog::warn("step {}: the last checkpoint writes failed: {}", step_, st.to_string());
    }
  }
  return Status::ok();
}

Status TrainingLoop::final_figures(SteadyClock::time_point start, double recent_loss,
                                   FinalFigures* out) {
  // The last collectives (drain, evaluation, summary) can lose a peer too, or be abandoned by a
  // regroup (an elastic group growing or shrinking at the very end): like a step, they are
  // redone in the regrouped group (recover() returns the failure itself when it cannot regroup).
  auto finish = [&](FinalFigures& f) -> Status {
    TERN_RETURN_IF_ERROR(strategy_->drain(params_).with_context("final drain"));
    f.wall = seconds_since(start) - eval_s_;
    f.eval.clear();
    TERN_RETURN_IF_ERROR(
        evaluate_and_emit(step_, f.wall, &f.eval).with_context("final evaluation"));
    // Job-wide figures, the same in every rank's summary: the slowest rank's wall time, the
    // worst rank's blocking checkpoint time and recovery; the final loss averaged over ranks.
    const double blocking = checkpointer_ ? checkpointer_->blocking_s() - failed_commit_s_ : 0.0;
    // (The smallest world as a max of its negative: a replacement knows only its own groups.)
    std::vector<at::Tensor> mx = {
        at::tensor({f.wall, blocking, recovery_s_, static_cast<double>(recoveries_),
                    static_cast<double>(steps_rolled_back_), -static_cast<double>(min_world_),
                    static_cast<double>(shrunk_steps_), replicas_->stats().verify_s},
                   at::kDouble)
            .to(options_.device)};
    TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, mx, ReduceOp::kMax).with_context("summary"));
    std::vector<at::Tensor> sum = {at::tensor({recent_loss}, at::kDouble).to(options_.device)};
    TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, sum).with_context("summary"));
    TERN_ASSIGN_OR_RETURN(f.workload, workload_->summary(*counting_, global_samples_));
    f.max = mx[0].cpu();
    f.mean_loss = sum[0].cpu().item<double>() / counting_->size();
    return Status::ok();
  };
  for (int attempt = 1;; ++attempt) {
    Status st = finish(*out);
    if (st.is_ok()) return Status::ok();
    if (attempt == 16) return st;
    TERN_RETURN_IF_ERROR(recover(st).with_context("after the last step"));
  }
}

void TrainingLoop::write_summary(const FinalFigures& f) {
  auto m = f.max.accessor<double, 1>();
  const double job_wall = m[0];
  const double step_s =
      steps_computed_ > 0 ? compute_s_ / static_cast<double>(steps_computed_) : 0.0;
  SyncMetrics sm = strategy_->metrics();
  summary_ = {
      {"model", name_of(spec_.model.type)},
      {"steps", step_},
      {"epochs", static_cast<double>(step_) / steps_per_epoch_},
      {"samples", global_samples_},
      {"samples_per_s", job_wall > 0 ? global_samples_ / job_wall : 0.0},
      {"computed_samples", samples_},
      {"final_loss", f.mean_loss},
      {"bytes_sent_per_rank", bytes_sent()},
      {"wall_s", job_wall},
      {"eval_s", eval_s_},
      {"compute_s", compute_s_},
      {"wait_s", sm.wait_s},
      {"staleness", sm.staleness},
      {"injected_delay_s", injected_delay_s_},
      {"strategy", strategy_->name()},
      {"recoveries", static_cast<int64_t>(m[3])},
      {"recovery_s", m[2]},
      {"steps_rolled_back", static_cast<int64_t>(m[4])},
      // Wall time a failure cost: the regroup (waiting for and restoring the replacement) plus
      // the steps redone after a rollback.
      {"time_lost_s", m[2] + m[4] * step_s},
      {"generation", options_.generation},
      {"skipped_steps", skipped_steps_},
      {"recovery_mode", name_of(spec_.recovery.mode)},
      {"checkpoint_policy", name_of(spec_.recovery.policy)},
      {"checkpoint_interval", name_of(spec_.recovery.interval)},
      {"checkpoint_interval_steps", interval_steps_},
  };
  for (const auto& [name, value] : f.eval) summary_[name] = value;
  if (summary_.contains("test_samples"))
    summary_["test_samples"] = static_cast<int64_t>(summary_["test_samples"].get<double>());
  for (const auto& [k, v] : sm.extra) summary_[k] = v;
  summary_["compression_ratio"] = reducer_->stats().compression_ratio(options_.world);
  summary_["compress_s"] = reducer_->stats().compress_s;
  summary_["reducer_bytes_per_rank"] = reducer_->stats().wire_bytes;
  summary_["compressor"] = reducer_->name();
  summary_.update(f.workload);
  if (!plan_.is_null()) summary_["checkpoint_plan"] = plan_;
  if (checkpointer_) {
    summary_.update(checkpointer_->summary());
    summary_["checkpoint_s"] = m[1];
    summary_["checkpoint_overhead"] = job_wall > 0 ? m[1] / job_wall : 0.0;
  } else {
    summary_["checkpoints"] = 0;
    summary_["checkpoint_s"] = 0.0;
    summary_["checkpoint_overhead"] = 0.0;
  }
  if (resumed_from_ >= 0) {
    summary_["resumed_from_step"] = resumed_from_;
    if (resumed_world_ > 0) summary_["resumed_from_world"] = resumed_world_;
  }
  // sync.verify_every: comparisons, the worst rank's seconds in them, mismatches found, repairs.
  summary_["verifies"] = replicas_->stats().verifies;
  summary_["verify_s"] = m[7];
  summary_["mismatches"] = replicas_->stats().mismatches;
  summary_["replica_repairs"] = replicas_->stats().repairs;
  // Recovery figures of this rank (a replacement knows only the regroups it took part in).
  if (!regroup_times_.empty()) {
    std::vector<double> t = regroup_times_;
    std::sort(t.begin(), t.end());
    summary_["recovery_s_p50"] = t[(t.size() - 1) / 2];
    summary_["recovery_s_max"] = t.back();
  }
  summary_["world"] = counting_->size();
  add_privacy_fields(summary_);
  summary_["min_world"] = static_cast<int64_t>(-m[5]);
  summary_["shrunk_steps"] = static_cast<int64_t>(m[6]);
}

Status TrainingLoop::run() {
  StartedEvent started;
  started.world = options_.world;
  started.pid = static_cast<int64_t>(getpid());
  started.total_steps = total_steps_;
  sink_->emit(to_json(started));
  auto start = SteadyClock::now();
  window_start_ = measure_start_ = start;
  measure_samples_ = global_samples_;
  double recent_loss = last_loss_;
  TERN_RETURN_IF_ERROR(train_steps(start, &recent_loss));
  TERN_RETURN_IF_ERROR(finish_checkpoints());
  FinalFigures figures;
  TERN_RETURN_IF_ERROR(final_figures(start, recent_loss, &figures));
  write_summary(figures);
  FinishedEvent finished;
  finished.summary = summary_;
  sink_->emit(to_json(finished));
  return Status::ok();
}

}  // namespace tern
