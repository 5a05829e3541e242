#include "comm/communicator.h"

namespace tern {

Status all_reduce_sync(Communicator& comm, std::vector<at::Tensor>& tensors, ReduceOp op) {
  return comm.all_reduce(tensors, op)->wait(comm.timeout());
}

Status broadcast_sync(Communicator& comm, std::vector<at::Tensor>& tensors, int root) {
  return comm.broadcast(tensors, root)->wait(comm.timeout());
}

Status all_gather_sync(Communicator& comm, std::vector<at::Tensor>& outputs, at::Tensor& input) {
  return comm.all_gather(outputs, input)->wait(comm.timeout());
}

Status barrier_sync(Communicator& comm) { return comm.barrier()->wait(comm.timeout()); }

}  // namespace tern
