// A Coordinator service for rpc/ tests whose handlers only count the calls that reach them:
// a call refused by authentication or by the rate limit must leave the counts unchanged.
// Handlers run on gRPC's threads; the counts are atomics.
#pragma once

#include <atomic>
#include <string>

#include "rpc/call_guard.h"
#include "tern/v1/coordinator.grpc.pb.h"

namespace tern::testing {

class CountingCoordinator final : public v1::Coordinator::Service {
 public:
  // `guard` (may be null) wraps each handler as the real service does.
  explicit CountingCoordinator(CallGuard* guard = nullptr) : guard_(guard) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest*,
                         v1::SubmitJobReply* reply) override {
    return run(context, "SubmitJob", [&] {
      reply->set_job_id("j-" + std::to_string(++submitted));
      return grpc::Status::OK;
    });
  }
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest*,
                        v1::ListJobsReply*) override {
    return run(context, "ListJobs", [&] {
      ++listed;
      return grpc::Status::OK;
    });
  }

  std::atomic<int> submitted{0};  // SubmitJob handler bodies that ran
  std::atomic<int> listed{0};     // ListJobs handler bodies that ran

 private:
  grpc::Status run(grpc::ServerContext* context, const char* method,
                   const std::function<grpc::Status()>& body) {
    return guard_ ? guard_->run(context, method, body) : body();
  }
  CallGuard* guard_;
};

}  // namespace tern::testing
