// CoordinatorServer: the coordinator process's owner object (the third of the gRPC layers in
// docs/contributing.md, "Interfaces and seams"). Opens the CoordinatorCore (journal replay) and
// the jobs' time series (job_series.h, under <state_dir>/series), serves the Coordinator and
// WorkerService over gRPC on one address, serves /metrics, /healthz and the dashboard
// (dashboard.h) over HTTP when metrics_port is set, and runs the ticker thread that expires
// leases and places jobs. The dashboard follows gRPC's rule: without auth tokens it is served
// only on a loopback interface (on any other metrics_host its paths answer 403 and /metrics and
// /healthz stay).
//
// Thread-safe: shutdown() may be called from any thread, once or more; the destructor calls it.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/clock.h"
#include "coordinator/coordinator_core.h"
#include "coordinator/dashboard.h"
#include "coordinator/job_series.h"
#include "coordinator/service.h"
#include "rpc/call_guard.h"
#include "rpc/http_server.h"
#include "rpc/metrics.h"
#include "rpc/security.h"
#include "rpc/server.h"

namespace tern {

struct CoordinatorServerOptions {
  std::string listen = "127.0.0.1:7070";  // port 0 picks a free one (tests)
  CoordinatorOptions core;
  std::chrono::milliseconds tick{100};
  ServerSecurity security;                 // TLS and tokens; default: plain text, no tokens
  int64_t max_message_bytes = 4 << 20;     // any gRPC message
  CallGuardOptions guard;                  // per-client rate limit of the Coordinator API
  int metrics_port = 0;                    // HTTP /metrics and /healthz; 0 = off
  std::string metrics_host = "127.0.0.1";  // the interface they bind (loopback by default)
  std::string metrics_token;               // non-empty: /metrics needs "Authorization: Bearer" it
  HttpServerOptions http;                  // threads and timeouts of the HTTP server
  // The dashboard's pages (Dashboard::default_web_root() when empty) and the cluster's name.
  std::string web_root;
  std::string cluster_name = "local";
};

class CoordinatorServer {
 public:
  static Result<std::unique_ptr<CoordinatorServer>> start(const CoordinatorServerOptions& options,
                                                          Clock* clock);
  ~CoordinatorServer();

  int port() const { return server_->port(); }
  int metrics_port() const { return http_ ? http_->port() : 0; }
  std::string address() const;
  CoordinatorCore* core() { return core_.get(); }
  JobSeriesStore* series() { return series_.get(); }
  void shutdown();

 private:
  CoordinatorServer() = default;
  CoordinatorServerOptions options_;
  std::unique_ptr<JobSeriesStore> series_;  // outlives core_ (its observer)
  std::unique_ptr<CoordinatorCore> core_;
  RpcMetrics rpc_metrics_;
  std::unique_ptr<CallGuard> guard_;
  std::unique_ptr<CoordinatorService> coordinator_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<RpcServer> server_;
  std::unique_ptr<Dashboard> dashboard_;
  std::unique_ptr<HttpServer> http_;  // calls dashboard_: declared after it, destroyed first
  std::atomic<bool> stop_{false};
  std::thread ticker_;
};

}  // namespace tern
