// The worker plane's trust (issue 18, item 3 and item 7's registration part): session ids
// nobody can guess, events and logs only from the worker a task is assigned to, a per-worker
// call rate, a per-job log quota and chunk cap, re-registration of a live worker's name only
// with its session, registrations with unknown regions, bad hosts, slots or ports refused;
// and roles on a cluster with tokens (user tokens cannot call the WorkerService, worker
// tokens cannot submit or cancel), over a real in-process gRPC server.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/cluster_config.h"
#include "common/subprocess.h"
#include "coordinator/coordinator_core.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/metrics.h"
#include "rpc/client.h"
#include "rpc/http_server.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string spec(const std::string& name, int workers) {
  return "name: " + name + "\nworkers: " + std::to_string(workers) +
         "\ndata: {source: synthetic, train_size: 512, test_size: 128}\n";
}

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_identity_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    options_.state_dir = dir_.string();
    options_.lease_ms = 1000;
    options_.heartbeat_ms = 100;
  }
  void TearDown() override {
    core_.reset();
    fs::remove_all(dir_);
  }
  void open() {
    core_.reset();
    auto c = CoordinatorCore::open(options_, &clock_);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    core_ = std::move(c).value();
  }
  RegistrationResult add(const std::string& name, uint64_t session = 0) {
    WorkerRegistration reg{name, "127.0.0.1", "local", 1, {40000 + port_++}};
    reg.session = session;
    auto r = core_->register_worker(reg);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : RegistrationResult{};
  }
  Job job(const std::string& id) { return *core_->get_job(id); }
  static TaskEvent progress(const TaskKey& k, int64_t step) {
    TaskEvent e;
    e.kind = TaskEvent::Kind::kProgress;
    e.task = k;
    e.step = step;
    e.total_steps = 100;
    e.loss = 0.5;
    return e;
  }
  static TaskEvent log(const TaskKey& k, int64_t offset, const std::string& data) {
    TaskEvent e;
    e.kind = TaskEvent::Kind::kLog;
    e.task = k;
    e.log_offset = offset;
    e.log_data = data;
    return e;
  }
  static TaskEvent exited(const TaskKey& k, int code) {
    TaskEvent e;
    e.kind = TaskEvent::Kind::kExited;
    e.task = k;
    e.exit_code = code;
    return e;
  }
  std::string log_file(const std::string& id, int rank) {
    std::ifstream in(dir_ / "logs" / "jobs" / id / ("rank-" + std::to_string(rank) + ".log"),
                     std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
  ManualClock clock_;
  CoordinatorOptions options_;
  std::unique_ptr<CoordinatorCore> core_;
  int port_ = 0;
};

TEST_F(IdentityTest, SessionsAreRandom64BitSecrets) {
  open();
  std::set<uint64_t> seen;
  std::vector<uint64_t> order;
  for (int i = 0; i < 64; ++i) {
    auto r = add("w" + std::to_string(i));
    EXPECT_NE(r.session, 0u);
    seen.insert(r.session);
    order.push_back(r.session);
  }
  EXPECT_EQ(seen.size(), 64u);
  // Sequential ids (1, 2, 3...) or small numbers are guessable: every session must use the
  // high bits and none may follow its predecessor by a small step.
  int high = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    high += order[i] > (uint64_t{1} << 48);
    if (i > 0) {
      const uint64_t d =
          order[i] > order[i - 1] ? order[i] - order[i - 1] : order[i - 1] - order[i];
      EXPECT_GT(d, uint64_t{1} << 20) << "sessions " << order[i - 1] << " and " << order[i];
    }
  }
  EXPECT_GT(high, 56) << "sessions do not look random";
  // The session survives a restart of the coordinator (journaled), and stays the only key.
  const auto first = *core_->list_workers().begin();
  open();
  EXPECT_TRUE(core_->heartbeat(first.id, first.session, {}, {}).is_ok());
}

TEST_F(IdentityTest, GuessedSessionsCannotReportProgress) {
  open();
  auto a = add("a");
  const std::string id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  ASSERT_EQ(job(id).state, JobState::kRunning);
  // What an attacker would try with sequential sessions: small numbers and neighbours.
  for (uint64_t guess = 0; guess < 200; ++guess) {
    for (uint64_t s : {guess, a.session + guess + 1, a.session - guess - 1}) {
      if (s == a.session) continue;
      auto r = core_->report_events("a", s, {progress({id, 0, 1}, 77), exited({id, 0, 1}, 0)});
      ASSERT_FALSE(r.is_ok());
      EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
    }
  }
  EXPECT_EQ(job(id).ranks[0].step, 0);
  EXPECT_EQ(job(id).state, JobState::kRunning);
}

TEST_F(IdentityTest, AWorkerCannotReportOrLogForAnotherWorkersTask) {
  open();
  auto a = add("a");
  const std::string id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  ASSERT_EQ(job(id).ranks[0].worker_id, "a");
  auto b = add("b");
  const TaskKey task{id, 0, 1};
  auto n = core_->report_events(
      "b", b.session,
      {progress(task, 50), log(task, 0, "forged line\n"), exited(task, 0), exited(task, 3)});
  ASSERT_TRUE(n.is_ok()) << n.status().to_string();
  EXPECT_EQ(*n, 0) << "nothing about a's task may be applied from b";
  EXPECT_EQ(job(id).state, JobState::kRunning);
  EXPECT_EQ(job(id).ranks[0].step, 0);
  EXPECT_EQ(log_file(id, 0), "") << "b wrote into a's log";
  EXPECT_EQ(core_->worker_plane_stats().events_dropped, 4u);
  EXPECT_TRUE(
      contains(render_coordinator_metrics(*core_, nullptr), "tern_worker_events_dropped_total 4"));
  // A log of an unknown job, or of a job not placed yet, is no file either.
  const std::string pending = core_->submit_job(spec("two", 2), {}, "t.yaml")->id;
  n = core_->report_events("b", b.session,
                           {log({pending, 1, 0}, 0, "x"), log({"j-99", 0, 1}, 0, "y")});
  EXPECT_EQ(*n, 0);
  EXPECT_FALSE(fs::exists(dir_ / "logs" / "jobs" / "j-99"));
  // The owner still can.
  n = core_->report_events("a", a.session, {progress(task, 5), log(task, 0, "real line\n")});
  EXPECT_EQ(*n, 2);
  EXPECT_EQ(job(id).ranks[0].step, 5);
  EXPECT_EQ(log_file(id, 0), "real line\n");
}

TEST_F(IdentityTest, HostileLogOffsetsAreDroppedNotThrown) {
  open();
  auto a = add("a");
  const std::string id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  const TaskKey task{id, 0, 1};
  ASSERT_TRUE(core_->report_events("a", a.session, {log(task, 0, "0123456789")}).is_ok());
  for (int64_t offset :
       {int64_t{-1}, int64_t{-5}, std::numeric_limits<int64_t>::min(),
        std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::max() - 3}) {
    auto n = core_->report_events("a", a.session, {log(task, offset, "abc")});
    ASSERT_TRUE(n.is_ok()) << offset;
    EXPECT_EQ(*n, 0) << offset;
  }
  EXPECT_EQ(log_file(id, 0), "0123456789");
}

TEST_F(IdentityTest, LogQuotaKeepsAMarkerAndTheJobGoesOn) {
  options_.max_log_bytes_per_job = 64 << 10;
  options_.max_log_chunk_bytes = 16 << 10;
  options_.worker_rate_burst = 1000;
  open();
  auto a = add("a");
  const std::string id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  const TaskKey task{id, 0, 1};
  // 1 MiB in 8 KiB chunks, as fast as the daemon may send it.
  const std::string chunk(8 << 10, 'x');
  for (int64_t off = 0; off < (1 << 20); off += chunk.size()) {
    auto n = core_->report_events("a", a.session, {log(task, off, chunk)});
    ASSERT_TRUE(n.is_ok()) << n.status().to_string();
  }
  std::string kept = log_file(id, 0);
  EXPECT_LE(kept.size(), (64u << 10) + 300u);
  EXPECT_GE(kept.size(), 64u << 10);
  EXPECT_TRUE(contains(kept, "log truncated")) << kept.substr(kept.size() - 200);
  EXPECT_TRUE(contains(kept, "coordinator.max_log_bytes_per_job"));
  EXPECT_EQ(kept.find("log truncated"), kept.rfind("log truncated")) << "one marker";
  EXPECT_GE(core_->worker_plane_stats().log_bytes_dropped, (1u << 20) - (64u << 10));
  // The job is unaffected: progress and a clean exit still count.
  ASSERT_EQ(*core_->report_events("a", a.session, {progress(task, 9), exited(task, 0)}), 2);
  EXPECT_EQ(job(id).state, JobState::kSucceeded);
}

TEST_F(IdentityTest, OversizedLogChunkIsCut) {
  options_.max_log_chunk_bytes = 4096;
  open();
  auto a = add("a");
  const std::string id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  ASSERT_TRUE(core_->report_events("a", a.session, {log({id, 0, 1}, 0, std::string(1 << 20, 'y'))})
                  .is_ok());
  std::string kept = log_file(id, 0);
  EXPECT_LE(kept.size(), 4096u);
  EXPECT_TRUE(contains(kept, "coordinator.max_log_chunk_bytes")) << kept.substr(3900);
}

TEST_F(IdentityTest, WorkerCallsAreRateLimitedPerWorker) {
  options_.worker_rate_per_s = 20;
  options_.worker_rate_burst = 40;
  options_.heartbeat_ms = 1000;  // the rate floor (2 beats/s + 10) stays below 20/s
  open();
  auto a = add("a");
  auto b = add("b");
  int ok = 0, refused = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = core_->report_events("a", a.session, {});
    if (r.is_ok()) {
      ++ok;
    } else {
      ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().to_string();
      EXPECT_TRUE(contains(r.status().message(), "coordinator.worker_rate_limit"));
      ++refused;
    }
  }
  EXPECT_EQ(ok, 40);
  EXPECT_EQ(refused, 160);
  EXPECT_EQ(core_->heartbeat("a", a.session, {}, {}).status().code(),
            StatusCode::kResourceExhausted);
  // Another worker has its own bucket, and calls without the session take nothing from a's.
  EXPECT_TRUE(core_->heartbeat("b", b.session, {}, {}).is_ok());
  clock_.advance_ms(1000);  // 20 calls come back
  for (int i = 0; i < 100; ++i) (void)core_->heartbeat("a", a.session + 1, {}, {});
  int later = 0;
  for (int i = 0; i < 100; ++i) later += core_->heartbeat("a", a.session, {}, {}).is_ok();
  EXPECT_EQ(later, 20);
  EXPECT_EQ(core_->worker_plane_stats().calls_throttled, 160u + 1u + 80u);
}

TEST_F(IdentityTest, ALiveWorkersNameNeedsItsSession) {
  open();
  auto a = add("a");
  const std::string id = core_->submit_job(spec("one", 1), {}, "o.yaml")->id;
  // Someone else asks for the name (no session, or a wrong one): refused, nothing changes.
  for (uint64_t s : {uint64_t{0}, a.session + 1, uint64_t{1}}) {
    WorkerRegistration reg{"a", "10.0.0.9", "local", 4, {}};
    reg.session = s;
    auto r = core_->register_worker(reg);
    ASSERT_EQ(r.status().code(), StatusCode::kAlreadyExists) << r.status().to_string();
    EXPECT_TRUE(contains(r.status().message(), "worker 'a' is registered and alive"))
        << r.status().message();
  }
  EXPECT_EQ(job(id).state, JobState::kRunning) << job(id).reason;
  EXPECT_TRUE(core_->heartbeat("a", a.session, {{id, 0, 1}}, {}).is_ok());
  EXPECT_EQ(core_->list_workers()[0].host, "127.0.0.1");
  EXPECT_EQ(core_->worker_plane_stats().registrations_refused, 3u);
  // The same daemon, restarted with its session: accepted (its old tasks are written off).
  auto again = add("a", a.session);
  EXPECT_NE(again.session, a.session);
  EXPECT_EQ(job(id).state, JobState::kFailed);
  EXPECT_TRUE(contains(job(id).reason, "worker a restarted")) << job(id).reason;
  // Once the lease expired (LOST), anyone may take the name over.
  clock_.advance_ms(2000);
  core_->tick();
  ASSERT_EQ(core_->list_workers()[0].state, WorkerState::kLost);
  auto taken = add("a");
  EXPECT_NE(taken.session, 0u);
  EXPECT_EQ(core_->list_workers()[0].state, WorkerState::kReady);
}

TEST_F(IdentityTest, RegistrationsAreValidated) {
  options_.regions = {"east", "west"};
  open();
  auto try_reg = [&](WorkerRegistration reg) { return core_->register_worker(reg).status(); };
  Status s = try_reg({"w", "127.0.0.1", "mars", 1, {}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      contains(s.message(), "region 'mars' is not one of the cluster file's regions (east, west)"))
      << s.message();
  for (const std::string& host : std::vector<std::string>{
           "", "bad host", "a/b", "x:y:z:", "999.1.1.1", "-a.example", "a..b", "a.-b", "host\n",
           std::string("a\0b", 3), std::string(300, 'h'), "$(reboot)", "[::1]"}) {
    s = try_reg({"w", host, "east", 1, {}});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "host '" << host << "'";
    EXPECT_TRUE(contains(s.message(), "host must be a host name or an IP address")) << s.message();
  }
  for (int slots : {0, -1, 4097, 1 << 30}) {
    s = try_reg({"w", "127.0.0.1", "east", slots, {}});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << slots;
    EXPECT_TRUE(contains(s.message(), "slots must be in [1, 4096]")) << s.message();
  }
  for (int port : {0, -1, 65536, 1 << 30}) {
    s = try_reg({"w", "127.0.0.1", "east", 1, {5000, port}});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << port;
    EXPECT_TRUE(contains(s.message(), "spare_ports must be in [1, 65535]")) << s.message();
  }
  EXPECT_TRUE(core_->list_workers().empty());
  for (const std::string& host :
       {"127.0.0.1", "::1", "fe80::1", "node-1.example.com", "localhost", "n1"}) {
    auto r = core_->register_worker({"w-" + std::to_string(port_++), host, "west", 2, {5000}});
    EXPECT_TRUE(r.is_ok()) << host << ": " << r.status().to_string();
  }
  auto r = core_->register_worker({"w", "10.1.2.3", "east", 4096, {1, 65535}});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(core_->heartbeat("w", r->session, {}, {70000}).status().code(),
            StatusCode::kInvalidArgument);
  // Without a cluster file any region name is accepted.
  options_.regions.clear();
  open();
  EXPECT_TRUE(core_->register_worker({"m", "127.0.0.1", "mars", 1, {}}).is_ok());
}

// ---------------------------------------------------------------- roles, over gRPC

class RolesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_roles_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    options_.listen = "127.0.0.1:0";
    options_.core.state_dir = dir_.string();
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  void start(std::shared_ptr<TokenAuthenticator> auth) {
    options_.security.auth = std::move(auth);
    auto s = CoordinatorServer::start(options_, &clock_);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }
  RpcClientOptions as(const std::string& token) {
    auto security = std::make_shared<ClientSecurity>();
    security->token = token;
    RpcClientOptions o;
    o.retries = 0;
    o.security = security;
    return o;
  }
  static v1::RegisterWorkerRequest reg(const std::string& name) {
    v1::RegisterWorkerRequest r;
    r.set_name(name);
    r.set_host("127.0.0.1");
    r.set_region("local");
    r.set_slots(1);
    r.add_spare_ports(40100);
    return r;
  }
  static v1::SubmitJobRequest submit() {
    v1::SubmitJobRequest r;
    r.set_spec_yaml(spec("roles", 1));
    r.set_source_name("roles.yaml");
    return r;
  }

  const std::string kUser = std::string(32, 'u');
  const std::string kWorker = std::string(32, 'w');
  const std::string kAdmin = std::string(32, 'a');
  fs::path dir_;
  ManualClock clock_;
  CoordinatorServerOptions options_;
  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(RolesTest, UserTokensCannotCallWorkerRpcsAndWorkerTokensCannotSubmit) {
  start(std::make_shared<TokenAuthenticator>(
      TokenAuthenticator::with_roles({{"alice", kUser, Role::kUser},
                                      {"daemons", kWorker, Role::kWorker},
                                      {"root", kAdmin, Role::kAdmin}})));
  WorkerServiceClient as_user(server_->address(), as(kUser));
  auto r = as_user.register_worker(reg("w1"));
  ASSERT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), "user 'alice' has role user")) << r.status().message();
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  EXPECT_EQ(as_user.heartbeat(hb).status().code(), StatusCode::kPermissionDenied);
  v1::ReportEventsRequest ev;
  ev.set_worker_id("w1");
  EXPECT_EQ(as_user.report_events(ev).status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(server_->core()->list_workers().empty());

  WorkerServiceClient as_worker(server_->address(), as(kWorker));
  auto w = as_worker.register_worker(reg("w1"));
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  hb.set_session(w->session());
  hb.add_spare_ports(40101);
  EXPECT_TRUE(as_worker.heartbeat(hb).is_ok());

  CoordinatorClient user_client(server_->address(), as(kUser));
  auto job = user_client.submit_job(submit());
  ASSERT_TRUE(job.is_ok()) << job.status().to_string();
  CoordinatorClient worker_client(server_->address(), as(kWorker));
  auto forged = worker_client.submit_job(submit());
  ASSERT_EQ(forged.status().code(), StatusCode::kPermissionDenied) << forged.status().to_string();
  EXPECT_TRUE(contains(forged.status().message(), "role worker")) << forged.status().message();
  EXPECT_EQ(worker_client.cancel_job(job->job_id()).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(server_->core()->list_jobs().size(), 1u);
  EXPECT_EQ(server_->core()->list_jobs()[0].state, JobState::kRunning);

  // Admin may do both.
  CoordinatorClient admin(server_->address(), as(kAdmin));
  EXPECT_TRUE(admin.list_jobs().is_ok());
  EXPECT_TRUE(
      WorkerServiceClient(server_->address(), as(kAdmin)).register_worker(reg("w2")).is_ok());
}

TEST_F(RolesTest, ClusterFileRolesAndTheLegacyAllAdminRule) {
  const fs::path d = dir_ / "cfg";
  fs::create_directories(d);
  for (auto [name, token] : {std::pair{"u", kUser}, {"w", kWorker}, {"a", kAdmin}})
    std::ofstream(d / (std::string(name) + ".token")) << token << "\n";
  const std::string head =
      "coordinator: {listen: 127.0.0.1:7070}\nregions: [{name: local}]\nauth:\n";
  auto with_roles =
      parse_cluster_config(head +
                               "  tokens: [{user: ann, token_file: u.token, role: user},\n"
                               "           {user: d, token_file: w.token, role: worker},\n"
                               "           {user: root, token_file: a.token, role: admin}, {user: "
                               "x, token_file: u.token}]\n"
                               "  token_file: u.token\n  worker_token_file: w.token\n",
                           (d / "c.yaml").string(), ClusterLoadOptions{true});
  ASSERT_TRUE(with_roles.is_ok()) << with_roles.status().to_string();
  EXPECT_EQ(with_roles->auth.worker_token_file, (d / "w.token").string());
  auto tokens = load_tokens(*with_roles);
  ASSERT_TRUE(tokens.is_ok());
  ASSERT_EQ(tokens->size(), 4u);
  EXPECT_EQ((*tokens)[0].role, Role::kUser);
  EXPECT_EQ((*tokens)[1].role, Role::kWorker);
  EXPECT_EQ((*tokens)[2].role, Role::kAdmin);
  EXPECT_EQ((*tokens)[3].role, Role::kUser) << "no role while others have one: least privilege";
  // A daemon sends the worker token, the CLI the user token.
  auto daemon = make_client_security(&*with_roles, "127.0.0.1:7070", "", true);
  ASSERT_TRUE(daemon.is_ok());
  EXPECT_EQ((*daemon)->token, kWorker);
  auto cli = make_client_security(&*with_roles, "127.0.0.1:7070", "", false);
  EXPECT_EQ((*cli)->token, kUser);

  auto bad =
      parse_cluster_config(head + "  tokens: [{user: ann, token_file: u.token, role: root}]\n",
                           (d / "c.yaml").string(), ClusterLoadOptions{true});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_TRUE(contains(bad.status().message(), "role")) << bad.status().message();
  EXPECT_TRUE(contains(bad.status().message(), "must be user, worker or admin"))
      << bad.status().message();

  // A file from before roles: every token keeps doing everything (the coordinator warns).
  auto legacy = parse_cluster_config(head + "  tokens: [{user: ann, token_file: u.token}]\n",
                                     (d / "c.yaml").string(), ClusterLoadOptions{true});
  ASSERT_TRUE(legacy.is_ok()) << legacy.status().to_string();
  auto legacy_tokens = load_tokens(*legacy);
  ASSERT_TRUE(legacy_tokens.is_ok());
  EXPECT_EQ((*legacy_tokens)[0].role, Role::kAdmin);
}

TEST_F(RolesTest, MetricsNeedTheTokenAndBindLoopbackByDefault) {
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  options_.metrics_port = *port;
  options_.metrics_token = std::string(48, 'm');
  start(std::make_shared<TokenAuthenticator>());
  auto none = http_get("127.0.0.1", *port, "/metrics");
  ASSERT_TRUE(none.is_ok()) << none.status().to_string();
  EXPECT_EQ(none->status, 401);
  auto user_token = http_get("127.0.0.1", *port, "/metrics", kUser);
  EXPECT_EQ(user_token->status, 401);
  auto ok = http_get("127.0.0.1", *port, "/metrics", options_.metrics_token);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->status, 200);
  EXPECT_TRUE(contains(ok->body, "tern_worker_calls_throttled_total 0")) << ok->body;
  EXPECT_EQ(http_get("127.0.0.1", *port, "/healthz")->status, 200);
  EXPECT_FALSE(http_get("127.0.0.2", *port, "/healthz").is_ok()) << "bound beyond loopback";

  // The cluster file's keys for it.
  const fs::path d = dir_ / "cfg";
  fs::create_directories(d);
  std::ofstream(d / "m.token") << options_.metrics_token << "\n";
  auto c = parse_cluster_config(
      "coordinator: {listen: 127.0.0.1:7070, metrics_port: 9090, metrics_host: 127.0.0.1,\n"
      "  metrics_token_file: m.token, worker_rate_limit: {per_s: 30, burst: 60},\n"
      "  max_log_bytes_per_job: 1048576, max_log_chunk_bytes: 65536}\nregions: [{name: local}]\n",
      (d / "c.yaml").string(), ClusterLoadOptions{true});
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->metrics.host, "127.0.0.1");
  EXPECT_EQ(c->metrics.token_file, (d / "m.token").string());
  EXPECT_DOUBLE_EQ(c->limits.worker_rate_per_s, 30);
  EXPECT_EQ(c->limits.worker_rate_burst, 60);
  EXPECT_EQ(c->limits.max_log_bytes_per_job, 1048576);
  EXPECT_EQ(c->limits.max_log_chunk_bytes, 65536);
  auto missing = parse_cluster_config(
      "coordinator: {listen: 127.0.0.1:7070, metrics_token_file: nope.token}\n"
      "regions: [{name: local}]\n",
      (d / "c.yaml").string(), ClusterLoadOptions{true});
  ASSERT_FALSE(missing.is_ok());
  EXPECT_TRUE(contains(missing.status().message(), "metrics_token_file"))
      << missing.status().message();
}

}  // namespace
}  // namespace tern
