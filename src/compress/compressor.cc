#include "compress/compressor.h"

namespace tern {
namespace {

class FailedPending : public PendingReduction {
 public:
  explicit FailedPending(Status s) : status_(std::move(s)) {}
  Status finish(std::vector<at::Tensor>&) override { return status_; }
  bool ready() override { return true; }

 private:
  Status status_;
};

class CollectivePending : public PendingReduction {
 public:
  CollectivePending(Communicator& comm, std::vector<WorkPtr> works,
                    std::function<Status(std::vector<at::Tensor>&)> decode, double* compress_s)
      : comm_(comm),
        works_(std::move(works)),
        decode_(std::move(decode)),
        compress_s_(compress_s) {}

  Status finish(std::vector<at::Tensor>& out) override {
    for (auto& w : works_) TERN_RETURN_IF_ERROR(w->wait(comm_.timeout()));
    ScopedTimer timer(compress_s_);
    try {
      return decode_(out);
    } catch (const std::exception& e) {
      return internal_error(std::string("decompress: ") + e.what());
    }
  }
  bool ready() override {
    for (auto& w : works_) {
      if (!w->is_completed()) return false;
    }
    return true;
  }

 private:
  Communicator& comm_;
  std::vector<WorkPtr> works_;
  std::function<Status(std::vector<at::Tensor>&)> decode_;
  double* compress_s_;
};

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> Compressor::state() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(state_.size());
  for (const auto& [k, v] : state_) out.emplace_back(k, v);
  return out;
}

Status Compressor::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::map<std::string, at::Tensor> loaded;
  for (const auto& [k, v] : state) {
    if (k.rfind(name() + "/", 0) != 0) {
      return invalid_argument("compressor state '" + k + "' does not belong to " + name());
    }
    loaded[k] = v.detach().clone();
  }
  state_ = std::move(loaded);
  state_error_ = Status::ok();
  return Status::ok();
}

at::Tensor& Compressor::state_tensor(const std::string& key, const at::Tensor& like) {
  auto it = state_.find(key);
  if (it != state_.end()) {
    if (it->second.sizes() == like.sizes() && it->second.scalar_type() == like.scalar_type()) {
      if (it->second.device() != like.device()) it->second = it->second.to(like.device());
      return it->second;
    }
    state_error_ = failed_precondition("restored compressor state '" + key + "' has shape " +
                                       c10::str(it->second.sizes()) + ", the gradient has " +
                                       c10::str(like.sizes()));
  }
  at::Tensor& t = state_[key];
  t = at::zeros_like(like, at::MemoryFormat::Contiguous);
  return t;
}

Compressor::FlatStep Compressor::flatten_with_memory(const std::vector<at::Tensor>& grads,
                                                     bool error_feedback, double ef_decay) {
  FlatStep f;
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < grads.size(); ++i) {
    at::Tensor g = grads[i].detach().reshape({-1}).to(at::kFloat);
    if (g.numel() == 0) continue;
    if (error_feedback) {
      at::Tensor& e = state_tensor(name_ + "/e/" + std::to_string(i), g);
      f.memories.push_back(e);
      g = ef_decay == 1.0 ? g + e : g + e * ef_decay;
    }
    f.idx.push_back(i);
    f.numels.push_back(g.numel());
    parts.push_back(g);
  }
  if (!parts.empty()) f.x = parts.size() == 1 ? parts[0].clone() : at::cat(parts);
  return f;
}

void Compressor::store_residual(FlatStep& f, const at::Tensor& residual) {
  int64_t off = 0;
  for (size_t j = 0; j < f.memories.size(); ++j) {
    f.memories[j].copy_(residual.narrow(0, off, f.numels[j]));
    off += f.numels[j];
  }
}

ScopedTimer::ScopedTimer(double* acc) : acc_(acc), start_(std::chrono::steady_clock::now()) {}
ScopedTimer::~ScopedTimer() {
  if (acc_)
    *acc_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::unique_ptr<PendingReduction> failed_reduction(Status status) {
  return std::make_unique<FailedPending>(std::move(status));
}

std::unique_ptr<PendingReduction> make_pending(
    Communicator& comm, std::vector<WorkPtr> works,
    std::function<Status(std::vector<at::Tensor>&)> decode, double* compress_s) {
  return std::make_unique<CollectivePending>(comm, std::move(works), std::move(decode), compress_s);
}

at::Tensor flatten_parts(const std::vector<at::Tensor>& grads, const std::vector<size_t>& idx) {
  std::vector<at::Tensor> parts;
  parts.reserve(idx.size());
  for (size_t i : idx) parts.push_back(grads[i].detach().reshape({-1}).to(at::kFloat));
  return parts.size() == 1 ? parts[0].clone() : at::cat(parts);
}

}  // namespace tern
