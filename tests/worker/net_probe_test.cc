// Network probes (issue 24): the probe endpoint and client on loopback, hostile clients, the
// emulated link, and two daemons measuring each other through a real in-process coordinator.
#include "worker/net_probe.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "coordinator/coordinator_server.h"
#include "worker/worker_daemon.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A raw client for the hostile cases; returns the connected socket.
int connect_raw(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// True when the server closed the connection (a read returns 0 or an error, not a byte).
bool closed_by_server(int fd) {
  char c;
  return ::recv(fd, &c, 1, 0) <= 0;
}

TEST(ProbeTest, MeasuresALoopbackPeer) {
  auto server = ProbeServer::start({});
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  ASSERT_GT((*server)->port(), 0);
  auto r = probe_peer("127.0.0.1", (*server)->port());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_GT(r->rtt_ms, 0);
  EXPECT_LT(r->rtt_ms, 2000);
  EXPECT_GT(r->bandwidth_mbps, 0);
  EXPECT_EQ((*server)->connections(), 1);
  // Named hosts resolve too.
  ASSERT_TRUE(probe_peer("localhost", (*server)->port()).is_ok());
}

TEST(ProbeTest, RefusesBadOptionsAndReportsUnreachablePeers) {
  EXPECT_EQ(probe_peer("127.0.0.1", 0).status().code(), StatusCode::kInvalidArgument);
  ProbeOptions o;
  o.pings = 0;
  EXPECT_EQ(probe_peer("127.0.0.1", 1, o).status().code(), StatusCode::kInvalidArgument);
  o.pings = ProbeServer::kMaxPings + 1;
  EXPECT_EQ(probe_peer("127.0.0.1", 1, o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.bulk_bytes = 0;
  EXPECT_EQ(probe_peer("127.0.0.1", 1, o).status().code(), StatusCode::kInvalidArgument);
  // A port nobody listens on (taken from a server that is gone).
  int port = 0;
  {
    auto s = ProbeServer::start({});
    ASSERT_TRUE(s.is_ok());
    port = (*s)->port();
  }
  auto r = probe_peer("127.0.0.1", port);
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("127.0.0.1:" + std::to_string(port)), std::string::npos);
  EXPECT_EQ(probe_peer("no-such-host.invalid", 9).status().code(), StatusCode::kUnavailable);
}

TEST(ProbeTest, BulkOverTheServersLimitIsRefused) {
  ProbeServerOptions so;
  so.max_bulk_bytes = 1024;
  auto server = ProbeServer::start(so);
  ASSERT_TRUE(server.is_ok());
  ProbeOptions o;
  o.bulk_bytes = 1024;
  EXPECT_TRUE(probe_peer("127.0.0.1", (*server)->port(), o).is_ok());
  o.bulk_bytes = 1025;
  EXPECT_EQ(probe_peer("127.0.0.1", (*server)->port(), o).status().code(),
            StatusCode::kUnavailable);
}

TEST(ProbeTest, HostileClientsAreCutOffAndTheServerGoesOn) {
  ProbeServerOptions so;
  so.io_timeout = 300ms;
  auto server = ProbeServer::start(so);
  ASSERT_TRUE(server.is_ok());
  const int port = (*server)->port();
  {  // an unknown opcode
    int fd = connect_raw(port);
    ASSERT_EQ(::send(fd, "X", 1, 0), 1);
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
  {  // a bulk announcing 4 GiB - 1
    int fd = connect_raw(port);
    const unsigned char msg[5] = {'B', 0xff, 0xff, 0xff, 0xff};
    ASSERT_EQ(::send(fd, msg, 5, 0), 5);
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
  {  // more pings than allowed
    int fd = connect_raw(port);
    char c;
    for (int i = 0; i < ProbeServer::kMaxPings; ++i) {
      ASSERT_EQ(::send(fd, "P", 1, 0), 1);
      ASSERT_EQ(::recv(fd, &c, 1, 0), 1);
    }
    ASSERT_EQ(::send(fd, "P", 1, 0), 1);
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
  {  // a client that connects and says nothing: dropped after the timeout
    int fd = connect_raw(port);
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
  EXPECT_TRUE(probe_peer("127.0.0.1", port).is_ok());
}

TEST(ProbeTest, EmulatedLinkAddsTheModel) {
  ProbeResult measured{0.05, 20000};
  ProbeResult r = with_emulated_link(measured, 70, 1000);
  EXPECT_DOUBLE_EQ(r.rtt_ms, 140.05);
  EXPECT_DOUBLE_EQ(r.bandwidth_mbps, 1000);
  r = with_emulated_link(measured, 0.1, 0);  // bandwidth 0: unlimited in the model
  EXPECT_DOUBLE_EQ(r.bandwidth_mbps, 20000);
  r = with_emulated_link({0.05, 500}, 0, 1000);  // the real link is the slower one
  EXPECT_DOUBLE_EQ(r.bandwidth_mbps, 500);
}

// Two daemons in two emulated regions register with a real coordinator, probe each other and
// report: the coordinator's matrix holds both directions with the model's latency in them.
TEST(ProbeDaemonTest, DaemonsMeasureEachOtherUnderWanEmulation) {
  const fs::path dir = fs::temp_directory_path() / ("tern_probe_" + std::to_string(getpid()));
  fs::remove_all(dir);
  SystemClock clock;
  CoordinatorServerOptions o;
  o.listen = "127.0.0.1:0";
  o.core.state_dir = (dir / "coord").string();
  o.core.heartbeat_ms = 50;
  o.core.lease_ms = 3000;
  o.core.has_network_model = true;
  o.core.network.emulate = true;
  o.core.network.links[{"east", "west"}] = {40, 0, 800};
  o.core.probe_interval_ms = 1000;  // the daemons clamp to >= 1 s
  o.tick = 20ms;
  auto server = CoordinatorServer::start(o, &clock);
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  std::vector<std::unique_ptr<WorkerDaemon>> daemons;
  std::vector<std::thread> threads;
  for (const char* name : {"east-0", "west-0"}) {
    WorkerDaemonOptions w;
    w.coordinator = (*server)->address();
    w.name = name;
    w.region = std::string(name).substr(0, 4);
    w.work_dir = (dir / name).string();
    w.trainer_path = "/bin/false";
    w.probe.bulk_bytes = 64 << 10;
    daemons.push_back(std::make_unique<WorkerDaemon>(w));
  }
  for (auto& d : daemons) threads.emplace_back([&d] { EXPECT_TRUE(d->run().is_ok()); });
  CoordinatorClient client((*server)->address());
  v1::ListWorkersReply reply;
  auto until = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < until) {
    auto r = client.list_workers();
    if (r.is_ok() && r->links_size() >= 2) {
      reply = *r;
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  for (auto& d : daemons) d->request_stop();
  for (auto& t : threads) t.join();
  ASSERT_GE(reply.links_size(), 2) << "both daemons measure the other (one right away, the "
                                      "first one at its next round)";
  for (const auto& l : reply.links()) {
    EXPECT_TRUE(l.emulated());
    EXPECT_GE(l.rtt_ms(), 80) << l.from() << " -> " << l.to();  // 2 x 40 ms plus loopback
    EXPECT_LT(l.rtt_ms(), 80 + 500);
    EXPECT_GT(l.bandwidth_mbps(), 0);
    EXPECT_LE(l.bandwidth_mbps(), 800);
    EXPECT_NE(l.from(), l.to());
  }
  EXPECT_GE(daemons[0]->probe_rounds() + daemons[1]->probe_rounds(), 2);
  server->reset();
  fs::remove_all(dir);
}

TEST(ProbeDaemonTest, ProbingCanBeTurnedOff) {
  WorkerDaemonOptions w;
  w.network_probe = false;
  WorkerDaemon d(w);
  EXPECT_EQ(d.probe_port(), 0);
}

}  // namespace
}  // namespace tern
