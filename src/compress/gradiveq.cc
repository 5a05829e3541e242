#include "compress/gradiveq.h"

#include <algorithm>

#include "comm/counting_communicator.h"

namespace tern {

at::Tensor gradiveq_slices(const at::Tensor& flat, int64_t d) {
  const int64_t n = flat.numel();
  const int64_t m = (n + d - 1) / d;
  at::Tensor x = flat.reshape({-1});
  if (m * d != n) x = at::constant_pad_nd(x, {0, m * d - n});
  return x.reshape({m, d});
}

at::Tensor gradiveq_encode(const at::Tensor& slices, const at::Tensor& basis) {
  return at::matmul(slices, basis);
}

at::Tensor gradiveq_decode(const at::Tensor& coeffs, const at::Tensor& basis, int64_t numel) {
  return at::matmul(coeffs, basis.t()).reshape({-1}).narrow(0, 0, numel);
}

at::Tensor gradiveq_covariance(const at::Tensor& slices) { return at::matmul(slices.t(), slices); }

at::Tensor gradiveq_basis(const at::Tensor& cov, int64_t k) {
  at::Tensor c = cov.to(at::kDouble);
  c = (c + c.t()).mul_(0.5);  // exactly symmetric, whatever rounding the sum left
  at::Tensor vecs = std::get<1>(at::linalg_eigh(c));  // eigenvalues ascending
  const int64_t d = c.size(0);
  at::Tensor top = vecs.narrow(1, d - k, k).flip({1}).contiguous();  // largest first
  // An eigenvector's sign is arbitrary: fix it so the basis is a function of cov alone.
  at::Tensor pivot = top.abs().argmax(0);
  at::Tensor signs = top.gather(0, pivot.unsqueeze(0)).sign();
  signs.masked_fill_(signs == 0, 1.0);
  return top.mul(signs).to(at::kFloat).contiguous();
}

// One step's reduction: per bucket the all-reduced payload (dense values or coefficients,
// then the covariance when the bucket carries one). finalize() waits for every bucket and
// turns carried covariances into the next bases (written into the compressor's state
// tensors). Idempotent; called by finish() or by the next start(), whichever comes first.
struct GradiVeqCompressor::Round {
  struct Bucket {
    int64_t offset = 0;  // in the step's flat vector
    int64_t numel = 0;
    bool compressed = false;
    at::Tensor basis;         // the basis this step encoded with (a private copy)
    at::Tensor payload;       // reduced in place
    int64_t coeff_numel = 0;  // payload values before the covariance
    at::Tensor basis_state;   // defined when the bucket carries a covariance
    WorkPtr work;
  };
  Communicator* comm = nullptr;
  int64_t d = 0;
  int64_t k = 0;
  int64_t* refreshes = nullptr;
  std::vector<Bucket> buckets;
  bool carries = false;
  bool finalized = false;
  Status status;

  Status finalize() {
    if (finalized) return status;
    finalized = true;
    for (auto& b : buckets) {
      status = b.work->wait(comm->timeout());
      if (!status.is_ok()) return status;
    }
    at::NoGradGuard no_grad;
    for (auto& b : buckets) {
      if (!b.basis_state.defined()) continue;
      at::Tensor cov = b.payload.narrow(0, b.coeff_numel, d * d).view({d, d});
      b.basis_state.copy_(gradiveq_basis(cov, k));
      ++*refreshes;
    }
    return status;
  }
};

namespace {

class GradiVeqPending : public PendingReduction {
 public:
  GradiVeqPending(std::shared_ptr<GradiVeqCompressor::Round> round, std::vector<size_t> idx,
                  int64_t total, int world, double* compress_s)
      : round_(std::move(round)),
        idx_(std::move(idx)),
        total_(total),
        world_(world),
        compress_s_(compress_s) {}

  Status finish(std::vector<at::Tensor>& out) override {
    TERN_RETURN_IF_ERROR(round_->finalize().with_context("GradiVeQ all-reduce"));
    ScopedTimer timer(compress_s_);
    try {
      at::NoGradGuard no_grad;
      at::Tensor flat = at::empty({total_}, at::kFloat);
      for (const auto& b : round_->buckets) {
        at::Tensor part =
            b.compressed
                ? gradiveq_decode(b.payload.narrow(0, 0, b.coeff_numel).view({-1, round_->k}),
                                  b.basis, b.numel)
                : b.payload.narrow(0, 0, b.numel);
        flat.narrow(0, b.offset, b.numel).copy_(part).div_(static_cast<double>(world_));
      }
      unflatten_parts(flat, out, idx_);
      return Status::ok();
    } catch (const std::exception& e) {
      return internal_error(std::string("GradiVeQ decompress: ") + e.what());
    }
  }

  bool ready() override {
    for (const auto& b : round_->buckets) {
      if (!b.work->is_completed()) return false;
    }
    return true;
  }

 private:
  std::shared_ptr<GradiVeqCompressor::Round> round_;
  std::vector<size_t> idx_;
  int64_t total_;
  int world_;
  double* compress_s_;
};

}  // namespace

GradiVeqCompressor::GradiVeqCompressor(Communicator& comm, GradiVeqOptions options)
    : Compressor(comm, "gradiveq"), options_(std::move(options)) {}

std::unique_ptr<PendingReduction> GradiVeqCompressor::start(const std::vector<at::Tensor>& grads,
                                                            int64_t) {
  // The previous step's covariance becomes this step's basis.
  if (last_) {
    Status s = last_->finalize();
    last_.reset();
    if (!s.is_ok()) return failed_reduction(s.with_context("GradiVeQ: previous all-reduce"));
  }
  ScopedTimer timer(&stats_.compress_s);
  at::NoGradGuard no_grad;
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;
  at::Tensor& iter = state_tensor("gradiveq/iter", at::zeros({1}, at::kLong));
  const int64_t it = iter.item<int64_t>();
  iter.fill_(it + 1);

  FlatStep f = flatten_with_memory(grads, options_.error_feedback, options_.ef_decay);
  if (!state_error().is_ok()) return failed_reduction(state_error());
  auto round = std::make_shared<Round>();
  round->comm = &comm_;
  round->d = options_.slice_size;
  round->k = options_.basis_size;
  round->refreshes = &refreshes_;
  const int64_t total = f.x.defined() ? f.x.numel() : 0;
  if (total == 0) {
    return std::make_unique<GradiVeqPending>(round, f.idx, 0, comm_.size(), &stats_.compress_s);
  }
  const int64_t d = options_.slice_size, k = options_.basis_size;
  const int64_t bucket = std::max(d, options_.bucket_numel / d * d);
  // Steps from now to the first compressed step (negative once compressing): the step before a
  // refresh carries the covariance.
  const int64_t next = it + 1 - options_.start_iter;
  at::Tensor residual = f.memories.empty() ? at::Tensor() : at::zeros_like(f.x);
  int64_t b = 0;
  for (int64_t off = 0; off < total; off += bucket, ++b) {
    Round::Bucket bk;
    bk.offset = off;
    bk.numel = std::min(bucket, total - off);
    at::Tensor xb = f.x.narrow(0, off, bk.numel);
    at::Tensor& basis =
        state_tensor("gradiveq/basis/" + std::to_string(b), at::zeros({d, k}, at::kFloat));
    if (!state_error().is_ok()) return failed_reduction(state_error());
    const bool has_basis = basis.abs().max().item<float>() > 0;
    bk.compressed = it >= options_.start_iter && has_basis;
    const bool carry = next >= 0 && (next % options_.refresh_every == 0 || !has_basis);
    at::Tensor slices = gradiveq_slices(xb, d);
    std::vector<at::Tensor> parts;
    if (bk.compressed) {
      bk.basis = basis.clone();
      at::Tensor coeffs = gradiveq_encode(slices, bk.basis);
      if (residual.defined()) {
        residual.narrow(0, off, bk.numel).copy_(xb - gradiveq_decode(coeffs, bk.basis, bk.numel));
      }
      parts.push_back(coeffs.reshape({-1}));
    } else {
      parts.push_back(xb);  // everything sent: the memory of this bucket becomes zero
    }
    bk.coeff_numel = parts[0].numel();
    if (carry) {
      parts.push_back(gradiveq_covariance(slices).reshape({-1}));
      bk.basis_state = basis;
      round->carries = true;
    }
    bk.payload = parts.size() == 1 ? parts[0].contiguous() : at::cat(parts);
    std::vector<at::Tensor> v{bk.payload};
    bk.work = comm_.all_reduce(v, ReduceOp::kSum);
    round->buckets.push_back(std::move(bk));
  }
  if (residual.defined()) store_residual(f, residual);
  if (round->carries) last_ = round;
  return std::make_unique<GradiVeqPending>(round, f.idx, total, comm_.size(), &stats_.compress_s);
}

}  // namespace tern
