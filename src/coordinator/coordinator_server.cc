#include "coordinator/coordinator_server.h"

#include <spdlog/spdlog.h>

#include "coordinator/metrics.h"

namespace tern {

Result<std::unique_ptr<CoordinatorServer>> CoordinatorServer::start(
    const CoordinatorServerOptions& options, Clock* clock) {
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer());
  s->options_ = options;
  JobSeriesOptions series;
  if (!options.core.state_dir.empty()) series.dir = options.core.state_dir + "/series";
  TERN_ASSIGN_OR_RETURN(s->series_, JobSeriesStore::open(series));
  CoordinatorOptions core = options.core;
  core.observer = s->series_.get();
  TERN_ASSIGN_OR_RETURN(s->core_, CoordinatorCore::open(core, clock));
  s->guard_ = std::make_unique<CallGuard>(options.guard, options.security.auth, &s->rpc_metrics_);
  s->coordinator_service_ =
      std::make_unique<CoordinatorService>(s->core_.get(), clock, s->guard_.get());
  s->worker_service_ = std::make_unique<WorkerServiceImpl>(s->core_.get(), s->guard_.get());
  RpcServerOptions ro;
  ro.credentials = server_credentials(options.security);
  ro.tls = options.security.tls;
  ro.max_message_bytes = options.max_message_bytes;
  TERN_ASSIGN_OR_RETURN(
      s->server_, RpcServer::start(options.listen,
                                   {s->coordinator_service_.get(), s->worker_service_.get()}, ro));
  if (!options.security.auth || !options.security.auth->enabled()) {
    spdlog::warn(
        "no auth.tokens configured: any client that can reach {} may submit and cancel "
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
    const bool tokens = options.security.auth && options.security.auth->enabled();
    HttpServer::RequestHandler fallback;
    std::string dashboard_note;
    if (tokens || is_loopback_host(http.host)) {
      DashboardOptions d;
      d.cluster_name = options.cluster_name;
      d.web_root = options.web_root.empty() ? Dashboard::default_web_root() : options.web_root;
      d.auth = options.security.auth;
      d.rate_per_s = options.guard.rate_per_s;
      d.rate_burst = options.guard.rate_burst;
      s->dashboard_ = std::make_unique<Dashboard>(d, s->core_.get(), s->series_.get(), clock);
      Dashboard* dashboard = s->dashboard_.get();
      fallback = [dashboard](const HttpRequest& r) { return dashboard->handle(r); };
      dashboard_note =
          dashboard->has_pages() ? ", the dashboard at /jobs" : ", the API at /api/v1/";
      if (tokens) dashboard_note += " (needs a user or admin token)";
    } else {
      spdlog::warn(
          "the dashboard is off: coordinator.metrics_host {} is not loopback and the "
          "cluster has no auth.tokens (it would show and cancel jobs for anyone)",
          http.host);
      fallback = [](const HttpRequest&) {
        return HttpReply{403, "text/plain; charset=utf-8",
                         "the dashboard needs auth.tokens in the cluster file when "
                         "coordinator.metrics_host is not a loopback address\n"};
      };
    }
    TERN_ASSIGN_OR_RETURN(s->http_, HttpServer::start(http, std::move(handlers), fallback));
    spdlog::info("HTTP on http://{}:{}: /metrics{}, /healthz{}", http.host, s->http_->port(),
                 options.metrics_token.empty() ? "" : " (bearer token)", dashboard_note);
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
