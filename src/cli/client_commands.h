// The `tern` subcommands that talk to a coordinator: submit, jobs, status, workers, logs,
// cancel. Each returns the process exit code:
//   0 ok (for submit --watch: the job SUCCEEDED), 1 the request failed or the job did not
//   succeed, 2 bad input (an invalid spec, an unknown flag value), 3 coordinator unreachable.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitBadInput = 2;
constexpr int kExitUnreachable = 3;

struct ClientOptions {
  std::string coordinator;   // --coordinator HOST:PORT; empty = resolve_coordinator()
  std::string cluster_file;  // --cluster FILE: take the address from it
  bool json = false;         // --json: machine-readable output
};

// --coordinator, else --cluster FILE's listen address, else $TERN_COORDINATOR, else
// 127.0.0.1:7070.
Result<std::string> resolve_coordinator(const ClientOptions& options);

struct SubmitOptions {
  std::string job_file;
  std::vector<std::string> overrides;  // --set a.b=c
  bool watch = false;
};
int submit_command(const ClientOptions& client, const SubmitOptions& options);
int jobs_command(const ClientOptions& client);
int status_command(const ClientOptions& client, const std::string& job_id);
int workers_command(const ClientOptions& client);
int logs_command(const ClientOptions& client, const std::string& job_id, int rank, bool follow);
int cancel_command(const ClientOptions& client, const std::string& job_id);

// Maps an RPC error to a message on stderr and an exit code (3 when unreachable).
int report_error(const std::string& what, const Status& status);

}  // namespace tern
