#include "coordinator/service.h"

#include <google/protobuf/util/time_util.h>

#include <cmath>
#include <thread>

#include "rpc/status_convert.h"

namespace tern {
namespace {

void set_time(double unix_s, google::protobuf::Timestamp* ts) {
  // Beyond what a Timestamp holds (years 1-9999), or not a number: left unset.
  if (!(unix_s >= 0 && unix_s < 253402300800.0)) return;
  double sec = std::floor(unix_s);
  ts->set_seconds(static_cast<int64_t>(sec));
  ts->set_nanos(static_cast<int32_t>((unix_s - sec) * 1e9));
}

v1::RankState to_proto(RankState s) {
  switch (s) {
    case RankState::kUnassigned:
      return v1::RANK_STATE_UNSPECIFIED;
    case RankState::kAssigned:
      return v1::RANK_STATE_ASSIGNED;
    case RankState::kRunning:
      return v1::RANK_STATE_RUNNING;
    case RankState::kSucceeded:
      return v1::RANK_STATE_SUCCEEDED;
    case RankState::kFailed:
      return v1::RANK_STATE_FAILED;
    case RankState::kStopped:
      return v1::RANK_STATE_STOPPED;
  }
  return v1::RANK_STATE_UNSPECIFIED;
}

void to_proto(const TaskKey& k, v1::TaskRef* out) {
  out->set_job_id(k.job_id);
  out->set_rank(k.rank);
  out->set_generation(k.generation);
}

TaskKey from_proto(const v1::TaskRef& t) { return TaskKey{t.job_id(), t.rank(), t.generation()}; }

// Who may call what (security.h): the Coordinator API is for users, the WorkerService for
// worker daemons; admin tokens may call both.
constexpr unsigned kUserApi = static_cast<unsigned>(Role::kUser);
constexpr unsigned kWorkerApi = static_cast<unsigned>(Role::kWorker);

// Runs a handler body through the guard (roles, rate limit, latency metrics) when there is
// one. Nothing a handler throws escapes to gRPC (it would end the process): INTERNAL.
grpc::Status guarded(CallGuard* guard, grpc::ServerContext* context, const char* method,
                     bool limited, bool timed, unsigned roles,
                     const std::function<grpc::Status()>& body) {
  auto safe = [&]() -> grpc::Status {
    try {
      return body();
    } catch (const std::exception& e) {
      return grpc::Status(grpc::StatusCode::INTERNAL, std::string(method) + ": " + e.what());
    }
  };
  return guard ? guard->run(context, method, safe, limited, timed, roles) : safe();
}

}  // namespace

v1::JobState to_proto(JobState s) {
  switch (s) {
    case JobState::kPending:
      return v1::JOB_STATE_PENDING;
    case JobState::kRunning:
      return v1::JOB_STATE_RUNNING;
    case JobState::kSucceeded:
      return v1::JOB_STATE_SUCCEEDED;
    case JobState::kFailed:
      return v1::JOB_STATE_FAILED;
    case JobState::kCancelled:
      return v1::JOB_STATE_CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

void to_proto(const Job& job, double now, v1::JobStatus* out) {
  out->Clear();
  out->set_job_id(job.id);
  out->set_name(job.name);
  out->set_state(to_proto(job.state));
  out->set_reason(job.reason);
  out->set_generation(job.generation);
  out->set_recoveries(job.recoveries);
  out->set_checkpoint_dir(job.checkpoint_dir);
  if (job.checkpoint_step >= 0) out->set_checkpoint_step(job.checkpoint_step);
  out->set_resumed_job(job.resumed_job);
  if (job.resumed_step >= 0) out->set_resumed_step(job.resumed_step);
  out->set_world_size(job.world);
  out->set_placement(name_of(job.placement));
  out->set_master_addr(job.master_addr);
  if (job.elastic()) {
    for (int m : job.members()) out->add_members(m);
  }
  for (const auto& t : job.timelines) {
    auto at = [&](const char* k) {
      auto it = t.find(k);
      return it == t.end() ? 0.0 : it->second;
    };
    v1::RecoveryTimeline* p = out->add_timelines();
    p->set_generation(static_cast<int64_t>(at("generation")));
    p->set_world(static_cast<int32_t>(at("world")));
    p->set_grow(at("grow") != 0);
    p->set_lost(at("lost"));
    p->set_decided(at("decided"));
    p->set_training_again(at("training_again"));
  }
  for (const RankInfo& r : job.ranks) {
    v1::RankStatus* p = out->add_ranks();
    p->set_rank(r.rank);
    p->set_member(r.member);
    p->set_worker_id(r.worker_id);
    p->set_region(r.region);
    p->set_host(r.host);
    p->set_state(to_proto(r.state));
    p->set_step(r.step);
    p->set_total_steps(r.total_steps);
    p->set_epoch(r.epoch);
    p->set_loss(r.loss);
    p->set_samples_per_s(r.samples_per_s);
    p->set_bytes_sent(r.bytes_sent);
    if (r.test_accuracy) p->set_test_accuracy(*r.test_accuracy);
    for (const auto& [k, v] : r.metrics) (*p->mutable_metrics())[k] = v;
    p->set_exit_code(r.exit_code);
    p->set_error(r.error);
    if (r.updated_at > 0) set_time(r.updated_at, p->mutable_updated_at());
  }
  out->set_step(job.step());
  out->set_total_steps(job.total_steps());
  out->set_loss(job.loss());
  out->set_samples_per_s(job.state == JobState::kRunning ? job.samples_per_s() : 0);
  out->set_eta_s(job.eta_s(now));
  if (job.test_accuracy) out->set_test_accuracy(*job.test_accuracy);
  for (const auto& [k, v] : job.summary) (*out->mutable_summary())[k] = v;
  if (job.created_at > 0) set_time(job.created_at, out->mutable_created_at());
  if (job.started_at > 0) set_time(job.started_at, out->mutable_started_at());
  if (job.finished_at > 0) set_time(job.finished_at, out->mutable_finished_at());
}

void to_proto(const Worker& w, const std::vector<TaskKey>& tasks, v1::WorkerStatus* out) {
  out->Clear();
  out->set_worker_id(w.id);
  out->set_host(w.host);
  out->set_region(w.region);
  out->set_slots(w.slots);
  out->set_used_slots(static_cast<int32_t>(tasks.size()));
  out->set_state(w.state == WorkerState::kReady ? v1::WORKER_STATE_READY : v1::WORKER_STATE_LOST);
  if (w.last_heartbeat > 0) set_time(w.last_heartbeat, out->mutable_last_heartbeat());
  if (w.registered_at > 0) set_time(w.registered_at, out->mutable_registered_at());
  for (const TaskKey& t : tasks) to_proto(t, out->add_tasks());
}

void to_proto(const TaskCommand& c, v1::TaskCommand* out) {
  out->Clear();
  switch (c.kind) {
    case TaskCommand::Kind::kStart: {
      v1::StartTask* s = out->mutable_start();
      to_proto(c.task, s->mutable_task());
      s->set_world_size(c.world);
      s->set_master_addr(c.master_addr);
      s->set_spec_yaml(c.spec_yaml);
      s->set_cluster_yaml(c.cluster_yaml);
      for (const auto& region : c.rank_regions) s->add_rank_regions(region);
      for (int m : c.members) s->add_members(m);
      s->set_standby(c.standby);
      break;
    }
    case TaskCommand::Kind::kStop: {
      v1::StopTask* s = out->mutable_stop();
      to_proto(c.task, s->mutable_task());
      s->set_reason(c.reason);
      break;
    }
    case TaskCommand::Kind::kRegroup: {
      v1::RegroupTask* s = out->mutable_regroup();
      to_proto(c.task, s->mutable_task());
      s->set_generation(c.generation);
      s->set_world_size(c.world);
      s->set_master_addr(c.master_addr);
      s->set_rollback(c.rollback);
      for (int m : c.members) s->add_members(m);
      break;
    }
  }
}

TaskEvent from_proto(const v1::TaskEvent& e) {
  TaskEvent out;
  out.task = from_proto(e.task());
  out.time = e.time();
  switch (e.kind_case()) {
    case v1::TaskEvent::kStarted:
      out.kind = TaskEvent::Kind::kStarted;
      out.pid = e.started().pid();
      break;
    case v1::TaskEvent::kProgress: {
      const auto& p = e.progress();
      out.kind = TaskEvent::Kind::kProgress;
      out.step = p.step();
      out.total_steps = p.total_steps();
      out.epoch = p.epoch();
      out.loss = p.loss();
      out.samples_per_s = p.samples_per_s();
      out.bytes_sent = p.bytes_sent();
      out.compute_s = p.compute_s();
      out.wait_s = p.wait_s();
      out.metrics.insert(p.metrics().begin(), p.metrics().end());
      break;
    }
    case v1::TaskEvent::kEval:
      out.kind = TaskEvent::Kind::kEval;
      out.step = e.eval().step();
      out.test_accuracy = e.eval().test_accuracy();
      out.test_loss = e.eval().test_loss();
      out.metrics.insert(e.eval().metrics().begin(), e.eval().metrics().end());
      break;
    case v1::TaskEvent::kFinished:
      out.kind = TaskEvent::Kind::kFinished;
      out.summary.insert(e.finished().summary().begin(), e.finished().summary().end());
      break;
    case v1::TaskEvent::kError:
      out.kind = TaskEvent::Kind::kError;
      out.message = e.error().message();
      out.exit_code = e.error().code();
      break;
    case v1::TaskEvent::kExited:
      out.kind = TaskEvent::Kind::kExited;
      out.exit_code = e.exited().exit_code();
      out.log_tail = e.exited().log_tail();
      break;
    case v1::TaskEvent::kLog:
      out.kind = TaskEvent::Kind::kLog;
      out.log_offset = e.log().offset();
      out.log_data = e.log().data();
      break;
    case v1::TaskEvent::kReady:
      out.kind = TaskEvent::Kind::kReady;
      out.setup_s = e.ready().setup_s();
      break;
    case v1::TaskEvent::kCheckpoint:
      out.kind = TaskEvent::Kind::kCheckpoint;
      out.step = e.checkpoint().step();
      break;
    case v1::TaskEvent::KIND_NOT_SET:
      out.kind = TaskEvent::Kind::kLog;  // carries no data: a no-op
      out.log_offset = 0;
      break;
  }
  return out;
}

// ---------------------------------------------------------------- Coordinator

grpc::Status CoordinatorService::SubmitJob(grpc::ServerContext* context,
                                           const v1::SubmitJobRequest* req,
                                           v1::SubmitJobReply* reply) {
  return guarded(guard_, context, "SubmitJob", true, true, kUserApi, [&]() -> grpc::Status {
    std::vector<std::string> overrides(req->overrides().begin(), req->overrides().end());
    auto job =
        core_->submit_job(req->spec_yaml(), overrides, req->source_name(), req->resume_job());
    if (!job.is_ok()) return to_grpc_status(job.status());
    reply->set_job_id(job->id);
    to_proto(*job, clock_->unix_seconds(), reply->mutable_job());
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* req,
                                        v1::GetJobReply* reply) {
  return guarded(guard_, context, "GetJob", true, true, kUserApi, [&]() -> grpc::Status {
    auto job = core_->get_job(req->job_id());
    if (!job.is_ok()) return to_grpc_status(job.status());
    to_proto(*job, clock_->unix_seconds(), reply->mutable_job());
    reply->set_spec_yaml(job->spec_yaml);
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::ListJobs(grpc::ServerContext* context,
                                          const v1::ListJobsRequest* req,
                                          v1::ListJobsReply* reply) {
  return guarded(guard_, context, "ListJobs", true, true, kUserApi, [&]() -> grpc::Status {
    std::vector<Job> jobs = core_->list_jobs();
    std::vector<const Job*> selected;
    for (const Job& j : jobs) {
      bool match = req->states().empty();
      for (int s : req->states())
        match = match || s == to_proto(j.state) || s == v1::JOB_STATE_UNSPECIFIED;
      if (match) selected.push_back(&j);
    }
    size_t first = 0;
    if (req->limit() > 0 && selected.size() > static_cast<size_t>(req->limit())) {
      first = selected.size() - static_cast<size_t>(req->limit());
    }
    const double now = clock_->unix_seconds();
    for (size_t i = first; i < selected.size(); ++i) to_proto(*selected[i], now, reply->add_jobs());
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::CancelJob(grpc::ServerContext* context,
                                           const v1::CancelJobRequest* req,
                                           v1::CancelJobReply* reply) {
  return guarded(guard_, context, "CancelJob", true, true, kUserApi, [&]() -> grpc::Status {
    auto job = core_->cancel_job(req->job_id(), req->reason());
    if (!job.is_ok()) return to_grpc_status(job.status());
    to_proto(*job, clock_->unix_seconds(), reply->mutable_job());
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::WatchJob(grpc::ServerContext* context,
                                          const v1::WatchJobRequest* req,
                                          grpc::ServerWriter<v1::WatchJobReply>* writer) {
  return guarded(guard_, context, "WatchJob", true, false, kUserApi, [&]() -> grpc::Status {
    const auto interval =
        std::chrono::milliseconds(req->min_interval_ms() > 0 ? req->min_interval_ms() : 250);
    uint64_t seen = 0;
    bool first = true;
    while (!context->IsCancelled() && !stopping_.load()) {
      auto job = first
                     ? core_->get_job(req->job_id())
                     : core_->wait_job_change(req->job_id(), seen, std::chrono::milliseconds(500));
      if (!job.is_ok()) return to_grpc_status(job.status());
      if (first || job->version > seen) {
        v1::WatchJobReply reply;
        to_proto(*job, clock_->unix_seconds(), reply.mutable_job());
        if (!writer->Write(reply)) return grpc::Status::OK;  // the client went away
        seen = job->version;
        first = false;
        if (is_terminal(job->state)) return grpc::Status::OK;
        std::this_thread::sleep_for(interval);
      }
    }
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator shutting down");
  });
}

grpc::Status CoordinatorService::ListWorkers(grpc::ServerContext* context,
                                             const v1::ListWorkersRequest*,
                                             v1::ListWorkersReply* reply) {
  return guarded(guard_, context, "ListWorkers", true, true, kUserApi, [&]() -> grpc::Status {
    for (const Worker& w : core_->list_workers())
      to_proto(w, core_->assigned_tasks(w.id), reply->add_workers());
    for (const auto& [ends, link] : core_->network_links()) {
      v1::NetworkLink* l = reply->add_links();
      l->set_from(ends.first);
      l->set_to(ends.second);
      l->set_rtt_ms(link.rtt_ms);
      l->set_bandwidth_mbps(link.bandwidth_mbps);
      l->set_emulated(link.emulated);
      l->set_age_s(link.at);  // network_links(): the age
    }
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::GetLogs(grpc::ServerContext* context,
                                         const v1::GetLogsRequest* req, v1::GetLogsReply* reply) {
  return guarded(guard_, context, "GetLogs", true, true, kUserApi, [&]() -> grpc::Status {
    auto slice = core_->get_logs(req->job_id(), req->rank(), req->offset(), req->max_bytes());
    if (!slice.is_ok()) return to_grpc_status(slice.status());
    reply->set_data(std::move(slice->data));
    reply->set_next_offset(slice->next_offset);
    reply->set_complete(slice->complete);
    return grpc::Status::OK;
  });
}

// ---------------------------------------------------------------- WorkerService

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* context,
                                               const v1::RegisterWorkerRequest* req,
                                               v1::RegisterWorkerReply* reply) {
  return guarded(guard_, context, "RegisterWorker", true, true, kWorkerApi, [&]() -> grpc::Status {
    WorkerRegistration reg;
    reg.name = req->name();
    reg.host = req->host();
    reg.region = req->region();
    reg.slots = req->slots();
    reg.cores = req->cores();
    reg.spare_ports.assign(req->spare_ports().begin(), req->spare_ports().end());
    reg.session = req->session();
    auto r = core_->register_worker(reg);
    if (!r.is_ok()) return to_grpc_status(r.status());
    reply->set_worker_id(r->worker_id);
    reply->set_session(r->session);
    reply->set_heartbeat_interval_ms(r->heartbeat_ms);
    reply->set_lease_ms(r->lease_ms);
    return grpc::Status::OK;
  });
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* req,
                                          v1::HeartbeatReply* reply) {
  return guarded(guard_, context, "Heartbeat", false, true, kWorkerApi, [&]() -> grpc::Status {
    std::vector<TaskKey> running;
    for (const auto& t : req->running()) running.push_back(from_proto(t));
    std::vector<int> ports(req->spare_ports().begin(), req->spare_ports().end());
    auto r = core_->heartbeat(req->worker_id(), req->session(), running, ports);
    if (!r.is_ok()) return to_grpc_status(r.status());
    reply->set_lease_ms(r->lease_ms);
    for (const TaskCommand& c : r->commands) {
      to_proto(c, reply->add_commands());
    }
    return grpc::Status::OK;
  });
}

grpc::Status WorkerServiceImpl::AwaitWork(grpc::ServerContext* context,
                                          const v1::AwaitWorkRequest* req,
                                          v1::AwaitWorkReply* reply) {
  // Not rate-limited per call (a daemon holds one at a time; its heartbeat is limited), not
  // timed (it waits on purpose).
  return guarded(guard_, context, "AwaitWork", false, false, kWorkerApi, [&]() -> grpc::Status {
    auto r = core_->await_work(req->worker_id(), req->session(), req->seen_version(),
                               std::chrono::milliseconds(req->wait_ms()));
    if (!r.is_ok()) return to_grpc_status(r.status());
    reply->set_version(*r);
    return grpc::Status::OK;
  });
}

grpc::Status WorkerServiceImpl::ReportNetwork(grpc::ServerContext* context,
                                              const v1::ReportNetworkRequest* req,
                                              v1::ReportNetworkReply* reply) {
  return guarded(guard_, context, "ReportNetwork", false, true, kWorkerApi, [&]() -> grpc::Status {
    std::vector<LinkMeasurement> links;
    links.reserve(static_cast<size_t>(req->links_size()));
    for (const auto& l : req->links())
      links.push_back({l.peer(), l.rtt_ms(), l.bandwidth_mbps(), l.emulated()});
    auto r = core_->report_network(req->worker_id(), req->session(), req->probe_port(), links);
    if (!r.is_ok()) return to_grpc_status(r.status());
    reply->set_probe_interval_ms(r->probe_interval_ms);
    for (const ProbePeerInfo& p : r->peers) {
      v1::ProbePeer* out = reply->add_peers();
      out->set_worker_id(p.worker_id);
      out->set_host(p.host);
      out->set_probe_port(p.probe_port);
      out->set_emulated(p.emulated);
      out->set_model_latency_ms(p.model.latency_ms);
      out->set_model_bandwidth_mbps(p.model.bandwidth_mbps);
    }
    return grpc::Status::OK;
  });
}

grpc::Status WorkerServiceImpl::ReportEvents(grpc::ServerContext* context,
                                             const v1::ReportEventsRequest* req,
                                             v1::ReportEventsReply* reply) {
  return guarded(guard_, context, "ReportEvents", false, true, kWorkerApi, [&]() -> grpc::Status {
    std::vector<TaskEvent> events;
    events.reserve(static_cast<size_t>(req->events_size()));
    for (const auto& e : req->events()) events.push_back(from_proto(e));
    auto r = core_->report_events(req->worker_id(), req->session(), events);
    if (!r.is_ok()) return to_grpc_status(r.status());
    reply->set_accepted(*r);
    return grpc::Status::OK;
  });
}

}  // namespace tern
