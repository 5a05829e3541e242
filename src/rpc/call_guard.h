// Admission for gRPC handlers: a per-client token-bucket rate limit and per-method latency
// metrics, applied by wrapping a handler body:
//
//   return guard_->run(context, "GetJob", [&] { ... return grpc::Status::OK; });
//
// A client is its authenticated user (the bearer token's owner) or, without tokens, its
// peer address (host only, so reconnecting does not reset the bucket). A refused call gets
// RESOURCE_EXHAUSTED with a message saying what to do, and its handler never runs.
//
// Thread-safe: gRPC calls run() from many threads; one mutex guards the buckets.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "rpc/metrics.h"
#include "rpc/security.h"

namespace tern {

// Token buckets keyed by client: `per_s` tokens per second, at most `burst` stored.
class RateLimiter {
 public:
  RateLimiter(double per_s, double burst) : per_s_(per_s), burst_(burst) {}
  // Takes one token from `key`'s bucket at time `now_s` (seconds, monotonic); false when
  // the bucket is empty.
  bool allow(const std::string& key, double now_s);
  double per_s() const { return per_s_; }
  double burst() const { return burst_; }

 private:
  struct Bucket {
    double tokens = 0;
    double updated_s = 0;
  };
  const double per_s_;
  const double burst_;
  std::mutex mu_;  // guards buckets_
  std::unordered_map<std::string, Bucket> buckets_;
};

struct CallGuardOptions {
  double rate_per_s = 50;
  double rate_burst = 100;
};

class CallGuard {
 public:
  // `auth` maps tokens to users (may be null: clients are peer addresses); `metrics` may be
  // null (no latency recorded).
  CallGuard(const CallGuardOptions& options, std::shared_ptr<const TokenAuthenticator> auth,
            RpcMetrics* metrics);

  // Runs `body` unless the caller's token has none of the `roles` (admin has all; checked
  // only when tokens are configured: PERMISSION_DENIED) or the client is over its rate (when
  // `limited`); records the latency and status code under `method` (when `timed`: streams
  // are not).
  grpc::Status run(grpc::ServerContext* context, const char* method,
                   const std::function<grpc::Status()>& body, bool limited = true,
                   bool timed = true, unsigned roles = kAnyRole);

  // The client a call is accounted to: "user:<name>" or "peer:<host>".
  std::string client_of(grpc::ServerContext* context) const;

 private:
  grpc::Status authorize(grpc::ServerContext* context, const char* method, unsigned roles) const;
  std::shared_ptr<const TokenAuthenticator> auth_;
  RpcMetrics* metrics_;
  RateLimiter limiter_;
  const std::chrono::steady_clock::time_point epoch_ = std::chrono::steady_clock::now();
};

}  // namespace tern
