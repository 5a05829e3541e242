// RpcServer: owns a grpc::Server built from a listen address and a set of services. The
// services are owned by the caller and must outlive the server. Thread-safe: shutdown() may
// be called from any thread (e.g. a signal-watching one) while another blocks in wait().
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

class RpcServer {
 public:
  // Starts serving on `listen` (HOST:PORT; port 0 picks a free port, see port()).
  static Result<std::unique_ptr<RpcServer>> start(const std::string& listen,
                                                  const std::vector<grpc::Service*>& services);
  ~RpcServer();

  int port() const { return port_; }
  // Stops accepting calls; in-flight calls get `grace` to finish, then are cancelled.
  void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));
  void wait();

 private:
  RpcServer() = default;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace tern
