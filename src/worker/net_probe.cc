#include "worker/net_probe.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/clock.h"

namespace tern {
namespace {

using SteadyClock = std::chrono::steady_clock;

void set_timeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

using Deadline = SteadyClock::time_point;

// Both give up at `deadline` too: a peer trickling a byte per timeout cannot hold them longer.
bool write_all(int fd, const char* data, size_t n, Deadline deadline) {
  while (n > 0) {
    if (SteadyClock::now() > deadline) return false;
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, char* data, size_t n, Deadline deadline) {
  while (n > 0) {
    if (SteadyClock::now() > deadline) return false;
    ssize_t r = ::recv(fd, data, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Resolves host:port (numeric or a name) to its first TCP address.
Result<addrinfo*> resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || !res) {
    return unavailable("cannot resolve " + host + ": " + ::gai_strerror(rc));
  }
  return res;
}

}  // namespace

Result<std::unique_ptr<ProbeServer>> ProbeServer::start(const ProbeServerOptions& options) {
  if (options.port < 0 || options.port > 65535)
    return invalid_argument("probe port must be in [0, 65535], got " +
                            std::to_string(options.port));
  TERN_ASSIGN_OR_RETURN(addrinfo * res, resolve(options.host, options.port, true));
  int fd = ::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return internal_error(std::string("probe endpoint: socket: ") + std::strerror(errno));
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 8) != 0) {
    std::string why = std::strerror(errno);
    ::freeaddrinfo(res);
    ::close(fd);
    return unavailable("probe endpoint: cannot listen on " + options.host + ":" +
                       std::to_string(options.port) + ": " + why);
  }
  ::freeaddrinfo(res);
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                        : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return std::unique_ptr<ProbeServer>(new ProbeServer(options, fd, port));
}

ProbeServer::ProbeServer(ProbeServerOptions options, int fd, int port)
    : options_(std::move(options)), listen_fd_(fd), port_(port) {
  thread_ = std::thread(&ProbeServer::serve, this);
}

ProbeServer::~ProbeServer() {
  stop_.store(true);
  thread_.join();
  ::close(listen_fd_);
}

void ProbeServer::serve() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;  // wakes to see stop_
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    connections_.fetch_add(1);
    serve_one(fd);
    ::close(fd);
  }
}

void ProbeServer::serve_one(int fd) {
  set_timeouts(fd, options_.io_timeout);
  const Deadline deadline = SteadyClock::now() + kConnectionTimeouts * options_.io_timeout;
  int pings = 0;
  std::vector<char> buf(64 << 10);
  while (!stop_.load()) {
    char op = 0;
    if (!read_all(fd, &op, 1, deadline)) return;
    if (op == 'P') {
      if (++pings > kMaxPings || !write_all(fd, "P", 1, deadline)) return;
    } else if (op == 'B') {
      unsigned char len[4];
      if (!read_all(fd, reinterpret_cast<char*>(len), 4, deadline)) return;
      const int64_t n = (int64_t{len[0]} << 24) | (int64_t{len[1]} << 16) | (int64_t{len[2]} << 8) |
                        int64_t{len[3]};
      if (n > options_.max_bulk_bytes) return;
      for (int64_t left = n; left > 0;) {
        const size_t chunk =
            static_cast<size_t>(std::min<int64_t>(left, static_cast<int64_t>(buf.size())));
        if (!read_all(fd, buf.data(), chunk, deadline)) return;
        left -= static_cast<int64_t>(chunk);
      }
      write_all(fd, "K", 1, deadline);
      return;  // one bulk per connection
    } else {
      return;
    }
  }
}

Result<ProbeResult> probe_peer(const std::string& host, int port, const ProbeOptions& options) {
  if (port < 1 || port > 65535)
    return invalid_argument("probe port must be in [1, 65535], got " + std::to_string(port));
  if (options.pings < 1 || options.pings > ProbeServer::kMaxPings) {
    return invalid_argument("probe pings must be in [1, " + std::to_string(ProbeServer::kMaxPings) +
                            "], got " + std::to_string(options.pings));
  }
  if (options.bulk_bytes < 1 || options.bulk_bytes > 0xffffffffLL) {
    return invalid_argument("probe bulk_bytes must be in [1, 2^32), got " +
                            std::to_string(options.bulk_bytes));
  }
  const std::string where = host + ":" + std::to_string(port);
  TERN_ASSIGN_OR_RETURN(addrinfo * res, resolve(host, port, false));
  int fd = ::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return unavailable("probe " + where + ": socket: " + std::strerror(errno));
  }
  set_timeouts(fd, options.timeout);  // SO_SNDTIMEO also bounds connect()
  const Deadline deadline = SteadyClock::now() + ProbeServer::kConnectionTimeouts * options.timeout;
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  auto fail = [&](const std::string& what) -> Status {
    std::string why = errno ? std::strerror(errno) : "connection closed";
    ::close(fd);
    return unavailable("probe " + where + ": " + what + ": " + why);
  };
  if (rc != 0) return fail("connect");
  ProbeResult out;
  double best = -1;
  for (int i = 0; i < options.pings; ++i) {
    auto t0 = SteadyClock::now();
    char reply = 0;
    errno = 0;
    if (!write_all(fd, "P", 1, deadline) || !read_all(fd, &reply, 1, deadline)) return fail("ping");
    if (reply != 'P') {
      errno = 0;
      return fail("ping answered '" + std::string(1, reply) + "'");
    }
    double s = seconds_since(t0);
    best = best < 0 ? s : std::min(best, s);
  }
  out.rtt_ms = best * 1000;
  std::vector<char> filler(static_cast<size_t>(std::min<int64_t>(options.bulk_bytes, 64 << 10)),
                           'x');
  const uint32_t n = static_cast<uint32_t>(options.bulk_bytes);
  const char header[5] = {'B', static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                          static_cast<char>(n >> 8), static_cast<char>(n)};
  auto t0 = SteadyClock::now();
  errno = 0;
  if (!write_all(fd, header, sizeof(header), deadline)) return fail("bulk");
  for (int64_t left = options.bulk_bytes; left > 0;) {
    const size_t chunk =
        static_cast<size_t>(std::min<int64_t>(left, static_cast<int64_t>(filler.size())));
    if (!write_all(fd, filler.data(), chunk, deadline)) return fail("bulk");
    left -= static_cast<int64_t>(chunk);
  }
  char ack = 0;
  if (!read_all(fd, &ack, 1, deadline) || ack != 'K') return fail("bulk acknowledgement");
  // The transfer took one round trip more than its bytes (the acknowledgement): take it off,
  // but never below a tenth of the time (a noisy ping must not make the bandwidth explode).
  const double total = seconds_since(t0);
  const double transfer = std::max(total - best, total / 10);
  out.bandwidth_mbps = static_cast<double>(options.bulk_bytes) * 8 / std::max(transfer, 1e-9) / 1e6;
  ::close(fd);
  return out;
}

ProbeResult with_emulated_link(const ProbeResult& measured, double latency_ms,
                               double bandwidth_mbps) {
  ProbeResult r = measured;
  r.rtt_ms += 2 * latency_ms;
  if (bandwidth_mbps > 0) r.bandwidth_mbps = std::min(r.bandwidth_mbps, bandwidth_mbps);
  return r;
}

}  // namespace tern
