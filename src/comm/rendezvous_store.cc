#include "comm/rendezvous_store.h"

#include <c10/util/Exception.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "comm/abandon.h"

namespace tern {

namespace {

using Clock = std::chrono::steady_clock;
using rendezvous::Op;
using rendezvous::Reply;

// Slack on top of a blocking request's own timeout before the client gives up on the reply:
// the server answers kTimeout at the deadline, so this only covers a server that went silent.
constexpr std::chrono::seconds kReplyGrace{5};
constexpr std::chrono::milliseconds kRetryInterval{50};

Clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  if (timeout <= std::chrono::milliseconds::zero()) return Clock::time_point::max();
  return Clock::now() + timeout;
}

// Milliseconds left for poll(); -1 waits forever.
int poll_ms(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 60000));
}

std::string bytes_to_string(const std::vector<uint8_t>& v) {
  return std::string(v.begin(), v.end());
}
std::vector<uint8_t> string_to_bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::string join_keys(const std::vector<std::string>& keys) {
  std::string out;
  for (size_t i = 0; i < keys.size() && i < 8; ++i) {
    if (i > 0) out += ", ";
    out += "'" + keys[i] + "'";
  }
  if (keys.size() > 8) out += ", ... (" + std::to_string(keys.size()) + " keys)";
  return out;
}

// Sends all of data before the deadline. Returns an error text, empty on success.
std::string send_all(int fd, const std::string& data, Clock::time_point deadline) {
  size_t pos = 0;
  while (pos < data.size()) {
    ssize_t n = ::send(fd, data.data() + pos, data.size() - pos, MSG_NOSIGNAL);
    if (n > 0) {
      pos += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      int rc = ::poll(&p, 1, poll_ms(deadline));
      if (rc == 0 && Clock::now() >= deadline) return "timed out sending a request";
      continue;
    }
    return std::string("send failed: ") + std::strerror(errno);
  }
  return "";
}

// How often a blocked reply wait looks at the abandon epoch (comm/abandon.h).
constexpr std::chrono::milliseconds kAbandonCheck{25};

// Reads exactly size bytes before the deadline, or until collectives of `epoch` are abandoned
// (a newer regroup: this store's generation is gone). Returns an error text, empty on success.
std::string recv_all(int fd, char* out, size_t size, Clock::time_point deadline, uint64_t epoch) {
  size_t pos = 0;
  while (pos < size) {
    ssize_t n = ::recv(fd, out + pos, size - pos, 0);
    if (n > 0) {
      pos += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return "the server closed the connection";
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (Clock::now() >= deadline) return "timed out waiting for the server's reply";
      if (std::string why = abandoned_reason(epoch); !why.empty()) return "abandoned: " + why;
      pollfd p{fd, POLLIN, 0};
      const int left = poll_ms(deadline);
      ::poll(&p, 1,
             left < 0 ? static_cast<int>(kAbandonCheck.count())
                      : std::min(left, static_cast<int>(kAbandonCheck.count())));
      continue;
    }
    return std::string("recv failed: ") + std::strerror(errno);
  }
  return "";
}

// One non-blocking connect attempt to any address of host:port, waiting at most until the
// deadline. Returns the connected fd, or -1 with *error set.
int try_connect(const std::string& host, int port, Clock::time_point deadline, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) {
    *error = std::string("cannot resolve '") + host + "': " + ::gai_strerror(gai);
    return -1;
  }
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      *error = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      // A single attempt waits a bounded time so a dropped SYN does not eat the whole timeout.
      auto until = std::min(deadline, Clock::now() + std::chrono::seconds(5));
      rc = ::poll(&p, 1, poll_ms(until)) == 1 ? 0 : -1;
      int err = rc == 0 ? 0 : ETIMEDOUT;
      socklen_t len = sizeof err;
      if (rc == 0) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      errno = err;
      rc = err == 0 ? 0 : -1;
    }
    if (rc != 0) {
      *error = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

}  // namespace

Result<c10::intrusive_ptr<TcpRendezvousStore>> TcpRendezvousStore::create(
    const RendezvousStoreOptions& options) {
  std::unique_ptr<RendezvousServer> server;
  if (options.is_server) {
    RendezvousServerOptions so;
    so.host = options.host;
    so.port = options.port;
    so.limits = options.limits;
    auto started = RendezvousServer::start(so);
    if (!started.is_ok()) return started.status();
    server = std::move(*started);
  } else if (options.port <= 0 || options.port > 65535) {
    return invalid_argument("rendezvous store: a client needs the server's port, got " +
                            std::to_string(options.port));
  }
  auto store = c10::make_intrusive<TcpRendezvousStore>(Key(), options, std::move(server));
  std::lock_guard<std::mutex> lock(store->mu_);
  Status s = store->connect_locked(deadline_after(options.timeout));
  if (!s.is_ok()) return s.with_context("rendezvous store " + store->where_);
  return store;
}

TcpRendezvousStore::TcpRendezvousStore(Key, const RendezvousStoreOptions& options,
                                       std::unique_ptr<RendezvousServer> server)
    : c10d::Store(options.timeout),
      options_(options),
      server_(std::move(server)),
      port_(server_ ? server_->port() : options.port),
      where_(options.host + ":" + std::to_string(port_)),
      epoch_(collective_epoch()) {}

TcpRendezvousStore::~TcpRendezvousStore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    disconnect_locked();
  }
  // server_ stops (joins its thread) as the member is destroyed.
}

Status TcpRendezvousStore::connect_locked(Clock::time_point deadline) {
  std::string error;
  while (true) {
    fd_ = try_connect(options_.host, port_, deadline, &error);
    if (fd_ >= 0) return Status::ok();
    if (std::string why = abandoned_reason(epoch_); !why.empty())
      return aborted("abandoned: " + why);
    if (Clock::now() + kRetryInterval >= deadline) break;
    std::this_thread::sleep_for(kRetryInterval);
  }
  return unavailable("cannot connect: " + error);
}

void TcpRendezvousStore::disconnect_locked() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void TcpRendezvousStore::fail(const std::string& message) const {
  C10_THROW_ERROR(Error, "rendezvous store " + where_ + ": " + message);
}

void TcpRendezvousStore::check_key(const std::string& key) const {
  if (key.size() > options_.limits.max_key_bytes) {
    fail("key of " + std::to_string(key.size()) + " bytes exceeds the limit of " +
         std::to_string(options_.limits.max_key_bytes) + " bytes");
  }
}

void TcpRendezvousStore::check_value(const std::string& key, size_t size) const {
  if (size > options_.limits.max_value_bytes) {
    fail("value of " + std::to_string(size) + " bytes for key '" + key + "' exceeds the limit of " +
         std::to_string(options_.limits.max_value_bytes) + " bytes");
  }
}

rendezvous::Message TcpRendezvousStore::call(
    Op op, const std::vector<std::string>& fields,
    std::optional<std::chrono::milliseconds> wait_timeout) {
  size_t body = rendezvous::body_size(fields);
  if (body > options_.limits.max_message_bytes) {
    fail("request of " + std::to_string(body) + " bytes exceeds the limit of " +
         std::to_string(options_.limits.max_message_bytes) + " bytes");
  }
  const std::string frame = rendezvous::encode(static_cast<uint8_t>(op), fields);
  std::unique_lock<std::mutex> lock(mu_);
  const std::chrono::milliseconds timeout = timeout_;
  if (fd_ < 0) {
    Status s = connect_locked(deadline_after(timeout));
    if (!s.is_ok()) fail(s.message());
  }
  Clock::time_point deadline = deadline_after(timeout);
  if (wait_timeout) {
    deadline = *wait_timeout <= std::chrono::milliseconds::zero()
                   ? Clock::time_point::max()
                   : Clock::now() + *wait_timeout + kReplyGrace;
  }
  std::string error;
  const std::string send_error = send_all(fd_, frame, deadline);
  if (!send_error.empty()) {
    // The server may have refused the request before reading all of it: its reply says why.
    deadline = std::min(deadline, Clock::now() + std::chrono::seconds(1));
  }
  char header[rendezvous::kHeaderBytes];
  error = recv_all(fd_, header, sizeof header, deadline, epoch_);
  if (!error.empty() && !send_error.empty()) error = send_error;
  std::string reply;
  if (error.empty()) {
    size_t len = rendezvous::get_u32(header);
    if (len > options_.limits.max_message_bytes) {
      error = "reply of " + std::to_string(len) + " bytes exceeds the limit of " +
              std::to_string(options_.limits.max_message_bytes) + " bytes";
    } else {
      reply.resize(len);
      error = recv_all(fd_, reply.data(), len, deadline, epoch_);
    }
  }
  std::optional<rendezvous::Message> m;
  if (error.empty()) {
    m = rendezvous::decode(reply.data(), reply.size());
    if (!m) error = "malformed reply";
  }
  if (!error.empty()) {
    // The connection's state is unknown: drop it; the next call reconnects.
    disconnect_locked();
    fail(error);
  }
  if (m->code == static_cast<uint8_t>(Reply::kError)) {
    disconnect_locked();  // the server closes the connection after an error
    fail("request refused: " +
         (m->fields.empty() ? std::string("(no reason given)") : m->fields[0]));
  }
  if (m->code == static_cast<uint8_t>(Reply::kTimeout)) {
    return *m;  // the caller names the keys
  }
  if (m->code != static_cast<uint8_t>(Reply::kOk)) {
    disconnect_locked();
    fail("unknown reply code " + std::to_string(m->code));
  }
  return *m;
}

void TcpRendezvousStore::set(const std::string& key, const std::vector<uint8_t>& value) {
  check_key(key);
  check_value(key, value.size());
  call(Op::kSet, {key, bytes_to_string(value)}, std::nullopt);
}

std::vector<uint8_t> TcpRendezvousStore::compareSet(const std::string& key,
                                                    const std::vector<uint8_t>& expected,
                                                    const std::vector<uint8_t>& desired) {
  check_key(key);
  check_value(key, expected.size());
  check_value(key, desired.size());
  auto m = call(Op::kCompareSet, {key, bytes_to_string(expected), bytes_to_string(desired)},
                std::nullopt);
  if (m.fields.size() != 1) fail("malformed compareSet reply");
  return string_to_bytes(m.fields[0]);
}

std::vector<uint8_t> TcpRendezvousStore::get(const std::string& key) {
  check_key(key);
  const std::chrono::milliseconds timeout = timeout_;
  auto m = call(Op::kGet, {std::to_string(timeout.count()), key}, timeout);
  if (m.code == static_cast<uint8_t>(Reply::kTimeout)) {
    fail("timed out after " + std::to_string(timeout.count()) + "ms waiting for key '" + key +
         "' (get; has every rank started?)");
  }
  if (m.fields.size() != 1) fail("malformed get reply");
  return string_to_bytes(m.fields[0]);
}

int64_t TcpRendezvousStore::add(const std::string& key, int64_t value) {
  check_key(key);
  auto m = call(Op::kAdd, {key, std::to_string(value)}, std::nullopt);
  if (m.fields.size() != 1) fail("malformed add reply");
  try {
    return std::stoll(m.fields[0]);
  } catch (const std::exception&) {
    fail("malformed add reply '" + m.fields[0] + "'");
  }
}

bool TcpRendezvousStore::deleteKey(const std::string& key) {
  check_key(key);
  auto m = call(Op::kDelete, {key}, std::nullopt);
  if (m.fields.size() != 1) fail("malformed deleteKey reply");
  return m.fields[0] == "1";
}

bool TcpRendezvousStore::check(const std::vector<std::string>& keys) {
  for (const auto& k : keys) check_key(k);
  if (keys.size() > options_.limits.max_keys_per_request) {
    fail("check of " + std::to_string(keys.size()) + " keys exceeds the limit of " +
         std::to_string(options_.limits.max_keys_per_request));
  }
  auto m = call(Op::kCheck, keys, std::nullopt);
  if (m.fields.size() != 1) fail("malformed check reply");
  return m.fields[0] == "1";
}

int64_t TcpRendezvousStore::getNumKeys() {
  auto m = call(Op::kNumKeys, {}, std::nullopt);
  if (m.fields.size() != 1) fail("malformed getNumKeys reply");
  try {
    return std::stoll(m.fields[0]);
  } catch (const std::exception&) {
    fail("malformed getNumKeys reply '" + m.fields[0] + "'");
  }
}

void TcpRendezvousStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void TcpRendezvousStore::wait(const std::vector<std::string>& keys,
                              const std::chrono::milliseconds& timeout) {
  if (keys.empty()) return;
  for (const auto& k : keys) check_key(k);
  if (keys.size() > options_.limits.max_keys_per_request) {
    fail("wait for " + std::to_string(keys.size()) + " keys exceeds the limit of " +
         std::to_string(options_.limits.max_keys_per_request));
  }
  std::vector<std::string> fields;
  fields.reserve(keys.size() + 1);
  fields.push_back(std::to_string(std::max<int64_t>(timeout.count(), 0)));
  fields.insert(fields.end(), keys.begin(), keys.end());
  auto m = call(Op::kWait, fields, timeout);
  if (m.code == static_cast<uint8_t>(Reply::kTimeout)) {
    fail("timed out after " + std::to_string(timeout.count()) + "ms waiting for keys [" +
         join_keys(keys) + "] (has every rank started?)");
  }
}

}  // namespace tern
