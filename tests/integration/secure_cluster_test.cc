// A secured cluster as an operator runs it: certificates and tokens from
// scripts/make-certs.sh, a cluster file with `tls: {enabled: true}` and `auth.tokens`,
// `tern cluster up`, then the CLI with the file's token (served), without a token, with a
// wrong one and in plain text (each refused, nothing changed), a spec whose paths leave the
// allowed directories (refused, field named), a job run to SUCCEEDED over mTLS (the real
// tern-trainer when it is built, else the fake one), and the coordinator's /metrics and
// /healthz over HTTP.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "rpc/http_server.h"
#include "testing/processes.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

struct Output {
  int status = -1;
  std::string out;
  std::string err;
};

std::string source_dir() {
  const char* d = std::getenv("TERN_SOURCE_DIR");
  return d ? d : ".";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Pids of processes whose command line mentions `needle` (this test's daemons and trainers).
std::vector<pid_t> processes_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = slurp(e.path() / "cmdline");
    for (auto& c : cmd) c = c == '\0' ? ' ' : c;
    if (contains(cmd, needle)) out.push_back(std::stoi(pid));
  }
  return out;
}

class SecureClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tern_secure_it_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (up_) run({bin("tern"), "cluster", "down", cluster_, "--grace", "2"});
    for (pid_t p : processes_mentioning(dir_.string())) ::kill(p, SIGKILL);
    fs::remove_all(dir_);
  }

  // Runs a command to completion; TERN_TOKEN is empty unless `token_env` is given, so the
  // caller's environment cannot lend the CLI a token.
  Output run(std::vector<std::string> argv, const std::string& token_env = "") {
    static int n = 0;
    fs::path err = dir_ / ("stderr-" + std::to_string(n++));
    SpawnOptions o;
    o.argv = std::move(argv);
    o.env = {{"TERN_TOKEN", token_env}};
    o.pipe_stdout = true;
    o.stderr_file = err.string();
    auto p = Subprocess::spawn(o);
    EXPECT_TRUE(p.is_ok());
    if (!p.is_ok()) return {};
    LineReader reader((*p)->stdout_fd());
    std::vector<std::string> lines;
    while (reader.read_lines(&lines, 200ms)) {
    }
    Output r;
    r.status = (*p)->wait();
    for (auto& l : lines) r.out += l + "\n";
    r.err = slurp(err);
    return r;
  }
  Output tern(std::vector<std::string> args, const std::string& file,
              const std::string& token_env = "") {
    args.insert(args.begin(), bin("tern"));
    args.insert(args.end(), {"--cluster", file});
    return run(args, token_env);
  }

  // cluster.yaml: the coordinator's and daemons' file (server and client certificates, the
  // users' tokens, the admin token for this machine). client.yaml: a user's file with the
  // client certificate and no token. TLS and token paths are relative to the files.
  void write_cluster_files(const std::string& trainer) {
    auto port = find_free_port();
    ASSERT_TRUE(port.is_ok());
    Result<int> metrics = *port;
    while (metrics.is_ok() && *metrics == *port) metrics = find_free_port();
    ASSERT_TRUE(metrics.is_ok());
    port_ = *port;
    metrics_port_ = *metrics;
    const std::string common =
        "name: sec\n"
        "coordinator: {listen: 127.0.0.1:" +
        std::to_string(*port) +
        ", heartbeat_ms: 100, lease_ms: 3000, metrics_port: " + std::to_string(metrics_port_) +
        "}\n"
        "state_dir: " +
        (dir_ / "state").string() +
        "\n"
        "trainer: " +
        trainer +
        "\n"
        "regions:\n"
        "  - {name: local, workers: 2, slots: 1}\n";
    cluster_ = (dir_ / "cluster.yaml").string();
    std::ofstream(cluster_) << common
                            << "tls:\n"
                               "  enabled: true\n"
                               "  ca: certs/ca.crt\n"
                               "  cert: certs/server.crt\n"
                               "  key: certs/server.key\n"
                               "  client_cert: certs/client.crt\n"
                               "  client_key: certs/client.key\n"
                               "auth:\n"
                               "  tokens:\n"
                               "    - {user: admin, token_file: certs/admin.token}\n"
                               "    - {user: ops, token_file: certs/ops.token}\n"
                               "  token_file: certs/admin.token\n";
    client_ = (dir_ / "client.yaml").string();
    std::ofstream(client_)
        << common
        << "tls: {enabled: true, ca: certs/ca.crt, client_cert: certs/client.crt, "
           "client_key: certs/client.key}\n";
  }

  std::string token(const std::string& user) {
    std::string t = slurp(dir_ / "certs" / (user + ".token"));
    return t.substr(0, t.find('\n'));
  }

  std::string write_job(const std::string& name, const std::string& body) {
    fs::path p = dir_ / (name + ".yaml");
    std::ofstream(p) << "name: " << name << "\n" << body;
    return p.string();
  }

  size_t job_count() {
    Output o = tern({"jobs", "--json"}, cluster_);
    EXPECT_EQ(o.status, 0) << o.err;
    auto j = json::parse(o.out, nullptr, false);
    return j.is_discarded() ? 0 : j["jobs"].size();
  }

  fs::path dir_;
  std::string cluster_;
  std::string client_;
  int port_ = 0;          // the coordinator's gRPC port
  int metrics_port_ = 0;  // its HTTP /metrics and /healthz
  bool up_ = false;
};

TEST_F(SecureClusterTest, TlsAndTokensEndToEnd) {
  const std::string make = "TERN_TOKEN_USERS='admin ops' " + source_dir() +
                           "/scripts/make-certs.sh " + (dir_ / "certs").string() + " >" +
                           (dir_ / "make-certs.log").string() + " 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0) << slurp(dir_ / "make-certs.log");
  const bool real_trainer = access(bin("tern-trainer").c_str(), X_OK) == 0;
  write_cluster_files(real_trainer ? bin("tern-trainer")
                                   : source_dir() + "/tests/worker/fake_trainer.sh");

  Output up = run({bin("tern"), "cluster", "up", cluster_});
  ASSERT_EQ(up.status, 0) << up.out << up.err;
  up_ = true;
  EXPECT_TRUE(contains(slurp(dir_ / "state" / "logs" / "coordinator.log"), "mTLS"))
      << "the coordinator says it serves mTLS";

  // The file's token: served, and the daemons (which use the same file) are registered.
  Output workers = tern({"workers", "--json"}, cluster_);
  ASSERT_EQ(workers.status, 0) << workers.err;
  auto w = json::parse(workers.out);
  ASSERT_EQ(w["workers"].size(), 2u) << workers.out;
  for (const auto& x : w["workers"]) EXPECT_EQ(x["state"], "READY");

  // No token: refused, and the message says how to give one.
  Output none = tern({"workers"}, client_);
  EXPECT_NE(none.status, 0);
  EXPECT_TRUE(contains(none.err, "UNAUTHENTICATED")) << none.err;
  EXPECT_TRUE(contains(none.err, "token")) << none.err;
  EXPECT_TRUE(contains(none.err, "--token")) << "says the fix: " << none.err;
  EXPECT_TRUE(none.out.empty()) << "no worker list leaks: " << none.out;

  // Another user's token, by flag or by TERN_TOKEN: served.
  Output ops = tern({"workers", "--token", token("ops")}, client_);
  EXPECT_EQ(ops.status, 0) << ops.err;
  EXPECT_TRUE(contains(ops.out, "local-0")) << ops.out;
  EXPECT_EQ(tern({"jobs"}, client_, token("ops")).status, 0);

  // A wrong token: refused; and a refused submit queues nothing.
  std::string wrong = token("admin");
  wrong[0] = wrong[0] == 'f' ? 'e' : 'f';
  const std::string job = write_job("sec-denied", "workers: 1\ndata: {source: synthetic}\n");
  Output denied = tern({"submit", job, "--token", wrong}, client_);
  EXPECT_NE(denied.status, 0);
  EXPECT_TRUE(contains(denied.err, "invalid bearer token")) << denied.err;
  Output anonymous = tern({"submit", job}, client_);
  EXPECT_NE(anonymous.status, 0);
  EXPECT_TRUE(contains(anonymous.err, "token")) << anonymous.err;
  EXPECT_EQ(job_count(), 0u) << "refused submits queue nothing";

  // Plain text to the TLS port, even with the right token: no answer.
  Output plain = run({bin("tern"), "jobs", "--coordinator", "127.0.0.1:" + std::to_string(port_),
                      "--token", token("admin")});
  EXPECT_NE(plain.status, 0) << plain.out;
  EXPECT_TRUE(plain.out.empty()) << plain.out;
  // ... and the message says why (not "is it running?") and what to do (issue #18 item 9).
  EXPECT_EQ(plain.status, 2) << plain.err;
  EXPECT_TRUE(contains(plain.err, "speaks TLS")) << plain.err;
  EXPECT_TRUE(contains(plain.err, "--cluster")) << plain.err;
  EXPECT_FALSE(contains(plain.err, "Is it running")) << plain.err;

  // A spec that would read a daemon's key: refused at SubmitJob with the field named.
  Output escape =
      tern({"submit", write_job("sec-escape", "workers: 1\ndata: {source: fashion_mnist, path: " +
                                                  (dir_ / "certs").string() + "}\n")},
           cluster_);
  EXPECT_EQ(escape.status, 2) << escape.out << escape.err;
  EXPECT_TRUE(contains(escape.err, "data.path")) << escape.err;
  EXPECT_TRUE(contains(escape.err, "outside the directories")) << escape.err;
  EXPECT_EQ(job_count(), 0u);

  // A job over mTLS: the daemons receive the task and report progress to the end.
  const std::string spec = write_job(
      "sec-job", real_trainer ? "workers: 2\nmodel: {type: mlp}\n"
                                "data: {source: synthetic, train_size: 256, test_size: 64}\n"
                                "train: {steps: 5, batch_size: 32, log_every: 1}\n"
                              : "workers: 2\ndata: {source: synthetic, train_size: 256, "
                                "test_size: 64}\ntrain: {epochs: 1}\n");
  Output watched = tern({"submit", spec, "--watch"}, cluster_);
  ASSERT_EQ(watched.status, 0) << watched.out << watched.err;
  EXPECT_TRUE(contains(watched.out, "j-1 SUCCEEDED")) << watched.out;
  if (!real_trainer) std::cerr << "note: " << bin("tern-trainer") << " not built; ran the fake\n";

  // /healthz and /metrics over HTTP on the metrics port.
  auto health = http_get("127.0.0.1", metrics_port_, "/healthz");
  ASSERT_TRUE(health.is_ok()) << health.status().to_string();
  EXPECT_EQ(health->status, 200);
  auto metrics = http_get("127.0.0.1", metrics_port_, "/metrics");
  ASSERT_TRUE(metrics.is_ok()) << metrics.status().to_string();
  EXPECT_EQ(metrics->status, 200);
  EXPECT_TRUE(contains(metrics->content_type, "version=0.0.4")) << metrics->content_type;
  const std::string& m = metrics->body;
  EXPECT_TRUE(contains(m, "# TYPE tern_jobs gauge")) << m;
  EXPECT_TRUE(contains(m, "tern_jobs{state=\"SUCCEEDED\"} 1")) << m;
  EXPECT_TRUE(contains(m, "tern_jobs{state=\"PENDING\"} 0")) << m;
  EXPECT_TRUE(contains(m, "# TYPE tern_workers gauge")) << m;
  EXPECT_TRUE(contains(m, "tern_workers{state=\"READY\"} 2")) << m;
  EXPECT_TRUE(contains(m, "tern_worker_slots 2")) << m;
  EXPECT_TRUE(contains(m, "tern_rpc_requests_total{method=\"SubmitJob\",code=\"OK\"} 1")) << m;
  EXPECT_TRUE(
      contains(m, "tern_rpc_requests_total{method=\"SubmitJob\",code=\"INVALID_ARGUMENT\"} 1"))
      << m;

  Output down = run({bin("tern"), "cluster", "down", cluster_});
  EXPECT_EQ(down.status, 0) << down.err;
  up_ = false;
  EXPECT_TRUE(processes_mentioning(dir_.string()).empty()) << "daemons are gone";
}

// Issue 18, items 3 and 8 end to end: a cluster file with roles. The daemons that `tern
// cluster up` starts send the worker token (a user token would be refused on the worker API),
// the CLI's user token submits, the worker token cannot submit or cancel, and /metrics needs
// its own bearer token on a loopback-only listener.
TEST_F(SecureClusterTest, RolesSeparateUsersFromWorkers) {
  const std::string make = "TERN_TOKEN_USERS='admin ops workers metrics' " + source_dir() +
                           "/scripts/make-certs.sh " + (dir_ / "certs").string() + " >" +
                           (dir_ / "make-certs.log").string() + " 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0) << slurp(dir_ / "make-certs.log");
  write_cluster_files(source_dir() + "/tests/worker/fake_trainer.sh");
  std::string text = slurp(cluster_);
  const std::string old_auth = text.substr(text.find("auth:\n"));
  text.replace(text.find("auth:\n"), old_auth.size(),
               "auth:\n"
               "  tokens:\n"
               "    - {user: admin, token_file: certs/admin.token, role: admin}\n"
               "    - {user: ops, token_file: certs/ops.token, role: user}\n"
               "    - {user: workers, token_file: certs/workers.token, role: worker}\n"
               "  token_file: certs/ops.token\n"
               "  worker_token_file: certs/workers.token\n");
  text.replace(text.find("metrics_port:"), 0, "metrics_token_file: certs/metrics.token, ");
  std::ofstream(cluster_) << text;

  Output up = run({bin("tern"), "cluster", "up", cluster_});
  ASSERT_EQ(up.status, 0) << up.out << up.err;
  up_ = true;
  Output workers = tern({"workers", "--json"}, cluster_);
  ASSERT_EQ(workers.status, 0) << workers.err;
  ASSERT_EQ(json::parse(workers.out)["workers"].size(), 2u)
      << "daemons registered with the worker token";

  const std::string spec = write_job("roles",
                                     "workers: 2\ndata: {source: synthetic, train_size: 256, "
                                     "test_size: 64}\ntrain: {epochs: 1}\n");
  Output forged = tern({"submit", spec, "--token", token("workers")}, client_);
  EXPECT_NE(forged.status, 0);
  EXPECT_TRUE(contains(forged.err, "PERMISSION_DENIED")) << forged.err;
  EXPECT_TRUE(contains(forged.err, "role worker")) << forged.err;
  EXPECT_EQ(job_count(), 0u) << "a worker token queued a job";

  Output watched = tern({"submit", spec, "--watch"}, cluster_);  // the file's user token
  ASSERT_EQ(watched.status, 0) << watched.out << watched.err;
  EXPECT_TRUE(contains(watched.out, "j-1 SUCCEEDED")) << watched.out;
  Output cancel = tern({"cancel", "j-1", "--token", token("workers")}, client_);
  EXPECT_NE(cancel.status, 0);
  EXPECT_TRUE(contains(cancel.err, "PERMISSION_DENIED")) << cancel.err;

  auto anonymous = http_get("127.0.0.1", metrics_port_, "/metrics");
  ASSERT_TRUE(anonymous.is_ok()) << anonymous.status().to_string();
  EXPECT_EQ(anonymous->status, 401);
  auto metrics = http_get("127.0.0.1", metrics_port_, "/metrics", token("metrics"));
  ASSERT_TRUE(metrics.is_ok());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_TRUE(contains(metrics->body, "tern_jobs{state=\"SUCCEEDED\"} 1")) << metrics->body;
  EXPECT_FALSE(http_get("127.0.0.2", metrics_port_, "/healthz").is_ok())
      << "the metrics server listens beyond loopback";
}

}  // namespace
}  // namespace tern
