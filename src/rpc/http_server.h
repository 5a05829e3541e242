// HttpServer: a small plain-HTTP GET server (civetweb, from Debian's libcivetweb-dev) for the
// daemons' /metrics (Prometheus text) and /healthz (k8s probes). Handlers are registered
// before start and called from civetweb's worker threads, so they must be thread-safe.
// Owns the civetweb context; the destructor stops it (waiting for in-flight requests).
//
// Hardening (HttpServerOptions): it binds one interface (loopback unless told otherwise), runs
// a bounded pool of request threads, drops a connection that does not deliver its request
// within request_timeout_ms (so idle connections cannot hold every thread for long), never
// keeps connections alive, and can require "Authorization: Bearer <token>" per path (compared
// in constant time; 401 otherwise).
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

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // the interface to bind
  int port = 0;                    // 0: any free port (port() says which)
  int threads = 8;                 // request threads, at most 64
  int request_timeout_ms = 2000;   // to receive a request (and send the reply)
  // Path -> the bearer token it requires (e.g. {"/metrics", token}); other paths are open.
  std::map<std::string, std::string> tokens;
};

class HttpServer {
 public:
  using Handler = std::function<HttpReply()>;
  // Serves GET on options.host:port for the exact paths in `handlers`; others get 404.
  static Result<std::unique_ptr<HttpServer>> start(const HttpServerOptions& options,
                                                   std::map<std::string, Handler> handlers);
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
  std::map<std::string, std::string> tokens_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

// A GET of http://host:port/path: the status and body (tests, probes). A non-empty `bearer`
// is sent as "Authorization: Bearer <bearer>".
Result<HttpReply> http_get(const std::string& host, int port, const std::string& path,
                           const std::string& bearer = "");

}  // namespace tern
