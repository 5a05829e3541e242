// HttpServer: a small plain-HTTP GET server (civetweb, from Debian's libcivetweb-dev) for the
// daemons' /metrics (Prometheus text) and /healthz (k8s probes). Handlers are registered
// before start and called from civetweb's worker threads, so they must be thread-safe.
// Owns the civetweb context; the destructor stops it (waiting for in-flight requests).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"

struct mg_context;
struct mg_connection;

namespace tern {

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpReply()>;
  // Serves GET on host:port (port > 0) for the exact paths in `handlers`; others get 404.
  static Result<std::unique_ptr<HttpServer>> start(const std::string& host, int port,
                                                   std::map<std::string, Handler> handlers);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }

 private:
  HttpServer() = default;
  static int dispatch(mg_connection* conn, void* self);

  std::map<std::string, Handler> handlers_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

// A GET of http://host:port/path: the status and body (tests, probes).
Result<HttpReply> http_get(const std::string& host, int port, const std::string& path);

}  // namespace tern
