// The HTTP endpoints' hardening (issue 18, item 8), with real sockets: idle and trickling
// connections do not stall /healthz, a bearer token guards /metrics (401 without it), and the
// server binds only the interface it is given.
#include "rpc/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

// A TCP connection to ip:port that sends `prefix` and then nothing; -1 when refused.
int open_idle(const std::string& ip, int port, const std::string& prefix = "") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  if (!prefix.empty()) (void)!::write(fd, prefix.data(), prefix.size());
  return fd;
}

std::map<std::string, HttpServer::Handler> handlers() {
  return {{"/healthz",
           [] {
             return HttpReply{200, "text/plain", "ok\n"};
           }},
          {"/metrics", [] {
             return HttpReply{200, "text/plain", "tern_up 1\n"};
           }}};
}

TEST(HttpServer, IdleConnectionsDoNotStallHealthz) {
  HttpServerOptions o;  // the defaults the coordinator uses
  auto server = HttpServer::start(o, handlers());
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  // A few idle connections (more than the old pool of 2 threads): /healthz answers at once.
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) fds.push_back(open_idle("127.0.0.1", port));
  for (int i = 0; i < 2; ++i)
    fds.push_back(open_idle("127.0.0.1", port, "GET /healthz HTTP/1.1\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto t0 = Clock::now();
  auto r = http_get("127.0.0.1", port, "/healthz");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(1000));
  // More idle connections than threads: each is dropped after the request timeout, so a
  // probe waits at most about that long, never tens of seconds.
  for (int i = 0; i < 12; ++i) fds.push_back(open_idle("127.0.0.1", port, "GET /"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  t0 = Clock::now();
  r = http_get("127.0.0.1", port, "/healthz");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(o.request_timeout_ms * 2 + 1000));
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
}

TEST(HttpServer, BearerTokenGuardsMetrics) {
  HttpServerOptions o;
  const std::string token(40, 'k');
  o.tokens["/metrics"] = token;
  auto server = HttpServer::start(o, handlers());
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  const int port = (*server)->port();
  auto none = http_get("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(none.is_ok());
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->body.find("tern_up"), std::string::npos);
  for (const std::string& wrong :
       {std::string(40, 'x'), token.substr(1), token + "k", std::string()}) {
    auto r = http_get("127.0.0.1", port, "/metrics", wrong.empty() ? " " : wrong);
    ASSERT_TRUE(r.is_ok());
    EXPECT_EQ(r->status, 401) << wrong;
  }
  auto ok = http_get("127.0.0.1", port, "/metrics", token);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "tern_up 1\n");
  auto health = http_get("127.0.0.1", port, "/healthz");  // probes need no token
  ASSERT_TRUE(health.is_ok());
  EXPECT_EQ(health->status, 200);
}

TEST(HttpServer, BindsOnlyTheGivenInterface) {
  HttpServerOptions o;
  o.host = "127.0.0.1";
  auto server = HttpServer::start(o, handlers());
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  const int port = (*server)->port();
  int fd = open_idle("127.0.0.1", port);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
  // Another loopback address reaches this machine, but not a server bound to 127.0.0.1 only.
  fd = open_idle("127.0.0.2", port);
  EXPECT_LT(fd, 0) << "the server listens beyond 127.0.0.1";
  if (fd >= 0) ::close(fd);
}

TEST(HttpServer, OptionsAreRangeChecked) {
  HttpServerOptions o;
  o.threads = 0;
  EXPECT_FALSE(HttpServer::start(o, handlers()).is_ok());
  o.threads = 1000;
  EXPECT_FALSE(HttpServer::start(o, handlers()).is_ok());
  o = HttpServerOptions{};
  o.port = 70000;
  EXPECT_FALSE(HttpServer::start(o, handlers()).is_ok());
  o = HttpServerOptions{};
  o.tokens["/metrics"] = "";
  EXPECT_FALSE(HttpServer::start(o, handlers()).is_ok());
}

}  // namespace
}  // namespace tern
