// rpc/: the one Status <-> grpc::Status mapping, and what a client sees when nothing listens.
#include <gtest/gtest.h>

#include "common/subprocess.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "rpc/status_convert.h"

namespace tern {
namespace {

TEST(StatusConvert, EveryCodeRoundTrips) {
  for (int c = 0; c <= static_cast<int>(StatusCode::kUnauthenticated); ++c) {
    Status s(static_cast<StatusCode>(c), c == 0 ? "" : "message " + std::to_string(c));
    grpc::Status g = to_grpc_status(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    Status back = from_grpc_status(g);
    EXPECT_EQ(back.code(), s.code());
    EXPECT_EQ(back.message(), s.message());
  }
  EXPECT_EQ(to_grpc_status(invalid_argument("train.lr must be > 0")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(from_grpc_status(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x")).code(),
            StatusCode::kUnavailable);
}

TEST(DialAddress, WildcardHostsDialLoopback) {
  EXPECT_EQ(dial_address("0.0.0.0:7070"), "127.0.0.1:7070");
  EXPECT_EQ(dial_address(":7070"), "127.0.0.1:7070");
  EXPECT_EQ(dial_address("10.0.0.5:7070"), "10.0.0.5:7070");
}

TEST(Client, UnreachableCoordinatorIsUnavailableAndSaysWhere) {
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  const std::string addr = "127.0.0.1:" + std::to_string(*port);
  CoordinatorClient client(
      addr, RpcClientOptions{std::chrono::milliseconds(2000), 2, std::chrono::milliseconds(10)});
  auto start = std::chrono::steady_clock::now();
  auto r = client.list_jobs();
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find(addr), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("unreachable"), std::string::npos) << r.status().message();
  EXPECT_LT(took, std::chrono::seconds(5)) << "fails fast, does not hang";
}

TEST(Client, RetriesOnlyIdempotentCalls) {
  int attempts = 0;
  RpcClientOptions o{std::chrono::milliseconds(100), 3, std::chrono::milliseconds(1)};
  Status s = call_with_retry("x:1", o, true, [&](grpc::ClientContext*) {
    ++attempts;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  });
  EXPECT_EQ(attempts, 4);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  attempts = 0;
  s = call_with_retry("x:1", o, false, [&](grpc::ClientContext*) {
    ++attempts;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  });
  EXPECT_EQ(attempts, 1);
  attempts = 0;
  s = call_with_retry("x:1", o, true, [&](grpc::ClientContext*) {
    ++attempts;
    return attempts < 3 ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "down") : grpc::Status::OK;
  });
  EXPECT_TRUE(s.is_ok());
  EXPECT_EQ(attempts, 3);
  attempts = 0;
  s = call_with_retry("x:1", o, true, [&](grpc::ClientContext*) {
    ++attempts;
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad");
  });
  EXPECT_EQ(attempts, 1) << "only transport failures are retried";
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST(Server, RefusesABadListenAddress) {
  EXPECT_EQ(RpcServer::start("no-port", {}).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern
