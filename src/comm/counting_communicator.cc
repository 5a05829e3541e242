#include "comm/counting_communicator.h"

namespace tern {

int64_t tensor_bytes(const at::Tensor& t) {
  return static_cast<int64_t>(t.numel() * t.element_size());
}

int64_t tensors_bytes(const std::vector<at::Tensor>& ts) {
  int64_t n = 0;
  for (const auto& t : ts) n += tensor_bytes(t);
  return n;
}

WorkPtr CountingCommunicator::all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) {
  int64_t n = size();
  counts_.all_reduce += n > 1 ? 2 * (n - 1) * tensors_bytes(tensors) / n : 0;
  ++counts_.collectives;
  return inner_->all_reduce(tensors, op);
}

WorkPtr CountingCommunicator::all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input) {
  counts_.all_gather += (size() - 1) * tensor_bytes(input);
  ++counts_.collectives;
  return inner_->all_gather(outputs, input);
}

WorkPtr CountingCommunicator::broadcast(std::vector<at::Tensor>& tensors, int root) {
  if (size() > 1) counts_.broadcast += tensors_bytes(tensors);
  ++counts_.collectives;
  return inner_->broadcast(tensors, root);
}

WorkPtr CountingCommunicator::all_to_all(at::Tensor& output, at::Tensor& input,
                                         const std::vector<int64_t>& output_splits,
                                         const std::vector<int64_t>& input_splits) {
  // Everything except the rows addressed to this rank leaves it.
  int64_t rows = input.size(0);
  int64_t self_rows = input_splits.empty() ? rows / size() : input_splits[rank()];
  int64_t row_bytes = rows > 0 ? tensor_bytes(input) / rows : 0;
  counts_.all_to_all += (rows - self_rows) * row_bytes;
  ++counts_.collectives;
  return inner_->all_to_all(output, input, output_splits, input_splits);
}

WorkPtr CountingCommunicator::send(at::Tensor& tensor, int dst, int tag) {
  counts_.point_to_point += tensor_bytes(tensor);
  return inner_->send(tensor, dst, tag);
}

}  // namespace tern
