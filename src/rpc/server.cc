#include "rpc/server.h"

namespace tern {

Result<std::unique_ptr<RpcServer>> RpcServer::start(const std::string& listen,
                                                    const std::vector<grpc::Service*>& services) {
  if (listen.find(':') == std::string::npos)
    return invalid_argument("listen address must be HOST:PORT, got '" + listen + "'");
  std::unique_ptr<RpcServer> s(new RpcServer());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &s->port_);
  for (auto* service : services) builder.RegisterService(service);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return unavailable("cannot listen on " + listen + " (address in use or not local?)");
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
