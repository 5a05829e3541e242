#include "trainer/loop/optimizer.h"

#include <ATen/core/grad_mode.h>

#include <cmath>

namespace tern {
namespace {

const at::Tensor* find(const Optimizer::NamedTensors& named, const std::string& name) {
  for (const auto& [n, t] : named) {
    if (n == name) return &t;
  }
  return nullptr;
}

std::string describe(const at::Tensor& t) {
  return c10::str(t.sizes()) + " " + std::string(c10::toString(t.scalar_type()));
}

// A state tensor of parameter `p`: same shape, a floating type (converted to the parameter's).
Status check_like(const at::Tensor& t, const at::Tensor& p, const std::string& where,
                  const std::string& what, const std::string& param) {
  if (t.sizes() != p.sizes() || !t.is_floating_point()) {
    return failed_precondition(where + ": " + what + " of '" + param + "' is " + describe(t) +
                               ", the parameter " + describe(p));
  }
  return Status::ok();
}

}  // namespace

// --- Sgd ---------------------------------------------------------------------------------------

Sgd::Sgd(std::vector<at::Tensor> params, double lr, double momentum, double weight_decay,
         bool nesterov)
    : params_(std::move(params)),
      buffers_(params_.size()),
      lr_(lr),
      momentum_(momentum),
      weight_decay_(weight_decay),
      nesterov_(nesterov) {}

void Sgd::step(const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].data();
    at::Tensor d_p = grads[i].data();
    if (weight_decay_ != 0) d_p = d_p.add(p, weight_decay_);
    if (momentum_ != 0) {
      if (!buffers_[i].defined()) {
        buffers_[i] = d_p.clone().detach();
      } else {
        buffers_[i].mul_(momentum_).add_(d_p, 1.0);
      }
      // Nesterov: step along g + momentum * buf (the look-ahead), as torch::optim::SGD does.
      d_p = nesterov_ ? d_p.add(buffers_[i], momentum_) : buffers_[i];
    }
    p.add_(d_p, -1 * lr_);
  }
}

Optimizer::NamedTensors Sgd::state(const std::vector<std::string>& param_names, bool materialize) {
  NamedTensors out;
  for (size_t i = 0; i < params_.size() && i < param_names.size(); ++i) {
    // A zero buffer behaves as a missing one: m·0 + g = g.
    if (!buffers_[i].defined() && materialize) buffers_[i] = at::zeros_like(params_[i].detach());
    if (buffers_[i].defined()) out.emplace_back("momentum/" + param_names[i], buffers_[i]);
  }
  return out;
}

Status Sgd::load_state(const NamedTensors& named, const std::vector<std::string>& param_names,
                       const std::string& where) {
  if (param_names.size() != params_.size()) {
    return internal_error("Sgd::load_state: " + std::to_string(param_names.size()) + " names for " +
                          std::to_string(params_.size()) + " parameters");
  }
  for (const auto& [name, t] : named) {
    if (name.rfind("adamw/", 0) == 0) {
      return failed_precondition(
          where + ": holds AdamW state ('" + name +
          "'), this job's train.optimizer is sgd (resume with train.optimizer adamw)");
    }
  }
  std::vector<at::Tensor> next(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor* t = find(named, "momentum/" + param_names[i]);
    if (t == nullptr) continue;  // not created yet when it was saved: starts fresh
    TERN_RETURN_IF_ERROR(check_like(*t, params_[i], where, "momentum", param_names[i]));
    next[i] = t->to(params_[i].device(), params_[i].scalar_type()).clone();
  }
  buffers_ = std::move(next);
  return Status::ok();
}

// --- AdamW -------------------------------------------------------------------------------------

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options)
    : params_(std::move(params)), steps_(params_.size(), 0), options_(options) {
  at::NoGradGuard no_grad;
  for (const auto& p : params_) {
    // torch::optim::AdamW creates them as zeros at a parameter's first step; the same values.
    exp_avg_.push_back(at::zeros_like(p.detach(), at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(at::zeros_like(p.detach(), at::MemoryFormat::Preserve));
  }
}

void AdamW::step(const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  // The operations and their order are torch::optim::AdamW::step's (LibTorch 1.13), so the
  // results are equal bit for bit: decay, moments, denominator, addcdiv.
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!grads[i].defined()) continue;
    at::Tensor p = params_[i].data();
    const at::Tensor grad = grads[i].data();
    if (options_.weight_decay != 0) p.mul_(1 - options_.lr * options_.weight_decay);
    const int64_t step = ++steps_[i];
    const double bias_correction1 = 1 - std::pow(beta1, step);
    const double bias_correction2 = 1 - std::pow(beta2, step);
    exp_avg_[i].mul_(beta1).add_(grad, 1 - beta1);
    exp_avg_sq_[i].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    at::Tensor denom = (exp_avg_sq_[i].sqrt() / std::sqrt(bias_correction2)).add_(options_.eps);
    const double step_size = options_.lr / bias_correction1;
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

Optimizer::NamedTensors AdamW::state(const std::vector<std::string>& param_names,
                                     bool /*materialize*/) {
  NamedTensors out;
  for (size_t i = 0; i < params_.size() && i < param_names.size(); ++i) {
    out.emplace_back("adamw/exp_avg/" + param_names[i], exp_avg_[i]);
    out.emplace_back("adamw/exp_avg_sq/" + param_names[i], exp_avg_sq_[i]);
    out.emplace_back("adamw/step/" + param_names[i], at::scalar_tensor(steps_[i], at::kLong));
  }
  return out;
}

Status AdamW::load_state(const NamedTensors& named, const std::vector<std::string>& param_names,
                         const std::string& where) {
  if (param_names.size() != params_.size()) {
    return internal_error("AdamW::load_state: " + std::to_string(param_names.size()) +
                          " names for " + std::to_string(params_.size()) + " parameters");
  }
  for (const auto& [name, t] : named) {
    if (name.rfind("momentum/", 0) == 0) {
      return failed_precondition(
          where + ": holds SGD momentum ('" + name +
          "'), this job's train.optimizer is adamw (resume with train.optimizer sgd)");
    }
  }
  // Everything is checked before anything changes.
  std::vector<at::Tensor> m(params_.size()), v(params_.size());
  std::vector<int64_t> steps(params_.size(), 0);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& pn = param_names[i];
    const at::Tensor* tm = find(named, "adamw/exp_avg/" + pn);
    const at::Tensor* tv = find(named, "adamw/exp_avg_sq/" + pn);
    const at::Tensor* ts = find(named, "adamw/step/" + pn);
    const int present = (tm != nullptr) + (tv != nullptr) + (ts != nullptr);
    if (present == 0) {  // never stepped when it was saved: fresh
      m[i] = at::zeros_like(params_[i].detach(), at::MemoryFormat::Preserve);
      v[i] = at::zeros_like(params_[i].detach(), at::MemoryFormat::Preserve);
      continue;
    }
    if (present != 3) {
      return data_loss(where + ": AdamW state of '" + pn +
                       "' is incomplete (it needs adamw/exp_avg, " +
                       "adamw/exp_avg_sq and adamw/step; has " + std::string(tm ? "exp_avg " : "") +
                       (tv ? "exp_avg_sq " : "") + (ts ? "step" : "") + ")");
    }
    TERN_RETURN_IF_ERROR(check_like(*tm, params_[i], where, "adamw/exp_avg", pn));
    TERN_RETURN_IF_ERROR(check_like(*tv, params_[i], where, "adamw/exp_avg_sq", pn));
    // Integral, or a float holding an integer (a broadcast may carry it as a double).
    if (ts->numel() != 1) {
      return failed_precondition(where + ": adamw/step of '" + pn + "' must hold one count, is " +
                                 describe(*ts));
    }
    const double s = ts->to(at::kCPU, at::kDouble).item<double>();
    if (!(s >= 0) || s != std::floor(s) || s > 9007199254740992.0) {
      return data_loss(where + ": adamw/step of '" + pn + "' must be a whole number >= 0, got " +
                       std::to_string(s));
    }
    if (tv->lt(0).any().item<bool>()) {
      return data_loss(where + ": adamw/exp_avg_sq of '" + pn +
                       "' has negative entries (a mean of squares "
                       "cannot be negative: a damaged file)");
    }
    m[i] = tm->to(params_[i].device(), params_[i].scalar_type()).clone();
    v[i] = tv->to(params_[i].device(), params_[i].scalar_type()).clone();
    steps[i] = static_cast<int64_t>(s);
  }
  // In place: the vectors' addresses stay (sync strategies hold averaged_state()).
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i] = m[i];
    exp_avg_sq_[i] = v[i];
  }
  steps_ = std::move(steps);
  return Status::ok();
}

// --- the factory -------------------------------------------------------------------------------

Result<std::unique_ptr<Optimizer>> make_optimizer(const TrainSpec& train,
                                                  std::vector<at::Tensor> params,
                                                  bool momentum_in_reducer) {
  if (train.optimizer == OptimizerKind::kSgd) {
    // DGC applies momentum itself (momentum correction): the optimizer must not apply it again.
    return std::unique_ptr<Optimizer>(std::make_unique<Sgd>(
        std::move(params), train.lr, momentum_in_reducer ? 0.0 : train.momentum, train.weight_decay,
        momentum_in_reducer ? false : train.nesterov));
  }
  if (train.optimizer == OptimizerKind::kAdamw) {
    if (momentum_in_reducer) {
      return invalid_argument(
          "train.optimizer adamw cannot be combined with a compressor that applies SGD "
          "momentum itself (compress.method dgc)");
    }
    if (train.betas.size() != 2) {
      return invalid_argument("train.betas must be two numbers [beta1, beta2], got " +
                              std::to_string(train.betas.size()));
    }
    AdamWOptions o;
    o.lr = train.lr;
    o.beta1 = train.betas[0];
    o.beta2 = train.betas[1];
    o.eps = train.eps;
    o.weight_decay = train.weight_decay;
    return std::unique_ptr<Optimizer>(std::make_unique<AdamW>(std::move(params), o));
  }
  return invalid_argument("unknown train.optimizer '" + name_of(train.optimizer) +
                          "' (sgd, adamw)");
}

}  // namespace tern
