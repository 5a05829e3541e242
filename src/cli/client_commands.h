// The `tern` subcommands that talk to a coordinator: submit, jobs, status, workers, logs,
// cancel. Each returns the process exit code:
//   0 ok (for submit --watch: the job SUCCEEDED), 1 the request failed or the job did not
//   succeed, 2 bad input (an invalid spec, an unknown flag value), 3 coordinator unreachable.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/cluster_config.h"
#include "common/status.h"
#include "rpc/client.h"

namespace tern {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitBadInput = 2;
constexpr int kExitUnreachable = 3;

struct ClientOptions {
  std::string coordinator;   // --coordinator HOST:PORT; empty = resolve_coordinator()
  std::string cluster_file;  // --cluster FILE: the address, TLS and token file from it
  std::string token;         // --token; empty = $TERN_TOKEN, then the file's auth.token_file
  bool json = false;         // --json: machine-readable output
  // A worker daemon: the cluster file's auth.worker_token_file, when it names one, wins
  // over $TERN_TOKEN and auth.token_file (only --token wins over it).
  bool worker = false;
};

// --coordinator, else --cluster FILE's listen address, else $TERN_COORDINATOR, else
// 127.0.0.1:7070.
Result<std::string> resolve_coordinator(const ClientOptions& options);

// Everything a client needs to reach the coordinator: the address and RPC options with the
// TLS material and bearer token (--token, $TERN_TOKEN, the cluster file's auth.token_file),
// plus the cluster file itself when one was given. Refuses plain text to a remote address.
struct ClientConnection {
  std::string address;
  RpcClientOptions rpc;
  std::optional<ClusterConfig> cluster;
};
Result<ClientConnection> resolve_connection(const ClientOptions& options);

struct SubmitOptions {
  std::string job_file;  // empty with resume_job
  // --resume JOB: a new job from JOB's journaled spec and newest committed checkpoint (the
  // coordinator sets recovery.resume_from; --set still applies, e.g. workers=3).
  std::string resume_job;
  std::vector<std::string> overrides;  // --set a.b=c
  bool watch = false;
};
int submit_command(const ClientOptions& client, const SubmitOptions& options);
int jobs_command(const ClientOptions& client);
struct StatusOptions {
  std::string job_id;
  bool watch = false;       // --watch: redraw every interval until the job ends (tern top)
  double interval_s = 2.0;  // --interval
};
int status_command(const ClientOptions& client, const StatusOptions& status);
// --network: the measured network matrix and the ring order (cli/network_view.h) instead of
// the worker table.
int workers_command(const ClientOptions& client, bool network = false);
int logs_command(const ClientOptions& client, const std::string& job_id, int rank, bool follow);
int cancel_command(const ClientOptions& client, const std::string& job_id);

// Maps an RPC error to a message on stderr and an exit code (3 when unreachable).
int report_error(const std::string& what, const Status& status);

}  // namespace tern
