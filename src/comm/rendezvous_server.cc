#include "comm/rendezvous_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <vector>

namespace tern {

namespace {

using Clock = std::chrono::steady_clock;
using rendezvous::Op;
using rendezvous::Reply;

constexpr size_t kReadChunk = 64 << 10;
// After an error reply the server stops writing and discards what the peer still sends for
// this long before closing: closing at once would reset the connection and could destroy the
// reply before the peer reads it.
constexpr std::chrono::seconds kLingerAfterError{2};
// A requested timeout above this (about 31 years) waits without a deadline.
constexpr int64_t kMaxTimeoutMs = int64_t{1} << 40;

std::string errno_text(int err) { return std::strerror(err); }

bool parse_i64(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

// A request parked until its keys exist or its deadline passes.
struct Parked {
  Op op = Op::kWait;
  std::vector<std::string> keys;
  Clock::time_point deadline = Clock::time_point::max();
};

struct Connection {
  int fd = -1;
  std::string peer;
  std::string in;   // received bytes not yet dispatched: at most one partial frame plus a chunk
  std::string out;  // reply bytes not yet sent
  size_t out_pos = 0;
  bool close_after_flush = false;                 // set after an error reply
  std::optional<Clock::time_point> linger_until;  // the error reply is out; discarding input
  bool dead = false;
  std::optional<Parked> parked;
};

}  // namespace

struct RendezvousServer::State {
  rendezvous::Limits limits;
  std::unordered_map<std::string, std::string> kv;
  size_t stored_bytes = 0;  // sum of key and value sizes in kv
  std::vector<std::unique_ptr<Connection>> conns;

  void reply(Connection* c, Reply code, const std::vector<std::string>& fields = {}) {
    c->out += rendezvous::encode(static_cast<uint8_t>(code), fields);
    flush(c);
  }
  void fail(Connection* c, const std::string& message) {
    spdlog::warn("rendezvous server: refusing a request from {}: {}", c->peer, message);
    c->in.clear();
    c->close_after_flush = true;  // before reply(): flush() starts the linger once it is out
    reply(c, Reply::kError, {message});
  }
  void flush(Connection* c) {
    while (c->out_pos < c->out.size()) {
      ssize_t n =
          ::send(c->fd, c->out.data() + c->out_pos, c->out.size() - c->out_pos, MSG_NOSIGNAL);
      if (n > 0) {
        c->out_pos += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      c->dead = true;
      return;
    }
    c->out.clear();
    c->out_pos = 0;
    if (c->close_after_flush && !c->linger_until) {
      ::shutdown(c->fd, SHUT_WR);
      c->linger_until = Clock::now() + kLingerAfterError;
    }
  }

  bool all_exist(const std::vector<std::string>& keys) const {
    for (const auto& k : keys) {
      if (kv.find(k) == kv.end()) return false;
    }
    return true;
  }

  // Answers a parked request whose keys now all exist.
  void answer_parked(Connection* c) {
    Parked p = std::move(*c->parked);
    c->parked.reset();
    if (p.op == Op::kGet) {
      reply(c, Reply::kOk, {kv.at(p.keys[0])});
    } else {
      reply(c, Reply::kOk);
    }
  }

  void after_write() {
    for (auto& c : conns) {
      if (c->parked && !c->dead && all_exist(c->parked->keys)) answer_parked(c.get());
    }
  }

  void expire(Clock::time_point now) {
    for (auto& c : conns) {
      if (c->linger_until && *c->linger_until <= now) c->dead = true;
      if (c->parked && !c->dead && c->parked->deadline <= now) {
        c->parked.reset();
        reply(c.get(), Reply::kTimeout);
      }
    }
  }

  bool check_key(Connection* c, const std::string& key) {
    if (key.size() <= limits.max_key_bytes) return true;
    fail(c, "key of " + std::to_string(key.size()) + " bytes exceeds the limit of " +
                std::to_string(limits.max_key_bytes) + " bytes");
    return false;
  }
  bool check_value(Connection* c, const std::string& key, const std::string& value) {
    if (value.size() <= limits.max_value_bytes) return true;
    fail(c, "value of " + std::to_string(value.size()) + " bytes for key '" + key +
                "' exceeds the limit of " + std::to_string(limits.max_value_bytes) + " bytes");
    return false;
  }
  // Stores key = value within max_stored_bytes.
  bool store(Connection* c, const std::string& key, std::string value) {
    auto it = kv.find(key);
    size_t old_bytes = it == kv.end() ? 0 : key.size() + it->second.size();
    size_t new_bytes = key.size() + value.size();
    if (stored_bytes - old_bytes + new_bytes > limits.max_stored_bytes) {
      fail(c, "storing key '" + key + "' would exceed the store's limit of " +
                  std::to_string(limits.max_stored_bytes) + " bytes");
      return false;
    }
    stored_bytes = stored_bytes - old_bytes + new_bytes;
    kv[key] = std::move(value);
    return true;
  }
  bool parse_timeout(Connection* c, const std::string& s, Clock::time_point* deadline) {
    int64_t ms = 0;
    if (!parse_i64(s, &ms) || ms < 0) {
      fail(c, "malformed timeout '" + s + "'");
      return false;
    }
    *deadline = ms == 0 || ms > kMaxTimeoutMs ? Clock::time_point::max()
                                              : Clock::now() + std::chrono::milliseconds(ms);
    return true;
  }

  // compareSet key expected desired, with c10d's TCPStore semantics.
  void compare_set(Connection* c, const std::vector<std::string>& f) {
    // c10d's TCPStore semantics: a missing key is created only when the expected value is
    // empty; the reply is the key's value afterwards (the expected value when it is missing).
    auto it = kv.find(f[0]);
    if (it == kv.end()) {
      if (!f[1].empty()) return reply(c, Reply::kOk, {f[1]});
      if (!store(c, f[0], f[2])) return;
      reply(c, Reply::kOk, {f[2]});
      after_write();
      return;
    }
    if (it->second == f[1]) {
      if (!store(c, f[0], f[2])) return;
      it = kv.find(f[0]);
    }
    reply(c, Reply::kOk, {it->second});
    after_write();
  }

  void dispatch(Connection* c, rendezvous::Message m) {
    auto& f = m.fields;
    auto want = [&](size_t n, const char* name) {
      if (f.size() == n) return true;
      fail(c, std::string(name) + " takes " + std::to_string(n) + " fields, got " +
                  std::to_string(f.size()));
      return false;
    };
    switch (static_cast<Op>(m.code)) {
      case Op::kSet: {
        if (!want(2, "set") || !check_key(c, f[0]) || !check_value(c, f[0], f[1])) return;
        if (!store(c, f[0], std::move(f[1]))) return;
        reply(c, Reply::kOk);
        after_write();
        return;
      }
      case Op::kCompareSet: {
        if (!want(3, "compareSet") || !check_key(c, f[0]) || !check_value(c, f[0], f[1]) ||
            !check_value(c, f[0], f[2])) {
          return;
        }
        compare_set(c, f);
        return;
      }
      case Op::kGet: {
        Parked p;
        p.op = Op::kGet;
        if (!want(2, "get") || !parse_timeout(c, f[0], &p.deadline) || !check_key(c, f[1])) return;
        auto it = kv.find(f[1]);
        if (it != kv.end()) return reply(c, Reply::kOk, {it->second});
        p.keys.push_back(std::move(f[1]));
        c->parked = std::move(p);
        return;
      }
      case Op::kAdd: {
        if (!want(2, "add") || !check_key(c, f[0])) return;
        int64_t delta = 0, value = 0;
        if (!parse_i64(f[1], &delta)) return fail(c, "add: malformed increment '" + f[1] + "'");
        auto it = kv.find(f[0]);
        if (it != kv.end() && !parse_i64(it->second, &value)) {
          return fail(c, "add: key '" + f[0] + "' holds a value that is not an integer");
        }
        std::string next = std::to_string(value + delta);
        if (!store(c, f[0], next)) return;
        reply(c, Reply::kOk, {next});
        after_write();
        return;
      }
      case Op::kDelete: {
        if (!want(1, "deleteKey") || !check_key(c, f[0])) return;
        auto it = kv.find(f[0]);
        bool existed = it != kv.end();
        if (existed) {
          stored_bytes -= it->first.size() + it->second.size();
          kv.erase(it);
        }
        return reply(c, Reply::kOk, {existed ? "1" : "0"});
      }
      case Op::kCheck: {
        if (f.size() > limits.max_keys_per_request) return fail(c, "check: too many keys");
        for (const auto& k : f) {
          if (!check_key(c, k)) return;
        }
        return reply(c, Reply::kOk, {all_exist(f) ? "1" : "0"});
      }
      case Op::kNumKeys: {
        if (!want(0, "getNumKeys")) return;
        return reply(c, Reply::kOk, {std::to_string(kv.size())});
      }
      case Op::kWait: {
        if (f.empty()) return fail(c, "wait takes a timeout");
        if (f.size() - 1 > limits.max_keys_per_request) {
          return fail(c, "wait: " + std::to_string(f.size() - 1) + " keys exceed the limit of " +
                             std::to_string(limits.max_keys_per_request));
        }
        Parked p;
        if (!parse_timeout(c, f[0], &p.deadline)) return;
        for (size_t i = 1; i < f.size(); ++i) {
          if (!check_key(c, f[i])) return;
          p.keys.push_back(std::move(f[i]));
        }
        if (all_exist(p.keys)) return reply(c, Reply::kOk);
        c->parked = std::move(p);
        return;
      }
    }
    fail(c, "unknown request " + std::to_string(m.code));
  }

  // Dispatches the complete frames buffered on c (stops while a request is parked). Returns
  // whether it dispatched any.
  bool process(Connection* c) {
    bool progress = false;
    while (!c->dead && !c->close_after_flush && !c->parked &&
           c->in.size() >= rendezvous::kHeaderBytes) {
      size_t len = rendezvous::get_u32(c->in.data());
      if (len > limits.max_message_bytes) {
        fail(c, "request of " + std::to_string(len) + " bytes exceeds the limit of " +
                    std::to_string(limits.max_message_bytes) + " bytes");
        return true;
      }
      if (c->in.size() < rendezvous::kHeaderBytes + len) break;
      auto m = rendezvous::decode(c->in.data() + rendezvous::kHeaderBytes, len);
      c->in.erase(0, rendezvous::kHeaderBytes + len);
      progress = true;
      if (!m) {
        fail(c, "malformed request");
        break;
      }
      dispatch(c, std::move(*m));
    }
    return progress;
  }

  void read_from(Connection* c) {
    char buf[kReadChunk];
    ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (c->close_after_flush) return;  // discard what follows an error
      c->in.append(buf, static_cast<size_t>(n));
      // A well-behaved client sends one request and waits for its reply; more than one full
      // frame buffered behind a parked request is a misbehaving peer.
      if (c->in.size() > 2 * (rendezvous::kHeaderBytes + limits.max_message_bytes)) {
        fail(c, "too much data sent ahead of replies");
      }
      return;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c->dead = true;  // closed by the peer, or a socket error
  }
};

std::string socket_address(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "?";
}

Result<std::unique_ptr<RendezvousServer>> RendezvousServer::start(
    const RendezvousServerOptions& options) {
  if (options.host.empty()) {
    return invalid_argument(
        "rendezvous server: no address to bind (it never listens on every interface)");
  }
  if (options.port < 0 || options.port > 65535) {
    return invalid_argument("rendezvous server: port must be in [0, 65535], got " +
                            std::to_string(options.port));
  }
  const std::string where = options.host + ":" + std::to_string(options.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(options.host.c_str(), std::to_string(options.port).c_str(), &hints, &res);
  if (gai != 0) {
    return unavailable("rendezvous server: cannot resolve '" + options.host +
                       "': " + ::gai_strerror(gai));
  }
  int fd = -1;
  std::string last_error = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = errno_text(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) break;
    last_error = errno_text(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0)
    return unavailable("rendezvous server: cannot listen on " + where + ": " + last_error);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    std::string e = errno_text(errno);
    ::close(fd);
    return internal_error("rendezvous server: pipe2: " + e);
  }
  std::string local = socket_address(fd);
  int port = options.port;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  std::unique_ptr<RendezvousServer> server(
      new RendezvousServer(fd, pipe_fds[0], pipe_fds[1], port, local, options.limits));
  spdlog::debug("rendezvous server listening on {}", local);
  return server;
}

RendezvousServer::RendezvousServer(int listen_fd, int wake_read, int wake_write, int port,
                                   std::string local_address, const rendezvous::Limits& limits)
    : listen_fd_(listen_fd),
      wake_read_(wake_read),
      wake_write_(wake_write),
      port_(port),
      local_address_(std::move(local_address)),
      state_(std::make_unique<State>()) {
  state_->limits = limits;
  thread_ = std::thread([this] { serve(); });
}

RendezvousServer::~RendezvousServer() {
  stopping_.store(true);
  char b = 1;
  while (::write(wake_write_, &b, 1) < 0 && errno == EINTR) {
  }
  if (thread_.joinable()) thread_.join();
  close_fd(listen_fd_);
  close_fd(wake_read_);
  close_fd(wake_write_);
}

void RendezvousServer::serve() {
  State& s = *state_;
  std::vector<pollfd> fds;
  while (!stopping_.load()) {
    fds.clear();
    fds.push_back({wake_read_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    Clock::time_point next = Clock::time_point::max();
    for (auto& c : s.conns) {
      short events = POLLIN;
      if (c->out_pos < c->out.size()) events |= POLLOUT;
      fds.push_back({c->fd, events, 0});
      if (c->parked) next = std::min(next, c->parked->deadline);
      if (c->linger_until) next = std::min(next, *c->linger_until);
    }
    int timeout_ms = -1;
    if (next != Clock::time_point::max()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, 60000));
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("rendezvous server on {}: poll failed: {}; stopping", local_address_,
                    errno_text(errno));
      break;
    }
    if (fds[0].revents != 0) {
      char buf[64];
      while (::read(wake_read_, buf, sizeof buf) > 0) {
      }
      if (stopping_.load()) break;
    }
    // Connections first (their indices match s.conns), then accept new ones.
    for (size_t i = 0; i < s.conns.size(); ++i) {
      Connection* c = s.conns[i].get();
      short re = fds[i + 2].revents;
      if (re & (POLLIN | POLLHUP | POLLERR)) s.read_from(c);
      if ((re & POLLOUT) && !c->dead) s.flush(c);
    }
    if (fds[1].revents & POLLIN) {
      while (true) {
        int cfd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) break;  // EAGAIN, or a connection that went away before accept
        auto c = std::make_unique<Connection>();
        c->fd = cfd;
        c->peer = socket_address(cfd, /*peer=*/true);
        int one = 1;
        ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        size_t active = static_cast<size_t>(std::count_if(
            s.conns.begin(), s.conns.end(), [](const auto& x) { return !x->close_after_flush; }));
        if (active >= s.limits.max_connections) {
          if (s.conns.size() >= 2 * s.limits.max_connections) {  // too many lingering as well
            ::close(cfd);
            continue;
          }
          s.fail(c.get(),
                 "too many connections (limit " + std::to_string(s.limits.max_connections) + ")");
        }
        s.conns.push_back(std::move(c));
      }
    }
    s.expire(Clock::now());
    bool progress = true;
    while (progress) {
      progress = false;
      for (auto& c : s.conns) progress = s.process(c.get()) || progress;
    }
    for (auto& c : s.conns) {
      if (c->dead) close_fd(c->fd);
    }
    s.conns.erase(
        std::remove_if(s.conns.begin(), s.conns.end(), [](const auto& c) { return c->dead; }),
        s.conns.end());
  }
  for (auto& c : s.conns) close_fd(c->fd);
  s.conns.clear();
}

}  // namespace tern
