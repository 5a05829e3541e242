#include "trainer/trainer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "comm/reducer.h"
#include "compress/factory.h"
#include "straggler/straggler_sync.h"
#include "common/trainer_protocol.h"

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
    TERN_RETURN_IF_ERROR(broadcast_tensors(*counting_, data, 0).with_context("initial broadcast"));
  }
  optimizer_ = std::make_unique<Sgd>(params_, spec_.train.lr, spec_.train.momentum, spec_.train.weight_decay);

  sampler_ = std::make_unique<ShardedSampler>(data_->train_size(), options_.world, options_.rank,
                                              static_cast<uint64_t>(spec_.train.seed));
  if (sampler_->per_rank() == 0) {
    return invalid_argument("data set of " + std::to_string(data_->train_size()) + " samples is too small for " +
                            std::to_string(options_.world) + " workers");
  }
  steps_per_epoch_ = (sampler_->per_rank() + spec_.train.batch_size - 1) / spec_.train.batch_size;

  ReducerContext rctx;
  rctx.steps_per_epoch = steps_per_epoch_;
  rctx.seed = static_cast<int64_t>(mix_seed(static_cast<uint64_t>(spec_.train.seed), 2000 + options_.rank));
  StrategyContext ctx{*counting_, nullptr, spec_};
  TERN_ASSIGN_OR_RETURN(reducer_, make_gradient_reducer(spec_, *counting_, rctx));
  ctx.reducer = reducer_.get();
  if (reducer_->owns_momentum()) {  // DGC applies momentum itself (momentum correction)
    optimizer_ = std::make_unique<Sgd>(params_, spec_.train.lr, 0.0, spec_.train.weight_decay);
  }
  ctx.momentum_buffers = &optimizer_->momentum_buffers();
  // The region and leader groups are metered too, so bytes_sent covers every hop.
  if (options_.intra_comm) ctx.intra_comm = intra_counting_ = std::make_shared<CountingCommunicator>(options_.intra_comm);
  if (options_.inter_comm) ctx.inter_comm = inter_counting_ = std::make_shared<CountingCommunicator>(options_.inter_comm);
  total_steps_ = spec_.train.steps > 0 ? spec_.train.steps : spec_.train.epochs * steps_per_epoch_;
  if (spec_.straggler.mode != "none") {
    TERN_ASSIGN_OR_RETURN(strategy_, StragglerSync::make(*counting_, reducer_.get(), spec_, total_steps_));
  } else {
    TERN_ASSIGN_OR_RETURN(strategy_, make_sync_strategy(std::move(ctx)));
  }
  TERN_RETURN_IF_ERROR(strategy_->begin(params_));
  spdlog::info("setup done: model={} params={} train={} test={} steps/epoch={} total_steps={} strategy={}",
               spec_.model.type, params_.size(), data_->train_size(), data_->test_size(), steps_per_epoch_,
               total_steps_, strategy_->name());
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
  if (plan.skip || plan.indices.empty()) {
    // Behind its peers (or given no work): nothing to compute; the strategy supplies the update.
    for (auto& p : params_) grads.push_back(at::zeros_like(p));
  } else {
    Batch batch = to_device(data_->train_batch(plan.indices), options_.device);
    auto t0 = Clock::now();
    model_->zero_grad();
    at::Tensor out = model_->forward(batch);
    at::Tensor loss;
    double mean_loss = 0;
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
    last_loss_ = mean_loss;
    window_loss_ += last_loss_;
    ++window_steps_;
  }
  TERN_RETURN_IF_ERROR(strategy_->on_gradients(step, grads));
  auto t1 = Clock::now();
  optimizer_->step(grads);
  TERN_RETURN_IF_ERROR(strategy_->after_step(step, params_));
  compute_s_ += compute + seconds_since(t1);
  samples_ += computed;
  global_samples_ += plan.global_samples;
  window_samples_ += plan.global_samples / std::max(1, options_.world);
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
  };
  for (const auto& [k, v] : m.extra) e[k] = v;
  e["compression_ratio"] = reducer_->stats().compression_ratio(options_.world);
  e["compress_s"] = reducer_->stats().compress_s;
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
    if (spec_.debug.fail_rank == options_.rank && spec_.debug.fail_step == step_ && options_.generation == 0) {
      spdlog::error("debug.fail_step reached: rank {} exits now (fault injection)", options_.rank);
      std::fflush(stdout);
      std::_Exit(kInjectedFailureExit);
    }
    TERN_RETURN_IF_ERROR(train_step(step_).with_context("step " + std::to_string(step_)));
    recent_loss = last_loss_;
    bool epoch_end = (step_ + 1) % steps_per_epoch_ == 0;
    emit_progress(step_ + 1, epoch_end || step_ + 1 == total_steps_);
    if (spec_.train.eval_every > 0 && (step_ + 1) % spec_.train.eval_every == 0 && step_ + 1 < total_steps_) {
      TERN_ASSIGN_OR_RETURN(EvalResult ev, evaluate());
      sink_->emit({{"event", "eval"}, {"step", step_ + 1}, {"test_accuracy", ev.accuracy}, {"test_loss", ev.loss}});
    }
  }
  TERN_RETURN_IF_ERROR(strategy_->drain(params_).with_context("final drain"));
  train_wall_s_ = seconds_since(start);
  TERN_ASSIGN_OR_RETURN(EvalResult ev, evaluate());
  sink_->emit({{"event", "eval"}, {"step", step_}, {"test_accuracy", ev.accuracy}, {"test_loss", ev.loss}});
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
      {"compute_s", compute_s_},
      {"wait_s", m.wait_s},
      {"staleness", m.staleness},
      {"injected_delay_s", injected_delay_s_},
      {"strategy", strategy_->name()},
  };
  for (const auto& [k, v] : m.extra) summary_[k] = v;
  summary_["compression_ratio"] = reducer_->stats().compression_ratio(options_.world);
  summary_["compress_s"] = reducer_->stats().compress_s;
  summary_["reducer_bytes_per_rank"] = reducer_->stats().wire_bytes;
  summary_["compressor"] = reducer_->name();
  sink_->emit({{"event", "finished"}, {"summary", summary_}});
  return Status::ok();
}

}  // namespace tern
