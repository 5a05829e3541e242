#include "rpc/http_server.h"

#include <civetweb.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <vector>

namespace tern {

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& host, int port,
                                                      std::map<std::string, Handler> handlers) {
  if (port <= 0 || port > 65535)
    return invalid_argument("metrics port must be in [1, 65535], got " + std::to_string(port));
  static const bool initialised = [] {
    mg_init_library(0);
    return true;
  }();
  (void)initialised;
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->handlers_ = std::move(handlers);
  const std::string listen = (host.empty() ? "127.0.0.1" : host) + ":" + std::to_string(port);
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2",
                           "request_timeout_ms", "5000", nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  s->ctx_ = mg_start(&callbacks, nullptr, options);
  if (!s->ctx_) return unavailable("cannot serve HTTP on " + listen + " (port in use?)");
  mg_set_request_handler(s->ctx_, "/", &HttpServer::dispatch, s.get());
  s->port_ = port;
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
    mg_send_http_error(conn, 404, "not found: %s\n", uri.c_str());
    return 404;
  }
  if (std::strcmp(info->request_method, "GET") != 0 &&
      std::strcmp(info->request_method, "HEAD") != 0) {
    mg_send_http_error(conn, 405, "only GET\n");
    return 405;
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

Result<HttpReply> http_get(const std::string& host, int port, const std::string& path) {
  char error[256] = {0};
  mg_init_library(0);
  mg_connection* conn =
      mg_download(host.c_str(), port, 0, error, sizeof(error),
                  "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path.c_str(), host.c_str());
  if (!conn) return unavailable("GET http://" + host + ":" + std::to_string(port) + path + ": " + error);
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
