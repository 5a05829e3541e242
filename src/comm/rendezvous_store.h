// TcpRendezvousStore: tern's c10d::Store for trainer rendezvous, replacing c10d::TCPStore,
// whose server in LibTorch 1.13 listens on every interface. Rank 0's store also hosts the
// RendezvousServer, bound only to options.host; every rank (rank 0 included) talks to it as a
// client over one TCP connection.
//
// Contract (as c10d::TCPStore): get() and wait() block until the keys exist or the store
// timeout (getTimeout(); kNoTimeout waits forever) passes, then throw c10::Error naming the
// keys and the store; any other failure (server gone, oversized key/value, refused request)
// throws c10::Error too. Creating a client retries the connection until options.timeout, so
// non-zero ranks may start before rank 0 listens.
//
// Thread safety: every operation holds one mutex for its round trip, so a blocked wait()
// delays other threads' calls on the same object (as c10d::TCPStore's client does). The
// server, when owned, runs on its own thread and stops in the destructor.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "comm/rendezvous_protocol.h"
#include "comm/rendezvous_server.h"
#include "common/status.h"

namespace tern {

struct RendezvousStoreOptions {
  std::string host = "127.0.0.1";  // the server's address: bound by the server, dialled by clients
  int port = 0;                    // the server's port; 0 (server only) picks an ephemeral one
  bool is_server = false;          // host the server here (rank 0)
  // Connection retries and the store timeout (get/wait) both use it.
  std::chrono::milliseconds timeout{60000};
  rendezvous::Limits limits;
};

class TcpRendezvousStore : public c10d::Store {
  struct Key {
    explicit Key() = default;
  };

 public:
  // Starts the server when options.is_server, then connects (retrying until options.timeout).
  static Result<c10::intrusive_ptr<TcpRendezvousStore>> create(
      const RendezvousStoreOptions& options);

  // Use create().
  TcpRendezvousStore(Key, const RendezvousStoreOptions& options,
                     std::unique_ptr<RendezvousServer> server);
  ~TcpRendezvousStore() override;

  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& expected,
                                  const std::vector<uint8_t>& desired) override;
  std::vector<uint8_t> get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t value) override;
  bool deleteKey(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t getNumKeys() override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  // The server's port (the ephemeral one when options.port was 0).
  int port() const { return port_; }
  // The server this store hosts; null on non-zero ranks.
  const RendezvousServer* server() const { return server_.get(); }

 private:
  // One request/reply round trip. wait_timeout is set for blocking requests (get, wait).
  rendezvous::Message call(rendezvous::Op op, const std::vector<std::string>& fields,
                           std::optional<std::chrono::milliseconds> wait_timeout);
  // Connects fd_ (mu_ held), retrying refused connections until the deadline.
  Status connect_locked(std::chrono::steady_clock::time_point deadline);
  void disconnect_locked();
  [[noreturn]] void fail(const std::string& message) const;
  void check_key(const std::string& key) const;
  void check_value(const std::string& key, size_t size) const;

  const RendezvousStoreOptions options_;
  const std::unique_ptr<RendezvousServer> server_;
  const int port_;
  const std::string where_;  // "host:port" for messages
  // Abandon epoch at creation (comm/abandon.h): a blocked call fails at once when a newer
  // regroup abandons this generation, instead of running to its timeout.
  const uint64_t epoch_;
  std::mutex mu_;
  int fd_ = -1;  // guarded by mu_; -1 until connected, and after a failed round trip
};

}  // namespace tern
