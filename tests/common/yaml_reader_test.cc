// YAML edge cases for every way YAML enters tern: job specs (text and file), --set values and
// cluster files. Each case must be refused with the file, the line where there is one, and a
// message that says what is wrong -- never a crash, a hang or a silent default.
#include "common/yaml_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/cluster_config.h"
#include "common/job_spec.h"
#include "common/utf8.h"
#include "testing/specs.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSpec = testing_specs::kMinimalSpec;

constexpr const char* kCluster = R"(name: c
coordinator: {listen: 127.0.0.1:7171, heartbeat_ms: 100, lease_ms: 1000}
state_dir: /tmp/tern-yaml-test
regions:
  - {name: ohio, workers: 1}
  - {name: tokyo, workers: 2, slots: 2}
network:
  intra_region: {latency_ms: 0.1}
  links:
    - {between: [tokyo, ohio], latency_ms: 210, jitter_ms: 5}
)";

std::string spec_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  auto r = load_job_spec_text(text, "job.yaml", overrides);
  if (r.is_ok()) return "<accepted>";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  return r.status().message();
}

std::string cluster_error(const std::string& text) {
  auto r = parse_cluster_config(text, "cluster.yaml");
  if (r.is_ok()) return "<accepted>";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  return r.status().message();
}

// The cluster parser with --set overrides goes through the file loader.
std::string cluster_file_error(const std::string& text, const std::vector<std::string>& overrides) {
  fs::path p = fs::temp_directory_path() / ("tern_yaml_test_" + std::to_string(getpid()) + ".yaml");
  std::ofstream(p) << text;
  auto r = load_cluster_config(p.string(), overrides);
  fs::remove(p);
  return r.is_ok() ? "<accepted>" : r.status().message();
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

// "a: 1" lines replaced: `field` (as `key: value` at its indentation) set to `value`.
std::string with(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

// A billion laughs: `levels` levels of 10 aliases each.
std::string alias_bomb(int levels) {
  std::string s = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  for (int i = 1; i <= levels; ++i) {
    std::string prev = "*l" + std::to_string(i - 1);
    s += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) s += (k ? ", " : "") + prev;
    s += "]\n";
  }
  return s;
}

// ---------------------------------------------------------------- UTF-8

TEST(Utf8, ReplacesEveryIllFormedByteAndKeepsTheRest) {
  EXPECT_EQ(to_valid_utf8(""), "");
  EXPECT_EQ(to_valid_utf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(to_valid_utf8("a\xff\xfe"
                          "b"),
            "a\xEF\xBF\xBD\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(to_valid_utf8("x\xe2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated sequence
  const std::string mixed = to_valid_utf8("\xc0\xaf ok \xed\xa0\x80 \xf0\x9f\x98\x80");
  EXPECT_EQ(first_invalid_utf8(mixed), std::string::npos);
  EXPECT_NE(mixed.find(" ok "), std::string::npos);
  EXPECT_NE(mixed.find("\xf0\x9f\x98\x80"), std::string::npos);
}

TEST(Utf8, AcceptsWellFormedAndFindsTheFirstBadByte) {
  EXPECT_EQ(first_invalid_utf8(""), std::string::npos);
  EXPECT_EQ(first_invalid_utf8("plain ascii\n"), std::string::npos);
  EXPECT_EQ(first_invalid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string::npos);
  EXPECT_EQ(first_invalid_utf8("\xef\xbb\xbfname: x"), std::string::npos);  // BOM
  EXPECT_EQ(first_invalid_utf8("ab\xff"), 2u);
  EXPECT_EQ(first_invalid_utf8("a\x80"), 1u);              // lone continuation byte
  EXPECT_EQ(first_invalid_utf8("a\xc0\xaf"), 1u);          // overlong '/'
  EXPECT_EQ(first_invalid_utf8("a\xe0\x80\xaf"), 1u);      // overlong, 3 bytes
  EXPECT_EQ(first_invalid_utf8("a\xed\xa0\x80"), 1u);      // surrogate U+D800
  EXPECT_EQ(first_invalid_utf8("a\xf4\x90\x80\x80"), 1u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("a\xe2\x82"), 1u);          // truncated
  EXPECT_EQ(first_invalid_utf8("a\xe2\x28\xa1"), 1u);      // bad continuation
  EXPECT_EQ(describe_byte_position("ab\ncd\xff", 5), "line 2, column 3 (byte offset 5: 0xff)");
}

TEST(YamlInput, NonUtf8SpecNamesFileLineAndByteOffset) {
  std::string text = with(kSpec, "name: t1", "name: t\xff");
  std::string e = spec_error(text);
  EXPECT_HAS(e, "job.yaml: not valid UTF-8 at line 1, column 8 (byte offset 7: 0xff)");
  e = cluster_error(with(kCluster, "state_dir: /tmp", "state_dir: /tmp\xc0\xaf"));
  EXPECT_HAS(e, "cluster.yaml: not valid UTF-8 at line 3");
  // An escape cannot smuggle ill-formed UTF-8 in either.
  EXPECT_NE(spec_error(with(kSpec, "name: t1", "name: \"\\ud800\"")), "<accepted>");
  EXPECT_HAS(spec_error(kSpec, {"data.path=/tmp/\xfe"}), "not valid UTF-8");
}

// ---------------------------------------------------------------- aliases

TEST(YamlInput, CyclicAliasesAreRefusedEverywhere) {
  // The issue's case: an unknown key (refused cleanly before) and known sections.
  EXPECT_HAS(spec_error(std::string(kSpec) + "x: &a [*a]\n"),
             "job.yaml:10: x[0] is an alias to a map or list that contains it");
  EXPECT_HAS(
      spec_error(with(kSpec, "sync: {strategy: ssgd}", "sync: &s {strategy: ssgd, more: *s}")),
      "sync.more is an alias to a map or list that contains it");
  // Nested: the cycle goes through two maps.
  EXPECT_HAS(spec_error(with(kSpec, "model: {type: mlp}", "model: &m {type: mlp, x: {y: [*m]}}")),
             "model.x.y[0] is an alias");
  EXPECT_HAS(cluster_error(std::string(kCluster) + "  default: &d {latency_ms: 1, loop: *d}\n"),
             "network.default.loop is an alias");
  EXPECT_HAS(cluster_error(std::string("top: &t {a: *t}\n") + kCluster), "cyclic alias");
}

TEST(YamlInput, AcyclicAliasesStillWork) {
  auto r = parse_cluster_config(with(kCluster, "  intra_region: {latency_ms: 0.1}",
                                     "  intra_region: &fast {latency_ms: 0.1}\n  default: *fast"),
                                "cluster.yaml");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_DOUBLE_EQ(r->network.inter_region_default.latency_ms, 0.1);
}

TEST(YamlInput, AliasBombIsRefusedQuickly) {
  auto start = std::chrono::steady_clock::now();
  std::string e = spec_error(std::string(kSpec) + alias_bomb(9));  // 10^10 nodes expanded
  EXPECT_HAS(e, "with its aliases expanded (an alias bomb?)");
  EXPECT_HAS(cluster_error(std::string(kCluster) + alias_bomb(9)), "alias bomb");
  // A bomb of long strings: few nodes, many bytes.
  std::string big(60000, 'x');
  std::string bytes = "s0: &s0 " + big + "\n";
  for (int i = 1; i <= 4; ++i) {
    std::string p = "*s" + std::to_string(i - 1);
    bytes += "s" + std::to_string(i) + ": &s" + std::to_string(i) + " [" + p + ", " + p + ", " + p +
             ", " + p + ", " + p + ", " + p + ", " + p + ", " + p + "]\n";
  }
  EXPECT_HAS(spec_error(std::string(kSpec) + bytes), "bytes of values with its aliases expanded");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

// ---------------------------------------------------------------- merge keys, tags

TEST(YamlInput, MergeKeysAreRefusedClearly) {
  std::string text = with(kSpec, "sync: {strategy: ssgd}", "sync: {<<: {strategy: ssgd}}");
  EXPECT_HAS(spec_error(text),
             "job.yaml:9: sync uses a merge key (<<: *anchor): merge keys are not supported");
  text = std::string("data: &base {source: synthetic}\n") +
         with(kSpec, "data: {source: synthetic, train_size: 256}", "");
  EXPECT_HAS(spec_error(with(text, "train:\n", "train:\n  <<: *base\n")),
             "merge keys are not supported");
  EXPECT_HAS(
      cluster_error(with(kCluster, "  - {name: ohio, workers: 1}", "  - {<<: {name: ohio}}")),
      "regions[0] uses a merge key");
}

TEST(YamlInput, TagsAreRefused) {
  EXPECT_HAS(
      spec_error(with(kSpec, "lr: 0.1", "lr: !!binary aGVsbG8=")),
      "job.yaml:8: train.lr has the tag 'tag:yaml.org,2002:binary': YAML tags are not supported");
  EXPECT_HAS(spec_error(with(kSpec, "name: t1", "name: !foo t1")), "name has the tag '!foo'");
  EXPECT_HAS(spec_error(with(kSpec, "model: {type: mlp}", "model: !!map {type: mlp}")),
             "model has the tag");
  EXPECT_HAS(spec_error(with(kSpec, "workers: 2", "workers: !!str 2")), "tags are not supported");
  EXPECT_HAS(cluster_error(with(kCluster, "name: c", "name: !secret c")),
             "name has the tag '!secret'");
}

// ---------------------------------------------------------------- duplicate keys, documents

TEST(YamlInput, DuplicateKeysAndSectionsNameBothLines) {
  EXPECT_HAS(spec_error(std::string(kSpec) + "name: t2\n"),
             "job.yaml:10: name is given twice (first at line 1)");
  EXPECT_HAS(spec_error(with(kSpec, "  lr: 0.1", "  lr: 0.1\n  lr: 0.5")),
             "job.yaml:9: train.lr is given twice (first at line 8)");
  EXPECT_HAS(spec_error(with(kSpec, "{strategy: ssgd}", "{strategy: ssgd, strategy: dssgd}")),
             "sync.strategy is given twice");
  // A whole section twice.
  EXPECT_HAS(spec_error(std::string(kSpec) + "train:\n  lr: 0.5\n"),
             "job.yaml:10: train is given twice (first at line 5)");
  // Quoted and plain spellings are the same key.
  EXPECT_HAS(spec_error(std::string(kSpec) + "\"workers\": 3\n"), "workers is given twice");
  EXPECT_HAS(cluster_error(std::string(kCluster) + "coordinator: {listen: 127.0.0.1:7272}\n"),
             "cluster.yaml:11: coordinator is given twice (first at line 2)");
  EXPECT_HAS(cluster_error(with(kCluster, "{name: ohio, workers: 1}",
                                "{name: ohio, workers: 1, workers: 3}")),
             "regions[0].workers is given twice");
}

TEST(YamlInput, NonStringKeysAreRefused) {
  EXPECT_HAS(spec_error(std::string(kSpec) + "~: 1\n"), "has a key that is null");
  EXPECT_HAS(spec_error(std::string(kSpec) + "? [a, b]\n: 1\n"), "has a key that is a map or list");
}

TEST(YamlInput, ASecondDocumentIsRefused) {
  EXPECT_HAS(spec_error(std::string(kSpec) + "---\nname: other\n"),
             "job.yaml:10: a second YAML document starts here");
  EXPECT_HAS(spec_error(std::string("---\n") + kSpec + "...\n---\n"), "a second YAML document");
  EXPECT_HAS(cluster_error(std::string(kCluster) + "---\n" + kCluster), "a second YAML document");
  // yaml-cpp's LoadAll never returns on these (found by scripts/fuzz.sh): refused, at once.
  EXPECT_HAS(spec_error(","), "a second YAML document");
  EXPECT_HAS(spec_error(", 0m"), "a second YAML document");
  EXPECT_HAS(spec_error(std::string(kSpec) + ",\n"), "job.yaml");
  EXPECT_HAS(cluster_error(","), "a second YAML document");
  EXPECT_HAS(spec_error(kSpec, {"train=,"}), "a second YAML document");
  // One document with explicit markers is fine.
  EXPECT_EQ(spec_error(std::string("---\n") + kSpec + "...\n"), "<accepted>");
}

// ---------------------------------------------------------------- nulls

TEST(YamlInput, NullsAreErrorsNamingTheField) {
  EXPECT_HAS(spec_error(with(kSpec, "lr: 0.1", "lr: ~")),
             "job.yaml:8: train.lr must be a number, got null");
  EXPECT_HAS(spec_error(with(kSpec, "lr: 0.1", "lr:")), "train.lr must be a number, got null");
  EXPECT_HAS(spec_error(with(kSpec, "lr: 0.1", "lr: null")), "train.lr must be a number, got null");
  EXPECT_HAS(spec_error(with(kSpec, "epochs: 2", "epochs: ~")),
             "train.epochs must be an integer, got null");
  EXPECT_HAS(spec_error(with(kSpec, "name: t1", "name:")), "name must be a string, got null");
  EXPECT_EQ(spec_error(with(kSpec, "name: t1", "name:")).find("1-63 characters"), std::string::npos)
      << "one error for one null";
  EXPECT_HAS(spec_error(with(kSpec, "{type: mlp}", "{type: ~}")),
             "model.type must be one of [mlp, cnn, dlrm, torchscript], got null");
  EXPECT_HAS(spec_error(with(kSpec, "sync: {strategy: ssgd}", "sync:")),
             "sync must be a map, got null");
  EXPECT_HAS(spec_error(std::string(kSpec) + "debug: {kill: ~}\n"),
             "debug.kill must be a map, got null");
  EXPECT_HAS(spec_error(std::string(kSpec) + "compress: {error_feedback: ~}\n"),
             "compress.error_feedback must be true or false, got null");
  EXPECT_HAS(spec_error(with(kSpec, "  lr: 0.1", "  lr: 0.1\n  lr_decay_at: [0.5, ~]")),
             "train.lr_decay_at[1] must be a number in [0, 1], got null");
  EXPECT_HAS(spec_error(with(kSpec, "  lr: 0.1", "  lr: 0.1\n  lr_decay_at: ~")),
             "train.lr_decay_at must be a list of numbers, got null");
  EXPECT_HAS(cluster_error(with(kCluster, "heartbeat_ms: 100", "heartbeat_ms: ~")),
             "cluster.yaml:2: coordinator.heartbeat_ms must be an integer, got null");
  EXPECT_HAS(cluster_error(with(kCluster, "state_dir: /tmp/tern-yaml-test", "state_dir:")),
             "state_dir must be a string, got null");
  EXPECT_HAS(cluster_error(std::string(kCluster) + "tls: {enabled: ~}\n"),
             "tls.enabled must be true or false, got null");
  EXPECT_HAS(cluster_error(with(kCluster, "  - {name: ohio, workers: 1}\n", "  - ~\n")),
             "regions[0] must be a map, got null");
  EXPECT_HAS(cluster_error(std::string(kCluster) + "data_dirs: ~\n"),
             "data_dirs must be a list of strings, got null");
}

// ---------------------------------------------------------------- sizes and depth

TEST(YamlInput, HugeScalarsAndDocumentsAreRefused) {
  std::string big(kMaxYamlScalarBytes + 1, 'a');
  EXPECT_HAS(spec_error(with(kSpec, "name: t1", "name: " + big)),
             "job.yaml:1: name is 65537 bytes long; a value may have at most 65536");
  EXPECT_HAS(cluster_error(with(kCluster, "state_dir: /tmp/tern-yaml-test", "state_dir: /" + big)),
             "state_dir is 65538 bytes long");
  std::string huge = std::string(kSpec) + "# " + std::string(kMaxYamlBytes, 'x') + "\n";
  EXPECT_HAS(spec_error(huge), "a tern YAML document may have at most 4194304");
  EXPECT_HAS(cluster_error(std::string(kCluster) + "# " + std::string(kMaxYamlBytes, 'x') + "\n"),
             "may have at most");
  // A file: refused without reading it all.
  fs::path p = fs::temp_directory_path() / ("tern_yaml_huge_" + std::to_string(getpid()) + ".yaml");
  std::ofstream(p) << huge;
  auto r = load_job_spec_file(p.string());
  fs::remove(p);
  ASSERT_FALSE(r.is_ok());
  EXPECT_HAS(r.status().message(), "larger than 4194304 bytes");
}

TEST(YamlInput, DeepNestingIsRefused) {
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_HAS(spec_error(std::string(kSpec) + "x: " + nested(100) + "\n"),
             "nests maps and lists more than 64 deep");
  // Deeper than yaml-cpp's own parser allows: its error, not a stack overflow.
  EXPECT_HAS(spec_error(std::string(kSpec) + "x: " + nested(100000) + "\n"),
             "job.yaml:10: nests maps and lists more than 64 deep (far more");
  std::string block = "x:\n";
  for (int i = 0; i < 80; ++i) block += std::string(2 * i + 2, ' ') + "k:\n";
  EXPECT_HAS(spec_error(std::string(kSpec) + block + std::string(162, ' ') + "v: 1\n"), "deep");
  std::string dashes = "x:\n  ";
  for (int i = 0; i < 3000; ++i) dashes += "- ";
  EXPECT_HAS(spec_error(std::string(kSpec) + dashes + "1\n"), "deep");
  EXPECT_HAS(cluster_error(std::string(kCluster) + "x: " + nested(70) + "\n"), "more than 64 deep");
}

// ---------------------------------------------------------------- --set

TEST(YamlOverrides, EachEdgeCaseInASetValue) {
  // The issue's case: this crashed `tern run` and the coordinator.
  EXPECT_HAS(spec_error(kSpec, {"x=&a [*a]"}),
             "--set x=...: x[0] is an alias to a map or list that contains it");
  EXPECT_HAS(spec_error(kSpec, {"train=&a {lr: *a}"}), "train.lr is an alias");
  EXPECT_HAS(spec_error(kSpec, {"x=&a {b: [{c: *a}]}"}), "x.b[0].c is an alias");
  std::string bomb = "[&a [x, x, x, x, x, x, x, x, x, x]";
  for (int i = 0; i < 8; ++i) {
    std::string prev = std::string(1, static_cast<char>('a' + i));
    std::string cur = std::string(1, static_cast<char>('b' + i));
    bomb += ", &" + cur + " [";
    for (int k = 0; k < 10; ++k) bomb += (k ? ", *" : "*") + prev;
    bomb += "]";
  }
  bomb += "]";
  EXPECT_HAS(spec_error(kSpec, {"x=" + bomb}), "alias bomb");
  EXPECT_HAS(spec_error(kSpec, {"train.lr=!!binary aGk="}), "train.lr has the tag");
  EXPECT_HAS(spec_error(kSpec, {"train={lr: 0.1, lr: 0.2}"}), "train.lr is given twice");
  EXPECT_HAS(spec_error(kSpec, {"train={<<: {lr: 1}}"}), "train uses a merge key");
  EXPECT_HAS(spec_error(kSpec, {"train.lr=1\n---\n2"}), "a second YAML document");
  EXPECT_HAS(spec_error(kSpec, {"name=" + std::string(kMaxYamlScalarBytes + 1, 'n')}),
             "bytes long");
  EXPECT_HAS(spec_error(kSpec, {"x=" + std::string(80, '[') + std::string(80, ']')}),
             "more than 64 deep");
  std::string long_path(201, 'a');  // a.a.a...a: 101 components
  for (size_t i = 1; i < long_path.size(); i += 2) long_path[i] = '.';
  EXPECT_HAS(spec_error(kSpec, {long_path + "=1"}), "path components");
  EXPECT_HAS(spec_error(kSpec, {"train.=1"}), "empty path component");
  std::vector<std::string> many(kMaxOverrides + 1, "train.lr=0.1");
  EXPECT_HAS(spec_error(kSpec, many), "--set overrides; at most 1000");
  // Same rules for cluster files.
  EXPECT_HAS(cluster_file_error(kCluster, {"x=&a [*a]"}), "cyclic alias");
  EXPECT_HAS(cluster_file_error(kCluster, {"coordinator.lease_ms="}),
             "(--set): coordinator.lease_ms must be an integer, got null");
}

TEST(YamlOverrides, NullValuesAreErrorsNotDefaults) {
  EXPECT_HAS(spec_error(kSpec, {"train.lr="}),
             "job.yaml (--set): train.lr must be a number, got null");
  EXPECT_HAS(spec_error(kSpec, {"train.lr=~"}), "train.lr must be a number, got null");
  EXPECT_HAS(spec_error(kSpec, {"train.lr=null"}), "train.lr must be a number, got null");
  EXPECT_HAS(spec_error(kSpec, {"train="}), "train must be a map, got null");
}

TEST(YamlOverrides, AnOverrideIntoAnAliasedMapIsCheckedAsAWhole) {
  // Under the bound as written (10^4 references to l0, 3 nodes each) ...
  std::string text = std::string(kSpec) + "l0: &l0 {v: 1}\n";
  for (int i = 1; i <= 4; ++i) {
    std::string prev = "*l" + std::to_string(i - 1);
    text += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) text += (k ? ", " : "") + prev;
    text += "]\n";
  }
  EXPECT_HAS(spec_error(text), "l0 is not a known field");
  // ... but a --set into l0 is seen 10^4 times more.
  EXPECT_HAS(spec_error(text, {"l0.w=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"}), "alias bomb");
}

// ---------------------------------------------------------------- cluster consistency

TEST(ClusterChecks, ListenAddress) {
  auto listen = [](const std::string& l) {
    return cluster_error(with(kCluster, "listen: 127.0.0.1:7171", "listen: \"" + l + "\""));
  };
  EXPECT_HAS(listen("127.0.0.1:99999"), "coordinator.listen port must be 1..65535, got '99999'");
  EXPECT_HAS(listen("127.0.0.1:0"), "port must be 1..65535, got '0'");
  EXPECT_HAS(listen("127.0.0.1:"), "port must be 1..65535, got ''");
  EXPECT_HAS(listen("127.0.0.1:70x"), "port must be 1..65535");
  EXPECT_HAS(listen("127.0.0.1:-1"), "port must be 1..65535");
  EXPECT_HAS(listen(":7070"), "host '' is empty");
  EXPECT_HAS(listen("::1:7070"), "IPv6 host in brackets");
  EXPECT_HAS(listen("bad host:7070"), "is not a host name or address");
  EXPECT_HAS(listen("300.1.1.1:7070"), "is not a valid IPv4 address");
  EXPECT_EQ(listen("[::1]:7171"), "<accepted>");
  EXPECT_EQ(listen("localhost:7171"), "<accepted>");
  EXPECT_HAS(
      cluster_error(with(kCluster, "lease_ms: 1000}", "lease_ms: 1000, metrics_port: 7171}")),
      "coordinator.metrics_port is 7171, the port coordinator.listen uses");
}

TEST(ClusterChecks, LeaseMustCoverHeartbeats) {
  EXPECT_HAS(cluster_error(with(kCluster, "heartbeat_ms: 100, lease_ms: 1000",
                                "heartbeat_ms: 5000, lease_ms: 3000")),
             "cluster.yaml:2: coordinator.lease_ms (3000) must be at least twice "
             "coordinator.heartbeat_ms (5000)");
  EXPECT_HAS(cluster_error(with(kCluster, "heartbeat_ms: 100, lease_ms: 1000",
                                "heartbeat_ms: 1000, lease_ms: 1000")),
             "must be at least twice");
  // The defaults (500 / 3000) are fine.
  EXPECT_EQ(cluster_error(with(kCluster, ", heartbeat_ms: 100, lease_ms: 1000", "")), "<accepted>");
}

TEST(ClusterChecks, WorkersRegionsAndLinks) {
  EXPECT_HAS(cluster_error(with(with(kCluster, "workers: 1}", "workers: 0}"),
                                "workers: 2, slots: 2}", "workers: 0, slots: 2}")),
             "regions have no worker daemons");
  EXPECT_HAS(cluster_error(with(kCluster, "name: ohio,", "name: \"oh,io\",")),
             "regions[0].name must be 1-63 characters of [A-Za-z0-9._-]");
  EXPECT_HAS(cluster_error(with(kCluster, "name: ohio,", "name: ohio, host: \"10.0.0.1:7000\",")),
             "regions[0].host '10.0.0.1:7000' is not a valid IPv6 address");
  EXPECT_HAS(cluster_error(with(kCluster, "name: ohio,", "name: ohio, host: \"two words\",")),
             "is not a host name or address");
  EXPECT_HAS(cluster_error(with(kCluster, "slots: 2}", "slots: 2, gpus: [0, 0]}")),
             "lists GPU 0 twice");
  EXPECT_HAS(cluster_error(with(kCluster, "slots: 2}", "slots: 2, gpus: [0.5]}")), "whole GPU ids");
  EXPECT_HAS(cluster_error(with(kCluster, "[tokyo, ohio]", "[ohio, ohio]")),
             "names region 'ohio' twice");
  EXPECT_HAS(
      cluster_error(std::string(kCluster) + "    - {between: [ohio, tokyo], latency_ms: 9}\n"),
      "cluster.yaml:11: network.links[1].between gives the link ohio - tokyo again (first in "
      "network.links[0])");
  EXPECT_HAS(cluster_error(with(kCluster, "jitter_ms: 5", "jitter_ms: 500")),
             "network.links[0].jitter_ms (500.000000) must be <= latency_ms (210.000000)");
  EXPECT_HAS(cluster_error(with(kCluster, "name: c", "name: ../etc")),
             "name must be 1-63 characters");
  EXPECT_HAS(cluster_error(with(kCluster, "state_dir: /tmp/tern-yaml-test", "state_dir: ''")),
             "state_dir must not be empty");
  EXPECT_HAS(cluster_error(with(kCluster, "lease_ms: 1000}",
                                "lease_ms: 1000, max_message_bytes: 67108864, "
                                "max_spec_bytes: 33554432}")),
             "coordinator.max_spec_bytes must be <= 4194304");
}

// ---------------------------------------------------------------- what ships still loads

TEST(YamlInput, EveryShippedConfigLoads) {
  const char* src = std::getenv("TERN_SOURCE_DIR");
  if (!src) GTEST_SKIP() << "TERN_SOURCE_DIR not set";
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(src) / "configs" / "jobs")) {
    auto r = load_job_spec_file(e.path().string());
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    ++n;
  }
  for (const auto& e : fs::directory_iterator(fs::path(src) / "configs" / "cluster")) {
    auto r = load_cluster_config(e.path().string());
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    ++n;
  }
  EXPECT_GT(n, 3);
}

}  // namespace
}  // namespace tern
