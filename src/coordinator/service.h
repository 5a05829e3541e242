// The gRPC face of the coordinator (the second of the gRPC layers in docs/contributing.md,
// "Interfaces and seams"; the services: docs/protocol.md): thin adapters that convert
// proto/tern/v1 messages to domain types, call CoordinatorCore and convert back. No business
// logic lives here. Both services borrow the core, which must outlive them; gRPC calls them
// from its own threads (the core is thread-safe).
#pragma once

#include "coordinator/coordinator_core.h"
#include "rpc/call_guard.h"
#include "tern/v1/coordinator.grpc.pb.h"
#include "tern/v1/worker.grpc.pb.h"

namespace tern {

// Domain -> proto conversions (also used by tests and the CLI's JSON output).
void to_proto(const Job& job, double now, v1::JobStatus* out);
void to_proto(const Worker& worker, const std::vector<TaskKey>& tasks, v1::WorkerStatus* out);
v1::JobState to_proto(JobState s);
void to_proto(const TaskCommand& command, v1::TaskCommand* out);
// Proto -> domain (worker events).
TaskEvent from_proto(const v1::TaskEvent& event);

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // `guard` (may be null) rate-limits clients and times calls; it must outlive the service.
  CoordinatorService(CoordinatorCore* core, Clock* clock, CallGuard* guard = nullptr)
      : core_(core), clock_(clock), guard_(guard) {}
  // Ends open WatchJob streams promptly (server shutdown).
  void stop_watches() { stopping_.store(true); }

  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*,
                         v1::SubmitJobReply*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::GetJobReply*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                        v1::ListJobsReply*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*,
                         v1::CancelJobReply*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*,
                        grpc::ServerWriter<v1::WatchJobReply>*) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                           v1::ListWorkersReply*) override;
  grpc::Status GetLogs(grpc::ServerContext*, const v1::GetLogsRequest*, v1::GetLogsReply*) override;

 private:
  CoordinatorCore* core_;
  Clock* clock_;
  CallGuard* guard_;
  std::atomic<bool> stopping_{false};
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  // `guard` (may be null) checks roles and times calls; RegisterWorker is rate-limited per
  // client by it, Heartbeat and ReportEvents per worker by the core (after the session check,
  // so nobody else can use up a worker's budget).
  explicit WorkerServiceImpl(CoordinatorCore* core, CallGuard* guard = nullptr)
      : core_(core), guard_(guard) {}

  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest*,
                              v1::RegisterWorkerReply*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatReply*) override;
  grpc::Status ReportEvents(grpc::ServerContext*, const v1::ReportEventsRequest*,
                            v1::ReportEventsReply*) override;
  grpc::Status AwaitWork(grpc::ServerContext*, const v1::AwaitWorkRequest*,
                         v1::AwaitWorkReply*) override;
  grpc::Status ReportNetwork(grpc::ServerContext*, const v1::ReportNetworkRequest*,
                             v1::ReportNetworkReply*) override;

 private:
  CoordinatorCore* core_;
  CallGuard* guard_;
};

}  // namespace tern
