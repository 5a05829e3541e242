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

struct RpcServerOptions {
  // Null: plain text, allowed only when `listen` is a loopback address.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  bool tls = false;                     // credentials are TLS ones (for the log line)
  int64_t max_message_bytes = 4 << 20;  // larger messages are refused with RESOURCE_EXHAUSTED
};

class RpcServer {
 public:
  // Starts serving on `listen` (HOST:PORT; port 0 picks a free port, see port()).
  static Result<std::unique_ptr<RpcServer>> start(const std::string& listen,
                                                  const std::vector<grpc::Service*>& services,
                                                  const RpcServerOptions& options = {});
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
