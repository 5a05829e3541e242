// Dashboard: the coordinator's web pages and their JSON API (/api/v1/), served on its HTTP
// port next to /metrics and /healthz (CoordinatorServer routes every other path here).
//
// The API mirrors the gRPC status messages (service.cc's to_proto), built from the same
// CoordinatorCore calls, with the same field names; states are the CLI's names ("RUNNING",
// "SUCCEEDED", ...), times unix seconds and every number a JSON number:
//   GET  /api/v1/cluster                 name, workers, slots, jobs per state
//   GET  /api/v1/workers                 workers (ListWorkers) + heartbeat_age_s
//   GET  /api/v1/jobs?state=S[,S]&limit=N  jobs (ListJobs), oldest first
//   GET  /api/v1/jobs/ID                 {job, spec_yaml} (GetJob)
//   GET  /api/v1/jobs/ID/series          loss, samples/s, wait %, test metrics over time
//   GET  /api/v1/jobs/ID/timeline        submitted, started, regroups, checkpoints, exits, end
//   GET  /api/v1/jobs/ID/logs?rank=R&bytes=B   the last B bytes of rank R's log
//   GET  /api/v1/jobs/ID/spec            {job_id, spec_yaml}
//   POST /api/v1/jobs/ID/cancel          CancelJob (header "X-Tern-Request: 1" required)
// Errors are {"error": text, "code": "NOT_FOUND"} with the matching HTTP status.
//
// Pages (/cluster, /jobs, /job?id=ID, /login) are static files from `web_root` (HTML, JS, CSS
// and uPlot, copied there by the build from web/), loaded once at start; /static/NAME serves
// the assets. Nothing is fetched from elsewhere.
//
// Auth (the cluster's auth.tokens, as for gRPC): when tokens are configured, the pages and the
// API need a user or admin token (a worker token is refused, as in gRPC's roles), sent as
// "Authorization: Bearer <token>" or through the login form, which checks the token and keeps
// a random session id in an HttpOnly, SameSite=Strict cookie (sessions live in memory for
// `session_ttl`). API calls without one get 401, pages redirect to /login. Cancel needs the
// same roles as `tern cancel` and a custom header (a cross-site form cannot send one). API
// calls are rate limited per user (or peer address) like the gRPC API.
//
// Thread-safe: handle() is called from the HTTP server's threads; the sessions and the rate
// limiter have their own locks, the rest is immutable or the core's.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "coordinator/coordinator_core.h"
#include "coordinator/job_series.h"
#include "rpc/call_guard.h"
#include "rpc/http_server.h"
#include "rpc/security.h"

namespace tern {

struct DashboardOptions {
  std::string cluster_name = "local";
  // The pages and assets (see the file comment); empty or missing: the API only, pages answer
  // 503 saying where they were looked for.
  std::string web_root;
  std::shared_ptr<const TokenAuthenticator> auth = std::make_shared<TokenAuthenticator>();
  double rate_per_s = 50;  // API calls per second per user or peer
  double rate_burst = 100;
  std::chrono::seconds session_ttl{8 * 3600};
  size_t max_sessions = 1024;  // the oldest session is dropped beyond this
};

class Dashboard {
 public:
  // `core` and `series` (may be null: no charts) must outlive the dashboard.
  Dashboard(const DashboardOptions& options, CoordinatorCore* core, const JobSeriesStore* series,
            Clock* clock);

  HttpReply handle(const HttpRequest& request);

  // Where the build and `make install` put the pages: $TERN_WEB_ROOT, else
  // <directory of this executable>/../share/tern/web.
  static std::string default_web_root();
  // Whether the pages were found (web_root held them).
  bool has_pages() const { return !assets_.empty(); }

 private:
  struct Principal {
    std::string user;
    Role role = Role::kAdmin;
  };
  struct Session {
    Principal who;
    double expires = 0;  // unix seconds
    double created = 0;
  };
  void load_assets();
  // The caller, or a reply refusing it (401 / 403; pages: a redirect to /login).
  bool authenticate(const HttpRequest& request, bool page, Principal* who, HttpReply* refusal);
  HttpReply login(const HttpRequest& request);
  HttpReply logout(const HttpRequest& request);
  HttpReply page(const std::string& file, int status = 200, const std::string& error = "") const;
  HttpReply api(const HttpRequest& request, const Principal& who);
  HttpReply api_cluster(const std::string& rest, const Principal& who, double now);
  HttpReply api_jobs(std::map<std::string, std::vector<std::string>>& query, double now);
  HttpReply api_cancel(const HttpRequest& request, const Principal& who, const std::string& id,
                       double now);
  HttpReply api_series(const Job& job, double now);
  HttpReply api_timeline(const Job& job);
  HttpReply api_logs(const Job& job, const std::function<std::string(const std::string&)>& one);
  HttpReply asset(const std::string& name) const;

  const DashboardOptions options_;
  CoordinatorCore* const core_;
  const JobSeriesStore* const series_;
  Clock* const clock_;
  std::map<std::string, std::string> assets_;  // file name -> contents (immutable after start)
  RateLimiter limiter_;
  std::mutex mu_;  // guards sessions_
  std::map<std::string, Session> sessions_;
};

}  // namespace tern
