#include "common/cluster_config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/host_name.h"

namespace tern {
namespace {

std::string write_temp(const std::string& text) {
  static int n = 0;
  auto dir = std::filesystem::temp_directory_path() / ("tern_cc_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto p = dir / ("c" + std::to_string(n++) + ".yaml");
  std::ofstream(p) << text;
  return p.string();
}

constexpr const char* kCluster = R"(name: geo
coordinator: {listen: 127.0.0.1:7171, lease_ms: 2000}
state_dir: /tmp/tern-geo
regions:
  - {name: ohio, workers: 1}
  - {name: tokyo, workers: 2, slots: 2}
network:
  intra_region: {latency_ms: 0.1}
  default: {latency_ms: 50, bandwidth_mbps: 100}
  links:
    - {between: [tokyo, ohio], latency_ms: 210, jitter_ms: 5, bandwidth_mbps: 1000}
)";

TEST(ClusterConfig, ParsesRegionsAndLinks) {
  auto r = load_cluster_config(write_temp(kCluster));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->name, "geo");
  EXPECT_EQ(r->listen, "127.0.0.1:7171");
  EXPECT_EQ(r->lease_ms, 2000);
  EXPECT_EQ(r->journal_dir(), "/tmp/tern-geo/journal");
  ASSERT_EQ(r->regions.size(), 2u);
  EXPECT_EQ(r->total_workers(), 3);
  EXPECT_EQ(r->regions[1].slots, 2);
  EXPECT_DOUBLE_EQ(r->network.link("ohio", "tokyo").latency_ms, 210);
  EXPECT_DOUBLE_EQ(r->network.link("tokyo", "ohio").jitter_ms, 5);
  EXPECT_DOUBLE_EQ(r->network.link("ohio", "ohio").latency_ms, 0.1);
}

TEST(ClusterConfig, UnknownRegionInLinkIsAnError) {
  std::string text = kCluster;
  text += "    - {between: [ohio, mars], latency_ms: 1}\n";
  auto r = load_cluster_config(write_temp(text));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(":12: network.links[1].between names unknown region 'mars'"),
            std::string::npos)
      << r.status().message();
}

TEST(ClusterConfig, DuplicateRegionAndBadListen) {
  auto r = load_cluster_config(
      write_temp("coordinator: {listen: nowhere}\nregions: [{name: a}, {name: a}]\n"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("coordinator.listen must be HOST:PORT"), std::string::npos);
  EXPECT_NE(r.status().message().find("duplicate region 'a'"), std::string::npos);
}

// checkpoint_root (issue 22, resume on any cluster): an absolute directory, normalised; every
// other value is refused naming the file, the line and the field, and nothing is loaded.
TEST(ClusterConfig, CheckpointRootIsAnAbsoluteDirectoryBelowTheFileSystemRoot) {
  const std::string base = "name: x\nregions: [{name: a}]\n";
  auto off = load_cluster_config(write_temp(base));
  ASSERT_TRUE(off.is_ok()) << off.status().to_string();
  EXPECT_EQ(off->checkpoint_root, "");
  EXPECT_EQ(off->job_checkpoint_dir("j-3"), "");

  for (const auto& [value, expected] : std::vector<std::pair<std::string, std::string>>{
           {"/mnt/shared/tern-ckpt", "/mnt/shared/tern-ckpt"},
           {"/mnt/shared/tern-ckpt/", "/mnt/shared/tern-ckpt"},
           {"/mnt//shared/./tern-ckpt", "/mnt/shared/tern-ckpt"},
           {"'/srv/ckpt dir'", "/srv/ckpt dir"}}) {
    auto r = load_cluster_config(write_temp("checkpoint_root: " + value + "\n" + base));
    ASSERT_TRUE(r.is_ok()) << value << ": " << r.status().to_string();
    EXPECT_EQ(r->checkpoint_root, expected) << value;
    EXPECT_EQ(r->job_checkpoint_dir("j-3"), expected + "/j-3");
  }
  for (const auto& [value, why] : std::vector<std::pair<std::string, std::string>>{
           {"ckpt", "must be an absolute directory"},
           {"./ckpt", "must be an absolute directory"},
           {"'~/ckpt'", "must be an absolute directory"},
           {"/", "must not be the file system root"},
           {"//", "must not be the file system root"},
           {"/mnt/../", "must not climb with '..'"},
           {"/mnt/a/../b", "must not climb with '..'"},
           {"''", "must not be empty"},
           {"\"/mnt/a\\tb\"", "must not contain control characters"},
           {"\"/mnt/a\\nb\"", "must not contain control characters"},
           {"~", "got null"},
           {"[/a, /b]", "checkpoint_root"},
           {"{dir: /a}", "checkpoint_root"}}) {
    const std::string file = write_temp("checkpoint_root: " + value + "\n" + base);
    auto r = load_cluster_config(file);
    ASSERT_FALSE(r.is_ok()) << value << " was accepted as " << r->checkpoint_root;
    EXPECT_NE(r.status().message().find(file + ":1: checkpoint_root"), std::string::npos)
        << value << ": " << r.status().message();
    EXPECT_NE(r.status().message().find(why), std::string::npos)
        << value << ": " << r.status().message();
  }
}

TEST(ClusterConfig, RegionsRequired) {
  auto r = load_cluster_config(write_temp("name: x\n"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("regions is required"), std::string::npos);
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

// The one host rule of the cluster file and of worker registration (common/host_name.h).
TEST(HostName, AddressesAndRfc1123NamesPassEverythingElseSaysWhy) {
  for (const char* ok : {"127.0.0.1", "::1", "fe80::1", "node-3", "ohio-0.example.com", "a"}) {
    EXPECT_EQ(host_problem(ok), "") << ok;
  }
  EXPECT_EQ(host_problem(""), "is empty");
  EXPECT_EQ(host_problem(std::string("127.0.0.1\0junk", 14)), "contains a NUL byte");
  EXPECT_EQ(host_problem("999.1.1.1"), "is not a valid IPv4 address");
  EXPECT_EQ(host_problem("fe80::zz"), "is not a valid IPv6 address");
  for (const char* bad : {"-a", "a-", "a..b", "a b", "a/b", "a_b", "ohio-0."}) {
    EXPECT_EQ(host_problem(bad), "is not a host name or address") << bad;
  }
  EXPECT_EQ(host_problem(std::string(64, 'a')), "is not a host name or address");
  EXPECT_EQ(host_problem(std::string(254, 'a')), "is longer than 253 characters");
}

}  // namespace
}  // namespace tern
