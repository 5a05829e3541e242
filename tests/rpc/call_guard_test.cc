// rpc/call_guard: the token-bucket rate limit per client (clock driven by hand), and the guard
// on a real in-process server with bearer tokens: after the burst a client is refused with
// RESOURCE_EXHAUSTED and a message saying what to do, its handler never runs, other clients
// are unaffected, and the refusals are counted in the RPC metrics.
#include "rpc/call_guard.h"

#include <gtest/gtest.h>

#include "rpc/client.h"
#include "rpc/server.h"
#include "testing/counting_coordinator.h"

namespace tern {
namespace {

using testing::CountingCoordinator;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(RateLimiter, BurstThenRefillPerClient) {
  RateLimiter limiter(/*per_s=*/2, /*burst=*/3);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.allow("a", 0.0)) << i;
  EXPECT_FALSE(limiter.allow("a", 0.0)) << "the burst is spent";
  EXPECT_FALSE(limiter.allow("a", 0.1)) << "0.2 tokens refilled: not a whole call";
  EXPECT_TRUE(limiter.allow("b", 0.1)) << "another client has its own bucket";
  EXPECT_TRUE(limiter.allow("a", 0.5)) << "1 token refilled after 0.5 s at 2/s";
  EXPECT_FALSE(limiter.allow("a", 0.5));
  // A long pause refills only up to the burst.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.allow("a", 1000.0)) << i;
  EXPECT_FALSE(limiter.allow("a", 1000.0));
}

TEST(RateLimiter, RefusedCallsDoNotBorrowFromTheFuture) {
  RateLimiter limiter(1, 1);
  EXPECT_TRUE(limiter.allow("a", 0.0));
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(limiter.allow("a", 0.5));
  EXPECT_TRUE(limiter.allow("a", 1.0)) << "hammering while refused does not push refill back";
}

// A plain-text loopback server with alice's and bob's tokens and a guard of `burst` calls
// that practically never refills.
class GuardedServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auth_ = std::make_shared<TokenAuthenticator>(
        std::vector<std::pair<std::string, std::string>>{{"alice", kAlice}, {"bob", kBob}});
    guard_ = std::make_unique<CallGuard>(CallGuardOptions{0.001, 3}, auth_, &metrics_);
    service_ = std::make_unique<CountingCoordinator>(guard_.get());
    ServerSecurity security;
    security.auth = auth_;
    RpcServerOptions o;
    o.credentials = server_credentials(security);
    auto s = RpcServer::start("127.0.0.1:0", {service_.get()}, o);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }

  CoordinatorClient client(const std::string& token) {
    auto security = std::make_shared<ClientSecurity>();
    security->token = token;
    RpcClientOptions o;
    o.retries = 0;  // refusals are final; do not wait on backoff
    o.security = security;
    return CoordinatorClient("127.0.0.1:" + std::to_string(server_->port()), o);
  }

  const std::string kAlice = std::string(32, 'a');
  const std::string kBob = std::string(32, 'b');
  std::shared_ptr<TokenAuthenticator> auth_;
  RpcMetrics metrics_;
  std::unique_ptr<CallGuard> guard_;
  std::unique_ptr<CountingCoordinator> service_;
  std::unique_ptr<RpcServer> server_;
};

TEST_F(GuardedServerTest, RefusesAClientOverItsBurstWithAClearMessage) {
  CoordinatorClient alice = client(kAlice);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(alice.list_jobs().is_ok()) << i;
  auto refused = alice.list_jobs();
  ASSERT_EQ(refused.status().code(), StatusCode::kResourceExhausted)
      << refused.status().to_string();
  const std::string& m = refused.status().message();
  EXPECT_TRUE(contains(m, "ListJobs refused")) << m;
  EXPECT_TRUE(contains(m, "burst 3")) << m;
  EXPECT_TRUE(contains(m, "coordinator.rate_limit")) << "names the setting: " << m;
  EXPECT_TRUE(contains(m, "slow down")) << "says what to do: " << m;
  v1::SubmitJobRequest request;
  request.set_spec_yaml("name: x\n");
  EXPECT_EQ(alice.submit_job(request).status().code(), StatusCode::kResourceExhausted)
      << "one bucket per client, not per method";
  EXPECT_EQ(service_->listed.load(), 3) << "refused calls never reach the handler";
  EXPECT_EQ(service_->submitted.load(), 0);

  // Bob is another client: his bucket is full. A new connection does not help Alice.
  EXPECT_TRUE(client(kBob).list_jobs().is_ok());
  EXPECT_EQ(client(kAlice).list_jobs().status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(service_->listed.load(), 4);

  PrometheusWriter w;
  metrics_.write(&w);
  EXPECT_TRUE(contains(
      w.str(), "tern_rpc_requests_total{method=\"ListJobs\",code=\"RESOURCE_EXHAUSTED\"} 2"))
      << w.str();
  EXPECT_TRUE(contains(w.str(), "tern_rpc_requests_total{method=\"ListJobs\",code=\"OK\"} 4"))
      << w.str();
}

TEST_F(GuardedServerTest, UnauthenticatedCallsDoNotSpendAUsersBucket) {
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(client(std::string(32, 'x')).list_jobs().status().code(),
              StatusCode::kUnauthenticated);
  }
  CoordinatorClient alice = client(kAlice);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(alice.list_jobs().is_ok()) << i;
  EXPECT_EQ(service_->listed.load(), 3);
}

TEST(CallGuard, WithoutTokensAClientIsItsHostNotItsConnection) {
  RpcMetrics metrics;
  CallGuard guard(CallGuardOptions{0.001, 2}, nullptr, &metrics);
  CountingCoordinator service(&guard);
  auto s = RpcServer::start("127.0.0.1:0", {&service});
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  const std::string address = "127.0.0.1:" + std::to_string((*s)->port());
  RpcClientOptions o;
  o.retries = 0;  // refusals are final; do not wait on backoff
  // Each client has its own channel, so its own connection from its own port.
  EXPECT_TRUE(CoordinatorClient(address, o).list_jobs().is_ok());
  EXPECT_TRUE(CoordinatorClient(address, o).list_jobs().is_ok());
  EXPECT_EQ(CoordinatorClient(address, o).list_jobs().status().code(),
            StatusCode::kResourceExhausted)
      << "reconnecting does not reset the bucket";
  EXPECT_EQ(service.listed.load(), 2);
}

}  // namespace
}  // namespace tern
