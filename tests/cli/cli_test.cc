// The `tern` CLI: tables, coordinator address resolution, and the exit codes a user (or a
// script) relies on, by running the real binary.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli/client_commands.h"
#include "cli/table.h"
#include "common/subprocess.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

std::string bin(const std::string& name) {
  const char* dir = std::getenv("TERN_BIN_DIR");
  return std::string(dir ? dir : "build/bin") + "/" + name;
}

struct Output {
  int status = -1;
  std::string out, err;
};

Output run(std::vector<std::string> argv) {
  fs::path err = fs::temp_directory_path() / ("tern_cli_test_err_" + std::to_string(getpid()));
  SpawnOptions o;
  o.argv = std::move(argv);
  o.pipe_stdout = true;
  o.stderr_file = err.string();
  fs::remove(err);
  auto p = Subprocess::spawn(o);
  EXPECT_TRUE(p.is_ok());
  Output r;
  for (const auto& l : read_all_lines((*p)->stdout_fd())) r.out += l + "\n";
  r.status = (*p)->wait();
  std::ifstream in(err);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  fs::remove(err);
  return r;
}

TEST(Table, ColumnsAlignAndTheLastIsNotPadded) {
  Table t({"ID", "STATE"});
  t.add_row({"j-1", "RUNNING"});
  t.add_row({"j-10", "PENDING"});
  std::ostringstream os;
  t.print(os);
  EXPECT_EQ(os.str(), "ID    STATE\nj-1   RUNNING\nj-10  PENDING\n");
}

TEST(Table, Ages) {
  EXPECT_EQ(format_age(0), "-");
  EXPECT_EQ(format_age(42), "42s");
  EXPECT_EQ(format_age(600), "10m");
  EXPECT_EQ(format_age(3 * 3600), "3h");
}

TEST(ResolveCoordinator, FlagThenClusterFileThenEnvThenDefault) {
  unsetenv("TERN_COORDINATOR");
  ClientOptions o;
  EXPECT_EQ(*resolve_coordinator(o), "127.0.0.1:7070");
  setenv("TERN_COORDINATOR", "10.1.2.3:9000", 1);
  EXPECT_EQ(*resolve_coordinator(o), "10.1.2.3:9000");
  fs::path file =
      fs::temp_directory_path() / ("tern_cli_cluster_" + std::to_string(getpid()) + ".yaml");
  std::ofstream(file) << "name: c\ncoordinator: {listen: 0.0.0.0:7171}\nregions: [{name: r}]\n";
  o.cluster_file = file.string();
  auto wildcard = resolve_coordinator(o);
  ASSERT_FALSE(wildcard.is_ok()) << "plain text on a non-loopback address is refused";
  EXPECT_NE(wildcard.status().message().find("loopback"), std::string::npos)
      << wildcard.status().to_string();
  std::ofstream(file) << "name: c\ncoordinator: {listen: 127.0.0.1:7171}\nregions: [{name: r}]\n";
  EXPECT_EQ(*resolve_coordinator(o), "127.0.0.1:7171");
  o.coordinator = "h:1";
  EXPECT_EQ(*resolve_coordinator(o), "h:1");
  o.coordinator.clear();
  std::ofstream(file) << "name: c\ncoordinator: {listen: 7171}\nregions: [{name: r}]\n";
  EXPECT_EQ(resolve_coordinator(o).status().code(), StatusCode::kInvalidArgument);
  fs::remove(file);
  unsetenv("TERN_COORDINATOR");
}

TEST(TernBinary, UnreachableCoordinatorExitsThreeWithAClearMessage) {
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  const std::string addr = "127.0.0.1:" + std::to_string(*port);
  for (std::vector<std::string> cmd : {std::vector<std::string>{"jobs"},
                                       {"workers"},
                                       {"status", "j-1"},
                                       {"cancel", "j-1"},
                                       {"logs", "j-1"}}) {
    cmd.insert(cmd.begin(), bin("tern"));
    cmd.insert(cmd.end(), {"--coordinator", addr});
    Output o = run(cmd);
    EXPECT_EQ(o.status, kExitUnreachable) << cmd[1] << ": " << o.err;
    EXPECT_NE(o.err.find("unreachable"), std::string::npos) << o.err;
    EXPECT_NE(o.err.find(addr), std::string::npos) << o.err;
    EXPECT_NE(o.err.find("tern cluster up"), std::string::npos) << "says what to do: " << o.err;
  }
}

TEST(TernBinary, EnvironmentNamesTheCoordinator) {
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  const std::string addr = "127.0.0.1:" + std::to_string(*port);
  setenv("TERN_COORDINATOR", addr.c_str(), 1);
  Output o = run({bin("tern"), "jobs"});
  unsetenv("TERN_COORDINATOR");
  EXPECT_EQ(o.status, kExitUnreachable);
  EXPECT_NE(o.err.find(addr), std::string::npos) << o.err;
}

fs::path write_spec(const std::string& name, const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("tern_cli_" + std::to_string(getpid()) + "_" + name);
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

constexpr const char* kSpec = "name: cli\nworkers: 1\ndata: {source: synthetic}\n";

// Issue #18 item 1: `tern run` crashed on this override.
TEST(TernBinary, RunRefusesHostileSetValuesWithExitTwo) {
  fs::path spec = write_spec("run.yaml", kSpec);
  for (const std::string& set : {"x=&a [*a]", "train=&a {lr: *a}",
                                 "train.lr=", "train.lr=!!binary aGk=", "train={lr: 1, lr: 2}"}) {
    Output o = run({bin("tern"), "run", spec.string(), "--set", set});
    EXPECT_EQ(o.status, kExitBadInput) << set << ": " << o.err;
    EXPECT_NE(o.err.find("tern run: "), std::string::npos) << o.err;
  }
  Output o = run({bin("tern"), "run", spec.string(), "--set", "x=&a [*a]"});
  EXPECT_NE(o.err.find("cyclic alias"), std::string::npos) << o.err;
  fs::remove(spec);
}

// Issue #18 item 9: these gave "INTERNAL:" (protobuf refuses non-UTF-8 strings) and a raw gRPC
// error, both with exit 1. Both are caught before anything is sent (no coordinator needed).
TEST(TernBinary, SubmitRefusesNonUtf8AndOversizedSpecsWithExitTwo) {
  fs::path latin1 = write_spec("latin1.yaml", std::string(kSpec) + "# caf\xe9\n");
  Output o = run({bin("tern"), "submit", latin1.string(), "--coordinator", "127.0.0.1:1"});
  EXPECT_EQ(o.status, kExitBadInput) << o.err;
  EXPECT_NE(o.err.find(latin1.string() + ": not valid UTF-8 at line 4, column 6 (byte offset"),
            std::string::npos)
      << o.err;
  o = run({bin("tern"), "submit", write_spec("ok.yaml", kSpec).string(), "--set", "data.path=\xff",
           "--coordinator", "127.0.0.1:1"});
  EXPECT_EQ(o.status, kExitBadInput) << o.err;
  EXPECT_NE(o.err.find("--set data.path: not valid UTF-8"), std::string::npos) << o.err;

  fs::path big =
      write_spec("big.yaml", std::string(kSpec) + "# " + std::string(5 << 20, 'x') + "\n");
  o = run({bin("tern"), "submit", big.string(), "--coordinator", "127.0.0.1:1"});
  EXPECT_EQ(o.status, kExitBadInput) << o.err;
  EXPECT_NE(o.err.find("is too large: 5242"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("limit of 4194304 bytes"), std::string::npos) << o.err;
  EXPECT_EQ(o.err.find("INTERNAL"), std::string::npos) << o.err;
  fs::remove(latin1);
  fs::remove(big);
}

// Item 9, the other way to be too large: this client allows bigger messages than the
// coordinator, whose gRPC refuses the request ("Received message larger than max").
TEST(TernBinary, SubmitOverTheCoordinatorsMessageLimitSaysTooLarge) {
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  const fs::path state = fs::temp_directory_path() / ("tern_cli_big_" + std::to_string(getpid()));
  const std::string common =
      "name: big\nstate_dir: " + state.string() +
      "\nregions: [{name: r, workers: 1}]\ncoordinator: {listen: 127.0.0.1:" +
      std::to_string(*port) + ", max_spec_bytes: 4096, max_message_bytes: ";
  fs::path server = write_spec("server.yaml", common + "8192}\n");
  fs::path client = write_spec("client.yaml", common + "1048576}\n");
  SpawnOptions so;
  so.argv = {bin("tern"), "coordinator", "--config", server.string()};
  so.stderr_file =
      (fs::temp_directory_path() / ("tern_cli_big_" + std::to_string(getpid()) + ".log")).string();
  auto coord = Subprocess::spawn(so);
  ASSERT_TRUE(coord.is_ok()) << coord.status().to_string();
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = run({bin("tern"), "jobs", "--cluster", client.string()}).status == 0;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << "coordinator did not come up";
  fs::path spec =
      write_spec("big2.yaml", std::string(kSpec) + "# " + std::string(100000, 'x') + "\n");
  Output o = run({bin("tern"), "submit", spec.string(), "--cluster", client.string()});
  EXPECT_EQ(o.status, kExitBadInput) << o.err;
  EXPECT_NE(o.err.find("is too large: 1000"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("the coordinator's limit on one message"), std::string::npos) << o.err;
  // Under the message limit but over max_spec_bytes: the coordinator's own answer, also exit 2.
  fs::path mid = write_spec("mid.yaml", std::string(kSpec) + "# " + std::string(5000, 'x') + "\n");
  o = run({bin("tern"), "submit", mid.string(), "--cluster", client.string()});
  EXPECT_EQ(o.status, kExitBadInput) << o.err;
  EXPECT_NE(o.err.find("coordinator.max_spec_bytes"), std::string::npos) << o.err;
  (*coord)->terminate(std::chrono::milliseconds(2000));
  for (const auto& p : {server, client, spec, mid}) fs::remove(p);
  fs::remove(so.stderr_file);
  fs::remove_all(state);
}

// Issue #18 item 7: these cluster files were accepted (port 99999 bound another port, a lease
// shorter than the heartbeat left every daemon LOST). A bad file starts nothing at all.
TEST(TernBinary, ClusterUpWithABadFileStartsNothing) {
  const fs::path state = fs::temp_directory_path() / ("tern_cli_state_" + std::to_string(getpid()));
  const std::string head = "name: bad\nstate_dir: " + state.string() + "\n";
  for (const std::string& body :
       {std::string("coordinator: {listen: 127.0.0.1:99999}\nregions: [{name: r, workers: 1}]\n"),
        std::string("coordinator: {listen: 127.0.0.1:7399, heartbeat_ms: 5000, lease_ms: 3000}\n"
                    "regions: [{name: r, workers: 1}]\n"),
        std::string("coordinator: {listen: 127.0.0.1:7399}\nregions: [{name: r, workers: 0}]\n"),
        std::string("coordinator: {listen: 127.0.0.1:7399}\nregions: [{name: r, workers: 1}]\n"
                    "regions: [{name: s, workers: 1}]\n")}) {
    fs::path file = write_spec("bad-cluster.yaml", head + body);
    Output o = run({bin("tern"), "cluster", "up", file.string()});
    EXPECT_EQ(o.status, kExitBadInput) << body << o.err;
    EXPECT_NE(o.err.find("nothing was started"), std::string::npos) << o.err;
    EXPECT_FALSE(fs::exists(state)) << "no state, logs or daemons for " << body;
    fs::remove_all(state);
    fs::remove(file);
  }
}

TEST(TernBinary, UsageErrors) {
  EXPECT_NE(run({bin("tern")}).status, 0);
  EXPECT_NE(run({bin("tern"), "submit"}).status, 0);
  EXPECT_NE(run({bin("tern"), "submit", "/no/such/spec.yaml"}).status, 0);
}

}  // namespace
}  // namespace tern
