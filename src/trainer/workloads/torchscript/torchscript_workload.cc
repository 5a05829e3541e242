#include "trainer/workloads/torchscript/torchscript_workload.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>

#include "trainer/loop/metrics.h"
#include "trainer/loop/nonfinite.h"
#include "trainer/workloads/formats/tensor_data.h"
#include "trainer/workloads/formats/token_data.h"
#include "trainer/workloads/image/training_data.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;
namespace F = torch::nn::functional;

constexpr int64_t kEvalBatch = 256;

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string describe_tensor(const at::Tensor& t) {
  return c10::str(t.sizes()) + " " + std::string(c10::toString(t.scalar_type()));
}

}  // namespace

Result<std::unique_ptr<TrainingData>> make_user_data(const JobSpec& spec) {
  const DataSource source = spec.data.source;
  if (source == DataSource::kTokens) {
    TERN_ASSIGN_OR_RETURN(auto d, TokenData::open(spec.data));
    return std::unique_ptr<TrainingData>(std::move(d));
  }
  if (source == DataSource::kTensors) return make_tensor_data(spec.data);
  if (source == DataSource::kFashionMnist || source == DataSource::kSynthetic)
    return make_training_data(spec);
  return invalid_argument("data.source " + name_of(source) +
                          " is not data a TorchScript model trains on");
}

TorchScriptWorkload::TorchScriptWorkload() = default;
TorchScriptWorkload::~TorchScriptWorkload() = default;

std::string TorchScriptWorkload::model_file() const { return "model.path " + spec_->model.path; }

Status TorchScriptWorkload::setup(const WorkloadContext& ctx) {
  spec_ = ctx.spec;
  rank_ = ctx.rank;
  world_ = ctx.world;
  device_ = ctx.device;
  comm_ = ctx.comm;
  TERN_ASSIGN_OR_RETURN(data_, make_user_data(*spec_));
  const std::string& path = spec_->model.path;
  {
    std::ifstream probe_file(path, std::ios::binary);
    if (!probe_file)
      return invalid_argument("model.path: cannot read " + path + ": " + std::strerror(errno));
  }
  try {
    // Dropout and other random ops draw from the global generator: seeded like the built-in
    // models (and under the same lock: ranks may share a process in tests).
    static std::mutex init_mu;
    std::lock_guard<std::mutex> lock(init_mu);
    torch::manual_seed(static_cast<uint64_t>(spec_->train.seed));
    module_ = torch::jit::load(path, device_);
  } catch (const c10::Error& e) {
    return invalid_argument("model.path: " + path +
                            " is not a TorchScript archive (save one with torch.jit.save): " +
                            first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return invalid_argument("model.path: cannot load " + path + ": " + first_line(e.what()));
  }
  module_.train();
  for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
    if (!p.value.requires_grad()) continue;  // frozen: not trained, not synchronised
    params_.emplace_back(p.name, p.value);
  }
  if (params_.empty())
    return invalid_argument(model_file() + ": the module has no trainable parameters");
  for (const auto& b : module_.named_buffers(/*recurse=*/true))
    buffers_.emplace_back(b.name, b.value);
  if (!module_.find_method("forward"))
    return invalid_argument(model_file() + ": the module has no forward method");

  metrics_ = spec_->model.metrics;
  if (metrics_.empty()) {
    metrics_.push_back(EvalMetric::kLoss);
    if (spec_->model.loss == LossKind::kCrossEntropy) metrics_.push_back(EvalMetric::kAccuracy);
  }
  TERN_ASSIGN_OR_RETURN(parts_, DataParallelParts::make(data_->train_size(), world_, rank_,
                                                        static_cast<uint64_t>(spec_->train.seed),
                                                        spec_->train.batch_size));
  if (data_->test_size() == 0) return invalid_argument("data: the test split has no samples");
  return probe();
}

at::Tensor TorchScriptWorkload::forward(const at::Tensor& inputs) {
  c10::IValue out = module_.forward({inputs});
  if (!out.isTensor()) {
    throw std::runtime_error("forward returned " + out.tagKind() + ", not a tensor (model.loss " +
                             name_of(spec_->model.loss) + " takes the outputs of forward(inputs))");
  }
  return out.toTensor();
}

at::Tensor TorchScriptWorkload::loss_of(const Batch& batch, at::Tensor* per_sample,
                                        at::Tensor* outputs) {
  const LossKind kind = spec_->model.loss;
  const int64_t b = batch.size();
  if (kind == LossKind::kReturned) {
    c10::IValue out = module_.forward({batch.x, batch.y});
    if (!out.isTensor() || out.toTensor().numel() != 1) {
      throw std::runtime_error(
          "with model.loss returned, forward(inputs, targets) must return the scalar loss, got " +
          (out.isTensor() ? describe_tensor(out.toTensor()) : out.tagKind()));
    }
    return out.toTensor().reshape({});
  }
  at::Tensor o = forward(batch.x);
  if (outputs != nullptr) *outputs = o;
  const at::Tensor& y = batch.y;
  auto mismatch = [&](const std::string& need) {
    return std::runtime_error("model.loss " + name_of(kind) + " cannot take outputs " +
                              describe_tensor(o) + " with targets " + describe_tensor(y) + ": " +
                              need);
  };
  if (o.dim() == 0 || o.size(0) != b)
    throw mismatch("outputs need one row per sample (" + std::to_string(b) + ")");
  if (!at::isFloatingType(o.scalar_type())) throw mismatch("outputs must be floating point");
  at::Tensor elements;  // per target element [B, E]
  at::Tensor mean;
  if (kind == LossKind::kCrossEntropy) {
    if (at::isFloatingType(y.scalar_type()))
      throw mismatch("cross_entropy targets are class indices (int64)");
    if (o.dim() < 2 || o.sizes().slice(0, o.dim() - 1) != y.sizes()) {
      throw mismatch("outputs must be targets' shape plus a last dimension of classes");
    }
    const int64_t classes = o.size(-1);
    at::Tensor flat = o.reshape({-1, classes});
    at::Tensor target = y.reshape({-1}).to(at::kLong);
    if (target.numel() > 0) {
      const int64_t lo = target.min().item<int64_t>(), hi = target.max().item<int64_t>();
      if (lo < 0 || hi >= classes) {
        throw mismatch("target " + std::to_string(lo < 0 ? lo : hi) + " is not a class of the " +
                       std::to_string(classes) + " outputs");
      }
    }
    if (per_sample == nullptr) return F::cross_entropy(flat, target);
    elements = F::cross_entropy(flat, target, F::CrossEntropyFuncOptions().reduction(torch::kNone))
                   .reshape({b, -1});
  } else {
    if (o.numel() != y.numel())
      throw mismatch("outputs and targets need the same number of elements per sample");
    at::Tensor target = y.to(o.scalar_type()).reshape(o.sizes());
    if (kind == LossKind::kMse) {
      if (per_sample == nullptr) return F::mse_loss(o, target);
      elements =
          F::mse_loss(o, target, F::MSELossFuncOptions().reduction(torch::kNone)).reshape({b, -1});
    } else {
      if (per_sample == nullptr) return F::binary_cross_entropy_with_logits(o, target);
      elements =
          F::binary_cross_entropy_with_logits(
              o, target, F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone))
              .reshape({b, -1});
    }
  }
  *per_sample = elements.mean(1);
  return elements.mean();
}

Status TorchScriptWorkload::probe() {
  const int64_t n = std::min<int64_t>(2, data_->train_size());
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < n; ++i) idx.push_back(i);
  Batch batch = batch_to(data_->train_batch(idx), device_);
  try {
    at::NoGradGuard no_grad;
    at::Tensor loss = loss_of(batch, nullptr, nullptr);
    (void)loss;
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) what = ce->what_without_backtrace();
    return invalid_argument(model_file() + ": forward on a batch of data.path (inputs " +
                            describe_tensor(batch.x) + ", targets " + describe_tensor(batch.y) +
                            ") failed: " + first_line(what));
  }
  return Status::ok();
}

std::vector<std::pair<std::string, at::Tensor>> TorchScriptWorkload::named_parameters() const {
  return params_;
}
std::vector<std::pair<std::string, at::Tensor>> TorchScriptWorkload::named_buffers() const {
  return buffers_;
}

Status TorchScriptWorkload::sync_buffers() {
  if (comm_->size() == 1 || buffers_.empty()) return Status::ok();
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> floating, counters;
  for (auto& [name, b] : buffers_)
    (at::isFloatingType(b.scalar_type()) ? floating : counters).push_back(b);
  if (!floating.empty()) {
    TERN_RETURN_IF_ERROR(all_reduce_sync(*comm_, floating).with_context("averaging buffers"));
    for (auto& b : floating) b.div_(comm_->size());
  }
  if (!counters.empty())
    TERN_RETURN_IF_ERROR(broadcast_tensors(*comm_, counters, 0).with_context("buffers"));
  return Status::ok();
}

Result<StepOutput> TorchScriptWorkload::compute(int64_t step, const StepPlan& plan,
                                                std::vector<at::Tensor>* grads) {
  StepOutput out;
  grads->clear();
  grads->reserve(params_.size());
  if (plan.skip || plan.indices.empty()) {
    for (auto& [name, p] : params_) grads->push_back(at::zeros_like(p));
    return out;
  }
  Batch batch = batch_to(data_->train_batch(plan.indices), device_);
  auto t0 = Clock::now();
  try {
    for (auto& [name, p] : params_) p.mutable_grad() = at::Tensor();
    const int64_t b = batch.size();
    if (plan.weights.empty()) {
      at::Tensor loss = loss_of(batch, nullptr, nullptr);
      loss.backward();
      out.loss = loss.item<double>();
    } else if (spec_->model.loss != LossKind::kReturned) {
      at::Tensor per;
      loss_of(batch, &per, nullptr);
      at::Tensor w = at::tensor(plan.weights, at::kDouble).to(per.options());
      (per * w).sum().backward();
      out.loss = per.mean().item<double>();
    } else {
      // The module returns only a mean: one forward per run of equally weighted samples.
      double sum = 0;
      for (int64_t a = 0; a < b;) {
        int64_t e = a + 1;
        while (e < b &&
               plan.weights[static_cast<size_t>(e)] == plan.weights[static_cast<size_t>(a)])
          ++e;
        Batch run{batch.x.narrow(0, a, e - a), {}, batch.y.narrow(0, a, e - a)};
        at::Tensor loss = loss_of(run, nullptr, nullptr);
        (loss * (plan.weights[static_cast<size_t>(a)] * static_cast<double>(e - a))).backward();
        sum += loss.item<double>() * static_cast<double>(e - a);
        a = e;
      }
      out.loss = sum / static_cast<double>(b);
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) what = ce->what_without_backtrace();
    return invalid_argument(model_file() + ": step " + std::to_string(step) +
                            ": forward/backward failed on inputs " + describe_tensor(batch.x) +
                            ": " + first_line(what));
  }
  for (auto& [name, p] : params_)
    grads->push_back(p.grad().defined() ? p.grad() : at::zeros_like(p));
  out.compute_s = std::chrono::duration<double>(Clock::now() - t0).count();
  out.samples = batch.size();
  out.finite = step_is_finite(out.loss, *grads);
  return out;
}

Result<Metrics> TorchScriptWorkload::evaluate() {
  at::NoGradGuard no_grad;
  module_.eval();
  const bool need_outputs = spec_->model.loss != LossKind::kReturned;
  const bool bce = spec_->model.loss == LossKind::kBceWithLogits;
  const int64_t n = data_->test_size();
  const auto [begin, end] = eval_slice(n, comm_->rank(), comm_->size());
  // [loss sum over elements, elements, correct, samples]
  double loss_sum = 0, elements = 0, correct = 0;
  std::vector<at::Tensor> scores, labels;
  const bool want_auc =
      std::find(metrics_.begin(), metrics_.end(), EvalMetric::kAuc) != metrics_.end();
  try {
    for (int64_t s = begin; s < end; s += kEvalBatch) {
      Batch batch = batch_to(data_->test_batch(s, std::min(end, s + kEvalBatch)), device_);
      at::Tensor outputs;
      at::Tensor loss = loss_of(batch, nullptr, need_outputs ? &outputs : nullptr);
      const double count =
          need_outputs ? static_cast<double>(batch.y.numel()) : static_cast<double>(batch.size());
      loss_sum += loss.item<double>() * count;
      elements += count;
      if (!need_outputs) continue;
      if (bce) {
        at::Tensor logits = outputs.reshape({-1});
        at::Tensor y = batch.y.reshape({-1}).to(logits.scalar_type());
        correct += ((logits > 0).to(y.scalar_type()) == y).sum().item<double>();
        if (want_auc) {
          scores.push_back(logits.cpu());
          labels.push_back(y.cpu());
        }
      } else if (spec_->model.loss == LossKind::kCrossEntropy) {
        correct += (outputs.argmax(-1) == batch.y).sum().item<double>();
      }
    }
  } catch (const std::exception& e) {
    module_.train();
    std::string what = e.what();
    if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) what = ce->what_without_backtrace();
    return invalid_argument(
        model_file() + ": evaluation failed on a batch of the test split: " + first_line(what));
  }
  module_.train();
  std::vector<at::Tensor> t{
      at::tensor({loss_sum, elements, correct, static_cast<double>(end - begin)}, at::kDouble)
          .to(device_)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(*comm_, t).with_context("evaluation"));
  at::Tensor host = t[0].cpu();
  auto acc = host.accessor<double, 1>();
  const double mean_loss = acc[1] > 0 ? acc[0] / acc[1] : 0.0;
  Metrics out;
  for (EvalMetric m : metrics_) {
    if (m == EvalMetric::kLoss) out.emplace_back("test_loss", mean_loss);
    if (m == EvalMetric::kAccuracy)
      out.emplace_back("test_accuracy", acc[1] > 0 ? acc[2] / acc[1] : 0.0);
    if (m == EvalMetric::kPerplexity) out.emplace_back("test_perplexity", std::exp(mean_loss));
    if (m == EvalMetric::kAuc) {
      at::Tensor s = scores.empty() ? at::empty({0}, at::kDouble) : at::cat(scores);
      at::Tensor l = labels.empty() ? at::empty({0}, at::kDouble) : at::cat(labels);
      TERN_ASSIGN_OR_RETURN(double auc, global_auc(*comm_, s, l));
      out.emplace_back("test_auc", auc);
    }
  }
  if (std::find(metrics_.begin(), metrics_.end(), EvalMetric::kLoss) == metrics_.end())
    out.emplace_back("test_loss", mean_loss);
  out.emplace_back("test_samples", acc[3]);
  return out;
}

std::string TorchScriptWorkload::describe() const {
  int64_t numel = 0;
  for (const auto& [name, p] : params_) numel += p.numel();
  return "torchscript=" + spec_->model.path + " (" + std::to_string(numel) + " parameters in " +
         std::to_string(params_.size()) + " tensors, " + std::to_string(buffers_.size()) +
         " buffers) data=" + name_of(spec_->data.source) +
         " train=" + std::to_string(data_->train_size()) +
         " test=" + std::to_string(data_->test_size());
}

}  // namespace tern
