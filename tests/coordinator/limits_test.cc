// The coordinator's limits over gRPC, as a client meets them: an oversized spec, an oversized
// message, a full queue, a spec path outside the allowed directories and a client over its
// rate are each refused with a status that names the limit, and the job list is unchanged.
// Then /metrics and /healthz over HTTP. Plain text on loopback with bearer tokens (the TLS
// path is covered by tests/rpc/security_test.cc).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/subprocess.h"
#include "coordinator/coordinator_server.h"
#include "rpc/client.h"
#include "rpc/http_server.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_limits_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    options_.listen = "127.0.0.1:0";
    options_.core.state_dir = dir_.string();
    options_.core.max_spec_bytes = 1024;
    options_.core.max_queued_jobs = 2;
    options_.core.paths.write_roots = {(dir_ / "work").string()};
    options_.core.paths.read_roots = {"/usr/share/datasets"};
    options_.max_message_bytes = 64 << 10;
    options_.guard = CallGuardOptions{0.001, 20};
    options_.security.auth = std::make_shared<TokenAuthenticator>(
        std::vector<std::pair<std::string, std::string>>{{"alice", kAlice}, {"bob", kBob}});
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  void start() {
    auto s = CoordinatorServer::start(options_, &clock_);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }
  CoordinatorClient client(const std::string& token) {
    auto security = std::make_shared<ClientSecurity>();
    security->token = token;
    RpcClientOptions o;
    o.retries = 0;
    o.security = security;
    return CoordinatorClient(server_->address(), o);
  }
  static v1::SubmitJobRequest request(const std::string& extra = "") {
    v1::SubmitJobRequest r;
    r.set_spec_yaml(
        "name: lim\nworkers: 1\ndata: {source: synthetic, train_size: 256, "
        "test_size: 64}\n" +
        extra);
    r.set_source_name("lim.yaml");
    return r;
  }
  size_t jobs() const { return server_->core()->list_jobs().size(); }

  const std::string kAlice = std::string(32, 'a');
  const std::string kBob = std::string(32, 'b');
  fs::path dir_;
  ManualClock clock_;
  CoordinatorServerOptions options_;
  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(LimitsTest, OversizedSpecIsRefusedNamingTheLimit) {
  start();
  auto r = client(kAlice).submit_job(request("# " + std::string(2000, 'x') + "\n"));
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  const std::string& m = r.status().message();
  EXPECT_TRUE(contains(m, "lim.yaml")) << m;
  EXPECT_TRUE(contains(m, "at most 1024")) << m;
  EXPECT_TRUE(contains(m, "coordinator.max_spec_bytes")) << m;
  // Overrides count too: a small spec cannot smuggle a large one in through --set.
  v1::SubmitJobRequest big_overrides = request();
  for (int i = 0; i < 40; ++i) big_overrides.add_overrides("name=" + std::string(30, 'y'));
  EXPECT_EQ(client(kAlice).submit_job(big_overrides).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(jobs(), 0u);
}

TEST_F(LimitsTest, OversizedMessageIsResourceExhausted) {
  start();
  auto r = client(kAlice).submit_job(request("# " + std::string(100 << 10, 'x') + "\n"));
  ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), std::to_string(64 << 10))) << r.status().message();
  EXPECT_EQ(jobs(), 0u);
  EXPECT_TRUE(client(kAlice).list_jobs().is_ok()) << "the server carries on";
}

TEST_F(LimitsTest, FullQueueIsResourceExhausted) {
  start();
  auto alice = client(kAlice);
  ASSERT_TRUE(alice.submit_job(request()).is_ok());
  ASSERT_TRUE(alice.submit_job(request()).is_ok());
  auto r = alice.submit_job(request());
  ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), "coordinator.max_queued_jobs"))
      << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "2 jobs are pending")) << r.status().message();
  EXPECT_EQ(jobs(), 2u);
}

TEST_F(LimitsTest, SpecPathsOutsideTheAllowedDirectoriesAreRefused) {
  start();
  auto r = client(kAlice).submit_job(request("recovery: {dir: /etc/cron.d}\n"));
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), "recovery.dir '/etc/cron.d'")) << r.status().message();
  v1::SubmitJobRequest read = request();
  read.set_spec_yaml("name: lim\nworkers: 1\ndata: {source: fashion_mnist, path: /root/.ssh}\n");
  r = client(kAlice).submit_job(read);
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), "data.path '/root/.ssh'")) << r.status().message();
  EXPECT_EQ(jobs(), 0u);
}

TEST_F(LimitsTest, RateLimitIsPerUserAndRefusedSubmitsQueueNothing) {
  options_.guard = CallGuardOptions{0.001, 3};
  options_.core.max_queued_jobs = 100;
  start();
  auto alice = client(kAlice);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(alice.submit_job(request()).is_ok()) << i;
  auto r = alice.submit_job(request());
  ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), "SubmitJob refused")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "coordinator.rate_limit")) << r.status().message();
  EXPECT_EQ(jobs(), 3u);
  EXPECT_TRUE(client(kBob).submit_job(request()).is_ok()) << "bob has his own bucket";
  EXPECT_EQ(jobs(), 4u);
  // Worker registrations have a bucket of their own (heartbeats and events are limited per
  // worker by the core, after the session check).
  WorkerServiceClient worker(server_->address(), alice.options());
  v1::RegisterWorkerRequest reg;
  reg.set_name("w");
  reg.set_host("127.0.0.1");
  reg.set_region("r");
  reg.set_slots(1);
  EXPECT_TRUE(worker.register_worker(reg).is_ok());
}

TEST_F(LimitsTest, MetricsAndHealthOverHttp) {
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  options_.metrics_port = *port;
  start();
  ASSERT_EQ(server_->metrics_port(), *port);
  auto alice = client(kAlice);
  ASSERT_TRUE(alice.submit_job(request()).is_ok());
  ASSERT_EQ(client(std::string(32, 'x')).list_jobs().status().code(), StatusCode::kUnauthenticated);

  auto health = http_get("127.0.0.1", *port, "/healthz");
  ASSERT_TRUE(health.is_ok()) << health.status().to_string();
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
  auto m = http_get("127.0.0.1", *port, "/metrics");
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->status, 200);
  EXPECT_TRUE(contains(m->content_type, "text/plain; version=0.0.4")) << m->content_type;
  EXPECT_TRUE(contains(m->body, "# TYPE tern_jobs gauge")) << m->body;
  EXPECT_TRUE(contains(m->body, "tern_jobs{state=\"PENDING\"} 1")) << m->body;
  EXPECT_TRUE(contains(m->body, "tern_workers{state=\"READY\"} 0")) << m->body;
  EXPECT_TRUE(contains(m->body, "tern_rpc_requests_total{method=\"SubmitJob\",code=\"OK\"} 1"))
      << m->body;
  auto missing = http_get("127.0.0.1", *port, "/secrets");
  ASSERT_TRUE(missing.is_ok());
  EXPECT_EQ(missing->status, 404);
}

}  // namespace
}  // namespace tern
