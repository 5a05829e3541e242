// Building c10d process groups: rendezvous through a TcpRendezvousStore hosted by rank 0 (one
// store per job, a key prefix per generation so a regroup gets a fresh key space), and a
// Communicator over ProcessGroupGloo (CPU) or ProcessGroupNCCL (GPU, when built with CUDA).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "comm/communicator.h"
#include "common/status.h"

namespace tern {

struct RendezvousOptions {
  std::string master_host = "127.0.0.1";
  int master_port = 0;
  int rank = 0;
  int world = 1;
  int64_t generation = 0;
  std::chrono::milliseconds timeout{60000};
};

// Connects to (rank 0: hosts, bound to master_host only) the job's rendezvous store
// (TcpRendezvousStore). Returns the root store; use
// generation_store() for the per-generation view.
Result<c10::intrusive_ptr<c10d::Store>> connect_store(const RendezvousOptions& options);
c10::intrusive_ptr<c10d::Store> generation_store(c10::intrusive_ptr<c10d::Store> root,
                                                 int64_t generation);

struct CommunicatorOptions {
  std::string backend = "gloo";         // gloo | nccl
  std::string bind_host = "127.0.0.1";  // interface Gloo pairs bind to
  std::chrono::milliseconds timeout{60000};
};

// A communicator over the given store (already scoped to a generation).
Result<std::shared_ptr<Communicator>> make_communicator(c10::intrusive_ptr<c10d::Store> store,
                                                        int rank, int world,
                                                        const CommunicatorOptions& options);

// Whether this build can make NCCL communicators.
bool nccl_available();

}  // namespace tern
