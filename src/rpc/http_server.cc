#include "rpc/http_server.h"

#include <civetweb.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <vector>

#include "rpc/security.h"

namespace tern {

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& host, int port,
                                                      std::map<std::string, Handler> handlers) {
  HttpServerOptions o;
  o.host = host.empty() ? "127.0.0.1" : host;
  o.port = port;
  if (port <= 0) {
    return invalid_argument("metrics port must be in [1, 65535], got " + std::to_string(port));
  }
  return start(o, std::move(handlers));
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerOptions& options,
                                                      std::map<std::string, Handler> handlers) {
  if (options.port < 0 || options.port > 65535) {
    return invalid_argument("metrics port must be in [1, 65535], got " +
                            std::to_string(options.port));
  }
  if (options.threads < 1 || options.threads > 64)
    return invalid_argument("HTTP threads must be in [1, 64], got " +
                            std::to_string(options.threads));
  if (options.request_timeout_ms < 10 || options.request_timeout_ms > 600000) {
    return invalid_argument("HTTP request timeout must be in [10, 600000] ms, got " +
                            std::to_string(options.request_timeout_ms));
  }
  for (const auto& [path, token] : options.tokens) {
    if (token.empty()) return invalid_argument("empty bearer token for " + path);
  }
  static const bool initialised = [] {
    mg_init_library(0);
    return true;
  }();
  (void)initialised;
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->handlers_ = std::move(handlers);
  s->tokens_ = options.tokens;
  const std::string host = options.host.empty() ? "127.0.0.1" : options.host;
  // civetweb writes IPv6 listeners in brackets.
  const std::string listen = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                             std::to_string(options.port);
  const std::string threads = std::to_string(options.threads);
  const std::string timeout = std::to_string(options.request_timeout_ms);
  const char* mg_options[] = {"listening_ports",
                              listen.c_str(),
                              "num_threads",
                              threads.c_str(),
                              "request_timeout_ms",
                              timeout.c_str(),
                              "enable_keep_alive",
                              "no",
                              "linger_timeout_ms",
                              "0",
                              "max_request_size",
                              "8192",
                              nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  s->ctx_ = mg_start(&callbacks, nullptr, mg_options);
  if (!s->ctx_) return unavailable("cannot serve HTTP on " + listen + " (port in use?)");
  mg_set_request_handler(s->ctx_, "/", &HttpServer::dispatch, s.get());
  s->port_ = options.port;
  if (s->port_ == 0) {
    mg_server_port ports[4];
    std::memset(ports, 0, sizeof(ports));
    const int n = mg_get_server_ports(s->ctx_, 4, ports);
    if (n > 0) s->port_ = ports[0].port;
  }
  return s;
}

HttpServer::~HttpServer() {
  if (ctx_) mg_stop(ctx_);
}

int HttpServer::dispatch(mg_connection* conn, void* self_ptr) {
  auto* self = static_cast<HttpServer*>(self_ptr);
  const mg_request_info* info = mg_get_request_info(conn);
  std::string uri = info->local_uri ? info->local_uri : "/";
  auto it = self->handlers_.find(uri);
  if (it == self->handlers_.end()) {
    mg_send_http_error(conn, 404, "not found\n");
    return 404;
  }
  if (std::strcmp(info->request_method, "GET") != 0 &&
      std::strcmp(info->request_method, "HEAD") != 0) {
    mg_send_http_error(conn, 405, "only GET\n");
    return 405;
  }
  if (auto t = self->tokens_.find(uri); t != self->tokens_.end()) {
    const char* header = mg_get_header(conn, "Authorization");
    const std::string presented = header ? header : "";
    if (!constant_time_equals(presented, "Bearer " + t->second)) {
      const char* body =
          "this endpoint needs \"Authorization: Bearer <token>\" "
          "(coordinator.metrics_token_file)\n";
      mg_printf(conn,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"
                "Content-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                std::strlen(body), body);
      return 401;
    }
  }
  HttpReply reply = it->second();
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            reply.status, reply.status == 200 ? "OK" : "Service Unavailable",
            reply.content_type.c_str(), reply.body.size());
  if (std::strcmp(info->request_method, "GET") == 0)
    mg_write(conn, reply.body.data(), reply.body.size());
  return reply.status;
}

Result<HttpReply> http_get(const std::string& host, int port, const std::string& path,
                           const std::string& bearer) {
  char error[256] = {0};
  mg_init_library(0);
  const std::string auth = bearer.empty() ? "" : "Authorization: Bearer " + bearer + "\r\n";
  mg_connection* conn = mg_download(host.c_str(), port, 0, error, sizeof(error),
                                    "GET %s HTTP/1.0\r\nHost: %s\r\n%s\r\n", path.c_str(),
                                    host.c_str(), auth.c_str());
  if (!conn)
    return unavailable("GET http://" + host + ":" + std::to_string(port) + path + ": " + error);
  HttpReply reply;
  const mg_response_info* info = mg_get_response_info(conn);
  reply.status = info ? info->status_code : 0;
  for (int i = 0; info && i < info->num_headers; ++i) {
    if (strcasecmp(info->http_headers[i].name, "Content-Type") == 0)
      reply.content_type = info->http_headers[i].value;
  }
  std::vector<char> buf(8192);
  int n;
  while ((n = mg_read(conn, buf.data(), buf.size())) > 0) reply.body.append(buf.data(), n);
  mg_close_connection(conn);
  return reply;
}

}  // namespace tern
