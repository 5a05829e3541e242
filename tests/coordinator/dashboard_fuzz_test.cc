// Malformed HTTP never crashes the coordinator (issue 23): seeded random and hostile requests
// (paths, queries, percent escapes, methods, tokens, cookies, bodies, lengths, raw bytes) at a
// live CoordinatorServer's HTTP port, and many more straight into Dashboard::handle(). Every
// reply must be well formed (API replies JSON), and afterwards the server still answers.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/subprocess.h"
#include "coordinator/coordinator_server.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* kToken = "fuzz-user-token-0123456789abcdef";

// Sends `bytes` on a fresh connection, half-closes, and reads until the server closes (or 3 s).
// Returns what came back.
std::string exchange(int port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return reply;
}

class Hostile {
 public:
  explicit Hostile(uint32_t seed) : rng_(seed) {}
  size_t below(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
  std::string bytes(size_t max) {
    std::string s(below(max + 1), '\0');
    for (char& c : s) c = static_cast<char>(below(256));
    return s;
  }
  // Pieces that have broken parsers before: escapes, separators, dots, NUL, CR/LF, long runs.
  std::string piece() {
    static const std::vector<std::string> kPieces = {"%",
                                                     "%0",
                                                     "%00",
                                                     "%zz",
                                                     "%2F",
                                                     "%2e%2e",
                                                     "..",
                                                     "/",
                                                     "//",
                                                     "?",
                                                     "&",
                                                     "=",
                                                     ";",
                                                     ",",
                                                     "+",
                                                     "#",
                                                     "\\",
                                                     " ",
                                                     "\t",
                                                     "\r\n",
                                                     std::string(1, '\0'),
                                                     "\xff",
                                                     "\xc3\x28",
                                                     "\xe2\x82",
                                                     "j-1",
                                                     "j-999999999999999999999",
                                                     "-1",
                                                     "0",
                                                     "1e9",
                                                     "NaN",
                                                     "RUNNING",
                                                     "state",
                                                     "limit",
                                                     "rank",
                                                     "bytes",
                                                     "id",
                                                     "next",
                                                     "token",
                                                     "cancel",
                                                     "series",
                                                     "logs",
                                                     "timeline",
                                                     "spec",
                                                     "tern_session",
                                                     std::string(300, 'a'),
                                                     std::string(5000, '%'),
                                                     "\"",
                                                     "'",
                                                     "<script>"};
    return below(4) == 0 ? bytes(8) : pick(kPieces);
  }
  std::string path() {
    static const std::vector<std::string> kRoots = {"/",
                                                    "/api/v1/",
                                                    "/api/v1/jobs",
                                                    "/api/v1/jobs/",
                                                    "/api/v1/jobs/j-1",
                                                    "/api/v1/jobs/j-1/",
                                                    "/api/v1/jobs/j-1/logs",
                                                    "/api/v1/jobs/j-1/series",
                                                    "/api/v1/jobs/j-1/cancel",
                                                    "/api/v1/cluster",
                                                    "/api/v1/workers",
                                                    "/static/",
                                                    "/login",
                                                    "/logout",
                                                    "/job",
                                                    "/jobs",
                                                    "/cluster",
                                                    "/metrics",
                                                    "/healthz",
                                                    ""};
    std::string p = pick(kRoots);
    for (size_t i = below(5); i > 0; --i) p += piece();
    if (below(2)) {
      p += "?";
      for (size_t i = below(6); i > 0; --i) p += piece() + (below(2) ? "=" : "") + piece() + "&";
    }
    return p;
  }
  std::string header_value() {
    static const std::vector<std::string> kValues = {
        "",
        "Bearer",
        "Bearer ",
        std::string("Bearer ") + kToken,
        std::string("bearer ") + kToken,
        std::string("Bearer ") + kToken + "x",
        "Basic dXNlcjpwdw==",
        "Bearer " + std::string(6000, 'x'),
        "tern_session=",
        "tern_session=zz; tern_session=00",
        std::string("tern_session=") + std::string(32, '0'),
        "1",
        "-1",
        "18446744073709551616",
        "chunked",
        "application/x-www-form-urlencoded"};
    return below(3) == 0 ? piece() : pick(kValues);
  }
  std::string request() {
    static const std::vector<std::string> kMethods = {
        "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "get", "G\x00T", ""};
    static const std::vector<std::string> kHeaders = {
        "Authorization", "Cookie", "Content-Length", "Transfer-Encoding", "X-Tern-Request",
        "Content-Type",  "Host",   "Expect",         "Connection"};
    if (below(8) == 0) return bytes(3000);  // not HTTP at all
    std::string r = pick(kMethods) + " " + path() + " " +
                    (below(8) == 0 ? piece() : std::string("HTTP/1.1")) + "\r\n";
    for (size_t i = below(6); i > 0; --i) r += pick(kHeaders) + ": " + header_value() + "\r\n";
    if (below(10) == 0) r += std::string(9000, 'H') + ": x\r\n";  // past max_request_size
    r += "\r\n";
    if (below(3) == 0) r += "token=" + piece() + "&next=" + piece() + bytes(64);
    if (below(10) == 0) r.resize(below(r.size() + 1));  // cut short anywhere
    return r;
  }
  HttpRequest parsed() {
    HttpRequest r;
    static const std::vector<std::string> kMethods = {"GET", "POST", "HEAD", "PUT", "", "\xff"};
    r.method = pick(kMethods);
    std::string target = path();
    const size_t q = target.find('?');
    r.path = target.substr(0, q);
    if (q != std::string::npos) r.query = target.substr(q + 1);
    static const std::vector<std::string> kNames = {"authorization", "cookie", "x-tern-request",
                                                    "content-type"};
    for (size_t i = below(4); i > 0; --i) r.headers[pick(kNames)] = header_value();
    if (below(2)) r.body = "token=" + piece() + "&next=" + piece() + "&" + bytes(32);
    r.remote_addr = below(2) ? "127.0.0.1" : piece();
    return r;
  }

 private:
  std::mt19937 rng_;
};

class DashboardFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tern_dash_fuzz_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "web" / "static");
    for (const char* page : {"jobs.html", "job.html", "cluster.html", "login.html"})
      std::ofstream(dir_ / "web" / page) << "<html><!--error--></html>";
    std::ofstream(dir_ / "web" / "static" / "a.js") << "1";
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  void start(bool tokens) {
    auto port = find_free_port();
    ASSERT_TRUE(port.is_ok());
    CoordinatorServerOptions o;
    o.listen = "127.0.0.1:0";
    o.core.state_dir = (dir_ / "state").string();
    o.metrics_port = *port;
    o.web_root = (dir_ / "web").string();
    o.http.request_timeout_ms = 500;
    o.guard.rate_per_s = 1e6;
    o.guard.rate_burst = 1e6;
    if (tokens) {
      o.security.auth = std::make_shared<TokenAuthenticator>(
          TokenAuthenticator::with_roles({{"fuzzer", kToken, Role::kUser}}));
    }
    auto s = CoordinatorServer::start(o, &clock_);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
    ASSERT_TRUE(
        server_->core()
            ->submit_job("name: fuzz\nworkers: 1\ndata: {source: synthetic}\n", {}, "f.yaml")
            .is_ok());
  }
  void expect_alive() {
    const int port = server_->metrics_port();
    auto health = http_get("127.0.0.1", port, "/healthz");
    ASSERT_TRUE(health.is_ok()) << health.status().to_string();
    EXPECT_EQ(health->status, 200);
    auto jobs = http_get("127.0.0.1", port, "/api/v1/jobs", kToken);
    ASSERT_TRUE(jobs.is_ok()) << jobs.status().to_string();
    ASSERT_EQ(jobs->status, 200) << jobs->body;
    EXPECT_EQ(json::parse(jobs->body)["jobs"].size(), 1u);
  }

  fs::path dir_;
  SystemClock clock_;
  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(DashboardFuzzTest, HostileRequestsOnTheWireNeverCrashTheServer) {
  start(true);
  Hostile h(20261201);
  int answered = 0;
  for (int i = 0; i < 400; ++i) {
    const std::string request = h.request();
    const std::string reply = exchange(server_->metrics_port(), request);
    if (reply.empty()) continue;  // civetweb may just close on garbage
    ++answered;
    ASSERT_EQ(reply.compare(0, 5, "HTTP/"), 0) << "request " << i << ": " << reply.substr(0, 200);
    if (reply.compare(0, 9, "HTTP/1.1 ") != 0 && reply.compare(0, 9, "HTTP/1.0 ") != 0) {
      // civetweb's own 400 for a request line without a valid version echoes what it read
      // as the version ("HTTP/&-1 400 Bad Request"), back to the same client only.
      EXPECT_NE(reply.find(" 400 Bad Request\r\n"), std::string::npos) << reply.substr(0, 300);
      continue;
    }
    const int status = std::atoi(reply.c_str() + 9);
    EXPECT_TRUE(status >= 200 && status < 600) << reply.substr(0, 200);
    // Nothing but the healthz probe answers 200 to a request without the token.
    if (status == 200 && request.find(kToken) == std::string::npos) {
      const bool open = request.find("/healthz") != std::string::npos ||
                        request.find("/metrics") != std::string::npos ||
                        request.find("/login") != std::string::npos ||
                        request.find("/static/") != std::string::npos;
      EXPECT_TRUE(open) << "answered 200 without a token: " << request.substr(0, 300);
    }
  }
  EXPECT_GT(answered, 200) << "most requests get an answer";
  expect_alive();
}

TEST_F(DashboardFuzzTest, HostileRequestsIntoTheHandlerAnswerWellFormedReplies) {
  for (bool tokens : {true, false}) {
    start(tokens);
    DashboardOptions d;
    d.web_root = (dir_ / "web").string();
    d.rate_per_s = 1e9;
    d.rate_burst = 1e9;
    if (tokens) {
      d.auth = std::make_shared<TokenAuthenticator>(
          TokenAuthenticator::with_roles({{"fuzzer", kToken, Role::kUser}}));
    }
    Dashboard dashboard(d, server_->core(), server_->series(), &clock_);
    Hostile h(tokens ? 7 : 8);
    for (int i = 0; i < 20000; ++i) {
      HttpRequest r = h.parsed();
      if (r.method == "POST" && r.path.find("cancel") != std::string::npos)
        r.path = "/api/v1/jobs/j-404/cancel";
      HttpReply reply = dashboard.handle(r);
      ASSERT_TRUE(reply.status >= 200 && reply.status < 600) << r.path;
      if (reply.content_type == "application/json") {
        json j = json::parse(reply.body, nullptr, false);
        ASSERT_FALSE(j.is_discarded()) << r.path << ": " << reply.body.substr(0, 200);
        if (reply.status >= 400) {
          ASSERT_TRUE(j.contains("error")) << reply.body;
        }
      }
      ASSERT_NE(reply.status, 500)
          << r.method << " " << r.path << "?" << r.query << ": " << reply.body;
    }
    expect_alive();
    server_.reset();
    fs::remove_all(dir_ / "state");
  }
}

}  // namespace
}  // namespace tern
