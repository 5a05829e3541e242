#include "coordinator/coordinator_server.h"

#include <spdlog/spdlog.h>

#include "coordinator/metrics.h"

namespace tern {

Result<std::unique_ptr<CoordinatorServer>> CoordinatorServer::start(
    const CoordinatorServerOptions& options, Clock* clock) {
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer());
  s->options_ = options;
  TERN_ASSIGN_OR_RETURN(s->core_, CoordinatorCore::open(options.core, clock));
  s->guard_ = std::make_unique<CallGuard>(options.guard, options.security.auth, &s->rpc_metrics_);
  s->coordinator_service_ =
      std::make_unique<CoordinatorService>(s->core_.get(), clock, s->guard_.get());
  s->worker_service_ = std::make_unique<WorkerServiceImpl>(s->core_.get(), s->guard_.get());
  RpcServerOptions ro;
  ro.credentials = server_credentials(options.security);
  ro.tls = options.security.tls;
  ro.max_message_bytes = options.max_message_bytes;
  TERN_ASSIGN_OR_RETURN(s->server_,
                        RpcServer::start(options.listen,
                                         {s->coordinator_service_.get(), s->worker_service_.get()},
                                         ro));
  if (!options.security.auth || !options.security.auth->enabled()) {
    spdlog::warn("no auth.tokens configured: any client that can reach {} may submit and cancel "
                 "jobs",
                 options.listen);
  }
  if (options.metrics_port > 0) {
    CoordinatorServer* self = s.get();
    std::map<std::string, HttpServer::Handler> handlers;
    handlers["/metrics"] = [self] {
      return HttpReply{200, "text/plain; version=0.0.4; charset=utf-8",
                       render_coordinator_metrics(*self->core_, &self->rpc_metrics_)};
    };
    handlers["/healthz"] = [self] {
      return self->stop_.load() ? HttpReply{503, "text/plain", "stopping\n"}
                                : HttpReply{200, "text/plain", "ok\n"};
    };
    HttpServerOptions http = options.http;
    http.host = options.metrics_host.empty() ? "127.0.0.1" : options.metrics_host;
    http.port = options.metrics_port;
    if (!options.metrics_token.empty()) http.tokens["/metrics"] = options.metrics_token;
    TERN_ASSIGN_OR_RETURN(s->http_, HttpServer::start(http, std::move(handlers)));
    spdlog::info("metrics on http://{}:{}/metrics{} (and /healthz)", http.host,
                 options.metrics_port, options.metrics_token.empty() ? "" : " (bearer token)");
  }
  CoordinatorServer* self = s.get();
  s->ticker_ = std::thread([self] {
    while (!self->stop_.load()) {
      self->core_->tick();
      std::this_thread::sleep_for(self->options_.tick);
    }
  });
  spdlog::info("coordinator listening on {} ({})", s->address(),
               options.security.tls ? "mTLS" : "plain text, loopback only");
  return s;
}

std::string CoordinatorServer::address() const {
  auto colon = options_.listen.rfind(':');
  return options_.listen.substr(0, colon) + ":" + std::to_string(server_->port());
}

void CoordinatorServer::shutdown() {
  if (stop_.exchange(true)) return;
  if (coordinator_service_) coordinator_service_->stop_watches();
  if (core_) core_->wake_all();  // long polls (AwaitWork) end now, not at their timeout
  http_.reset();
  if (server_) server_->shutdown(std::chrono::milliseconds(1000));
  if (ticker_.joinable()) ticker_.join();
}

CoordinatorServer::~CoordinatorServer() { shutdown(); }

}  // namespace tern
