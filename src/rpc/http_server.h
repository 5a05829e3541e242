// HttpServer: a small plain-HTTP server (civetweb, from Debian's libcivetweb-dev) for the
// daemons' /metrics (Prometheus text) and /healthz (k8s probes), and the coordinator's
// dashboard: exact-path GET handlers, plus an optional request handler for every other path
// and method (it sees the method, decoded path, raw query, headers and a body of at most
// HttpServerOptions::max_body_bytes). Handlers are registered before start and called from
// civetweb's worker threads, so they must be thread-safe and must not throw.
// Owns the civetweb context; the destructor stops it (waiting for in-flight requests).
//
// Hardening (HttpServerOptions): it binds one interface (loopback unless told otherwise), runs
// a bounded pool of request threads, drops a connection that does not deliver its request
// within request_timeout_ms (so idle connections cannot hold every thread for long), never
// keeps connections alive, and can require "Authorization: Bearer <token>" per path (compared
// in constant time; 401 otherwise).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

struct mg_context;
struct mg_connection;

namespace tern {

struct HttpReply {
  HttpReply() = default;
  HttpReply(int status_code, std::string type, std::string text)
      : status(status_code), content_type(std::move(type)), body(std::move(text)) {}
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // Extra response headers (Location, Set-Cookie, Cache-Control, ...). Names and values must
  // not hold CR or LF (such a header is dropped).
  std::vector<std::pair<std::string, std::string>> headers;
};

struct HttpRequest {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // URL-decoded, without the query
  std::string query;                           // raw, after '?'
  std::map<std::string, std::string> headers;  // names lower-cased; a repeated one: the last
  std::string body;
  std::string remote_addr;
};

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // the interface to bind
  int port = 0;                    // 0: any free port (port() says which)
  int threads = 8;                 // request threads, at most 64
  int request_timeout_ms = 2000;   // to receive a request (and send the reply)
  // Path -> the bearer token it requires (e.g. {"/metrics", token}); other paths are open.
  std::map<std::string, std::string> tokens;
  // A request body longer than this is refused (413) before any handler runs.
  int64_t max_body_bytes = 64 << 10;
};

class HttpServer {
 public:
  using Handler = std::function<HttpReply()>;
  using RequestHandler = std::function<HttpReply(const HttpRequest&)>;
  // Serves GET on options.host:port for the exact paths in `handlers`; every other path goes
  // to `fallback` (any method), or gets 404 without one.
  static Result<std::unique_ptr<HttpServer>> start(const HttpServerOptions& options,
                                                   std::map<std::string, Handler> handlers,
                                                   RequestHandler fallback = nullptr);
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
  RequestHandler fallback_;
  std::map<std::string, std::string> tokens_;
  int64_t max_body_bytes_ = 0;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

// A GET of http://host:port/path: the status and body (tests, probes). A non-empty `bearer`
// is sent as "Authorization: Bearer <bearer>".
Result<HttpReply> http_get(const std::string& host, int port, const std::string& path,
                           const std::string& bearer = "");
// Any request: `method` PATH with `headers` ("Name: value" each) and `body`. The reply's
// headers are in HttpReply::headers.
Result<HttpReply> http_request(const std::string& host, int port, const std::string& method,
                               const std::string& path,
                               const std::vector<std::string>& headers = {},
                               const std::string& body = "");

}  // namespace tern
