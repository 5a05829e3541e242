#include "coordinator/coordinator_server.h"

#include <spdlog/spdlog.h>

namespace tern {

Result<std::unique_ptr<CoordinatorServer>> CoordinatorServer::start(
    const CoordinatorServerOptions& options, Clock* clock) {
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer());
  s->options_ = options;
  TERN_ASSIGN_OR_RETURN(s->core_, CoordinatorCore::open(options.core, clock));
  s->coordinator_service_ = std::make_unique<CoordinatorService>(s->core_.get(), clock);
  s->worker_service_ = std::make_unique<WorkerServiceImpl>(s->core_.get());
  TERN_ASSIGN_OR_RETURN(s->server_, RpcServer::start(options.listen, {s->coordinator_service_.get(),
                                                                      s->worker_service_.get()}));
  CoordinatorServer* self = s.get();
  s->ticker_ = std::thread([self] {
    while (!self->stop_.load()) {
      self->core_->tick();
      std::this_thread::sleep_for(self->options_.tick);
    }
  });
  spdlog::info("coordinator listening on {}", s->address());
  return s;
}

std::string CoordinatorServer::address() const {
  auto colon = options_.listen.rfind(':');
  return options_.listen.substr(0, colon) + ":" + std::to_string(server_->port());
}

void CoordinatorServer::shutdown() {
  if (stop_.exchange(true)) return;
  if (coordinator_service_) coordinator_service_->stop_watches();
  if (server_) server_->shutdown(std::chrono::milliseconds(1000));
  if (ticker_.joinable()) ticker_.join();
}

CoordinatorServer::~CoordinatorServer() { shutdown(); }

}  // namespace tern
