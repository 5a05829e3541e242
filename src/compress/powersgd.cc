#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>

#include "comm/counting_communicator.h"
#include "compress/compressor.h"

namespace tern {

// One compressed reduction's second round: the Q all-reduce in flight, the orthonormal P̂ of
// each matrix, and where the summed Q goes as the next warm start. finalize() is idempotent and
// is called by finish() or by the next start(), whichever comes first.
struct PowerSgdCompressor::Round {
  Communicator* comm = nullptr;
  WorkPtr q_work;
  at::Tensor q_flat;                // all matrices' Q, summed over ranks once q_work completes
  std::vector<at::Tensor> p_hat;    // n x r, orthonormal columns
  std::vector<at::Tensor> q_state;  // m x r warm-start tensors (reducer state), filled on finalize
  std::vector<int64_t> q_offsets;
  bool finalized = false;
  Status status;

  Status finalize() {
    if (finalized) return status;
    finalized = true;
    status = q_work->wait(comm->timeout());
    if (!status.is_ok()) return status;
    for (size_t j = 0; j < q_state.size(); ++j) {
      q_state[j].copy_(q_flat.narrow(0, q_offsets[j], q_state[j].numel()).view_as(q_state[j]));
    }
    return status;
  }
};

PowerSgdCompressor::PowerSgdCompressor(Communicator& comm, PowerSgdOptions options)
    : Compressor(comm, "powersgd"), options_(std::move(options)) {}

void PowerSgdCompressor::split_matrices(const std::vector<at::Tensor>& grads, bool compress,
                                        std::vector<size_t>* dense_idx,
                                        std::vector<size_t>* matrix_idx,
                                        std::vector<std::array<int64_t, 3>>* dims) const {
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = grads[i];
    if (compress && g.dim() >= 2 && g.numel() > 0) {
      int64_t n = g.size(0), m = g.numel() / n;
      int64_t r = std::min({options_.rank, n, m});
      bool worth = options_.min_compression_rate <= 0 ||
                   static_cast<double>((n + m) * r) * options_.min_compression_rate <
                       static_cast<double>(n * m);
      if (worth) {
        matrix_idx->push_back(i);
        dims->push_back({n, m, r});
        continue;
      }
    }
    dense_idx->push_back(i);
  }
}

Status PowerSgdCompressor::start_matrices(const std::vector<at::Tensor>& grads,
                                          const std::vector<size_t>& matrix_idx,
                                          const std::vector<std::array<int64_t, 3>>& dims,
                                          Round* round) {
  std::vector<at::Tensor> ms, errors;
  std::vector<at::Tensor> ps;
  for (size_t j = 0; j < matrix_idx.size(); ++j) {
    size_t i = matrix_idx[j];
    auto [n, m, r] = dims[j];
    at::Tensor mat = grads[i].detach().reshape({n, m}).to(at::kFloat).clone();
    if (options_.error_feedback) {
      at::Tensor& e = state_tensor("powersgd/e/" + std::to_string(i), mat);
      mat.add_(e);
      errors.push_back(e);
    }
    at::Tensor& q =
        state_tensor("powersgd/q/" + std::to_string(i), at::zeros({m, r}, mat.options()));
    if (!q.any().item<bool>()) {
      // Same seed and call order on every rank: identical initial Q everywhere.
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options_.seed + 7919 * (i + 1));
      q.copy_(at::randn({m, r}, gen, at::TensorOptions().dtype(at::kFloat)));
    }
    round->q_state.push_back(q);
    ps.push_back(at::matmul(mat, q).reshape({-1}));
    ms.push_back(mat);
  }
  TERN_RETURN_IF_ERROR(state_error());
  std::vector<at::Tensor> p_vec{at::cat(ps)};
  auto wait_start = std::chrono::steady_clock::now();
  Status s = comm_.all_reduce(p_vec, ReduceOp::kSum)->wait(comm_.timeout());
  // Waiting for peers is communication, not compression time.
  stats_.compress_s -=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
  if (!s.is_ok()) return s.with_context("PowerSGD: P all-reduce");
  std::vector<at::Tensor> qs;
  int64_t p_off = 0, q_off = 0;
  for (size_t j = 0; j < matrix_idx.size(); ++j) {
    auto [n, m, r] = dims[j];
    at::Tensor p = p_vec[0].narrow(0, p_off, n * r).view({n, r});
    p_off += n * r;
    at::Tensor p_hat = std::get<0>(at::linalg_qr(p, "reduced"));
    at::Tensor q_local = at::matmul(ms[j].t(), p_hat);  // m x r
    if (options_.error_feedback) {
      errors[j].copy_(ms[j] - at::matmul(p_hat, q_local.t()));  // what this rank's share left out
    }
    round->p_hat.push_back(p_hat);
    round->q_offsets.push_back(q_off);
    q_off += m * r;
    qs.push_back(q_local.reshape({-1}));
  }
  round->q_flat = at::cat(qs);
  std::vector<at::Tensor> q_vec{round->q_flat};
  round->q_work = comm_.all_reduce(q_vec, ReduceOp::kSum);
  return Status::ok();
}

std::unique_ptr<PendingReduction> PowerSgdCompressor::start(const std::vector<at::Tensor>& grads,
                                                            int64_t) {
  // The warm start of this round is the previous round's summed Q.
  if (last_) {
    Status s = last_->finalize();
    if (!s.is_ok()) return failed_reduction(s.with_context("PowerSGD: previous Q all-reduce"));
  }
  ScopedTimer timer(&stats_.compress_s);
  at::NoGradGuard no_grad;
  const int world = comm_.size();
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;
  at::Tensor& iter = state_tensor("powersgd/iter", at::zeros({1}, at::kLong));
  int64_t it = iter.item<int64_t>();
  iter.fill_(it + 1);
  bool compress = it >= options_.start_iter;

  std::vector<size_t> dense_idx, matrix_idx;
  std::vector<std::array<int64_t, 3>> dims;  // n, m, r
  split_matrices(grads, compress, &dense_idx, &matrix_idx, &dims);

  std::vector<WorkPtr> works;
  std::vector<at::Tensor> dense_vec;
  if (!dense_idx.empty()) {
    at::Tensor flat = flatten_parts(grads, dense_idx);
    if (flat.numel() > 0) {
      dense_vec.push_back(flat);
      works.push_back(comm_.all_reduce(dense_vec, ReduceOp::kSum));
    }
  }

  auto round = std::make_shared<Round>();
  round->comm = &comm_;
  if (!matrix_idx.empty()) {
    Status s = start_matrices(grads, matrix_idx, dims, round.get());
    if (!s.is_ok()) return failed_reduction(s);
    last_ = round;
  } else if (!state_error().is_ok()) {
    return failed_reduction(state_error());
  }

  bool has_round = !matrix_idx.empty();
  auto decode = [world, dense_idx, matrix_idx, dense_vec, round,
                 has_round](std::vector<at::Tensor>& out) -> Status {
    at::NoGradGuard no_grad;
    if (!dense_vec.empty())
      unflatten_parts(dense_vec[0].div(static_cast<double>(world)), out, dense_idx);
    if (has_round) {
      TERN_RETURN_IF_ERROR(round->finalize());
      for (size_t j = 0; j < matrix_idx.size(); ++j) {
        at::Tensor& dst = out[matrix_idx[j]];
        // This round's own summed Q (the warm-start state may already hold a later round's).
        at::Tensor q = round->q_flat.narrow(0, round->q_offsets[j], round->q_state[j].numel())
                           .view_as(round->q_state[j]);
        at::Tensor approx = at::matmul(round->p_hat[j], q.t()).div_(static_cast<double>(world));
        dst.copy_(approx.view_as(dst));
      }
    }
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

}  // namespace tern
