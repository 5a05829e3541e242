#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "comm/counting_communicator.h"
#include "compress/codec.h"
#include "compress/compressor.h"

namespace tern {

DgcCompressor::DgcCompressor(Communicator& comm, DgcOptions options)
    : Compressor(comm, "dgc"),
      options_(std::move(options)),
      gen_(at::make_generator<at::CPUGeneratorImpl>(options_.seed)) {}

std::vector<std::pair<std::string, at::Tensor>> DgcCompressor::state() {
  auto out = Compressor::state();
  std::lock_guard<std::mutex> lock(gen_.mutex());
  out.emplace_back("dgc/rng", gen_.get_state());
  return out;
}

Status DgcCompressor::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::vector<std::pair<std::string, at::Tensor>> rest;
  for (const auto& [k, v] : state) {
    if (k != "dgc/rng") {
      rest.emplace_back(k, v);
      continue;
    }
    try {
      std::lock_guard<std::mutex> lock(gen_.mutex());
      gen_.set_state(v.to(at::kCPU).contiguous());
    } catch (const std::exception& e) {
      return invalid_argument(std::string("compressor state 'dgc/rng' is not a CPU generator state: ") + e.what());
    }
  }
  return Compressor::load_state(rest);
}

double DgcCompressor::density_at(int64_t step) const {
  const auto& w = options_.warmup_densities;
  if (options_.warmup_steps <= 0 || w.empty() || step >= options_.warmup_steps || step < 0) {
    return options_.density;
  }
  size_t stage = static_cast<size_t>(step * static_cast<int64_t>(w.size()) / options_.warmup_steps);
  return std::max(options_.density, w[std::min(stage, w.size() - 1)]);
}

std::unique_ptr<PendingReduction> DgcCompressor::start(const std::vector<at::Tensor>& grads,
                                                       int64_t step) {
  ScopedTimer timer(&stats_.compress_s);
  at::NoGradGuard no_grad;
  const int world = comm_.size();
  const double m = options_.momentum;
  const at::ScalarType vt = options_.value_type;
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;

  std::vector<size_t> dense_idx, sparse_idx;
  for (size_t i = 0; i < grads.size(); ++i) {
    bool sparse =
        grads[i].dim() > 1 && grads[i].numel() >= std::max<int64_t>(1, options_.min_numel);
    (sparse ? sparse_idx : dense_idx).push_back(i);
  }

  // Local clipping before accumulation, threshold scaled by N^-1/2.
  double coef = 1.0;
  if (options_.clip_norm > 0 && !grads.empty()) {
    double sq = 0;
    for (const auto& g : grads) sq += g.detach().to(at::kDouble).pow(2).sum().item<double>();
    double limit = options_.clip_norm / std::sqrt(static_cast<double>(world));
    double norm = std::sqrt(sq);
    if (norm > limit) coef = limit / (norm + 1e-6);
  }

  // Dense part: one flat all-reduce (fp16 with error feedback when values travel as half).
  at::Tensor dense_wire;
  std::vector<at::Tensor> dense_u;
  if (!dense_idx.empty()) {
    at::Tensor flat = flatten_parts(grads, dense_idx);
    if (coef != 1.0) flat.mul_(coef);
    if (flat.numel() > 0) {
      if (vt == at::kHalf) {
        at::Tensor& e = state_tensor("dgc/dense_error", flat);
        at::Tensor x = flat + e;
        dense_wire = encode_fp16(x, world);
        e.copy_(x - decode_fp16(dense_wire, world));
      } else {
        dense_wire = flat;
      }
    }
    for (size_t i : dense_idx) {
      dense_u.push_back(state_tensor("dgc/u/" + std::to_string(i),
                                     grads[i].detach().reshape({-1}).to(at::kFloat)));
    }
  }

  // Sparse part: momentum correction, accumulation, top-k, masking, encoding.
  double density = density_at(step);
  std::vector<int64_t> ks, offsets;
  std::vector<at::Tensor> payloads;
  int64_t payload_bytes = 0;
  for (size_t i : sparse_idx) {
    at::Tensor g = grads[i].detach().reshape({-1}).to(at::kFloat);
    if (coef != 1.0) g = g.mul(coef);
    at::Tensor& u = state_tensor("dgc/u/" + std::to_string(i), g);
    at::Tensor& v = state_tensor("dgc/v/" + std::to_string(i), g);
    u.mul_(m).add_(g);
    v.add_(u);
    int64_t numel = g.numel();
    int64_t k = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(density * numel)), 1, numel);
    TopKSelection sel = sampled_top_k(v, k, options_.sample_ratio, gen_);
    if (sel.exact) {
      ++exact_fallbacks_;
    } else {
      ++sampled_;
    }
    at::Tensor sent;
    at::Tensor wire_values = to_wire_values(sel.values, vt, &sent);
    v.index_add_(0, sel.indices, sent.neg());  // keeps exactly what was not sent (or rounded off)
    if (options_.momentum_masking) u.index_fill_(0, sel.indices, 0);
    payloads.push_back(encode_sparse(sel.indices, wire_values, numel));
    ks.push_back(k);
    offsets.push_back(payload_bytes);
    payload_bytes += sparse_payload_bytes(numel, k, vt);
  }
  if (!state_error().is_ok()) return failed_reduction(state_error());

  // Collectives, in the same order on every rank: dense all-reduce, then sparse allgather.
  std::vector<WorkPtr> works;
  std::vector<at::Tensor> dense_vec;
  if (dense_wire.defined()) {
    dense_vec.push_back(dense_wire);
    works.push_back(comm_.all_reduce(dense_vec, ReduceOp::kSum));
  }
  std::vector<at::Tensor> gathered;
  if (!payloads.empty()) {
    at::Tensor payload = at::cat(payloads);
    for (int r = 0; r < world; ++r) gathered.push_back(at::empty_like(payload));
    works.push_back(comm_.all_gather(gathered, payload));
  }

  auto decode = [this, world, m, vt, dense_idx, sparse_idx, ks, offsets, dense_wire, dense_u,
                 gathered](std::vector<at::Tensor>& out) -> Status {
    at::NoGradGuard no_grad;
    if (!dense_idx.empty()) {
      at::Tensor avg = dense_wire.defined()
                           ? (vt == at::kHalf ? dense_wire.to(at::kFloat)
                                              : dense_wire.div(static_cast<double>(world)))
                           : at::Tensor();
      int64_t off = 0;
      for (size_t j = 0; j < dense_idx.size(); ++j) {
        at::Tensor& dst = out[dense_idx[j]];
        int64_t n = dst.numel();
        at::Tensor u = dense_u[j];
        if (n > 0) u.mul_(m).add_(avg.narrow(0, off, n));
        dst.copy_(u.view_as(dst));
        off += n;
      }
    }
    for (size_t j = 0; j < sparse_idx.size(); ++j) {
      at::Tensor& dst = out[sparse_idx[j]];
      int64_t numel = dst.numel();
      int64_t bytes = sparse_payload_bytes(numel, ks[j], vt);
      at::Tensor acc = at::zeros({numel}, dst.options().dtype(at::kFloat));
      for (int r = 0; r < world; ++r) {
        decode_sparse_add(gathered[static_cast<size_t>(r)].narrow(0, offsets[j], bytes), numel,
                          ks[j], vt, acc);
      }
      acc.div_(static_cast<double>(world));
      dst.copy_(acc.view_as(dst));
    }
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

}  // namespace tern
