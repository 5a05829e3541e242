#include "trainer/trainer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <limits>
#include <mutex>
#include <thread>

#include "comm/reducer.h"
#include "compress/factory.h"
#include "straggler/straggler_sync.h"
#include "common/lr_schedule.h"
#include "common/trainer_protocol.h"
#include "recovery/checkpoint.h"
#include "trainer/checkpointer.h"
#include "trainer/nonfinite.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

Batch to_device(Batch b, const torch::Device& d) {
  if (d.is_cpu()) return b;
  if (b.x.defined()) b.x = b.x.to(d, /*non_blocking=*/true);
  if (b.sparse.defined()) b.sparse = b.sparse.to(d, true);
  if (b.y.defined()) b.y = b.y.to(d, true);
  return b;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

Trainer::Trainer(TrainerOptions options, std::shared_ptr<Communicator> comm, EventSink* sink)
    : options_(std::move(options)),
      spec_(options_.spec),
      counting_(std::make_shared<CountingCommunicator>(std::move(comm))),
      sink_(sink),
      straggler_rng_(mix_seed(static_cast<uint64_t>(options_.spec.train.seed), 1000 + options_.rank)) {}

Trainer::~Trainer() = default;

std::vector<at::Tensor> Trainer::parameters() const { return params_; }

int64_t Trainer::bytes_sent() const {
  int64_t n = counting_->counts().total();
  if (intra_counting_) n += intra_counting_->counts().total();
  if (inter_counting_) n += inter_counting_->counts().total();
  return n;
}

Status Trainer::setup() {
  TERN_ASSIGN_OR_RETURN(data_, make_training_data(spec_));
  {
    // Seeding and initialising draw from LibTorch's global generator: keep them together, so
    // ranks that share a process (tests run ranks as threads) get the same seeded init.
    static std::mutex init_mu;
    std::lock_guard<std::mutex> lock(init_mu);
    torch::manual_seed(static_cast<uint64_t>(spec_.train.seed));
    TERN_ASSIGN_OR_RETURN(model_, make_image_model(spec_.model));
  }
  model_->to(options_.device);
  for (auto& p : model_->parameters()) params_.push_back(p);
  {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> data;
    for (auto& p : params_) data.push_back(p.data());
    // (A rank joining a running job at a later generation takes the group's state instead.)
    if (options_.generation <= 1) {
      TERN_RETURN_IF_ERROR(broadcast_tensors(*counting_, data, 0).with_context("initial broadcast"));
    }
  }
  optimizer_ = std::make_unique<Sgd>(params_, spec_.train.lr, spec_.train.momentum, spec_.train.weight_decay,
                                     spec_.train.nesterov);

  sampler_ = std::make_unique<ShardedSampler>(data_->train_size(), options_.world, options_.rank,
                                              static_cast<uint64_t>(spec_.train.seed));
  if (sampler_->per_rank() == 0) {
    return invalid_argument("data set of " + std::to_string(data_->train_size()) + " samples is too small for " +
                            std::to_string(options_.world) + " workers");
  }
  steps_per_epoch_ = (sampler_->per_rank() + spec_.train.batch_size - 1) / spec_.train.batch_size;

  total_steps_ = spec_.train.steps > 0 ? spec_.train.steps : spec_.train.epochs * steps_per_epoch_;
  // The region and leader groups are metered too, so bytes_sent covers every hop.
  if (options_.intra_comm) intra_counting_ = std::make_shared<CountingCommunicator>(options_.intra_comm);
  if (options_.inter_comm) inter_counting_ = std::make_shared<CountingCommunicator>(options_.inter_comm);
  // Resume (a replacement rank joining a running job takes the group's state instead).
  std::unique_ptr<LoadedCheckpoint> resume;
  const std::string& resume_dir = spec_.recovery.resume_from;
  if (!resume_dir.empty() && options_.generation <= 1) {
    auto loaded = load_agreed_checkpoint(*counting_, resume_dir, options_.device);
    if (!loaded.is_ok()) return loaded.status().with_context("recovery.resume_from");
    resume = std::make_unique<LoadedCheckpoint>(std::move(loaded).value());
    TERN_RETURN_IF_ERROR(restore_replicated(*resume, resume_dir).with_context("recovery.resume_from"));
    resumed_from_ = resume->step;
  }
  TERN_RETURN_IF_ERROR(build_sync(/*first=*/true));
  if (resume) TERN_RETURN_IF_ERROR(restore_per_rank(*resume, resume_dir, "resumed").with_context("recovery.resume_from"));
  if (spec_.recovery.checkpoint_every > 0) {
    CheckpointerOptions co;
    co.dir = spec_.recovery.dir;
    if (co.dir.empty()) co.dir = (options_.work_dir.empty() ? std::string(".") : options_.work_dir) + "/checkpoints";
    co.every = spec_.recovery.checkpoint_every;
    co.keep = spec_.recovery.keep;
    co.rank = options_.rank;
    co.job_id = options_.job_id;
    checkpointer_ = std::make_unique<Checkpointer>(std::move(co), sink_);
  }
  if (options_.generation > 1) {
    // A replacement rank joining a running job: take the survivors' state, or with
    // recovery.mode full roll back to the last checkpoint together with them.
    Status joined = spec_.recovery.mode == "full" ? rollback(/*have_state=*/false) : sync_state(/*have_state=*/false);
    TERN_RETURN_IF_ERROR(joined.with_context("joining generation " + std::to_string(options_.generation)));
    if (spec_.recovery.mode == "partial") restore_lost_rank_state();
  }
  spdlog::info("setup done: model={} params={} train={} test={} steps/epoch={} total_steps={} strategy={}",
               spec_.model.type, params_.size(), data_->train_size(), data_->test_size(), steps_per_epoch_,
               total_steps_, strategy_->name());
  return Status::ok();
}

Status Trainer::build_sync(bool first) {
  ReducerContext rctx;
  rctx.steps_per_epoch = steps_per_epoch_;
  rctx.seed = static_cast<int64_t>(mix_seed(static_cast<uint64_t>(spec_.train.seed), 2000 + options_.rank));
  strategy_.reset();  // borrows the reducer: goes first
  TERN_ASSIGN_OR_RETURN(reducer_, make_gradient_reducer(spec_, *counting_, rctx));
  if (first && reducer_->owns_momentum()) {  // DGC applies momentum itself (momentum correction)
    optimizer_ = std::make_unique<Sgd>(params_, spec_.train.lr, 0.0, spec_.train.weight_decay);
  }
  StrategyContext ctx{*counting_, reducer_.get(), spec_};
  ctx.momentum_buffers = &optimizer_->momentum_buffers();
  ctx.intra_comm = intra_counting_;
  ctx.inter_comm = inter_counting_;
  if (spec_.straggler.mode != "none") {
    TERN_ASSIGN_OR_RETURN(strategy_, StragglerSync::make(*counting_, reducer_.get(), spec_, total_steps_));
  } else {
    TERN_ASSIGN_OR_RETURN(strategy_, make_sync_strategy(std::move(ctx)));
  }
  return strategy_->begin(params_);
}

Status Trainer::sync_state(bool have_state) {
  const int world = counting_->size();
  // Every rank's step (-1: no state), via a sum of one-hot slots.
  at::Tensor steps = at::full({world}, -1, at::kLong);
  steps[options_.rank] = have_state ? step_ : -1;
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
  auto& buffers = optimizer_->momentum_buffers();
  for (size_t i = 0; i < buffers.size(); ++i) {
    // Lazily created on the first step; a zero buffer behaves the same (m·0 + g = g).
    if (!buffers[i].defined()) buffers[i] = at::zeros_like(params_[i]);
    state.push_back(buffers[i]);
  }
  TERN_RETURN_IF_ERROR(broadcast_tensors(*counting_, state, src).with_context("state from rank " + std::to_string(src)));
  if (have_state && step_ < best) spdlog::info("state from rank {}: step {} -> {}", src, step_, best);
  if (have_state && step_ > best) steps_rolled_back_ += step_ - best;  // cannot happen: best is the max
  step_ = best;
  spdlog::info("state synced from rank {} at step {} ({} ranks)", src, best, world);
  return Status::ok();
}

Status Trainer::recover(const Status& failure) {
  auto t0 = Clock::now();
  auto regrouped = regroup_after_failure(options_.regroup, spec_, options_.world, step_, failure, sink_,
                                         {counting_.get(), intra_counting_.get(), inter_counting_.get(),
                                          &retired_comms_});
  if (!regrouped.is_ok()) return regrouped.status();
  RegroupRequest req = std::move(regrouped).value();
  options_.generation = req.generation;
  if (checkpointer_) {
    // The new group never agreed on the pending step (a replacement never wrote it): drop it,
    // and let every rank, replacement included, take the next due checkpoint alike.
    checkpointer_->abandon_pending();
    last_checkpoint_step_ = -1;
  }
  TERN_RETURN_IF_ERROR(build_sync(/*first=*/false));
  const int64_t failed_at = step_;
  Status synced = req.rollback ? rollback(/*have_state=*/true) : sync_state(/*have_state=*/true);
  TERN_RETURN_IF_ERROR(synced.with_context("regroup at generation " + std::to_string(req.generation)));
  ++recoveries_;
  double lost = seconds_since(t0);
  recovery_s_ += lost;
  sink_->emit({{"event", "regrouped"}, {"generation", req.generation}, {"step", step_}, {"world", req.world},
               {"recovery_s", lost}, {"recoveries", recoveries_}, {"rollback", req.rollback},
               {"steps_rolled_back", steps_rolled_back_}});
  spdlog::info("regrouped at generation {}: training again from step {} after {:.2f} s ({})", req.generation,
               step_, lost,
               step_ < failed_at ? "rolled back " + std::to_string(failed_at - step_) + " steps to the checkpoint"
                                 : std::string("no rollback"));
  return Status::ok();
}

Status Trainer::rollback(bool have_state) {
  if (!checkpointer_) {
    spdlog::warn("recovery.mode full without recovery.checkpoint_every: no checkpoint to roll back to; "
                 "continuing from the group's furthest state");
    return sync_state(have_state);
  }
  const std::string dir = checkpointer_->store().dir();
  auto loaded = load_agreed_checkpoint(*counting_, dir, options_.device);
  if (!loaded.is_ok()) {
    if (loaded.status().code() != StatusCode::kNotFound) return loaded.status();
    // Lost before the first complete checkpoint: nothing older to return to.
    spdlog::warn("no complete checkpoint to roll back to yet ({}); continuing from the group's furthest state",
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

void Trainer::restore_lost_rank_state() {
  if (!checkpointer_) return;
  LoadOptions lo;
  lo.replicated = false;
  lo.ranks = {options_.rank};
  auto c = load_latest_checkpoint(checkpointer_->store(), lo);
  if (!c.is_ok() || c->manifest.world != options_.world) {
    spdlog::warn("step {}: no checkpointed per-rank state of rank {} to restore ({}); its reducer starts empty", step_,
                 options_.rank,
                 c.is_ok() ? "the checkpoint has world " + std::to_string(c->manifest.world) : c.status().message());
    return;
  }
  NamedTensors reducer_state;
  const std::string prefix = "reducer/";
  for (const auto& [name, t] : c->ranks.at(options_.rank).tensors) {
    if (name.rfind(prefix, 0) == 0) reducer_state.emplace_back(name.substr(prefix.size()), t);
  }
  const std::string file = checkpointer_->store().file_path(c->step, rank_file_name(options_.rank));
  if (Status s = reducer_->load_state(reducer_state); !s.is_ok()) {
    spdlog::warn("step {}: {}: per-rank state not restored: {}", step_, file, s.to_string());
    return;
  }
  spdlog::info("step {}: restored rank {}'s per-rank state ({} reducer tensors) from {} (partial recovery)", step_,
               options_.rank, reducer_state.size(), file);
  sink_->emit({{"event", "partial_restore"}, {"step", step_}, {"from_step", c->step}, {"tensors", reducer_state.size()}});
}

bool Trainer::momentum_replicated() const {
  // Only SSGD applies the same (all-reduced) update everywhere; delayed, periodic,
  // hierarchical and straggler-tolerant updates leave each rank its own momentum.
  return strategy_->name() == "ssgd" && spec_.straggler.mode == "none";
}

Status Trainer::checkpoint_point() {
  if (!checkpointer_) return Status::ok();
  const bool due = checkpointer_->due(step_) && step_ != last_checkpoint_step_;
  TERN_RETURN_IF_ERROR(checkpointer_->commit_due(*counting_, step_, options_.generation, /*force=*/due,
                                                 options_.device));
  if (due) TERN_RETURN_IF_ERROR(checkpoint(step_));
  return Status::ok();
}

Status Trainer::checkpoint(int64_t steps_done) {
  // Replicas must be identical where replicated state is taken from rank 0: the strategy
  // completes its in-flight collectives and averages parameters if they may differ (a no-op
  // for SSGD). Every rank runs it at the same step.
  auto t0 = Clock::now();
  TERN_RETURN_IF_ERROR(strategy_->drain(params_).with_context("drain before the checkpoint of step " +
                                                             std::to_string(steps_done)));
  double drain_s = seconds_since(t0);
  const bool shared_momentum = momentum_replicated();
  CheckpointMeta meta;
  meta.step = steps_done;
  meta.epoch = steps_done / steps_per_epoch_;
  meta.sampler_position = (steps_done % steps_per_epoch_) * spec_.train.batch_size;
  meta.world = options_.world;
  meta.generation = options_.generation;
  meta.job_id = options_.job_id;
  meta.extra["momentum"] = shared_momentum ? "replicated" : "per_rank";
  meta.extra["strategy"] = strategy_->name();
  meta.extra["reducer"] = reducer_->name();
  meta.extra["trainer"] = nlohmann::json{{"steps_per_epoch", steps_per_epoch_},
                                         {"total_steps", total_steps_},
                                         {"global_samples", global_samples_},
                                         {"samples", samples_},
                                         {"compute_s", compute_s_},
                                         {"injected_delay_s", injected_delay_s_},
                                         {"last_loss", last_loss_},
                                         {"skipped_steps", skipped_steps_}}
                              .dump();
  NamedTensors replicated, per_rank;
  auto& buffers = optimizer_->momentum_buffers();
  size_t i = 0;
  for (const auto& item : model_->named_parameters()) {
    replicated.emplace_back("param/" + item.key(), item.value().detach());
    if (i < buffers.size() && buffers[i].defined()) {
      (shared_momentum ? replicated : per_rank).emplace_back("momentum/" + item.key(), buffers[i]);
    }
    ++i;
  }
  for (auto& [name, t] : reducer_->state()) per_rank.emplace_back("reducer/" + name, t);
  checkpointer_->save(meta, per_rank, options_.rank == 0 ? &replicated : nullptr, drain_s);
  last_checkpoint_step_ = steps_done;
  return Status::ok();
}

Status Trainer::restore_replicated(const LoadedCheckpoint& c, const std::string& dir) {
  const Checkpoint& rep = *c.replicated;
  const std::string file = CheckpointStore(dir).file_path(c.step, kReplicatedFile);
  auto it = rep.meta.extra.find("trainer");
  if (it == rep.meta.extra.end()) {
    return failed_precondition(file + ": no 'trainer' metadata (not a checkpoint of the tern trainer loop)");
  }
  nlohmann::json counters = nlohmann::json::parse(it->second, nullptr, false);
  if (!counters.is_object()) return data_loss(file + ": the 'trainer' metadata is not a JSON object");
  int64_t spe = counters.value("steps_per_epoch", int64_t{-1});
  if (spe != steps_per_epoch_) {
    return failed_precondition(file + ": written with " + std::to_string(spe) + " steps per epoch, this job has " +
                               std::to_string(steps_per_epoch_) +
                               " (resume needs the same data set, train.batch_size and workers)");
  }
  if (c.step > total_steps_) {
    return failed_precondition(file + ": step " + std::to_string(c.step) + " is past this job's last step (" +
                               std::to_string(total_steps_) + "; raise train.steps or train.epochs)");
  }
  at::NoGradGuard no_grad;
  size_t in_file = 0;
  for (const auto& [name, t] : rep.tensors) in_file += name.rfind("param/", 0) == 0 ? 1 : 0;
  if (in_file != params_.size()) {
    return failed_precondition(file + ": holds " + std::to_string(in_file) + " parameters, model." +
                               spec_.model.type + " has " + std::to_string(params_.size()));
  }
  for (const auto& item : model_->named_parameters()) {
    const at::Tensor* t = rep.find("param/" + item.key());
    if (t == nullptr) {
      return failed_precondition(file + ": no parameter '" + item.key() + "' (written for another model?)");
    }
    if (t->sizes() != item.value().sizes() || t->scalar_type() != item.value().scalar_type()) {
      return failed_precondition(file + ": parameter '" + item.key() + "' is " + c10::str(t->sizes()) + " " +
                                 std::string(c10::toString(t->scalar_type())) + ", model." + spec_.model.type +
                                 " has " + c10::str(item.value().sizes()) + " " +
                                 std::string(c10::toString(item.value().scalar_type())));
    }
    item.value().data().copy_(*t);
  }
  step_ = c.step;
  last_checkpoint_step_ = c.step;  // it is on disk already
  global_samples_ = counters.value("global_samples", int64_t{0});
  samples_ = counters.value("samples", int64_t{0});
  compute_s_ = counters.value("compute_s", 0.0);
  injected_delay_s_ = counters.value("injected_delay_s", 0.0);
  last_loss_ = counters.value("last_loss", 0.0);
  skipped_steps_ = counters.value("skipped_steps", int64_t{0});
  return Status::ok();
}

Status Trainer::restore_per_rank(const LoadedCheckpoint& c, const std::string& dir, const std::string& event) {
  const Checkpoint& mine = c.ranks.at(options_.rank);
  CheckpointStore store(dir);
  const std::string rank_file = store.file_path(c.step, rank_file_name(options_.rank));
  auto it = c.replicated->meta.extra.find("momentum");
  const bool shared = it != c.replicated->meta.extra.end() && it->second == "replicated";
  const Checkpoint& msrc = shared ? *c.replicated : mine;
  const std::string mfile = shared ? store.file_path(c.step, kReplicatedFile) : rank_file;
  auto& buffers = optimizer_->momentum_buffers();
  size_t i = 0, restored = 0;
  for (const auto& item : model_->named_parameters()) {
    const at::Tensor* t = msrc.find("momentum/" + item.key());
    if (t != nullptr && i < buffers.size()) {
      if (t->sizes() != item.value().sizes()) {
        return failed_precondition(mfile + ": momentum of '" + item.key() + "' is " + c10::str(t->sizes()) +
                                   ", the parameter " + c10::str(item.value().sizes()));
      }
      buffers[i] = t->to(options_.device, item.value().scalar_type()).clone();
      ++restored;
    }
    ++i;
  }
  NamedTensors reducer_state;
  const std::string prefix = "reducer/";
  for (const auto& [name, t] : mine.tensors) {
    if (name.rfind(prefix, 0) == 0) reducer_state.emplace_back(name.substr(prefix.size()), t);
  }
  if (!reducer_state.empty()) {
    TERN_RETURN_IF_ERROR(reducer_->load_state(reducer_state).with_context(rank_file));
  } else if (!reducer_->state().empty()) {
    spdlog::warn("{}: no {} state in the checkpoint (written with another compressor?); starting it empty",
                 rank_file, reducer_->name());
  }
  std::string skipped;
  for (const auto& s : c.skipped) skipped += "; skipped " + s;
  spdlog::info("{} from {} at step {} (epoch {}, {} of {} steps done; {} momentum buffers, {} reducer tensors){}",
               event == "resumed" ? "resumed" : "rolled back", store.step_dir(c.step), c.step,
               c.step / steps_per_epoch_, c.step, total_steps_, restored, reducer_state.size(), skipped);
  sink_->emit({{"event", event}, {"step", c.step}, {"dir", dir}, {"skipped", c.skipped}});
  return Status::ok();
}

std::vector<int64_t> Trainer::batch_indices(int64_t step, int rank) {
  int64_t epoch = step / steps_per_epoch_;
  int64_t pos = step % steps_per_epoch_;
  if (epoch != indices_epoch_) {
    epoch_indices_.assign(static_cast<size_t>(options_.world), {});
    indices_epoch_ = epoch;
  }
  auto& mine = epoch_indices_[static_cast<size_t>(rank)];
  if (mine.empty()) {
    mine = rank == options_.rank ? sampler_->epoch_indices(epoch)
                                 : ShardedSampler(data_->train_size(), options_.world, rank,
                                                  static_cast<uint64_t>(spec_.train.seed))
                                       .epoch_indices(epoch);
  }
  int64_t begin = pos * spec_.train.batch_size;
  int64_t end = std::min<int64_t>(begin + spec_.train.batch_size, static_cast<int64_t>(mine.size()));
  return std::vector<int64_t>(mine.begin() + begin, mine.begin() + end);
}

double Trainer::maybe_inject_delay(double compute_s) {
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

Status Trainer::train_step(int64_t step) {
  TERN_ASSIGN_OR_RETURN(StepPlan plan, strategy_->plan(step, options_.rank, options_.world,
                                                       [&](int r) { return batch_indices(step, r); }));
  std::vector<at::Tensor> grads;
  grads.reserve(params_.size());
  double compute = 0;
  int64_t computed = 0;
  double mean_loss = 0;
  bool finite = true;  // this rank's loss and gradients
  if (plan.skip || plan.indices.empty()) {
    // Behind its peers (or given no work): nothing to compute; the strategy supplies the update.
    for (auto& p : params_) grads.push_back(at::zeros_like(p));
  } else {
    Batch batch = to_device(data_->train_batch(plan.indices), options_.device);
    auto t0 = Clock::now();
    model_->zero_grad();
    at::Tensor out = model_->forward(batch);
    at::Tensor loss;
    if (plan.weights.empty()) {
      loss = model_->loss(out, batch);
      loss.backward();
      mean_loss = loss.item<double>();
    } else {
      at::Tensor per = model_->loss_per_sample(out, batch);
      at::Tensor w = at::tensor(plan.weights, at::kDouble).to(per.options());
      loss = (per * w).sum();
      loss.backward();
      mean_loss = per.mean().item<double>();
    }
    for (auto& p : params_) grads.push_back(p.grad().defined() ? p.grad() : at::zeros_like(p));
    compute = seconds_since(t0);
    double delay = maybe_inject_delay(compute);
    strategy_->record_compute(batch.size(), compute + delay);
    computed = batch.size();
    finite = step_is_finite(mean_loss, grads);
  }
  const bool skip_nonfinite = spec_.train.on_nonfinite == "skip_step";
  if (skip_nonfinite) {
    // The group decides, so that every replica leaves the same step out.
    TERN_ASSIGN_OR_RETURN(std::vector<int> bad, agree_nonfinite(*counting_, finite));
    if (!bad.empty()) return skip_step(step, bad, finite ? std::string() : loss_text(mean_loss), grads);
  } else if (!finite) {
    // train.on_nonfinite fail: hand the poison on, so that peers that average gradients every
    // step (SSGD) stop at this same step with the same exit code instead of losing a peer.
    for (auto& g : grads) g.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  if (computed > 0 && finite) {
    last_loss_ = mean_loss;
    window_loss_ += last_loss_;
    ++window_steps_;
  }
  TERN_RETURN_IF_ERROR(strategy_->on_gradients(step, grads));
  if (!skip_nonfinite && (!finite || !all_finite(grads))) {
    nonfinite_stop_ = true;
    // (run() puts "step N: " in front.)
    return Status(StatusCode::kOutOfRange,
                  (!finite ? "non-finite loss (" + loss_text(mean_loss) + ") or gradient on rank " +
                                     std::to_string(options_.rank)
                               : std::string("non-finite gradient after synchronisation (a peer's step "
                                             "was not finite)")) +
                      "; lower train.lr, or set train.on_nonfinite: skip_step to leave such steps out");
  }
  auto t1 = Clock::now();
  optimizer_->set_lr(scheduled_lr(spec_.train, step, total_steps_));
  optimizer_->step(grads);
  TERN_RETURN_IF_ERROR(strategy_->after_step(step, params_));
  compute_s_ += compute + seconds_since(t1);
  samples_ += computed;
  global_samples_ += plan.global_samples;
  window_samples_ += plan.global_samples / std::max(1, options_.world);
  return Status::ok();
}

Status Trainer::skip_step(int64_t step, const std::vector<int>& ranks, const std::string& my_loss,
                          std::vector<at::Tensor>& grads) {
  // Every rank: a zero gradient through the strategy (its collectives and in-flight state stay
  // matched across ranks, its error feedback unpoisoned), then no optimizer step.
  for (auto& g : grads) g = at::zeros_like(g);
  TERN_RETURN_IF_ERROR(strategy_->on_gradients(step, grads));
  TERN_RETURN_IF_ERROR(strategy_->after_step(step, params_));
  ++skipped_steps_;
  std::string message = "step " + std::to_string(step) + ": non-finite loss or gradient on rank " +
                        rank_list(ranks) + (my_loss.empty() ? "" : " (loss " + my_loss + " here)") +
                        "; update skipped on every rank (train.on_nonfinite: skip_step, " +
                        std::to_string(skipped_steps_) + " skipped so far)";
  if (skipped_steps_ <= 10 || skipped_steps_ % 100 == 0) spdlog::warn("{}", message);
  std::vector<int64_t> rank_ids(ranks.begin(), ranks.end());
  sink_->emit({{"event", "skipped"}, {"step", step}, {"ranks", rank_ids}, {"skipped_steps", skipped_steps_},
               {"message", message}});
  return Status::ok();
}

void Trainer::emit_progress(int64_t step, bool force) {
  if (!force && (step % spec_.train.log_every != 0)) return;
  if (window_steps_ == 0) return;
  double dt = seconds_since(window_start_);
  SyncMetrics m = strategy_->metrics();
  nlohmann::json e = {
      {"event", "progress"},
      {"step", step},
      {"total_steps", total_steps_},
      {"epoch", static_cast<double>(step) / steps_per_epoch_},
      {"loss", window_steps_ > 0 ? window_loss_ / window_steps_ : last_loss_},  // a rank may skip a window
      {"samples_per_s", dt > 0 ? window_samples_ / dt : 0.0},  // this rank's; the job's is the sum
      {"bytes_sent", bytes_sent()},
      {"compute_s", compute_s_},
      {"wait_s", m.wait_s},
      {"staleness", m.staleness},
      {"injected_delay_s", injected_delay_s_},
      {"skipped_steps", skipped_steps_},
  };
  for (const auto& [k, v] : m.extra) e[k] = v;
  e["compression_ratio"] = reducer_->stats().compression_ratio(options_.world);
  e["compress_s"] = reducer_->stats().compress_s;
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

Result<EvalResult> Trainer::evaluate() {
  at::NoGradGuard no_grad;
  model_->eval();
  int64_t n = data_->test_size();
  // Contiguous shard per rank.
  int64_t per = (n + options_.world - 1) / options_.world;
  int64_t begin = std::min(n, per * options_.rank), end = std::min(n, begin + per);
  double correct = 0, loss_sum = 0;
  for (int64_t b = begin; b < end; b += 1024) {
    Batch batch = to_device(data_->test_batch(b, std::min(end, b + 1024)), options_.device);
    at::Tensor out = model_->forward(batch);
    correct += static_cast<double>(model_->correct(out, batch));
    loss_sum += model_->loss(out, batch).item<double>() * batch.size();
  }
  model_->train();
  std::vector<at::Tensor> t{
      at::tensor({correct, loss_sum, static_cast<double>(end - begin)}, at::kDouble).to(options_.device)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, t));
  at::Tensor host = t[0].cpu();
  auto acc = host.accessor<double, 1>();
  EvalResult r;
  r.samples = static_cast<int64_t>(acc[2]);
  r.accuracy = r.samples ? acc[0] / acc[2] : 0;
  r.loss = r.samples ? acc[1] / acc[2] : 0;
  return r;
}

Status Trainer::run() {
  sink_->emit({{"event", "started"}, {"world", options_.world}, {"pid", static_cast<int64_t>(getpid())},
               {"total_steps", total_steps_}});
  auto start = Clock::now();
  window_start_ = start;
  double recent_loss = 0;
  for (; step_ < total_steps_; ++step_) {
    if (stop_.load()) return cancelled("stopped at step " + std::to_string(step_));
    inject_faults(spec_.debug, options_.rank, options_.generation, step_);
    if (Status st = checkpoint_point(); !st.is_ok()) {
      TERN_RETURN_IF_ERROR(recover(st).with_context("checkpoint at step " + std::to_string(step_)));
      --step_;
      continue;
    }
    if (Status st = train_step(step_); !st.is_ok()) {
      TERN_RETURN_IF_ERROR(recover(st).with_context("step " + std::to_string(step_)));
      --step_;  // the loop's ++ lands on the step the group agreed on
      continue;
    }
    recent_loss = last_loss_;
    bool epoch_end = (step_ + 1) % steps_per_epoch_ == 0;
    emit_progress(step_ + 1, epoch_end || step_ + 1 == total_steps_);
    if (spec_.train.eval_every > 0 && (step_ + 1) % spec_.train.eval_every == 0 && step_ + 1 < total_steps_) {
      // Evaluations are not training: their time (a collective too, over the WAN) is kept out
      // of wall_s and samples_per_s; train_s is the training time so far.
      auto e0 = Clock::now();
      const double train_s = seconds_since(start) - eval_s_;
      TERN_ASSIGN_OR_RETURN(EvalResult ev, evaluate());
      sink_->emit({{"event", "eval"}, {"step", step_ + 1}, {"test_accuracy", ev.accuracy}, {"test_loss", ev.loss},
                   {"train_s", train_s}});
      eval_s_ += seconds_since(e0);
    }
  }
  if (checkpointer_) {
    // The last step's checkpoint (when due) and the commit of whatever is pending.
    TERN_RETURN_IF_ERROR(checkpoint_point());
    TERN_RETURN_IF_ERROR(checkpointer_->commit_due(*counting_, step_, options_.generation, /*force=*/true,
                                                   options_.device));
    if (Status st = checkpointer_->flush(); !st.is_ok()) {
      spdlog::warn("step {}: the last checkpoint writes failed: {}", step_, st.to_string());
    }
  }
  TERN_RETURN_IF_ERROR(strategy_->drain(params_).with_context("final drain"));
  train_wall_s_ = seconds_since(start) - eval_s_;
  TERN_ASSIGN_OR_RETURN(EvalResult ev, evaluate());
  sink_->emit({{"event", "eval"}, {"step", step_}, {"test_accuracy", ev.accuracy}, {"test_loss", ev.loss},
               {"train_s", train_wall_s_}});
  // Final training loss: this rank's last step, averaged over ranks.
  std::vector<at::Tensor> l{at::tensor({recent_loss}, at::kDouble).to(options_.device)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*counting_, l));
  double final_loss = l[0].item<double>() / options_.world;
  SyncMetrics m = strategy_->metrics();
  summary_ = {
      {"steps", step_},
      {"epochs", static_cast<double>(step_) / steps_per_epoch_},
      {"samples", global_samples_},
      {"samples_per_s", train_wall_s_ > 0 ? global_samples_ / train_wall_s_ : 0.0},
      {"computed_samples", samples_},
      {"final_loss", final_loss},
      {"test_accuracy", ev.accuracy},
      {"test_loss", ev.loss},
      {"bytes_sent_per_rank", bytes_sent()},
      {"wall_s", train_wall_s_},
      {"eval_s", eval_s_},
      {"compute_s", compute_s_},
      {"wait_s", m.wait_s},
      {"staleness", m.staleness},
      {"injected_delay_s", injected_delay_s_},
      {"strategy", strategy_->name()},
      {"recoveries", recoveries_},
      {"recovery_s", recovery_s_},
      {"steps_rolled_back", steps_rolled_back_},
      {"generation", options_.generation},
      {"skipped_steps", skipped_steps_},
  };
  for (const auto& [k, v] : m.extra) summary_[k] = v;
  summary_["compression_ratio"] = reducer_->stats().compression_ratio(options_.world);
  summary_["compress_s"] = reducer_->stats().compress_s;
  summary_["reducer_bytes_per_rank"] = reducer_->stats().wire_bytes;
  summary_["compressor"] = reducer_->name();
  if (checkpointer_) {
    summary_.update(checkpointer_->summary());
  } else {
    summary_["checkpoints"] = 0;
    summary_["checkpoint_s"] = 0.0;
  }
  if (resumed_from_ >= 0) summary_["resumed_from_step"] = resumed_from_;
  sink_->emit({{"event", "finished"}, {"summary", summary_}});
  return Status::ok();
}

}  // namespace tern
