#include <algorithm>
#include <cmath>
#include <limits>

#include "comm/counting_communicator.h"
#include "compress/codec.h"
#include "compress/compressor.h"

namespace tern {

TopkCompressor::TopkCompressor(Communicator& comm, TopkOptions options)
    : Compressor(comm, "topk"), options_(options) {}

int64_t TopkCompressor::k_for(int64_t numel) const {
  if (numel <= 0) return 0;
  double k = std::ceil(options_.density * static_cast<double>(numel));
  return std::clamp<int64_t>(static_cast<int64_t>(std::min(k, static_cast<double>(numel))), 1,
                             numel);
}

std::unique_ptr<PendingReduction> TopkCompressor::start(const std::vector<at::Tensor>& grads,
                                                        int64_t) {
  ScopedTimer timer(&stats_.compress_s);
  at::NoGradGuard no_grad;
  const int world = comm_.size();
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;

  FlatStep f = flatten_with_memory(grads, options_.error_feedback, options_.ef_decay);
  if (!state_error().is_ok()) return failed_reduction(state_error());
  if (options_.chunk_size > 0) return start_chunked(std::move(f));
  if (options_.value_bits != 32 && options_.value_bits != 16) {
    return failed_reduction(
        invalid_argument("compress.value_bits " + std::to_string(options_.value_bits) +
                         ": 8 and 4 bits need compress.chunk_size (one scale per chunk)"));
  }
  const at::ScalarType vt = options_.value_bits == 16 ? at::kHalf : at::kFloat;
  const int64_t numel = f.x.defined() ? f.x.numel() : 0;
  if (numel > std::numeric_limits<int32_t>::max()) {
    // Every rank has the same shapes, so every rank refuses before any collective.
    return failed_reduction(invalid_argument(
        "compress.method topk: the model has " + std::to_string(numel) +
        " values, more than its int32 indices address (2^31 - 1); use int4 or dgc"));
  }
  const int64_t k = k_for(numel);
  std::vector<WorkPtr> works;
  std::vector<at::Tensor> gathered;
  if (k > 0) {
    TopKSelection sel = exact_top_k(f.x, k);
    at::Tensor sent;
    at::Tensor wire_values = to_wire_values(sel.values, vt, &sent);
    // e = x − sent: zero where sent in fp32, the rounding where sent in fp16, x elsewhere.
    if (!f.memories.empty()) store_residual(f, f.x.index_add(0, sel.indices, sent.neg()));
    at::Tensor payload = encode_flat_sparse(sel.indices, wire_values);
    for (int r = 0; r < world; ++r) gathered.push_back(at::empty_like(payload));
    works.push_back(comm_.all_gather(gathered, payload));
  }
  auto decode = [world, k, vt, numel, idx = f.idx,
                 gathered](std::vector<at::Tensor>& out) -> Status {
    at::NoGradGuard no_grad;
    if (gathered.empty()) return Status::ok();
    at::Tensor acc = at::zeros({numel}, gathered[0].options().dtype(at::kFloat));
    for (const at::Tensor& payload : gathered) decode_flat_sparse_add(payload, k, vt, acc);
    acc.div_(static_cast<double>(world));
    unflatten_parts(acc, out, idx);
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

std::unique_ptr<PendingReduction> TopkCompressor::start_chunked(FlatStep f) {
  const int world = comm_.size();
  const int bits = options_.value_bits;
  if (!f.x.defined()) {
    return make_pending(
        comm_, {}, [](std::vector<at::Tensor>&) { return Status::ok(); }, &stats_.compress_s);
  }
  if (layout_.numels != f.numels || layout_.block_size != options_.chunk_size ||
      layout_.device != f.x.device()) {
    layout_ = make_block_layout(f.numels, options_.chunk_size, f.x.device());
  }
  const int64_t k = chunked_topk_k(options_.chunk_size, options_.density);
  ChunkedTopkEncoded enc = encode_chunked_topk(f.x, layout_, k, bits);
  if (!f.memories.empty()) store_residual(f, f.x - enc.sent);
  std::vector<at::Tensor> gathered;
  for (int r = 0; r < world; ++r) gathered.push_back(at::empty_like(enc.payload));
  std::vector<WorkPtr> works;
  works.push_back(comm_.all_gather(gathered, enc.payload));
  auto decode = [world, k, bits, layout = layout_, idx = f.idx,
                 gathered](std::vector<at::Tensor>& out) -> Status {
    at::NoGradGuard no_grad;
    at::Tensor padded =
        at::zeros({layout.blocks * layout.block_size}, gathered[0].options().dtype(at::kFloat));
    for (const at::Tensor& payload : gathered)
      decode_chunked_topk_add(payload, layout, k, bits, padded);
    at::Tensor acc =
        layout.padded ? padded.index_select(0, layout.padded_pos.to(padded.device())) : padded;
    acc.div_(static_cast<double>(world));
    unflatten_parts(acc, out, idx);
    return Status::ok();
  };
  return make_pending(comm_, std::move(works), std::move(decode), &stats_.compress_s);
}

}  // namespace tern
