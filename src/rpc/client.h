// Client side of tern's gRPC API: a channel factory, a retry loop with deadlines, and small
// typed wrappers over the Coordinator and WorkerService stubs that return Result<Reply>.
//
// Every call has a deadline. Calls that are safe to repeat (reads, heartbeats, event
// reports, which the coordinator applies idempotently) are retried on UNAVAILABLE with
// exponential backoff; SubmitJob and CancelJob are not retried. Wrappers are thread-safe
// (gRPC stubs are).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "rpc/security.h"
#include "tern/v1/coordinator.grpc.pb.h"
#include "tern/v1/worker.grpc.pb.h"

namespace tern {

struct RpcClientOptions {
  std::chrono::milliseconds deadline{5000};  // per attempt
  int retries = 2;                           // extra attempts for idempotent calls
  std::chrono::milliseconds backoff{100};    // first pause; doubles per attempt
  // TLS material and bearer token; null = plain text without a token (loopback only).
  std::shared_ptr<const ClientSecurity> security;
  // WatchJob streams are re-opened after this long (every call has a deadline); the
  // caller sees one uninterrupted stream.
  std::chrono::milliseconds watch_deadline{std::chrono::minutes(10)};
  // On UNAVAILABLE, probe the address (one TCP connection, at most 1.5 s) to tell "nothing
  // listens" from "a coordinator that speaks TLS while this client speaks plain text" (and the
  // reverse), and say which. For interactive clients (the CLI), not for daemons' loops.
  bool diagnose_unavailable = false;
};

// A channel to HOST:PORT ("0.0.0.0:P" and ":P" are dialled as 127.0.0.1:P), TLS when
// `security` says so.
std::shared_ptr<grpc::Channel> make_channel(const std::string& address,
                                            const ClientSecurity* security = nullptr);
// The address clients should dial for a server that listens on `listen`.
std::string dial_address(const std::string& listen);

// Runs `attempt` (which fills a fresh ClientContext's deadline itself via `context`) up to
// 1 + retries times while it returns UNAVAILABLE. The Status of the last attempt is returned,
// with "coordinator at ADDR: " prepended to transport errors.
Status call_with_retry(const std::string& address, const RpcClientOptions& options, bool idempotent,
                       const std::function<grpc::Status(grpc::ClientContext*)>& attempt);

// Typed wrapper for the client-facing Coordinator service.
class CoordinatorClient {
 public:
  explicit CoordinatorClient(const std::string& address, RpcClientOptions options = {});
  const std::string& address() const { return address_; }
  const RpcClientOptions& options() const { return options_; }

  Result<v1::SubmitJobReply> submit_job(const v1::SubmitJobRequest& request);
  Result<v1::GetJobReply> get_job(const std::string& job_id);
  Result<v1::ListJobsReply> list_jobs(const v1::ListJobsRequest& request = {});
  Result<v1::CancelJobReply> cancel_job(const std::string& job_id, const std::string& reason = "");
  Result<v1::ListWorkersReply> list_workers();
  Result<v1::GetLogsReply> get_logs(const v1::GetLogsRequest& request);
  // Streams the job's status to `on_update` until the job ends, `on_update` returns false,
  // or the stream breaks. Returns the last status seen (or the error).
  Result<v1::JobStatus> watch_job(const std::string& job_id,
                                  const std::function<bool(const v1::JobStatus&)>& on_update,
                                  int min_interval_ms = 0);

 private:
  std::string address_;
  RpcClientOptions options_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

// Typed wrapper for the worker-facing service (used by the worker daemon).
class WorkerServiceClient {
 public:
  explicit WorkerServiceClient(const std::string& address, RpcClientOptions options = {});
  const std::string& address() const { return address_; }

  Result<v1::RegisterWorkerReply> register_worker(const v1::RegisterWorkerRequest& request);
  Result<v1::HeartbeatReply> heartbeat(const v1::HeartbeatRequest& request);
  Result<v1::ReportEventsReply> report_events(const v1::ReportEventsRequest& request);
  // The long poll: its deadline is the request's wait_ms plus the client's deadline.
  Result<v1::AwaitWorkReply> await_work(const v1::AwaitWorkRequest& request);
  Result<v1::ReportNetworkReply> report_network(const v1::ReportNetworkRequest& request);

 private:
  std::string address_;
  RpcClientOptions options_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

}  // namespace tern
