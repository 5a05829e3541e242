#include "comm/counting_communicator.h"
#include "compress/codec.h"
#include "compress/compressor.h"

namespace tern {
namespace {

std::vector<size_t> all_indices(size_t n) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  return idx;
}

}  // namespace

Fp16Compressor::Fp16Compressor(Communicator& comm, bool error_feedback)
    : Compressor(comm, "fp16"), error_feedback_(error_feedback) {}

std::unique_ptr<PendingReduction> Fp16Compressor::start(const std::vector<at::Tensor>& grads,
                                                        int64_t) {
  ScopedTimer timer(&stats_.compress_s);
  at::NoGradGuard no_grad;
  const int world = comm_.size();
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;
  std::vector<size_t> idx = all_indices(grads.size());
  std::vector<WorkPtr> works;
  std::vector<at::Tensor> wire;
  if (!grads.empty()) {
    at::Tensor x = flatten_parts(grads, idx);
    if (x.numel() > 0) {
      if (error_feedback_) {
        at::Tensor& e = state_tensor("fp16/e", x);
        if (!state_error().is_ok()) return failed_reduction(state_error());
        x.add_(e);
        wire.push_back(encode_fp16(x, world));
        e.copy_(x - decode_fp16(wire[0], world));
      } else {
        wire.push_back(encode_fp16(x, world));
      }
      works.push_back(comm_.all_reduce(wire, ReduceOp::kSum));
    }
  }
  auto decode = [wire, idx](std::vector<at::Tensor>& out) -> Status {
    if (!wire.empty()) unflatten_parts(wire[0].to(at::kFloat), out, idx);  // sum of x/N = average
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

Int8Compressor::Int8Compressor(Communicator& comm, bool error_feedback)
    : Compressor(comm, "int8"), error_feedback_(error_feedback) {}

std::unique_ptr<PendingReduction> Int8Compressor::start(const std::vector<at::Tensor>& grads,
                                                        int64_t) {
  ScopedTimer timer(&stats_.compress_s);
  at::NoGradGuard no_grad;
  const int world = comm_.size();
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;

  std::vector<size_t> idx;  // tensors with at least one element (nothing to send for the rest)
  std::vector<at::Tensor> qs;
  std::vector<float> scales;
  std::vector<int64_t> numels;
  for (size_t i = 0; i < grads.size(); ++i) {
    at::Tensor x = grads[i].detach().reshape({-1}).to(at::kFloat);
    if (x.numel() == 0) continue;
    at::Tensor e;
    if (error_feedback_) {
      e = state_tensor("int8/e/" + std::to_string(i), x);
      x = x + e;
    }
    Int8Encoded enc = encode_int8(x);
    if (error_feedback_) e.copy_(x - decode_int8(enc.q, enc.scale));
    idx.push_back(i);
    qs.push_back(enc.q);
    scales.push_back(enc.scale);
    numels.push_back(x.numel());
  }
  if (!state_error().is_ok()) return failed_reduction(state_error());

  std::vector<WorkPtr> works;
  std::vector<at::Tensor> scale_out, q_out;
  if (!idx.empty()) {
    at::Tensor device_like = grads[idx[0]];
    at::Tensor scale_in = at::tensor(scales, at::kFloat).to(device_like.device());
    at::Tensor q_in = at::cat(qs);
    for (int r = 0; r < world; ++r) {
      scale_out.push_back(at::empty_like(scale_in));
      q_out.push_back(at::empty_like(q_in));
    }
    works.push_back(comm_.all_gather(scale_out, scale_in));
    works.push_back(comm_.all_gather(q_out, q_in));
  }
  auto decode = [world, idx, numels, scale_out, q_out](std::vector<at::Tensor>& out) -> Status {
    at::NoGradGuard no_grad;
    if (idx.empty()) return Status::ok();
    at::Tensor repeats = at::tensor(numels, at::kLong).to(q_out[0].device());
    at::Tensor acc;
    for (int r = 0; r < world; ++r) {
      at::Tensor per_element_scale =
          at::repeat_interleave(scale_out[static_cast<size_t>(r)], repeats);
      at::Tensor part = q_out[static_cast<size_t>(r)].to(at::kFloat).mul_(per_element_scale);
      acc = acc.defined() ? acc.add_(part) : part;
    }
    acc.div_(static_cast<double>(world));
    unflatten_parts(acc, out, idx);
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

Int4Compressor::Int4Compressor(Communicator& comm, Int4Options options)
    : Compressor(comm, "int4"), options_(options) {}

std::unique_ptr<PendingReduction> Int4Compressor::start(const std::vector<at::Tensor>& grads,
                                                        int64_t) {
  ScopedTimer timer(&stats_.compress_s);
  at::NoGradGuard no_grad;
  const int world = comm_.size();
  const int64_t block = options_.block_size;
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;
  if (block < 1) return failed_reduction(invalid_argument("int4: block_size must be >= 1"));

  FlatStep f = flatten_with_memory(grads, options_.error_feedback, options_.ef_decay);
  if (!state_error().is_ok()) return failed_reduction(state_error());
  std::vector<WorkPtr> works;
  std::vector<at::Tensor> gathered;
  if (f.x.defined()) {
    if (layout_.numels != f.numels || layout_.block_size != block ||
        layout_.device != f.x.device()) {
      layout_ = make_block_layout(f.numels, block, f.x.device());
    }
    at::Tensor payload = encode_int4(f.x, layout_);
    if (!f.memories.empty()) store_residual(f, f.x - decode_int4(payload, layout_));
    for (int r = 0; r < world; ++r) gathered.push_back(at::empty_like(payload));
    works.push_back(comm_.all_gather(gathered, payload));
  }
  auto decode = [world, layout = layout_, idx = f.idx,
                 gathered](std::vector<at::Tensor>& out) -> Status {
    at::NoGradGuard no_grad;
    if (gathered.empty()) return Status::ok();
    at::Tensor acc = decode_int4(gathered[0], layout);
    for (size_t r = 1; r < gathered.size(); ++r) acc.add_(decode_int4(gathered[r], layout));
    acc.div_(static_cast<double>(world));
    unflatten_parts(acc, out, idx);
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

}  // namespace tern
