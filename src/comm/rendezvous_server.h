// RendezvousServer: the key-value server behind tern's rendezvous store (TcpRendezvousStore).
// Rank 0 of a generation hosts one. Unlike c10d's TCPStore server in LibTorch 1.13, which
// listens on every interface, it binds only to the address it is given (an IPv4 or IPv6
// literal, or a name that resolves to a local address): the daemon's security requirement is
// that trainers' rendezvous listens where the daemon was told to, never on 0.0.0.0.
//
// Threads: start() spawns one thread that owns the listening socket, every connection and
// the key-value map; it multiplexes them with poll(). Nothing else touches that state, so it
// needs no lock. The destructor wakes the thread through a pipe, joins it and closes every
// socket: no thread outlives the object, and destruction never waits on a client.
//
// Bounds (rendezvous::Limits): a frame over max_message_bytes, a key or value over its limit,
// or a store past max_stored_bytes gets an error reply naming the limit, and the connection
// is closed (after a short linger that discards input, so the peer can read the reply);
// nothing is allocated for a frame before its length is checked. Connections past
// max_connections are told so and closed the same way.
//
// Blocking requests (get, wait) park the connection until the keys exist or the request's
// own deadline passes; the server then answers kTimeout. Other connections are served
// meanwhile.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "comm/rendezvous_protocol.h"
#include "common/status.h"

namespace tern {

struct RendezvousServerOptions {
  std::string host = "127.0.0.1";  // the address to bind; required
  int port = 0;                    // 0: an ephemeral port, see port()
  rendezvous::Limits limits;
};

class RendezvousServer {
 public:
  // Binds, listens and starts the serving thread. Fails (kUnavailable) when the host does not
  // resolve or the address cannot be bound (in use, not local).
  static Result<std::unique_ptr<RendezvousServer>> start(const RendezvousServerOptions& options);
  ~RendezvousServer();
  RendezvousServer(const RendezvousServer&) = delete;
  RendezvousServer& operator=(const RendezvousServer&) = delete;

  // The port actually bound (the ephemeral one when options.port was 0).
  int port() const { return port_; }
  // The bound local address as "IP:PORT" ("[IPv6]:PORT"), read back with getsockname().
  const std::string& local_address() const { return local_address_; }

 private:
  struct State;
  RendezvousServer(int listen_fd, int wake_read, int wake_write, int port,
                   std::string local_address, const rendezvous::Limits& limits);
  void serve();

  const int listen_fd_;
  const int wake_read_;
  const int wake_write_;
  const int port_;
  const std::string local_address_;
  std::unique_ptr<State> state_;  // serving thread only
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// "IP:PORT" for a bound or connected socket's local (peer = false) or remote end.
std::string socket_address(int fd, bool peer = false);

}  // namespace tern
