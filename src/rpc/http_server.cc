#include "rpc/http_server.h"

#include <civetweb.h>
#include <spdlog/spdlog.h>

#include <cctype>
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
                                                      std::map<std::string, Handler> handlers,
                                                      RequestHandler fallback) {
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
  if (options.max_body_bytes < 0 || options.max_body_bytes > (int64_t{64} << 20)) {
    return invalid_argument("HTTP max_body_bytes must be in [0, 64 MiB], got " +
                            std::to_string(options.max_body_bytes));
  }
  s->handlers_ = std::move(handlers);
  s->fallback_ = std::move(fallback);
  s->tokens_ = options.tokens;
  s->max_body_bytes_ = options.max_body_bytes;
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

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return status < 400 ? "OK" : "Error";
  }
}

bool header_safe(const std::string& s) {
  return s.find_first_of("\r\n") == std::string::npos && s.find('\0') == std::string::npos;
}

void send_reply(mg_connection* conn, const HttpReply& reply, bool with_body) {
  std::string head =
      "HTTP/1.1 " + std::to_string(reply.status) + " " + reason_phrase(reply.status) +
      "\r\nContent-Type: " + (header_safe(reply.content_type) ? reply.content_type : "text/plain") +
      "\r\nContent-Length: " + std::to_string(reply.body.size()) + "\r\n";
  for (const auto& [name, value] : reply.headers) {
    if (name.empty() || !header_safe(name) || !header_safe(value)) continue;
    head += name + ": " + value + "\r\n";
  }
  head += "Connection: close\r\n\r\n";
  mg_write(conn, head.data(), head.size());
  if (with_body) mg_write(conn, reply.body.data(), reply.body.size());
}

}  // namespace

int HttpServer::dispatch(mg_connection* conn, void* self_ptr) {
  auto* self = static_cast<HttpServer*>(self_ptr);
  const mg_request_info* info = mg_get_request_info(conn);
  std::string uri = info->local_uri ? info->local_uri : "/";
  const bool head = std::strcmp(info->request_method, "HEAD") == 0;
  auto it = self->handlers_.find(uri);
  if (it == self->handlers_.end()) {
    if (!self->fallback_) {
      mg_send_http_error(conn, 404, "not found\n");
      return 404;
    }
    HttpRequest request;
    request.method = info->request_method ? info->request_method : "";
    request.path = uri;
    request.query = info->query_string ? info->query_string : "";
    request.remote_addr = info->remote_addr;
    for (int i = 0; i < info->num_headers; ++i) {
      std::string name = info->http_headers[i].name ? info->http_headers[i].name : "";
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      request.headers[name] = info->http_headers[i].value ? info->http_headers[i].value : "";
    }
    if (info->content_length > self->max_body_bytes_) {
      mg_send_http_error(conn, 413, "request body larger than %lld bytes\n",
                         static_cast<long long>(self->max_body_bytes_));
      return 413;
    }
    // A body without a length (chunked) is read up to the limit; more is refused.
    std::vector<char> buf(4096);
    int n;
    while ((n = mg_read(conn, buf.data(), buf.size())) > 0) {
      request.body.append(buf.data(), static_cast<size_t>(n));
      if (static_cast<int64_t>(request.body.size()) > self->max_body_bytes_) {
        mg_send_http_error(conn, 413, "request body larger than %lld bytes\n",
                           static_cast<long long>(self->max_body_bytes_));
        return 413;
      }
    }
    HttpReply reply;
    try {
      reply = self->fallback_(request);
    } catch (const std::exception& e) {
      spdlog::error("HTTP {} {}: {}", request.method, uri.substr(0, 200), e.what());
      reply = HttpReply(500, "text/plain", "internal error\n");
    }
    send_reply(conn, reply, !head);
    return reply.status;
  }
  if (std::strcmp(info->request_method, "GET") != 0 && !head) {
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
  send_reply(conn, reply, !head);
  return reply.status;
}

Result<HttpReply> http_get(const std::string& host, int port, const std::string& path,
                           const std::string& bearer) {
  std::vector<std::string> headers;
  if (!bearer.empty()) headers.push_back("Authorization: Bearer " + bearer);
  return http_request(host, port, "GET", path, headers);
}

Result<HttpReply> http_request(const std::string& host, int port, const std::string& method,
                               const std::string& path, const std::vector<std::string>& headers,
                               const std::string& body) {
  char error[256] = {0};
  mg_init_library(0);
  std::string extra;
  for (const std::string& h : headers) extra += h + "\r\n";
  if (!body.empty() || method == "POST")
    extra += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  mg_connection* conn = mg_download(host.c_str(), port, 0, error, sizeof(error),
                                    "%s %s HTTP/1.0\r\nHost: %s\r\n%s\r\n%s", method.c_str(),
                                    path.c_str(), host.c_str(), extra.c_str(), body.c_str());
  if (!conn)
    return unavailable(method + " http://" + host + ":" + std::to_string(port) + path + ": " +
                       error);
  HttpReply reply;
  const mg_response_info* info = mg_get_response_info(conn);
  reply.status = info ? info->status_code : 0;
  for (int i = 0; info && i < info->num_headers; ++i) {
    if (strcasecmp(info->http_headers[i].name, "Content-Type") == 0) {
      reply.content_type = info->http_headers[i].value;
    } else {
      reply.headers.emplace_back(info->http_headers[i].name, info->http_headers[i].value);
    }
  }
  std::vector<char> buf(8192);
  int n;
  while ((n = mg_read(conn, buf.data(), buf.size())) > 0) reply.body.append(buf.data(), n);
  mg_close_connection(conn);
  return reply;
}

}  // namespace tern
