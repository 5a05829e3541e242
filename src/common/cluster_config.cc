#include "common/cluster_config.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/host_name.h"
#include "common/yaml_reader.h"

namespace tern {
namespace {

void parse_link(YamlMap& m, LinkSpec* out) {
  m.get("latency_ms", &out->latency_ms, 0.0, 60000.0);
  m.get("jitter_ms", &out->jitter_ms, 0.0, 60000.0);
  m.get("bandwidth_mbps", &out->bandwidth_mbps, 0.0, 1e9);
}

// A region's delay is latency ± jitter: it must not go below zero.
void check_link(YamlMap& m, const LinkSpec& l) {
  if (l.jitter_ms > l.latency_ms) {
    m.error("jitter_ms", "(" + std::to_string(l.jitter_ms) + ") must be <= latency_ms (" +
                             std::to_string(l.latency_ms) +
                             "): a delay of latency +- jitter cannot go below zero");
  }
}

// A name that ends up in paths (state_dir) and comma-separated lists (--regions).
bool is_simple_name(const std::string& s) {
  if (s.empty() || s.size() > 63 || s == "." || s == "..") return false;
  for (char ch : s) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
      return false;
  }
  return true;
}

// Splits HOST:PORT ([V6]:PORT for IPv6); why it is not one, or empty.
std::string listen_problem(const std::string& listen, std::string* host, int* port) {
  std::string port_text;
  if (!listen.empty() && listen.front() == '[') {
    auto close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':')
      return "must be HOST:PORT ([IPV6]:PORT), got '" + listen + "'";
    *host = listen.substr(1, close - 1);
    port_text = listen.substr(close + 2);
  } else {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) return "must be HOST:PORT, got '" + listen + "'";
    *host = listen.substr(0, colon);
    port_text = listen.substr(colon + 1);
    if (host->find(':') != std::string::npos)
      return "must be HOST:PORT with an IPv6 host in brackets ([::1]:7070), got '" + listen + "'";
  }
  std::string hp = host_problem(*host);
  if (!hp.empty()) return "host '" + *host + "' " + hp + " (in '" + listen + "')";
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string::npos || std::stol(port_text) < 1 ||
      std::stol(port_text) > 65535) {
    return "port must be 1..65535, got '" + port_text + "' (in '" + listen + "')";
  }
  *port = static_cast<int>(std::stol(port_text));
  return "";
}

// Why `root` cannot be checkpoint_root, or empty. Jobs write below it, so it must be an
// absolute directory that is not the file system root, and it ends up in job specs and paths.
std::string checkpoint_root_problem(const std::string& root) {
  if (root.empty())
    return "must not be empty (leave the key out to keep checkpoints on each worker)";
  if (root.find('\0') != std::string::npos) return "must not contain NUL bytes";
  for (char ch : root) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f)
      return "must not contain control characters (newlines, tabs), got '" + root + "'";
  }
  std::filesystem::path p(root);
  if (!p.is_absolute())
    return "must be an absolute directory every worker mounts at the same path, got '" + root + "'";
  for (const auto& part : p) {
    if (part == "..") return "must not climb with '..', got '" + root + "'";
  }
  if (p.lexically_normal() == p.root_path())
    return "must not be the file system root '/': jobs write below it; name a directory for "
           "checkpoints";
  return "";
}

}  // namespace

std::string ClusterConfig::job_checkpoint_dir(const std::string& job_id) const {
  return checkpoint_root.empty() ? std::string() : checkpoint_root + "/" + job_id;
}

const LinkSpec& NetworkSpec::link(const std::string& a, const std::string& b) const {
  if (a == b) return intra_region;
  auto it = links.find(a < b ? std::make_pair(a, b) : std::make_pair(b, a));
  return it == links.end() ? inter_region_default : it->second;
}

int64_t ClusterConfig::total_workers() const {
  int64_t n = 0;
  for (const auto& r : regions) n += r.workers;
  return n;
}

bool is_loopback_host(const std::string& host_or_address) {
  std::string host = host_or_address;
  // HOST:PORT (an IPv6 host is bracketed: [::1]:7070).
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    host = host.substr(1, close == std::string::npos ? std::string::npos : close - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host = host.substr(0, host.find(':'));
  }
  if (host == "localhost" || host == "::1") return true;
  if (host.rfind("127.", 0) != 0) return false;
  return host.find_first_not_of("0123456789.") == std::string::npos;
}

namespace {

Result<ClusterConfig> parse_cluster_node(YAML::Node root, const std::string& path,
                                         const ClusterLoadOptions& options);

}  // namespace

Result<ClusterConfig> load_cluster_config(const std::string& path,
                                          const std::vector<std::string>& overrides,
                                          const ClusterLoadOptions& options) {
  TERN_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_file(path));
  TERN_RETURN_IF_ERROR(apply_overrides(&root, overrides, path));
  return parse_cluster_node(root, path, options);
}

Result<ClusterConfig> parse_cluster_config(const std::string& text, const std::string& name,
                                           const ClusterLoadOptions& options) {
  TERN_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_text(text, name));
  return parse_cluster_node(root, name, options);
}

namespace {

// `p` made absolute against `base` (the cluster file's directory).
std::string resolve_against(const std::string& base, const std::string& p) {
  if (p.empty()) return p;
  std::error_code ec;
  std::filesystem::path path(p);
  if (path.is_relative()) path = std::filesystem::path(base) / path;
  return std::filesystem::absolute(path, ec).lexically_normal().string();
}

// Resolves a path field in place; with `check`, records an error when it cannot be read.
void resolve_file(YamlMap& m, const std::string& key, const std::string& base, bool check,
                  std::string* value) {
  if (value->empty()) return;
  *value = resolve_against(base, *value);
  if (check && ::access(value->c_str(), R_OK) != 0) {
    m.error(key, "cannot read " + *value + ": " + std::strerror(errno) +
                     " (scripts/make-certs.sh DIR creates certificates and tokens)");
  }
}

// coordinator: listen address, heartbeats and leases, limits, metrics.
void parse_coordinator_section(YamlMap co, const std::string& base,
                               const ClusterLoadOptions& options, ClusterConfig* out) {
  ClusterConfig& c = *out;
  co.get("listen", &c.listen);
  co.get("heartbeat_ms", &c.heartbeat_ms, 10, 600000);
  co.get("lease_ms", &c.lease_ms, 50, 3600000);
  co.get("max_queued_jobs", &c.max_queued_jobs, 1, 1000000);
  co.get("metrics_port", &c.metrics_port, 0, 65535);
  co.get("metrics_host", &c.metrics.host);
  co.get("metrics_token_file", &c.metrics.token_file);
  resolve_file(co, "metrics_token_file", base, options.check_files, &c.metrics.token_file);
  co.get("max_log_bytes_per_job", &c.limits.max_log_bytes_per_job, 4096, int64_t{1} << 40);
  co.get("max_log_chunk_bytes", &c.limits.max_log_chunk_bytes, 4096, int64_t{1} << 30);
  co.get("max_message_bytes", &c.limits.max_message_bytes, 4096, int64_t{1} << 30);
  // A spec is YAML: no more than the YAML reader accepts.
  co.get("max_spec_bytes", &c.limits.max_spec_bytes, 256, static_cast<int64_t>(kMaxYamlBytes));
  co.get("rpc_deadline_ms", &c.limits.rpc_deadline_ms, 10, 3600000);
  YamlMap rl = co.child("rate_limit");
  rl.get("per_s", &c.limits.rate_per_s, 0.001, 1e9);
  rl.get("burst", &c.limits.rate_burst, 1, 1000000000);
  rl.finish();
  YamlMap wl = co.child("worker_rate_limit");
  wl.get("per_s", &c.limits.worker_rate_per_s, 0.001, 1e9);
  wl.get("burst", &c.limits.worker_rate_burst, 1, 1000000000);
  wl.finish();
  co.finish();
  std::string host;
  int port = 0;
  std::string problem = listen_problem(c.listen, &host, &port);
  if (!problem.empty()) co.error("listen", problem);
  if (port != 0 && c.metrics_port == port) {
    co.error("metrics_port", "is " + std::to_string(port) + ", the port coordinator.listen uses");
  }
  if (c.lease_ms < 2 * c.heartbeat_ms) {
    co.error("lease_ms", "(" + std::to_string(c.lease_ms) +
                             ") must be at least twice coordinator.heartbeat_ms (" +
                             std::to_string(c.heartbeat_ms) +
                             "): a daemon whose lease ends before its next heartbeats arrive "
                             "is marked LOST (3 or more heartbeats per lease is usual)");
  }
  if (c.limits.max_spec_bytes > c.limits.max_message_bytes) {
    co.error("max_spec_bytes", "must be <= coordinator.max_message_bytes (" +
                                   std::to_string(c.limits.max_message_bytes) + "), got " +
                                   std::to_string(c.limits.max_spec_bytes));
  }
}

// tls: certificates (resolved against the cluster file's directory).
void parse_tls_section(YamlMap t, const std::string& base, const ClusterLoadOptions& options,
                       ClusterConfig* out) {
  ClusterConfig& c = *out;
  t.get("enabled", &c.tls.enabled);
  t.get("ca", &c.tls.ca);
  t.get("cert", &c.tls.cert);
  t.get("key", &c.tls.key);
  t.get("client_cert", &c.tls.client_cert);
  t.get("client_key", &c.tls.client_key);
  t.get("server_name", &c.tls.server_name);
  if (c.tls.enabled) {
    if (c.tls.ca.empty()) t.error("ca", "is required when tls.enabled is true");
    if (c.tls.cert.empty() != c.tls.key.empty())
      t.error(c.tls.cert.empty() ? "cert" : "key", "cert and key go together: give both");
    if (c.tls.client_cert.empty() != c.tls.client_key.empty()) {
      t.error(c.tls.client_cert.empty() ? "client_cert" : "client_key",
              "client_cert and client_key go together: give both");
    }
    if (c.tls.cert.empty() && c.tls.client_cert.empty())
      t.error("enabled", "needs cert/key (coordinator) or client_cert/client_key (clients)");
    resolve_file(t, "ca", base, options.check_files, &c.tls.ca);
    resolve_file(t, "cert", base, options.check_files, &c.tls.cert);
    resolve_file(t, "key", base, options.check_files, &c.tls.key);
    resolve_file(t, "client_cert", base, options.check_files, &c.tls.client_cert);
    resolve_file(t, "client_key", base, options.check_files, &c.tls.client_key);
  }
  t.finish();
}

// auth: per-user tokens with roles, the shared and the worker token files.
void parse_auth_section(YamlMap a, const std::string& base, const ClusterLoadOptions& options,
                        ClusterConfig* out) {
  ClusterConfig& c = *out;
  std::set<std::string> users;
  for (YamlMap tok : a.child_list("tokens")) {
    AuthToken at;
    tok.require("user");
    tok.require("token_file");
    tok.get("user", &at.user);
    tok.get("token_file", &at.token_file);
    tok.get("role", &at.role);
    if (!at.role.empty() && at.role != "user" && at.role != "worker" && at.role != "admin")
      tok.error("role", "must be user, worker or admin, got '" + at.role + "'");
    resolve_file(tok, "token_file", base, options.check_files, &at.token_file);
    tok.finish();
    if (!at.user.empty() && !users.insert(at.user).second)
      tok.error("user", "duplicate user '" + at.user + "'");
    c.auth.tokens.push_back(at);
  }
  a.get("token_file", &c.auth.token_file);
  resolve_file(a, "token_file", base, options.check_files, &c.auth.token_file);
  a.get("worker_token_file", &c.auth.worker_token_file);
  resolve_file(a, "worker_token_file", base, options.check_files, &c.auth.worker_token_file);
  a.finish();
}

// data_dirs and checkpoint_root: absolute, normalised directories.
void parse_storage_paths(YamlMap& m, ClusterConfig* out) {
  ClusterConfig& c = *out;
  if (m.has("data_dirs")) {
    c.data_dirs.clear();
    m.get_list("data_dirs", &c.data_dirs);
    for (const auto& d : c.data_dirs) {
      if (!std::filesystem::path(d).is_absolute())
        m.error("data_dirs", "must list absolute directories, got '" + d + "'");
    }
    for (auto& d : c.data_dirs) d = std::filesystem::path(d).lexically_normal().string();
  }
  if (m.has("checkpoint_root")) {
    // A value that is not a string (null, a list) is reported by get() and left unset.
    const std::string unset(1, '\0');
    std::string root = unset;
    m.get("checkpoint_root", &root);
    if (root != unset) {
      std::string problem = checkpoint_root_problem(root);
      if (!problem.empty()) {
        m.error("checkpoint_root", problem);
      } else {
        root = std::filesystem::path(root).lexically_normal().string();
        while (root.size() > 1 && root.back() == '/') root.pop_back();
        c.checkpoint_root = root;
      }
    }
  }
}

// regions: names, worker daemons, slots, hosts, GPUs. Returns the region names.
std::set<std::string> parse_regions(YamlMap& m, ClusterConfig* out) {
  ClusterConfig& c = *out;
  m.require("regions");
  std::set<std::string> names;
  for (YamlMap r : m.child_list("regions")) {
    RegionSpec rs;
    r.require("name");
    r.get("name", &rs.name);
    r.get("workers", &rs.workers, 0, 4096);
    r.get("slots", &rs.slots, 1, 1024);
    r.get("host", &rs.host);
    std::vector<double> gpus;
    r.get_list("gpus", &gpus, 0, 1024);
    std::set<int64_t> seen_gpus;
    for (double g : gpus) {
      if (g != static_cast<double>(static_cast<int64_t>(g))) {
        r.error("gpus", "must list whole GPU ids, got " + std::to_string(g));
        break;
      }
      if (!seen_gpus.insert(static_cast<int64_t>(g)).second) {
        r.error("gpus", "lists GPU " + std::to_string(static_cast<int64_t>(g)) + " twice");
        break;
      }
      rs.gpus.push_back(static_cast<int64_t>(g));
    }
    r.finish();
    if (r.has("name") && !is_simple_name(rs.name)) {
      r.error("name", "must be 1-63 characters of [A-Za-z0-9._-], got '" + rs.name + "'");
    }
    std::string hp = host_problem(rs.host);
    if (!hp.empty()) r.error("host", "'" + rs.host + "' " + hp + " (a bare host, no port)");
    if (!rs.name.empty() && !names.insert(rs.name).second)
      r.error("name", "duplicate region '" + rs.name + "'");
    c.regions.push_back(rs);
  }
  if (m.has("regions") && c.regions.empty()) {
    m.error("regions", "must list at least one region");
  } else if (!c.regions.empty() && c.total_workers() == 0) {
    m.error("regions",
            "have no worker daemons (workers: 0 everywhere): give at least one region "
            "workers >= 1");
  }
  return names;
}

// network: the emulated links (intra-region, the default between regions, per pair).
void parse_network_section(YamlMap n, const std::set<std::string>& names, ClusterConfig* out) {
  ClusterConfig& c = *out;
  n.get("emulate", &c.network.emulate);
  YamlMap intra = n.child("intra_region");
  parse_link(intra, &c.network.intra_region);
  check_link(intra, c.network.intra_region);
  intra.finish();
  YamlMap def = n.child("default");
  parse_link(def, &c.network.inter_region_default);
  check_link(def, c.network.inter_region_default);
  def.finish();
  std::map<std::pair<std::string, std::string>, std::string> link_paths;
  for (YamlMap l : n.child_list("links")) {
    std::vector<std::string> between;
    l.require("between");
    l.get_list("between", &between);
    LinkSpec ls;
    parse_link(l, &ls);
    check_link(l, ls);
    l.finish();
    if (between.size() != 2) {
      if (l.has("between")) l.error("between", "must name exactly two regions");
      continue;
    }
    for (const auto& b : between) {
      if (!names.count(b)) l.error("between", "names unknown region '" + b + "'");
    }
    if (between[0] == between[1]) {
      l.error("between",
              "names region '" + between[0] + "' twice; within a region, set network.intra_region");
      continue;
    }
    auto key = between[0] < between[1] ? std::make_pair(between[0], between[1])
                                       : std::make_pair(between[1], between[0]);
    auto [first, inserted] = link_paths.emplace(key, l.path());
    if (!inserted) {
      l.error("between", "gives the link " + key.first + " - " + key.second + " again (first in " +
                             first->second + ")");
    }
    c.network.links[key] = ls;
  }
  n.finish();
}

// Plain-text gRPC carries tokens and job specs in the clear: only on this machine.
void check_plaintext_is_loopback(YamlMap& m, const ClusterConfig& c) {
  if (c.tls.enabled) return;
  if (!is_loopback_host(c.listen)) {
    m.error("coordinator",
            "listen " + c.listen +
                " is not a loopback address and tls.enabled is false: plain-text "
                "gRPC is only allowed on loopback; enable tls (scripts/make-certs.sh) "
                "or listen on 127.0.0.1");
  }
  for (size_t i = 0; i < c.regions.size(); ++i) {
    if (!is_loopback_host(c.regions[i].host)) {
      m.error("regions", "[" + std::to_string(i) + "].host " + c.regions[i].host +
                             " is not a loopback address and tls.enabled is false: enable tls "
                             "for a cluster that spans machines");
    }
  }
}

Result<ClusterConfig> parse_cluster_node(YAML::Node root, const std::string& path,
                                         const ClusterLoadOptions& options) {
  ErrorList errors(path);
  YamlMap m(root, "", &errors);
  ClusterConfig c;
  c.path = path;
  const std::string base = std::filesystem::path(path).parent_path().string();
  m.get("name", &c.name);
  if (!is_simple_name(c.name)) {
    m.error("name", "must be 1-63 characters of [A-Za-z0-9._-] (it names .tern/NAME), got '" +
                        c.name + "'");
  }
  parse_coordinator_section(m.child("coordinator"), base, options, &c);
  parse_tls_section(m.child("tls"), base, options, &c);
  parse_auth_section(m.child("auth"), base, options, &c);
  parse_storage_paths(m, &c);
  std::string state_dir = ".tern/" + c.name;
  m.get("state_dir", &state_dir);
  if (state_dir.empty()) m.error("state_dir", "must not be empty");
  m.get("trainer", &c.trainer_path);
  const std::set<std::string> names = parse_regions(m, &c);
  parse_network_section(m.child("network"), names, &c);
  m.finish();
  check_plaintext_is_loopback(m, c);
  TERN_RETURN_IF_ERROR(errors.to_status());
  std::error_code ec;
  c.state_dir = std::filesystem::absolute(state_dir, ec).lexically_normal().string();
  if (!c.trainer_path.empty()) {
    c.trainer_path = std::filesystem::absolute(c.trainer_path, ec).lexically_normal().string();
  }
  return c;
}

}  // namespace
}  // namespace tern
