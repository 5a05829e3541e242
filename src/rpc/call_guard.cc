#include "rpc/call_guard.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace tern {
namespace {

constexpr size_t kMaxBuckets = 100000;

// "ipv4:10.0.0.7:53124" -> "ipv4:10.0.0.7"; "ipv6:[::1]:5000" -> "ipv6:[::1]".
std::string peer_host(const std::string& peer) {
  auto colon = peer.rfind(':');
  auto first = peer.find(':');
  if (colon == std::string::npos || colon == first) return peer;
  return peer.substr(0, colon);
}

}  // namespace

bool RateLimiter::allow(const std::string& key, double now_s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (buckets_.size() >= kMaxBuckets && !buckets_.count(key)) {
    // Many distinct clients: forget the ones whose buckets have refilled (they are owed
    // nothing), so the table stays bounded.
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      double full_at = it->second.updated_s + (burst_ - it->second.tokens) / per_s_;
      it = full_at <= now_s ? buckets_.erase(it) : std::next(it);
    }
  }
  auto [it, fresh] = buckets_.try_emplace(key, Bucket{burst_, now_s});
  Bucket& b = it->second;
  if (!fresh) {
    b.tokens = std::min(burst_, b.tokens + (now_s - b.updated_s) * per_s_);
    b.updated_s = now_s;
  }
  if (b.tokens < 1.0) return false;
  b.tokens -= 1.0;
  return true;
}

CallGuard::CallGuard(const CallGuardOptions& options,
                     std::shared_ptr<const TokenAuthenticator> auth, RpcMetrics* metrics)
    : auth_(std::move(auth)), metrics_(metrics), limiter_(options.rate_per_s, options.rate_burst) {}

std::string CallGuard::client_of(grpc::ServerContext* context) const {
  if (auth_ && auth_->enabled()) {
    const auto& md = context->client_metadata();
    auto it = md.find("authorization");
    if (it != md.end()) {
      if (auto user = auth_->user_for(std::string(it->second.data(), it->second.size())))
        return "user:" + *user;
    }
  }
  return "peer:" + peer_host(context->peer());
}

grpc::Status CallGuard::authorize(grpc::ServerContext* context, const char* method,
                                  unsigned roles) const {
  if (!auth_ || !auth_->enabled() || roles == kAnyRole) return grpc::Status::OK;
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  const ApiToken* token =
      it == md.end() ? nullptr : auth_->find(std::string(it->second.data(), it->second.size()));
  if (!token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        std::string(method) + " refused: no valid bearer token");
  }
  if (token->role == Role::kAdmin || (roles & static_cast<unsigned>(token->role)) != 0)
    return grpc::Status::OK;
  const bool worker_rpc = (roles & static_cast<unsigned>(Role::kWorker)) != 0;
  return grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      fmt::format("{} refused: user '{}' has role {}; {} (auth.tokens[].role in the cluster file)",
                  method, token->user, role_name(token->role),
                  worker_rpc ? "worker RPCs need a token with role worker or admin, as worker "
                               "daemons send (auth.worker_token_file)"
                             : "submitting, cancelling and reading jobs needs role user or admin"));
}

grpc::Status CallGuard::run(grpc::ServerContext* context, const char* method,
                            const std::function<grpc::Status()>& body, bool limited, bool timed,
                            unsigned roles) {
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = authorize(context, method, roles);
  if (!status.ok()) {
    spdlog::warn("{} from {} refused: {}", method, client_of(context), status.error_message());
  } else if (limited &&
             // Worker registrations have their own bucket: a user's burst of CLI calls must
             // not keep a daemon sharing its token (clusters without roles) from registering.
             !limiter_.allow(client_of(context) +
                                 (roles == static_cast<unsigned>(Role::kWorker) ? "#worker" : ""),
                             std::chrono::duration<double>(start - epoch_).count())) {
    status =
        grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                     fmt::format("{} refused: this client made more than {:g} calls/s (burst {:g}; "
                                 "coordinator.rate_limit); slow down and retry",
                                 method, limiter_.per_s(), limiter_.burst()));
    spdlog::debug("{} from {} refused by the rate limit", method, client_of(context));
  } else {
    status = body();
  }
  if (metrics_ && timed) {
    metrics_->observe(
        method, static_cast<int>(status.error_code()),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return status;
}

}  // namespace tern
