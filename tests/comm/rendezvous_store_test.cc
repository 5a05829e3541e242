// TcpRendezvousStore / RendezvousServer: c10d::Store semantics, timeouts, connect retry, the
// listening address (never 0.0.0.0), limits, clean shutdown, and Gloo process groups over it.
#include "comm/rendezvous_store.h"

#include <arpa/inet.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "comm/process_group.h"

namespace tern {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

c10::intrusive_ptr<TcpRendezvousStore> make_server(std::chrono::milliseconds timeout = 5s,
                                                   rendezvous::Limits limits = {}) {
  RendezvousStoreOptions o;
  o.is_server = true;
  o.timeout = timeout;
  o.limits = limits;
  auto s = TcpRendezvousStore::create(o);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return s.is_ok() ? *s : c10::intrusive_ptr<TcpRendezvousStore>();
}

c10::intrusive_ptr<TcpRendezvousStore> make_client(int port, std::chrono::milliseconds timeout = 5s,
                                                   rendezvous::Limits limits = {}) {
  RendezvousStoreOptions o;
  o.port = port;
  o.timeout = timeout;
  o.limits = limits;
  auto s = TcpRendezvousStore::create(o);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return s.is_ok() ? *s : c10::intrusive_ptr<TcpRendezvousStore>();
}

// Runs fn and returns the c10::Error's message it throws (fails the test when it does not).
template <typename F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "expected a c10::Error";
  return "";
}

// A port that was free a moment ago on 127.0.0.1.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Local addresses ("0100007F", "00000000000000000000000000000000", ...) of the sockets in
// LISTEN state on this port, from /proc/net/tcp and /proc/net/tcp6.
std::vector<std::string> listeners_on(int port) {
  std::vector<std::string> out;
  char port_hex[8];
  std::snprintf(port_hex, sizeof port_hex, "%04X", port);
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string slot, local, remote, state;
      ls >> slot >> local >> remote >> state;
      auto colon = local.find(':');
      if (colon == std::string::npos || state != "0A") continue;  // 0A: LISTEN
      if (local.substr(colon + 1) == port_hex) out.push_back(local.substr(0, colon));
    }
  }
  return out;
}

TEST(RendezvousStore, SetGetAddCompareSetCheckDeleteNumKeys) {
  auto server = make_server();
  auto client = make_client(server->port());
  ASSERT_TRUE(client);

  server->set("a", bytes("1"));
  EXPECT_EQ(text(client->get("a")), "1");
  client->set("a", bytes("two"));
  EXPECT_EQ(text(server->get("a")), "two");
  client->set("empty", {});
  EXPECT_TRUE(client->get("empty").empty());
  std::vector<uint8_t> binary = {0, 1, 2, 255, 0};
  client->set("bin", binary);
  EXPECT_EQ(server->get("bin"), binary);

  EXPECT_EQ(client->add("n", 5), 5);
  EXPECT_EQ(server->add("n", -2), 3);
  EXPECT_EQ(text(client->get("n")), "3");  // counters are decimal text, as in c10d's TCPStore
  EXPECT_NE(error_of([&] { client->add("a", 1); }).find("not an integer"), std::string::npos);
  // The refused request cost the connection; the next call reconnects.
  EXPECT_EQ(client->add("n", 1), 4);

  // compareSet, with c10d::TCPStore's semantics.
  EXPECT_EQ(text(client->compareSet("cs", {}, bytes("x"))), "x");  // missing, expected empty
  EXPECT_EQ(text(client->compareSet("cs", bytes("y"), bytes("z"))), "x");  // mismatch: unchanged
  EXPECT_EQ(text(client->compareSet("cs", bytes("x"), bytes("z"))), "z");  // match: swapped
  EXPECT_EQ(text(client->compareSet("nope", bytes("e"), bytes("d"))),
            "e");  // missing, expected set
  EXPECT_FALSE(client->check({"nope"}));

  EXPECT_TRUE(client->check({"a", "n", "cs"}));
  EXPECT_FALSE(client->check({"a", "missing"}));
  EXPECT_TRUE(client->check({}));
  EXPECT_EQ(client->getNumKeys(), 5);  // a, empty, bin, n, cs
  EXPECT_TRUE(client->deleteKey("a"));
  EXPECT_FALSE(client->deleteKey("a"));
  EXPECT_FALSE(server->check({"a"}));
  EXPECT_EQ(server->getNumKeys(), 4);
}

TEST(RendezvousStore, WaitBlocksUntilAnotherClientSetsTheKeys) {
  auto server = make_server();
  auto waiter = make_client(server->port());
  auto setter = make_client(server->port());
  ASSERT_TRUE(waiter && setter);
  auto start = Clock::now();
  auto done = std::async(std::launch::async, [&] {
    waiter->wait({"k1", "k2"});
    return text(waiter->get("k2"));
  });
  std::this_thread::sleep_for(100ms);
  setter->set("k1", bytes("v1"));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(done.wait_for(0ms), std::future_status::timeout);  // k2 still missing
  setter->set("k2", bytes("v2"));
  EXPECT_EQ(done.get(), "v2");
  EXPECT_GE(Clock::now() - start, 200ms);

  // get blocks the same way.
  auto got = std::async(std::launch::async, [&] { return text(waiter->get("late")); });
  std::this_thread::sleep_for(100ms);
  setter->add("late", 7);
  EXPECT_EQ(got.get(), "7");
}

TEST(RendezvousStore, GetAndWaitOnMissingKeysTimeOutWithAClearError) {
  auto server = make_server(300ms);
  auto client = make_client(server->port(), 300ms);
  ASSERT_TRUE(client);
  auto start = Clock::now();
  std::string e = error_of([&] { client->get("never"); });
  auto took = Clock::now() - start;
  EXPECT_NE(e.find("timed out after 300ms waiting for key 'never'"), std::string::npos) << e;
  EXPECT_NE(e.find("127.0.0.1:" + std::to_string(server->port())), std::string::npos) << e;
  EXPECT_GE(took, 290ms);
  EXPECT_LT(took, 2s);

  start = Clock::now();
  e = error_of([&] { client->wait({"never", "nor"}, 200ms); });
  took = Clock::now() - start;
  EXPECT_NE(e.find("timed out after 200ms waiting for keys ['never', 'nor']"), std::string::npos)
      << e;
  EXPECT_GE(took, 190ms);
  EXPECT_LT(took, 2s);

  // The store keeps working after timeouts; setTimeout changes get's deadline.
  client->set("never", bytes("now"));
  EXPECT_EQ(text(client->get("never")), "now");
  client->setTimeout(100ms);
  start = Clock::now();
  error_of([&] { client->wait({"nor"}); });
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(RendezvousStore, ClientThatStartsBeforeTheServerConnectsOnceItListens) {
  const int port = free_port();
  auto client = std::async(std::launch::async, [&] { return make_client(port, 10s); });
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(client.wait_for(0ms), std::future_status::timeout);  // still retrying
  RendezvousStoreOptions o;
  o.port = port;
  o.is_server = true;
  auto server = TcpRendezvousStore::create(o);
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  auto c = client.get();
  ASSERT_TRUE(c);
  c->set("hello", bytes("world"));
  EXPECT_EQ(text((*server)->get("hello")), "world");
}

TEST(RendezvousStore, ClientGivesUpAfterItsTimeoutWhenNoServerListens) {
  RendezvousStoreOptions o;
  o.port = free_port();
  o.timeout = 300ms;
  auto start = Clock::now();
  auto s = TcpRendezvousStore::create(o);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(s.status().message().find("cannot connect"), std::string::npos)
      << s.status().to_string();
  EXPECT_LT(Clock::now() - start, 3s);
}

TEST(RendezvousStore, ServerListensOnlyOnTheGivenAddress) {
  auto server = make_server();
  const int port = server->port();
  ASSERT_GT(port, 0);
  ASSERT_NE(server->server(), nullptr);
  EXPECT_EQ(server->server()->local_address(), "127.0.0.1:" + std::to_string(port));
  // Independently of our own bookkeeping: the kernel's table of listening sockets.
  auto l = listeners_on(port);
  ASSERT_EQ(l.size(), 1u) << "expected exactly one listener on port " << port;
  EXPECT_EQ(l[0], "0100007F");  // 127.0.0.1, not 00000000 (0.0.0.0) nor :: (tcp6)
}

TEST(RendezvousStore, ServerBindsAnIpv6LiteralAndAName) {
  RendezvousStoreOptions o;
  o.host = "::1";
  o.is_server = true;
  o.timeout = 2s;
  auto v6 = TcpRendezvousStore::create(o);
  if (!v6.is_ok()) {
    GTEST_SKIP() << "no IPv6 loopback here: " << v6.status().to_string();
  }
  EXPECT_EQ((*v6)->server()->local_address(), "[::1]:" + std::to_string((*v6)->port()));
  auto l = listeners_on((*v6)->port());
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0], "00000000000000000000000001000000");  // ::1 in /proc/net/tcp6's byte order
  (*v6)->set("k", bytes("v"));
  RendezvousStoreOptions c = o;
  c.is_server = false;
  c.port = (*v6)->port();
  auto client = TcpRendezvousStore::create(c);
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  EXPECT_EQ(text((*client)->get("k")), "v");

  o.host = "localhost";  // a name: bound to one address it resolves to, never the wildcard
  auto named = TcpRendezvousStore::create(o);
  ASSERT_TRUE(named.is_ok()) << named.status().to_string();
  for (const auto& a : listeners_on((*named)->port())) {
    EXPECT_NE(a, "00000000");
    EXPECT_NE(a, "00000000000000000000000000000000");
  }
}

TEST(RendezvousStore, ServerRefusesAnAddressItCannotBindAndAnEmptyHost) {
  RendezvousServerOptions o;
  o.host = "192.0.2.1";  // TEST-NET-1: not an address of this machine
  auto s = RendezvousServer::start(o);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("cannot listen on 192.0.2.1:0"), std::string::npos)
      << s.status().to_string();
  o.host = "";
  s = RendezvousServer::start(o);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
}

TEST(RendezvousStore, OversizedMessagesAreRefused) {
  auto server = make_server();
  auto client = make_client(server->port());
  ASSERT_TRUE(client);
  const size_t limit = rendezvous::Limits{}.max_value_bytes;
  // Checked by the client before sending.
  std::string e = error_of([&] { client->set("big", std::vector<uint8_t>(limit + 1)); });
  EXPECT_NE(e.find("value of " + std::to_string(limit + 1) +
                   " bytes for key 'big' exceeds the limit of " + std::to_string(limit) + " bytes"),
            std::string::npos)
      << e;
  e = error_of([&] { client->get(std::string(5000, 'k')); });
  EXPECT_NE(e.find("key of 5000 bytes exceeds the limit of 4096 bytes"), std::string::npos) << e;

  // A client with looser limits: the server refuses by itself.
  rendezvous::Limits loose;
  loose.max_value_bytes = 64 << 20;
  loose.max_message_bytes = 64 << 20;
  auto greedy = make_client(server->port(), 5s, loose);
  ASSERT_TRUE(greedy);
  e = error_of([&] { greedy->set("big", std::vector<uint8_t>(8 << 20)); });
  EXPECT_NE(e.find("request refused: request of"), std::string::npos) << e;
  EXPECT_NE(e.find("exceeds the limit of " + std::to_string(4 << 20) + " bytes"), std::string::npos)
      << e;
  e = error_of([&] { greedy->set("big", std::vector<uint8_t>(limit + 1)); });
  EXPECT_NE(e.find("request refused: value of"), std::string::npos) << e;
  EXPECT_FALSE(client->check({"big"}));

  // A raw peer announcing a 4 GiB frame gets an error reply and is disconnected, without the
  // server reserving anything for it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(server->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const unsigned char header[4] = {0xff, 0xff, 0xff, 0xf0};
  ASSERT_EQ(::send(fd, header, 4, MSG_NOSIGNAL), 4);
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<size_t>(n));
  ::close(fd);
  EXPECT_EQ(n, 0);  // closed by the server
  EXPECT_NE(reply.find("request of 4294967280 bytes exceeds the limit"), std::string::npos);

  // Everyone else is still served.
  client->set("after", bytes("ok"));
  EXPECT_EQ(text(greedy->get("after")), "ok");
}

TEST(RendezvousStore, ConnectionsPastTheLimitAreRefused) {
  rendezvous::Limits limits;
  limits.max_connections = 2;
  auto server = make_server(5s, limits);  // its own client is connection 1
  auto second = make_client(server->port());
  ASSERT_TRUE(second);
  second->set("x", bytes("1"));
  auto third = make_client(server->port(), 1s);  // accepted by the kernel, then refused
  ASSERT_TRUE(third);
  std::string e = error_of([&] { third->getNumKeys(); });
  EXPECT_TRUE(e.find("too many connections (limit 2)") != std::string::npos ||
              e.find("closed the connection") != std::string::npos)
      << e;
  second.reset();  // frees a slot
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(third->getNumKeys(), 1);
}

TEST(RendezvousStore, DestroyingTheServerReleasesBlockedClientsAndDoesNotHang) {
  auto server = make_server();
  auto client = make_client(server->port(), 60s);
  ASSERT_TRUE(client);
  auto blocked =
      std::async(std::launch::async, [&] { return error_of([&] { client->wait({"never"}); }); });
  std::this_thread::sleep_for(100ms);
  auto start = Clock::now();
  server.reset();  // joins the server thread
  EXPECT_LT(Clock::now() - start, 1s);
  ASSERT_EQ(blocked.wait_for(5s), std::future_status::ready);
  EXPECT_NE(blocked.get().find("closed the connection"), std::string::npos);
}

// ProcessGroupGloo over connect_store(): rank 0 hosts, the others connect; a second generation
// regroups on the same root store through a fresh PrefixStore.
void allreduce_over_connect_store(int world) {
  RendezvousOptions rv;
  rv.rank = 0;
  rv.world = world;
  rv.timeout = 20s;
  auto root0 = connect_store(rv);
  ASSERT_TRUE(root0.is_ok()) << root0.status().to_string();
  auto* tcp = dynamic_cast<TcpRendezvousStore*>(root0->get());
  ASSERT_NE(tcp, nullptr);
  const int port = tcp->port();
  for (int64_t generation : {1, 2}) {
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        c10::intrusive_ptr<c10d::Store> root = *root0;
        if (r != 0) {
          RendezvousOptions o = rv;
          o.rank = r;
          o.master_port = port;
          auto s = connect_store(o);
          ASSERT_TRUE(s.is_ok()) << s.status().to_string();
          root = *s;
        }
        CommunicatorOptions co;
        co.timeout = 20s;
        auto comm = make_communicator(generation_store(root, generation), r, world, co);
        ASSERT_TRUE(comm.is_ok()) << comm.status().to_string();
        std::vector<at::Tensor> t{at::full({4}, static_cast<float>(r + generation))};
        ASSERT_TRUE(all_reduce_sync(**comm, t).is_ok());
        float expect = static_cast<float>(world * (world - 1) / 2 + world * generation);
        EXPECT_TRUE(at::equal(t[0], at::full({4}, expect))) << t[0];
      });
    }
    for (auto& t : threads) t.join();
  }
}

TEST(RendezvousStore, GlooAllReduceOverTheStoreWithTwoRanks) { allreduce_over_connect_store(2); }
TEST(RendezvousStore, GlooAllReduceOverTheStoreWithThreeRanks) { allreduce_over_connect_store(3); }

}  // namespace
}  // namespace tern
