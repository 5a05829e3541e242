#include "trainer/workloads/image/image_workload.h"

#include <chrono>
#include <mutex>

#include "trainer/loop/nonfinite.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kEvalBatch = 1024;

}  // namespace

Status ImageWorkload::setup(const WorkloadContext& ctx) {
  spec_ = ctx.spec;
  rank_ = ctx.rank;
  world_ = ctx.world;
  device_ = ctx.device;
  comm_ = ctx.comm;
  TERN_ASSIGN_OR_RETURN(data_, make_training_data(*spec_));
  {
    // Seeding and initialising draw from LibTorch's global generator: keep them together, so
    // ranks that share a process (tests run ranks as threads) get the same seeded init.
    static std::mutex init_mu;
    std::lock_guard<std::mutex> lock(init_mu);
    torch::manual_seed(static_cast<uint64_t>(spec_->train.seed));
    TERN_ASSIGN_OR_RETURN(model_, make_image_model(spec_->model));
  }
  model_->to(device_);
  for (auto& p : model_->parameters()) params_.push_back(p);
  TERN_ASSIGN_OR_RETURN(parts_, DataParallelParts::make(data_->train_size(), world_, rank_,
                                                        static_cast<uint64_t>(spec_->train.seed),
                                                        spec_->train.batch_size));
  return Status::ok();
}

std::vector<std::pair<std::string, at::Tensor>> ImageWorkload::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model_->named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<int64_t> ImageWorkload::part(int64_t step, int rank) {
  return parts_->part(step, rank);
}

Result<StepOutput> ImageWorkload::compute(int64_t step, const StepPlan& plan,
                                          std::vector<at::Tensor>* grads) {
  StepOutput out;
  grads->clear();
  grads->reserve(params_.size());
  if (plan.skip || plan.indices.empty()) {
    // Behind its peers (or given no work): nothing to compute; the strategy supplies the update.
    for (auto& p : params_) grads->push_back(at::zeros_like(p));
    return out;
  }
  Batch batch = batch_to(data_->train_batch(plan.indices), device_);
  if (spec_->train.dp.enabled) return compute_private(batch, plan, grads);
  auto t0 = Clock::now();
  model_->zero_grad();
  at::Tensor logits = model_->forward(batch);
  if (plan.weights.empty()) {
    at::Tensor loss = model_->loss(logits, batch);
    loss.backward();
    out.loss = loss.item<double>();
  } else {
    at::Tensor per = model_->loss_per_sample(logits, batch);
    at::Tensor w = at::tensor(plan.weights, at::kDouble).to(per.options());
    (per * w).sum().backward();
    out.loss = per.mean().item<double>();
  }
  for (auto& p : params_) grads->push_back(p.grad().defined() ? p.grad() : at::zeros_like(p));
  out.compute_s = std::chrono::duration<double>(Clock::now() - t0).count();
  out.samples = batch.size();
  out.finite = step_is_finite(out.loss, *grads);
  return out;
}

Result<StepOutput> ImageWorkload::compute_private(const Batch& batch, const StepPlan& plan,
                                                  std::vector<at::Tensor>* grads) {
  StepOutput out;
  const DpSpec& dp = spec_->train.dp;
  const int64_t b = batch.size();
  auto t0 = Clock::now();
  // Each sample's weight in this rank's gradient (the plan's, else the local mean's).
  at::Tensor u = plan.weights.empty() ? at::full({b}, 1.0 / static_cast<double>(b), at::kDouble)
                                      : at::tensor(plan.weights, at::kDouble);
  u = u.to(device_);
  model_->zero_grad();
  std::vector<LinearTrace> trace;
  at::Tensor logits = dp.per_sample == PerSampleGrad::kMicrobatch
                          ? at::Tensor()
                          : model_->forward_traced(batch, &trace);
  if (logits.defined()) {
    // Vectorised: one backward of the unweighted sum gives every layer's per-sample output
    // gradients; norms and the clipped, weighted sum follow from them (privacy/dp_sgd.h).
    at::Tensor per = model_->loss_per_sample(logits, batch);
    per.sum().backward();
    at::Tensor c = clip_factors(linear_per_sample_sq_norms(trace), dp.clip);
    write_linear_grads(trace, c * u);
    out.loss = per.mean().item<double>();
    for (auto& p : params_) grads->push_back(p.grad().defined() ? p.grad() : at::zeros_like(p));
  } else {
    // Micro-batches of one sample: any model.
    for (auto& p : params_) grads->push_back(at::zeros_like(p));
    double loss_sum = 0;
    for (int64_t i = 0; i < b; ++i) {
      Batch one{batch.x.narrow(0, i, 1), at::Tensor(), batch.y.narrow(0, i, 1)};
      model_->zero_grad();
      at::Tensor loss = model_->loss_per_sample(model_->forward(one), one).sum();
      loss.backward();
      loss_sum += loss.item<double>();
      std::vector<at::Tensor> g;
      for (auto& p : params_) g.push_back(p.grad());
      const double scale = clip_factor(g, dp.clip) * u[i].item<double>();
      for (size_t k = 0; k < g.size(); ++k) {
        if (g[k].defined()) (*grads)[k].add_(g[k], scale);
      }
    }
    out.loss = b > 0 ? loss_sum / static_cast<double>(b) : 0.0;
  }
  out.compute_s = std::chrono::duration<double>(Clock::now() - t0).count();
  out.samples = b;
  out.finite = step_is_finite(out.loss, *grads);
  return out;
}

Result<Metrics> ImageWorkload::evaluate() {
  at::NoGradGuard no_grad;
  model_->eval();
  int64_t n = data_->test_size();
  const auto [begin, end] = eval_slice(n, comm_->rank(), comm_->size());
  double correct = 0, loss_sum = 0;
  for (int64_t b = begin; b < end; b += kEvalBatch) {
    Batch batch = batch_to(data_->test_batch(b, std::min(end, b + kEvalBatch)), device_);
    at::Tensor logits = model_->forward(batch);
    correct += static_cast<double>(model_->correct(logits, batch));
    loss_sum += model_->loss(logits, batch).item<double>() * batch.size();
  }
  model_->train();
  std::vector<at::Tensor> t{
      at::tensor({correct, loss_sum, static_cast<double>(end - begin)}, at::kDouble).to(device_)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*comm_, t));
  at::Tensor host = t[0].cpu();
  auto acc = host.accessor<double, 1>();
  const double samples = acc[2];
  return Metrics{{"test_accuracy", samples > 0 ? acc[0] / samples : 0.0},
                 {"test_loss", samples > 0 ? acc[1] / samples : 0.0},
                 {"test_samples", samples}};
}

std::string ImageWorkload::describe() const {
  return "train=" + std::to_string(data_->train_size()) +
         " test=" + std::to_string(data_->test_size());
}

}  // namespace tern
