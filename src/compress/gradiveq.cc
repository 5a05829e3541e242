#include "compress/gradiveq.h"

#include <algorithm>
#include <string>

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

int64_t gradiveq_packed_numel(int64_t d) { return d * (d + 1) / 2; }

namespace {

// Row-major positions of the upper triangle of a d x d matrix (diagonal included), in order,
// and of its mirror image.
std::pair<at::Tensor, at::Tensor> upper_triangle_positions(int64_t d) {
  at::Tensor ij = at::triu_indices(d, d, 0, at::TensorOptions().dtype(at::kLong));
  return {ij[0] * d + ij[1], ij[1] * d + ij[0]};
}

}  // namespace

at::Tensor gradiveq_pack_covariance(const at::Tensor& cov) {
  return cov.reshape({-1}).index_select(0, upper_triangle_positions(cov.size(0)).first);
}

at::Tensor gradiveq_unpack_covariance(const at::Tensor& packed, int64_t d) {
  const auto [upper, lower] = upper_triangle_positions(d);
  at::Tensor full = at::zeros({d * d}, packed.options());
  full.index_copy_(0, upper, packed);
  full.index_copy_(0, lower, packed);
  return full.view({d, d});
}

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

namespace {

constexpr int64_t kMaxUnit = 1024;  // a larger kernel or map is sliced as plain values

// Whether k coefficients for each of `slices` slices plus the packed d x d covariance (sent once
// per `refresh` steps) are fewer values than the `numel` values they stand for.
bool compression_pays(int64_t slices, int64_t d, int64_t k, int64_t numel, int64_t refresh) {
  return k * slices + gradiveq_packed_numel(d) / refresh < numel;
}

// The largest divisor of `count` not above `limit` (at least 1).
int64_t largest_divisor(int64_t count, int64_t limit) {
  for (int64_t j = std::min(count, limit); j > 1; --j) {
    if (count % j == 0) return j;
  }
  return 1;
}

}  // namespace

std::vector<int64_t> gradiveq_shaped_slices(const std::vector<std::vector<int64_t>>& shapes,
                                            int64_t d, int64_t k) {
  std::vector<int64_t> out;
  int64_t conv_channels = 0;  // of the last multi-dimensional tensor, when it was a conv
  for (const auto& shape : shapes) {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    if (shape.size() <= 1 || numel == 0) {
      out.push_back(0);
      continue;
    }
    const int64_t length = numel / shape[0];  // a row
    int64_t unit = 1, count = length;
    if (shape.size() >= 3) {
      unit = length / shape[1];
      count = shape[1];
    } else if (conv_channels > 0 && length % conv_channels == 0 && length > conv_channels) {
      unit = length / conv_channels;
      count = conv_channels;
    }
    if (unit > kMaxUnit) {
      unit = 1;
      count = length;
    }
    int64_t slice = unit * largest_divisor(count, std::max<int64_t>(1, d / unit));
    if (unit == 1 && 2 * slice < d) slice = d;  // no divisor near d: slices run across rows
    out.push_back(slice > k ? slice : 0);
    conv_channels = shape.size() >= 3 ? shape[0] : 0;
  }
  return out;
}

std::vector<int64_t> gradiveq_matrix_slices(const std::vector<std::vector<int64_t>>& shapes,
                                            int64_t d, int64_t k) {
  std::vector<int64_t> out;
  for (const auto& shape : shapes) {
    int64_t numel = 1;
    for (int64_t v : shape) numel *= v;
    int64_t s = 0;
    if (shape.size() >= 2 && numel > 0) {
      const int64_t rows = shape[0], cols = numel / shape[0];
      s = std::min(rows, cols);
      const bool worth = k < s && compression_pays(numel / s, s, k, numel, 1);
      if (s > d || !worth) s = 0;
    }
    out.push_back(s);
  }
  return out;
}

// One step's reduction. Per bucket one all-reduce of its payload: per slice group (tensors of
// one slice size, or the dense ones) the group's values: raw (dense, or a group without a basis
// yet, or before start_iter) or its m x k coefficients; then the d x d covariances of the groups
// that carry one. finalize() waits for every bucket and turns carried covariances into the next
// bases (written into the compressor's state tensors). Idempotent; called by finish() or by the
// next start(), whichever comes first.
struct GradiVeqCompressor::Round {
  struct Part {  // a range of the step's flat vector: one tensor, or (flat) a bucket
    int64_t offset = 0;
    int64_t numel = 0;
  };
  struct Group {
    int64_t d = 0;           // slice size; 0: always sent raw
    int64_t columns_of = 0;  // slicing matrix, by columns: its one part is columns_of x (numel /
                             // columns_of) and its slices are the columns
    bool own = false;        // slicing matrix: one tensor's group (never shared)
    std::string key;         // its basis' state name
    std::vector<Part> parts;
    bool compressed = false;
    at::Tensor basis;        // the basis this step encoded with (a private copy)
    int64_t at = 0;          // its values' offset in the payload
    int64_t cov_at = -1;     // its covariance's offset in the payload, when it carries one
    at::Tensor basis_state;  // defined when the group carries a covariance
  };
  struct Bucket {
    std::vector<Group> groups;
    at::Tensor payload;  // reduced in place
    WorkPtr work;
  };
  Communicator* comm = nullptr;
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
      for (auto& g : b.groups) {
        if (!g.basis_state.defined()) continue;
        at::Tensor cov = gradiveq_unpack_covariance(
            b.payload.narrow(0, g.cov_at, gradiveq_packed_numel(g.d)), g.d);
        g.basis_state.copy_(gradiveq_basis(cov, k));
        ++*refreshes;
      }
    }
    return status;
  }
};

namespace {

using Group = GradiVeqCompressor::Round::Group;

int64_t rows_of(const Group& g, const GradiVeqCompressor::Round::Part& p) {
  return (p.numel + g.d - 1) / g.d;
}

// The group's slices (each part zero-padded to whole slices, or a matrix's columns): m x d.
at::Tensor group_slices(const Group& g, const at::Tensor& x) {
  std::vector<at::Tensor> s;
  for (const auto& p : g.parts) {
    at::Tensor part = x.narrow(0, p.offset, p.numel);
    s.push_back(g.columns_of > 0 ? part.view({g.columns_of, -1}).t().contiguous()
                                 : gradiveq_slices(part, g.d));
  }
  return s.size() == 1 ? s[0] : at::cat(s);
}

int64_t raw_numel(const Group& g) {
  int64_t n = 0;
  for (const auto& p : g.parts) n += p.numel;
  return n;
}

// Writes what the group's payload `values` stand for into `flat` at the parts' offsets.
void decode_group(const Group& g, const at::Tensor& values, int64_t k, at::Tensor& flat) {
  int64_t at_value = 0, row = 0;
  for (const auto& p : g.parts) {
    at::Tensor part;
    if (g.compressed) {
      const int64_t rows = rows_of(g, p);
      part = gradiveq_decode(values.narrow(0, row * k, rows * k).view({rows, k}), g.basis, p.numel);
      if (g.columns_of > 0) part = part.view({rows, g.columns_of}).t().reshape({-1});
      row += rows;
    } else {
      part = values.narrow(0, at_value, p.numel);
      at_value += p.numel;
    }
    flat.narrow(0, p.offset, p.numel).copy_(part);
  }
}

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
        for (const auto& g : b.groups)
          decode_group(g, b.payload.narrow(0, g.at, b.payload.numel() - g.at), round_->k, flat);
      }
      flat.div_(static_cast<double>(world_));
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

void GradiVeqCompressor::plan_layout(const std::vector<at::Tensor>& grads,
                                     const std::vector<size_t>& idx, Round* round) const {
  const int64_t d = options_.slice_size;
  if (options_.flat) {
    int64_t total = 0;
    for (size_t i : idx) total += grads[i].numel();
    const int64_t bucket = std::max(d, options_.bucket_numel / d * d);
    for (int64_t off = 0, b = 0; off < total; off += bucket, ++b) {
      Group g;
      g.d = d;
      g.key = "gradiveq/basis/" + std::to_string(b);
      g.parts.push_back({off, std::min(bucket, total - off)});
      round->buckets.emplace_back().groups.push_back(std::move(g));
    }
    return;
  }
  std::vector<std::vector<int64_t>> shapes;
  for (size_t i : idx) shapes.push_back(grads[i].sizes().vec());
  const std::vector<int64_t> sizes = gradiveq_shaped_slices(shapes, d, options_.basis_size);
  const std::vector<int64_t> sides = options_.matrix
                                         ? gradiveq_matrix_slices(shapes, d, options_.basis_size)
                                         : std::vector<int64_t>(shapes.size(), 0);
  int64_t off = 0, in_bucket = 0;
  for (size_t j = 0; j < idx.size(); ++j) {
    const int64_t n = grads[idx[j]].numel();
    if (round->buckets.empty() || (in_bucket > 0 && in_bucket + n > options_.bucket_numel)) {
      round->buckets.emplace_back();
      in_bucket = 0;
    }
    auto& groups = round->buckets.back().groups;
    if (sides[j] > 0) {  // its own group, sliced along the matrix' shorter side
      Group g;
      g.d = sides[j];
      g.own = true;
      if (shapes[j][0] == sides[j]) g.columns_of = sides[j];
      g.key = "gradiveq/basis/" + std::to_string(round->buckets.size() - 1) + "/matrix/" +
              std::to_string(idx[j]);
      g.parts.push_back({off, n});
      groups.push_back(std::move(g));
      off += n;
      in_bucket += n;
      continue;
    }
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const Group& g) { return !g.own && g.d == sizes[j]; });
    if (it == groups.end()) {
      Group g;
      g.d = sizes[j];
      g.key =
          "gradiveq/basis/" + std::to_string(round->buckets.size() - 1) + "/" + std::to_string(g.d);
      groups.push_back(std::move(g));
      it = groups.end() - 1;
    }
    it->parts.push_back({off, n});
    off += n;
    in_bucket += n;
  }
  // A shared group whose coefficients plus covariance (per refresh) would not be fewer values
  // than the group's own goes dense (say a 10 x 512 matrix in slices of 512).
  const int64_t k = options_.basis_size;
  const int64_t refresh = std::max<int64_t>(1, options_.refresh_every);
  for (auto& bk : round->buckets) {
    for (auto& g : bk.groups) {
      if (g.d == 0 || g.own) continue;
      int64_t slices = 0;
      for (const auto& p : g.parts) slices += rows_of(g, p);
      if (!compression_pays(slices, g.d, k, raw_numel(g), refresh)) g.d = 0;
    }
  }
}

Status GradiVeqCompressor::fresh_bases(const Round& round,
                                       const std::vector<std::vector<at::Tensor>>& slices) {
  std::vector<at::Tensor> covs;
  for (size_t b = 0; b < round.buckets.size(); ++b) {
    for (size_t j = 0; j < round.buckets[b].groups.size(); ++j) {
      if (slices[b][j].defined())
        covs.push_back(gradiveq_pack_covariance(gradiveq_covariance(slices[b][j])));
    }
  }
  if (covs.empty()) return Status::ok();
  std::vector<at::Tensor> sum{at::cat(covs)};
  TERN_RETURN_IF_ERROR(
      all_reduce_sync(comm_, sum).with_context("GradiVeQ: this step's slice covariances"));
  int64_t at = 0;
  for (const auto& bk : round.buckets) {
    for (const auto& g : bk.groups) {
      if (g.d == 0) continue;
      at::Tensor cov =
          gradiveq_unpack_covariance(sum[0].narrow(0, at, gradiveq_packed_numel(g.d)), g.d);
      at += gradiveq_packed_numel(g.d);
      state_tensor(g.key, at::zeros({g.d, options_.basis_size}, at::kFloat))
          .copy_(gradiveq_basis(cov, options_.basis_size));
      TERN_RETURN_IF_ERROR(state_error());
      ++refreshes_;
    }
  }
  return Status::ok();
}

Status GradiVeqCompressor::encode_bucket(Round& round, size_t bucket,
                                         const std::vector<at::Tensor>& slices, const at::Tensor& x,
                                         at::Tensor& residual, int64_t it) {
  Round::Bucket& bk = round.buckets[bucket];
  const int64_t k = options_.basis_size;
  // Steps from now to the first compressed step (negative once compressing): the step before a
  // refresh carries the covariance.
  const int64_t next = it + 1 - options_.start_iter;
  std::vector<at::Tensor> values, covs;
  int64_t at_value = 0;
  for (size_t j = 0; j < bk.groups.size(); ++j) {
    auto& g = bk.groups[j];
    g.at = at_value;
    at::Tensor basis;  // the state tensor (shares its storage)
    bool has_basis = false;
    if (g.d > 0) {
      basis = state_tensor(g.key, at::zeros({g.d, k}, at::kFloat));
      TERN_RETURN_IF_ERROR(state_error());
      has_basis = basis.abs().max().item<float>() > 0;
      g.compressed = it >= options_.start_iter && has_basis;
    }
    if (g.compressed) {
      g.basis = basis.clone();
      at::Tensor coeffs = gradiveq_encode(slices[j], g.basis);
      if (residual.defined()) {
        decode_group(g, coeffs.reshape({-1}), k, residual);  // what is sent, then x - that
        for (const auto& p : g.parts) {
          at::Tensor r = residual.narrow(0, p.offset, p.numel);
          r.copy_(x.narrow(0, p.offset, p.numel) - r);
        }
      }
      values.push_back(coeffs.reshape({-1}));
      at_value += coeffs.numel();
    } else {  // raw: everything sent, the memory of these tensors becomes zero
      for (const auto& p : g.parts) values.push_back(x.narrow(0, p.offset, p.numel));
      at_value += raw_numel(g);
    }
    if (g.d > 0 && options_.refresh_every > 0 && next >= 0 &&
        (next % options_.refresh_every == 0 || !has_basis)) {
      covs.push_back(gradiveq_pack_covariance(gradiveq_covariance(slices[j])));
      g.basis_state = basis;
      round.carries = true;
    }
  }
  for (auto& g : bk.groups) {
    if (!g.basis_state.defined()) continue;
    g.cov_at = at_value;
    at_value += gradiveq_packed_numel(g.d);
  }
  values.insert(values.end(), covs.begin(), covs.end());
  bk.payload = at::cat(values);  // a copy: the all-reduce works in place
  std::vector<at::Tensor> v{bk.payload};
  bk.work = comm_.all_reduce(v, ReduceOp::kSum);
  return Status::ok();
}

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
  round->k = options_.basis_size;
  round->refreshes = &refreshes_;
  const int64_t total = f.x.defined() ? f.x.numel() : 0;
  if (total == 0) {
    return std::make_unique<GradiVeqPending>(round, f.idx, 0, comm_.size(), &stats_.compress_s);
  }
  plan_layout(grads, f.idx, round.get());
  std::vector<std::vector<at::Tensor>> slices;  // per bucket and group (empty: dense group)
  for (const auto& bk : round->buckets) {
    auto& s = slices.emplace_back();
    for (const auto& g : bk.groups) s.push_back(g.d > 0 ? group_slices(g, f.x) : at::Tensor());
  }
  if (options_.refresh_every == 0 && it >= options_.start_iter) {
    Status s = fresh_bases(*round, slices);
    if (!s.is_ok()) return failed_reduction(s);
  }
  at::Tensor residual = f.memories.empty() ? at::Tensor() : at::zeros_like(f.x);
  for (size_t b = 0; b < round->buckets.size(); ++b) {
    Status s = encode_bucket(*round, b, slices[b], f.x, residual, it);
    if (!s.is_ok()) return failed_reduction(s);
  }
  if (residual.defined()) store_residual(f, residual);
  if (round->carries) last_ = round;
  return std::make_unique<GradiVeqPending>(round, f.idx, total, comm_.size(), &stats_.compress_s);
}

}  // namespace tern
