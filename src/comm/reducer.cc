#include "comm/reducer.h"

#include "comm/counting_communicator.h"

namespace tern {
namespace {

struct Bucket {
  std::vector<size_t> indices;  // into the gradient list
  at::Tensor flat;
  WorkPtr work;
};

// Groups tensor indices (last first) into buckets of at most `bucket_bytes` (a single larger
// tensor gets a bucket of its own). Tensors in one bucket share dtype and device.
std::vector<std::vector<size_t>> plan_buckets(const std::vector<at::Tensor>& ts,
                                              int64_t bucket_bytes) {
  std::vector<std::vector<size_t>> plan;
  int64_t current = 0;
  for (size_t k = ts.size(); k-- > 0;) {
    int64_t b = tensor_bytes(ts[k]);
    bool fits = !plan.empty() && current + b <= bucket_bytes &&
                ts[plan.back().front()].scalar_type() == ts[k].scalar_type() &&
                ts[plan.back().front()].device() == ts[k].device();
    if (!fits) {
      plan.emplace_back();
      current = 0;
    }
    plan.back().push_back(k);
    current += b;
  }
  return plan;
}

at::Tensor flatten(const std::vector<at::Tensor>& ts, const std::vector<size_t>& idx) {
  std::vector<at::Tensor> parts;
  parts.reserve(idx.size());
  for (size_t i : idx) parts.push_back(ts[i].reshape({-1}));
  return parts.size() == 1 ? parts[0].clone() : at::cat(parts);
}

class DensePending : public PendingReduction {
 public:
  DensePending(Communicator& comm, std::vector<Bucket> buckets)
      : comm_(comm), buckets_(std::move(buckets)) {}
  Status finish(std::vector<at::Tensor>& out) override {
    double n = comm_.size();
    for (auto& b : buckets_) {
      TERN_RETURN_IF_ERROR(b.work->wait(comm_.timeout()));
      if (n > 1) b.flat.div_(n);
      unflatten_parts(b.flat, out, b.indices);
    }
    return Status::ok();
  }
  bool ready() override {
    for (auto& b : buckets_) {
      if (!b.work->is_completed()) return false;
    }
    return true;
  }

 private:
  Communicator& comm_;
  std::vector<Bucket> buckets_;
};

}  // namespace

void unflatten_parts(const at::Tensor& flat, std::vector<at::Tensor>& out,
                     const std::vector<size_t>& idx) {
  int64_t off = 0;
  for (size_t i : idx) {
    int64_t n = out[i].numel();
    out[i].copy_(flat.narrow(0, off, n).view_as(out[i]));
    off += n;
  }
}

DenseReducer::DenseReducer(Communicator& comm, int64_t bucket_bytes)
    : comm_(comm), bucket_bytes_(bucket_bytes) {}

std::unique_ptr<PendingReduction> DenseReducer::start(const std::vector<at::Tensor>& grads,
                                                      int64_t) {
  std::vector<Bucket> buckets;
  for (auto& idx : plan_buckets(grads, bucket_bytes_)) {
    Bucket b;
    b.indices = idx;
    b.flat = flatten(grads, idx);
    std::vector<at::Tensor> t{b.flat};
    b.work = comm_.all_reduce(t, ReduceOp::kSum);
    buckets.push_back(std::move(b));
  }
  stats_.dense_bytes += tensors_bytes(grads);
  ++stats_.reductions;
  return std::make_unique<DensePending>(comm_, std::move(buckets));
}

Status average_tensors(Communicator& comm, std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  if (comm.size() == 1) return Status::ok();
  DenseReducer reducer(comm, bucket_bytes);
  std::vector<at::Tensor> snapshot;
  for (auto& t : tensors) snapshot.push_back(t.detach());
  auto pending = reducer.start(snapshot, 0);
  return pending->finish(snapshot);
}

}  // namespace tern

namespace tern {

at::Tensor flatten_all(const std::vector<at::Tensor>& tensors) {
  std::vector<size_t> all(tensors.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  return flatten(tensors, all);
}

void unflatten_all(const at::Tensor& flat, std::vector<at::Tensor>& out) {
  std::vector<size_t> all(out.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  unflatten_parts(flat, out, all);
}

Status broadcast_tensors(Communicator& comm, std::vector<at::Tensor>& tensors, int root) {
  if (comm.size() == 1 || tensors.empty()) return Status::ok();
  std::vector<size_t> all(tensors.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::vector<at::Tensor> flat{flatten(tensors, all)};
  TERN_RETURN_IF_ERROR(broadcast_sync(comm, flat, root));
  unflatten_parts(flat[0], tensors, all);
  return Status::ok();
}

}  // namespace tern
