// ClusterConfig: one file that describes a tern cluster — where the coordinator listens,
// where state lives, which worker daemons exist in which region, and the network between
// regions (used by the WAN emulation). Read by `tern cluster up/down`, the coordinator and
// (for the network model) by trainers via `tern run --cluster`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

struct LinkSpec {
  double latency_ms = 0.0;      // one-way
  double jitter_ms = 0.0;       // uniform +- jitter added per message
  double bandwidth_mbps = 0.0;  // megabit/s; 0 = unlimited
};

struct RegionSpec {
  std::string name;
  int64_t workers = 1;  // worker daemons in this region (local clusters start them)
  int64_t slots = 1;    // ranks each daemon can host
  std::string host = "127.0.0.1";
  std::vector<int64_t> gpus;  // GPU ids handed out to ranks (CUDA_VISIBLE_DEVICES)
};

struct NetworkSpec {
  bool emulate = true;
  LinkSpec intra_region;          // between two ranks of the same region
  LinkSpec inter_region_default;  // between regions with no explicit link
  std::map<std::pair<std::string, std::string>, LinkSpec> links;  // key: (a, b) with a < b

  // The link between two regions (symmetric).
  const LinkSpec& link(const std::string& a, const std::string& b) const;
};

// mTLS between the coordinator, worker daemons and the CLI. Paths are absolute once loaded
// (relative ones are resolved against the cluster file's directory). The coordinator serves
// with cert/key and requires a client certificate signed by `ca`; daemons and the CLI present
// client_cert/client_key and verify the coordinator against `ca`.
struct TlsSpec {
  bool enabled = false;
  std::string ca;           // PEM CA bundle both sides verify against
  std::string cert;         // the coordinator's certificate (PEM)
  std::string key;          // the coordinator's private key (PEM)
  std::string client_cert;  // daemons' and the CLI's certificate (PEM)
  std::string client_key;   // daemons' and the CLI's private key (PEM)
  std::string server_name;  // name to verify the coordinator as; empty = the dialled host
};

// One API user: the coordinator accepts `Authorization: Bearer <token>` where the token is
// the content of token_file (whitespace trimmed).
// `role`: "user" (the Coordinator API: submit, cancel, status, logs), "worker" (only the
// WorkerService: daemons), "admin" (both). Empty in every entry: all tokens are admin (files
// from before roles); empty in some: that entry is a user.
struct AuthToken {
  std::string user;
  std::string token_file;  // absolute once loaded
  std::string role = "";   // "", "user", "worker" or "admin"
};

struct AuthSpec {
  std::vector<AuthToken> tokens;  // empty = no bearer tokens required
  std::string token_file;         // the token this machine's CLI (and daemons, by default) send
  std::string worker_token_file;  // the token worker daemons send instead; empty = token_file
};

// What the coordinator refuses, each with a clear status (RESOURCE_EXHAUSTED or
// INVALID_ARGUMENT) rather than a crash.
struct LimitsSpec {
  int64_t max_message_bytes = 4 << 20;  // any gRPC message, both directions
  int64_t max_spec_bytes = 256 << 10;   // SubmitJob's spec_yaml
  double rate_per_s = 50;               // Coordinator API calls per second per client
  int64_t rate_burst = 100;             // token bucket size
  int64_t rpc_deadline_ms = 5000;       // clients' per-call deadline
  double worker_rate_per_s = 50;        // Heartbeat/ReportEvents calls per second per worker
  int64_t worker_rate_burst = 200;
  int64_t max_log_bytes_per_job = int64_t{64} << 20;  // trainer log bytes kept per job
  int64_t max_log_chunk_bytes = int64_t{1} << 20;     // one log chunk from a daemon
};

// The coordinator's HTTP endpoints (/metrics, /healthz) besides metrics_port.
struct MetricsSpec {
  std::string host = "127.0.0.1";  // coordinator.metrics_host: interface to bind (loopback)
  std::string token_file;          // coordinator.metrics_token_file: Bearer token /metrics requires
};

struct ClusterConfig {
  std::string name = "local";
  std::string path;                       // the file it came from
  std::string listen = "127.0.0.1:7070";  // coordinator address
  std::string state_dir;                  // absolute; journal/, logs/, work/ live below it
  int64_t heartbeat_ms = 500;
  int64_t lease_ms = 3000;
  int64_t max_queued_jobs = 1000;
  int64_t metrics_port = 0;  // Prometheus /metrics and /healthz over HTTP; 0 = off
  MetricsSpec metrics;
  std::string trainer_path;  // tern-trainer binary; default: next to `tern`
  // Directories a job spec may read from (data.path, recovery.resume_from) besides the
  // worker's own job directory. Absolute.
  std::vector<std::string> data_dirs = {"/usr/share/datasets"};
  // Where `tern submit` jobs keep their checkpoints: a directory every worker reaches at this
  // same path (a shared file system mount; on a local cluster, a directory of this machine).
  // When set, a job whose spec leaves recovery.dir unset checkpoints into
  // <checkpoint_root>/<job id>/ (all ranks the same directory), the coordinator journals its
  // newest committed step, and `tern submit --resume JOB` can start a new job from it on any
  // cluster that mounts the same root. Jobs may write only their own <root>/<job id> and read
  // (recovery.resume_from) anywhere below the root. Absolute, normalised; empty = off (each
  // worker keeps checkpoints in its own job directory).
  std::string checkpoint_root;
  TlsSpec tls;
  AuthSpec auth;
  LimitsSpec limits;
  std::vector<RegionSpec> regions;
  NetworkSpec network;

  std::string journal_dir() const { return state_dir + "/journal"; }
  std::string log_dir() const { return state_dir + "/logs"; }
  std::string work_dir() const { return state_dir + "/work"; }
  // <checkpoint_root>/<job_id>: where job `job_id` checkpoints; "" when checkpoint_root is off.
  std::string job_checkpoint_dir(const std::string& job_id) const;
  int64_t total_workers() const;
};

struct ClusterLoadOptions {
  // Check that the tls and auth files exist and are readable (the coordinator, daemons and
  // the CLI do; a trainer handed a copy of the file in its job directory does not).
  bool check_files = false;
};

// Loads and validates a cluster file; state_dir and trainer are resolved against the current
// directory, tls/auth file paths against the file's directory. Errors name file:line and the
// field. `overrides` are "a.b=c" like --set. Plain-text gRPC (tls.enabled false) is refused
// unless every address in the file is a loopback address.
Result<ClusterConfig> load_cluster_config(const std::string& path,
                                          const std::vector<std::string>& overrides = {},
                                          const ClusterLoadOptions& options = {});
// Same, from text; `name` stands for the file in messages (and its directory is the base of
// relative tls/auth paths).
Result<ClusterConfig> parse_cluster_config(const std::string& text, const std::string& name,
                                           const ClusterLoadOptions& options = {});

// True for 127.0.0.0/8, ::1 and "localhost" (the host part of HOST:PORT or a bare host).
bool is_loopback_host(const std::string& host_or_address);

}  // namespace tern
