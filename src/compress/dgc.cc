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
      return invalid_argument(
          std::string("compressor state 'dgc/rng' is not a CPU generator state: ") + e.what());
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

struct DgcCompressor::Round {
  std::vector<size_t> dense_idx, sparse_idx;
  at::Tensor dense_wire;             // the flat dense part as sent (fp32 or fp16-encoded)
  std::vector<at::Tensor> dense_u;   // the dense tensors' momentum buffers
  std::vector<int64_t> ks, offsets;  // per sparse tensor: values sent, offset in the payload
  std::vector<at::Tensor> payloads;
  int64_t payload_bytes = 0;
};

double DgcCompressor::clip_coefficient(const std::vector<at::Tensor>& grads) const {
  if (options_.clip_norm <= 0 || grads.empty()) return 1.0;
  double sq = 0;
  for (const auto& g : grads) sq += g.detach().to(at::kDouble).pow(2).sum().item<double>();
  double limit = options_.clip_norm / std::sqrt(static_cast<double>(comm_.size()));
  double norm = std::sqrt(sq);
  return norm > limit ? limit / (norm + 1e-6) : 1.0;
}

void DgcCompressor::encode_dense_part(const std::vector<at::Tensor>& grads, double coef, Round* r) {
  if (r->dense_idx.empty()) return;
  const int world = comm_.size();
  at::Tensor flat = flatten_parts(grads, r->dense_idx);
  if (coef != 1.0) flat.mul_(coef);
  if (flat.numel() > 0) {
    if (options_.value_type == at::kHalf) {
      at::Tensor& e = state_tensor("dgc/dense_error", flat);
      at::Tensor x = flat + e;
      r->dense_wire = encode_fp16(x, world);
      e.copy_(x - decode_fp16(r->dense_wire, world));
    } else {
      r->dense_wire = flat;
    }
  }
  for (size_t i : r->dense_idx) {
    r->dense_u.push_back(
        state_tensor("dgc/u/" + std::to_string(i), grads[i].detach().reshape({-1}).to(at::kFloat)));
  }
}

void DgcCompressor::encode_sparse_part(const std::vector<at::Tensor>& grads, double coef,
                                       int64_t step, Round* r) {
  const double m = options_.momentum;
  const at::ScalarType vt = options_.value_type;
  const double density = density_at(step);
  for (size_t i : r->sparse_idx) {
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
    r->payloads.push_back(encode_sparse(sel.indices, wire_values, numel));
    r->ks.push_back(k);
    r->offsets.push_back(r->payload_bytes);
    r->payload_bytes += sparse_payload_bytes(numel, k, vt);
  }
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

  auto round = std::make_shared<Round>();
  for (size_t i = 0; i < grads.size(); ++i) {
    bool sparse =
        grads[i].dim() > 1 && grads[i].numel() >= std::max<int64_t>(1, options_.min_numel);
    (sparse ? round->sparse_idx : round->dense_idx).push_back(i);
  }
  // Local clipping before accumulation, threshold scaled by N^-1/2.
  const double coef = clip_coefficient(grads);
  encode_dense_part(grads, coef, round.get());
  encode_sparse_part(grads, coef, step, round.get());
  if (!state_error().is_ok()) return failed_reduction(state_error());

  // Collectives, in the same order on every rank: dense all-reduce, then sparse allgather.
  std::vector<WorkPtr> works;
  std::vector<at::Tensor> dense_vec;
  if (round->dense_wire.defined()) {
    dense_vec.push_back(round->dense_wire);
    works.push_back(comm_.all_reduce(dense_vec, ReduceOp::kSum));
  }
  auto gathered = std::make_shared<std::vector<at::Tensor>>();
  if (!round->payloads.empty()) {
    at::Tensor payload = at::cat(round->payloads);
    for (int r = 0; r < world; ++r) gathered->push_back(at::empty_like(payload));
    works.push_back(comm_.all_gather(*gathered, payload));
  }

  auto decode = [world, m, vt, round, gathered](std::vector<at::Tensor>& out) -> Status {
    at::NoGradGuard no_grad;
    const Round& rd = *round;
    if (!rd.dense_idx.empty()) {
      at::Tensor avg = rd.dense_wire.defined()
                           ? (vt == at::kHalf ? rd.dense_wire.to(at::kFloat)
                                              : rd.dense_wire.div(static_cast<double>(world)))
                           : at::Tensor();
      int64_t off = 0;
      for (size_t j = 0; j < rd.dense_idx.size(); ++j) {
        at::Tensor& dst = out[rd.dense_idx[j]];
        int64_t n = dst.numel();
        at::Tensor u = rd.dense_u[j];
        if (n > 0) u.mul_(m).add_(avg.narrow(0, off, n));
        dst.copy_(u.view_as(dst));
        off += n;
      }
    }
    for (size_t j = 0; j < rd.sparse_idx.size(); ++j) {
      at::Tensor& dst = out[rd.sparse_idx[j]];
      int64_t numel = dst.numel();
      int64_t bytes = sparse_payload_bytes(numel, rd.ks[j], vt);
      at::Tensor acc = at::zeros({numel}, dst.options().dtype(at::kFloat));
      for (int r = 0; r < world; ++r) {
        decode_sparse_add((*gathered)[static_cast<size_t>(r)].narrow(0, rd.offsets[j], bytes),
                          numel, rd.ks[j], vt, acc);
      }
      acc.div_(static_cast<double>(world));
      dst.copy_(acc.view_as(dst));
    }
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

}  // namespace tern
