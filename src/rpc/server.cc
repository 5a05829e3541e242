#include "rpc/server.h"

#include <spdlog/spdlog.h>

#include "common/cluster_config.h"

namespace tern {

Result<std::unique_ptr<RpcServer>> RpcServer::start(const std::string& listen,
                                                    const std::vector<grpc::Service*>& services,
                                                    const RpcServerOptions& options) {
  if (listen.find(':') == std::string::npos)
    return invalid_argument("listen address must be HOST:PORT, got '" + listen + "'");
  if (!options.tls && !is_loopback_host(listen)) {
    return failed_precondition("refusing to serve plain-text gRPC on " + listen +
                               ", which is not a loopback address: enable tls in the cluster "
                               "file (scripts/make-certs.sh creates the certificates)");
  }
  std::unique_ptr<RpcServer> s(new RpcServer());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      listen, options.credentials ? options.credentials : grpc::InsecureServerCredentials(),
      &s->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  for (auto* service : services) builder.RegisterService(service);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return unavailable("cannot listen on " + listen + " (address in use or not local?)");
  }
  if (!options.tls) {
    spdlog::warn(
        "serving plain-text gRPC (no TLS) on {}: loopback only; enable tls in the "
        "cluster file for a cluster that spans machines",
        listen);
  }
  return s;
}

RpcServer::~RpcServer() { shutdown(std::chrono::milliseconds(0)); }

void RpcServer::shutdown(std::chrono::milliseconds grace) {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + grace);
}

void RpcServer::wait() {
  if (server_) server_->Wait();
}

}  // namespace tern
