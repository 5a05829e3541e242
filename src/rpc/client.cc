#include "rpc/client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "rpc/status_convert.h"

namespace tern {

std::string dial_address(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return listen;
  std::string host = listen.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    return "127.0.0.1" + listen.substr(colon);
  }
  return listen;
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& address,
                                            const ClientSecurity* security) {
  grpc::ChannelArguments args;
  if (security) {
    args.SetMaxReceiveMessageSize(static_cast<int>(security->max_message_bytes));
    args.SetMaxSendMessageSize(static_cast<int>(security->max_message_bytes));
    if (security->tls && !security->server_name.empty())
      args.SetSslTargetNameOverride(security->server_name);
  }
  // Fail fast when nothing listens: the CLI must say "unreachable" promptly, and daemons
  // retry on their own schedule.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Each channel owns its connections: a fresh channel after a failure starts without the
  // backoff state a shared subchannel would carry over.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(
      dial_address(address),
      security ? channel_credentials(*security) : grpc::InsecureChannelCredentials(), args);
}

namespace {

// What answers at HOST:PORT when a plain-text HTTP/2 client connects (see below).
enum class Peer { kNone, kClosedOnPreface, kPlainHttp2, kUnknown };

// Connects to `address` and sends the HTTP/2 client preface with an empty SETTINGS frame, as
// a plain-text gRPC client does. A plain-text gRPC server answers with its SETTINGS frame; a
// TLS server (gRPC's or any other) takes the preface for a broken TLS record and closes the
// connection without a byte. Bounded by `timeout` overall.
Peer probe_peer(const std::string& address, std::chrono::milliseconds timeout) {
  std::string host, port;
  auto colon = address.rfind(':');
  if (colon == std::string::npos) return Peer::kUnknown;
  host = address.substr(0, colon);
  port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || !found)
    return Peer::kUnknown;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left_ms = [&] {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  };
  Peer result = Peer::kNone;
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    int rc = ::connect(fd, found->ai_addr, found->ai_addrlen);
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    bool connected =
        rc == 0 || (errno == EINPROGRESS && ::poll(&p, 1, left_ms()) == 1 &&
                    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0);
    if (connected) {
      static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0";
      result = Peer::kUnknown;
      if (::send(fd, kPreface, sizeof kPreface - 1, MSG_NOSIGNAL) ==
          static_cast<ssize_t>(sizeof kPreface - 1)) {
        unsigned char buf[16];
        pollfd r{fd, POLLIN, 0};
        if (::poll(&r, 1, left_ms()) == 1) {
          ssize_t n = ::recv(fd, buf, sizeof buf, 0);
          if (n == 0 || (n < 0 && errno == ECONNRESET)) result = Peer::kClosedOnPreface;
          if (n >= 9 && buf[3] == 0x04) result = Peer::kPlainHttp2;  // a SETTINGS frame
        }
      }
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return result;
}

// An UNAVAILABLE call says "is it running?"; when something does listen there but speaks
// another protocol than this client, say that instead (with how to fix it).
Status explain_unreachable(const std::string& address, const RpcClientOptions& options, Status s) {
  const std::string dial = dial_address(address);
  if (!options.diagnose_unavailable)
    return s.with_context("coordinator at " + dial + " unreachable");
  const bool tls = options.security && options.security->tls;
  Peer peer = probe_peer(dial, std::chrono::milliseconds(1500));
  if (!tls && peer == Peer::kClosedOnPreface) {
    return unavailable("coordinator at " + dial +
                       " speaks TLS, and this client connected in "
                       "plain text (" +
                       s.message() +
                       "). Pass --cluster FILE with the "
                       "cluster's tls settings (tls.enabled, ca, client_cert, client_key) and "
                       "its auth.token_file");
  }
  if (tls && peer == Peer::kPlainHttp2) {
    return unavailable("coordinator at " + dial +
                       " speaks plain text, and this client uses TLS "
                       "(tls.enabled in the cluster file): " +
                       s.message());
  }
  return s.with_context("coordinator at " + dial + " unreachable");
}

void add_token(const RpcClientOptions& options, grpc::ClientContext* context) {
  if (options.security && !options.security->token.empty())
    context->AddMetadata("authorization", "Bearer " + options.security->token);
}

}  // namespace

Status call_with_retry(const std::string& address, const RpcClientOptions& options, bool idempotent,
                       const std::function<grpc::Status(grpc::ClientContext*)>& attempt) {
  const int attempts = 1 + (idempotent ? std::max(0, options.retries) : 0);
  auto pause = options.backoff;
  grpc::Status last;
  for (int i = 0; i < attempts; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options.deadline);
    add_token(options, &context);
    last = attempt(&context);
    if (last.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    if (i + 1 < attempts) {
      std::this_thread::sleep_for(pause);
      pause *= 2;
    }
  }
  Status s = from_grpc_status(last);
  if (s.code() == StatusCode::kUnavailable) {
    return explain_unreachable(address, options, s);
  }
  if (s.code() == StatusCode::kDeadlineExceeded) {
    return s.with_context("coordinator at " + dial_address(address) + " unreachable");
  }
  return s;
}

namespace {

template <typename Reply, typename Fn>
Result<Reply> unary(const std::string& address, const RpcClientOptions& options, bool idempotent,
                    Fn fn) {
  Reply reply;
  Status s = call_with_retry(address, options, idempotent, [&](grpc::ClientContext* ctx) {
    reply.Clear();
    return fn(ctx, &reply);
  });
  if (!s.is_ok()) return s;
  return reply;
}

}  // namespace

CoordinatorClient::CoordinatorClient(const std::string& address, RpcClientOptions options)
    : address_(address),
      options_(options),
      stub_(v1::Coordinator::NewStub(make_channel(address, options_.security.get()))) {}

Result<v1::SubmitJobReply> CoordinatorClient::submit_job(const v1::SubmitJobRequest& request) {
  return unary<v1::SubmitJobReply>(address_, options_, false,
                                   [&](grpc::ClientContext* c, v1::SubmitJobReply* r) {
                                     return stub_->SubmitJob(c, request, r);
                                   });
}

Result<v1::GetJobReply> CoordinatorClient::get_job(const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  return unary<v1::GetJobReply>(
      address_, options_, true,
      [&](grpc::ClientContext* c, v1::GetJobReply* r) { return stub_->GetJob(c, request, r); });
}

Result<v1::ListJobsReply> CoordinatorClient::list_jobs(const v1::ListJobsRequest& request) {
  return unary<v1::ListJobsReply>(
      address_, options_, true,
      [&](grpc::ClientContext* c, v1::ListJobsReply* r) { return stub_->ListJobs(c, request, r); });
}

Result<v1::CancelJobReply> CoordinatorClient::cancel_job(const std::string& job_id,
                                                         const std::string& reason) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason);
  return unary<v1::CancelJobReply>(address_, options_, false,
                                   [&](grpc::ClientContext* c, v1::CancelJobReply* r) {
                                     return stub_->CancelJob(c, request, r);
                                   });
}

Result<v1::ListWorkersReply> CoordinatorClient::list_workers() {
  v1::ListWorkersRequest request;
  return unary<v1::ListWorkersReply>(address_, options_, true,
                                     [&](grpc::ClientContext* c, v1::ListWorkersReply* r) {
                                       return stub_->ListWorkers(c, request, r);
                                     });
}

Result<v1::GetLogsReply> CoordinatorClient::get_logs(const v1::GetLogsRequest& request) {
  return unary<v1::GetLogsReply>(
      address_, options_, true,
      [&](grpc::ClientContext* c, v1::GetLogsReply* r) { return stub_->GetLogs(c, request, r); });
}

Result<v1::JobStatus> CoordinatorClient::watch_job(
    const std::string& job_id, const std::function<bool(const v1::JobStatus&)>& on_update,
    int min_interval_ms) {
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  request.set_min_interval_ms(min_interval_ms);
  v1::JobStatus last;
  bool seen = false;
  while (true) {
    // Each stream has a deadline; one that reaches it after updates is simply re-opened.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.watch_deadline);
    add_token(options_, &context);
    auto reader = stub_->WatchJob(&context, request);
    v1::WatchJobReply reply;
    bool fresh = false;
    bool stopped = false;
    while (reader->Read(&reply)) {
      last = reply.job();
      seen = fresh = true;
      if (!on_update(last)) {
        context.TryCancel();
        stopped = true;
        break;
      }
    }
    grpc::Status s = reader->Finish();
    if (stopped) return last;
    if (fresh && s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) continue;
    if (seen && (s.ok() || s.error_code() == grpc::StatusCode::CANCELLED)) return last;
    Status st = from_grpc_status(s);
    if (st.is_ok()) return internal_error("WatchJob ended without a status");
    if (st.code() == StatusCode::kUnavailable) {
      return explain_unreachable(address_, options_, st);
    }
    return st;
  }
}

WorkerServiceClient::WorkerServiceClient(const std::string& address, RpcClientOptions options)
    : address_(address),
      options_(options),
      stub_(v1::WorkerService::NewStub(make_channel(address, options_.security.get()))) {}

Result<v1::RegisterWorkerReply> WorkerServiceClient::register_worker(
    const v1::RegisterWorkerRequest& request) {
  return unary<v1::RegisterWorkerReply>(address_, options_, true,
                                        [&](grpc::ClientContext* c, v1::RegisterWorkerReply* r) {
                                          return stub_->RegisterWorker(c, request, r);
                                        });
}

Result<v1::HeartbeatReply> WorkerServiceClient::heartbeat(const v1::HeartbeatRequest& request) {
  return unary<v1::HeartbeatReply>(address_, options_, true,
                                   [&](grpc::ClientContext* c, v1::HeartbeatReply* r) {
                                     return stub_->Heartbeat(c, request, r);
                                   });
}

Result<v1::ReportEventsReply> WorkerServiceClient::report_events(
    const v1::ReportEventsRequest& request) {
  return unary<v1::ReportEventsReply>(address_, options_, true,
                                      [&](grpc::ClientContext* c, v1::ReportEventsReply* r) {
                                        return stub_->ReportEvents(c, request, r);
                                      });
}

Result<v1::AwaitWorkReply> WorkerServiceClient::await_work(const v1::AwaitWorkRequest& request) {
  RpcClientOptions o = options_;
  o.deadline += std::chrono::milliseconds(std::clamp<int64_t>(request.wait_ms(), 0, 30000));
  return unary<v1::AwaitWorkReply>(address_, o, false,
                                   [&](grpc::ClientContext* c, v1::AwaitWorkReply* r) {
                                     return stub_->AwaitWork(c, request, r);
                                   });
}

Result<v1::ReportNetworkReply> WorkerServiceClient::report_network(
    const v1::ReportNetworkRequest& request) {
  return unary<v1::ReportNetworkReply>(address_, options_, true,
                                       [&](grpc::ClientContext* c, v1::ReportNetworkReply* r) {
                                         return stub_->ReportNetwork(c, request, r);
                                       });
}

}  // namespace tern
