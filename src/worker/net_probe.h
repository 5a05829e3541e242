// Network probes between worker daemons (issue 24): a tiny TCP endpoint each daemon serves,
// and the client that measures round-trip time and bandwidth to a peer's endpoint.
//
// Wire protocol (plain TCP, no secrets cross it: only filler bytes):
//   'P'                      -> 'P'   one ping (round-trip time)
//   'B' <u32 big-endian N> <N bytes> -> 'K'   one bulk transfer (bandwidth), N <= max_bulk_bytes
// Anything else closes the connection.
//
// Cost, bounded and documented (docs/architecture.md "Network profiling"): one probe is
// ProbeOptions::pings pings and one bulk of ProbeOptions::bulk_bytes (3 and 256 KiB by
// default); a daemon probes each peer once per probe interval (5 minutes by default) and once
// after it registers, one peer at a time. The server serves one connection at a time, each
// with a per-call timeout and kConnectionTimeouts of them in all, at most kMaxPings pings and
// max_bulk_bytes of bulk: a slow or hostile client holds it 10 s at most (2 s timeouts) and
// can make it read no more than that.
//
// Under WAN emulation the daemons run on one machine (or one LAN) and the trainers add the
// cluster file's link model (comm/wan_communicator.h); with_emulated_link() adds the same
// model to the measured figures, so what is reported is what the trainers' links look like.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"

namespace tern {

struct ProbeServerOptions {
  std::string host = "127.0.0.1";  // address to listen on (the daemon's --host)
  int port = 0;                    // 0: any free port
  int64_t max_bulk_bytes = 1 << 20;
  std::chrono::milliseconds io_timeout{2000};  // per read/write on a connection
};

// Serves the probe protocol on its own thread until destroyed.
class ProbeServer {
 public:
  static Result<std::unique_ptr<ProbeServer>> start(const ProbeServerOptions& options);
  ~ProbeServer();
  ProbeServer(const ProbeServer&) = delete;
  ProbeServer& operator=(const ProbeServer&) = delete;

  int port() const { return port_; }
  // Connections served so far (for tests).
  int64_t connections() const { return connections_.load(); }

  static constexpr int kMaxPings = 16;  // per connection
  // A connection (either side) lasts at most this many I/O timeouts in all.
  static constexpr int kConnectionTimeouts = 5;

 private:
  ProbeServer(ProbeServerOptions options, int fd, int port);
  void serve();
  void serve_one(int fd);

  const ProbeServerOptions options_;
  const int listen_fd_;
  const int port_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> connections_{0};
  std::thread thread_;
};

struct ProbeOptions {
  int pings = 3;                   // round trips; the smallest counts (1..ProbeServer::kMaxPings)
  int64_t bulk_bytes = 256 << 10;  // bytes of the bandwidth transfer
  std::chrono::milliseconds timeout{2000};  // connect and every read/write
};

struct ProbeResult {
  double rtt_ms = 0;          // the fastest of the pings
  double bandwidth_mbps = 0;  // bulk bytes over (transfer time - rtt), megabit/s
};

// Measures the link to a peer's ProbeServer. UNAVAILABLE naming host:port when it cannot be
// reached or breaks off; INVALID_ARGUMENT for options out of range.
Result<ProbeResult> probe_peer(const std::string& host, int port, const ProbeOptions& options = {});

// `measured` plus an emulated link: the round trip gains 2 x latency_ms, the bandwidth is the
// smaller of the two (bandwidth_mbps 0: the model does not limit it).
ProbeResult with_emulated_link(const ProbeResult& measured, double latency_ms,
                               double bandwidth_mbps);

}  // namespace tern
