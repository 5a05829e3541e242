// The optimizer the training loop applies to a workload's replicated (dense) parameters, with its
// state exposed as plain named tensors, so that checkpoints can save it, a regroup can broadcast
// it and sync strategies can average its first moment (sync.average_momentum).
//
//   Sgd    SGD with momentum (heavy-ball or Nesterov) and weight decay, numerically identical to
//          torch::optim::SGD (dampening 0). State: "momentum/<param>", created at the first step
//          (none with momentum 0).
//   AdamW  numerically identical to torch::optim::AdamW of LibTorch 1.13 (amsgrad false):
//          p *= 1 - lr * weight_decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), with a step count t per
//          parameter. State: "adamw/exp_avg/<param>", "adamw/exp_avg_sq/<param>" (zeros from the
//          start, as torch initialises them) and "adamw/step/<param>" (an int64 scalar).
//
// Names are what checkpoints hold (old SGD checkpoints keep loading), so a checkpoint of one
// optimizer is never taken for the other's. Not thread-safe: the training loop's thread only.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"

namespace tern {

class Optimizer {
 public:
  using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

  virtual ~Optimizer() = default;
  // The spec's train.optimizer: "sgd" | "adamw".
  virtual std::string name() const = 0;
  // Applies `grads` (one per parameter, in the parameters' order) to the parameters.
  virtual void step(const std::vector<at::Tensor>& grads) = 0;
  virtual void set_lr(double lr) = 0;
  virtual double lr() const = 0;
  virtual const std::vector<at::Tensor>& params() const = 0;

  // The state under its checkpoint names, `param_names` naming the parameters in order. Tensors
  // that are state themselves are returned as they are (not copies): copy before changing them
  // and hand changes back through load_state(). `materialize`: state not created yet (SGD's
  // momentum before the first step) comes as zeros, which load back to an equivalent fresh
  // state, so every rank of a broadcast holds the same list; otherwise it is left out.
  virtual NamedTensors state(const std::vector<std::string>& param_names, bool materialize) = 0;
  // Replaces the whole state with the entries of `named` under this optimizer's names (other
  // names, such as a checkpoint's "param/..." entries, are ignored; state a name is missing for
  // starts fresh where that is valid). The other optimizer's names are refused (FAILED_PRECONDITION
  // naming the optimizer to resume with), as are wrong shapes or types; impossible values
  // (incomplete AdamW state, a negative exp_avg_sq, a fractional step) are DATA_LOSS. All is
  // checked before anything changes; errors name `where` (a file) and the parameter, and leave
  // the state as it was.
  virtual Status load_state(const NamedTensors& named, const std::vector<std::string>& param_names,
                            const std::string& where) = 0;
  // The per-parameter tensors sync.average_momentum averages at sync points: SGD's momentum
  // buffers (undefined until the first step), AdamW's exp_avg. AdamW's exp_avg_sq (a
  // per-coordinate scale of this rank's own gradients) and step count stay local. The vector
  // lives as long as the optimizer.
  virtual std::vector<at::Tensor>* averaged_state() = 0;
};

class Sgd : public Optimizer {
 public:
  Sgd(std::vector<at::Tensor> params, double lr, double momentum, double weight_decay,
      bool nesterov = false);
  std::string name() const override { return "sgd"; }
  void step(const std::vector<at::Tensor>& grads) override;
  void set_lr(double lr) override { lr_ = lr; }
  double lr() const override { return lr_; }
  const std::vector<at::Tensor>& params() const override { return params_; }
  NamedTensors state(const std::vector<std::string>& param_names, bool materialize) override;
  Status load_state(const NamedTensors& named, const std::vector<std::string>& param_names,
                    const std::string& where) override;
  std::vector<at::Tensor>* averaged_state() override { return &buffers_; }

  std::vector<at::Tensor>& momentum_buffers() { return buffers_; }

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> buffers_;  // undefined until the first step
  double lr_, momentum_, weight_decay_;
  bool nesterov_;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled (torch::optim::AdamWOptions' default)
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<at::Tensor> params, AdamWOptions options);
  std::string name() const override { return "adamw"; }
  // A parameter whose gradient is undefined is left alone, its step count too (as torch does).
  void step(const std::vector<at::Tensor>& grads) override;
  void set_lr(double lr) override { options_.lr = lr; }
  double lr() const override { return options_.lr; }
  const std::vector<at::Tensor>& params() const override { return params_; }
  NamedTensors state(const std::vector<std::string>& param_names, bool materialize) override;
  // Every parameter needs all three entries, or none (a parameter never stepped: fresh state).
  Status load_state(const NamedTensors& named, const std::vector<std::string>& param_names,
                    const std::string& where) override;
  std::vector<at::Tensor>* averaged_state() override { return &exp_avg_; }

  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  const std::vector<int64_t>& steps() const { return steps_; }
  const AdamWOptions& options() const { return options_; }

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;  // like the parameters, zeros until the first step
  std::vector<int64_t> steps_;  // on the host: the bias corrections need no device sync
  AdamWOptions options_;
};

// The optimizer train.optimizer names over `params`. `momentum_in_reducer`: the gradient reducer
// applies momentum itself (DGC's momentum correction), so SGD runs without its own; adamw cannot
// be combined with it (refused, as the spec's validation does).
Result<std::unique_ptr<Optimizer>> make_optimizer(const TrainSpec& train,
                                                  std::vector<at::Tensor> params,
                                                  bool momentum_in_reducer = false);

}  // namespace tern
