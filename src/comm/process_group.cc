#include "comm/process_group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#ifdef TERN_HAVE_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <spdlog/spdlog.h>

#include "comm/c10d_communicator.h"
#include "comm/rendezvous_store.h"

namespace tern {

Result<c10::intrusive_ptr<c10d::Store>> connect_store(const RendezvousOptions& options) {
  // Rank 0 hosts the server, bound to master_host only (c10d's TCPStore in LibTorch 1.13 would
  // listen on every interface). Other ranks retry the connection until the timeout, since they
  // may start before rank 0 listens.
  RendezvousStoreOptions o;
  o.host = options.master_host;
  o.port = options.master_port;
  o.is_server = options.rank == 0;
  o.timeout = options.timeout;
  auto store = TcpRendezvousStore::create(o);
  if (!store.is_ok()) {
    return unavailable("rendezvous at " + options.master_host + ":" +
                       std::to_string(options.master_port) +
                       " failed: " + store.status().message());
  }
  return c10::intrusive_ptr<c10d::Store>(*store);
}

c10::intrusive_ptr<c10d::Store> generation_store(c10::intrusive_ptr<c10d::Store> root,
                                                 int64_t generation) {
  return c10::make_intrusive<c10d::PrefixStore>("gen" + std::to_string(generation), root);
}

Result<std::shared_ptr<Communicator>> make_communicator(c10::intrusive_ptr<c10d::Store> store,
                                                        int rank, int world,
                                                        const CommunicatorOptions& options) {
  try {
    if (options.backend == "gloo") {
      auto opts = c10d::ProcessGroupGloo::Options::create(options.timeout);
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.bind_host));
      auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
      return std::shared_ptr<Communicator>(
          std::make_shared<C10dCommunicator>(pg, "gloo", options.timeout));
    }
    if (options.backend == "nccl") {
#ifdef TERN_HAVE_CUDA
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = options.timeout;
      auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
      return std::shared_ptr<Communicator>(
          std::make_shared<C10dCommunicator>(pg, "nccl", options.timeout));
#else
      return failed_precondition("backend 'nccl' needs a CUDA build of tern (TERN_CUDA=ON)");
#endif
    }
    return invalid_argument("unknown backend '" + options.backend + "'");
  } catch (const std::exception& e) {
    std::string what = e.what();
    return unavailable("creating the " + options.backend + " process group (rank " +
                       std::to_string(rank) + " of " + std::to_string(world) +
                       ") failed: " + what.substr(0, what.find('\n')));
  }
}

bool nccl_available() {
#ifdef TERN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace tern
