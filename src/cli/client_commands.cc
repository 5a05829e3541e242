#include "cli/client_commands.h"

#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli/network_view.h"
#include "cli/progress.h"
#include "cli/table.h"
#include "common/cluster_config.h"
#include "common/utf8.h"
#include "coordinator/network_map.h"
#include "rpc/client.h"
#include "rpc/proto_json.h"

namespace tern {
namespace {

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double unix_of(const google::protobuf::Timestamp& ts) {
  return static_cast<double>(ts.seconds()) + ts.nanos() * 1e-9;
}

// Every --json output: one line, in the style of rpc/proto_json.h.
std::string to_json(const google::protobuf::Message& m) { return dump_json(proto_to_json(m)); }

std::string short_state(v1::JobState s) { return short_enum_name(*v1::JobState_descriptor(), s); }

std::string short_rank_state(v1::RankState s) {
  if (s == v1::RANK_STATE_UNSPECIFIED) return "-";
  return short_enum_name(*v1::RankState_descriptor(), s);
}

bool terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

std::string first_line(const std::string& s, size_t max = 60) {
  std::string l = s.substr(0, s.find('\n'));
  if (l.size() > max) l = l.substr(0, max - 3) + "...";
  return l;
}

std::string progress_cell(const v1::JobStatus& j) {
  if (j.total_steps() <= 0) return "-";
  return strf("%lld/%lld (%.0f%%)", static_cast<long long>(j.step()),
              static_cast<long long>(j.total_steps()),
              100.0 * static_cast<double>(j.step()) / static_cast<double>(j.total_steps()));
}

std::string accuracy_cell(const v1::JobStatus& j) {
  return j.has_test_accuracy() ? strf("%.4f", j.test_accuracy()) : "-";
}

// Job status -> the progress event fields ProgressLine reads.
nlohmann::json progress_of(const v1::JobStatus& j) {
  double epoch = 0;
  for (const auto& r : j.ranks()) epoch = r.rank() == 0 ? r.epoch() : epoch;
  return {{"step", j.step()},
          {"total_steps", j.total_steps()},
          {"epoch", epoch},
          {"loss", j.loss()},
          {"samples_per_s", j.samples_per_s()}};
}

void print_outcome(const v1::JobStatus& j) {
  double wall = j.has_finished_at() && j.has_started_at()
                    ? unix_of(j.finished_at()) - unix_of(j.started_at())
                    : 0;
  std::cout << "job " << j.job_id() << " " << short_state(j.state()) << strf(" after %.1f s", wall);
  if (j.state() == v1::JOB_STATE_SUCCEEDED) {
    std::cout << ": " << j.step() << " steps";
    if (j.has_test_accuracy()) std::cout << strf(", test accuracy %.4f", j.test_accuracy());
    auto fl = j.summary().find("final_loss");
    if (fl != j.summary().end()) std::cout << strf(", final loss %.4f", fl->second);
    std::cout << "\n";
  } else {
    std::cout << ": " << j.reason() << "\n";
  }
}

}  // namespace

Result<std::string> resolve_coordinator(const ClientOptions& options) {
  if (!options.coordinator.empty()) return options.coordinator;
  if (!options.cluster_file.empty()) {
    auto c = load_cluster_config(options.cluster_file);
    if (!c.is_ok()) return c.status();
    return dial_address(c->listen);
  }
  if (const char* env = std::getenv("TERN_COORDINATOR"); env && *env) return std::string(env);
  return std::string("127.0.0.1:7070");
}

Result<ClientConnection> resolve_connection(const ClientOptions& options) {
  ClientConnection c;
  if (!options.cluster_file.empty()) {
    auto loaded = load_cluster_config(options.cluster_file, {}, ClusterLoadOptions{true});
    if (!loaded.is_ok()) return loaded.status();
    c.cluster = std::move(loaded).value();
  }
  TERN_ASSIGN_OR_RETURN(c.address, resolve_coordinator(options));
  std::string token = options.token;
  const bool worker_file =
      options.worker && c.cluster && !c.cluster->auth.worker_token_file.empty();
  if (const char* env = std::getenv("TERN_TOKEN"); token.empty() && env && !worker_file)
    token = env;
  TERN_ASSIGN_OR_RETURN(c.rpc.security, make_client_security(c.cluster ? &*c.cluster : nullptr,
                                                             c.address, token, options.worker));
  if (c.cluster) c.rpc.deadline = std::chrono::milliseconds(c.cluster->limits.rpc_deadline_ms);
  c.rpc.diagnose_unavailable = true;
  return c;
}

int report_error(const std::string& what, const Status& status) {
  switch (status.code()) {
    case StatusCode::kUnavailable:
      if (status.message().find(" speaks TLS") != std::string::npos ||
          status.message().find(" speaks plain text") != std::string::npos) {
        // It runs; this client is set up for the other protocol (rpc/client.cc probed it).
        std::cerr << "tern " << what << ": " << status.message() << std::endl;
        return kExitBadInput;
      }
      [[fallthrough]];
    case StatusCode::kDeadlineExceeded:
      std::cerr << "tern " << what << ": " << status.message()
                << "\n  Is it running? Start one with `tern cluster up FILE`, or point "
                   "--coordinator HOST:PORT"
                   " (or TERN_COORDINATOR) at it."
                << std::endl;
      return kExitUnreachable;
    case StatusCode::kInvalidArgument:
      std::cerr << "tern " << what << ": " << status.message() << std::endl;
      return kExitBadInput;
    case StatusCode::kUnauthenticated:
      std::cerr << "tern " << what << ": " << status.to_string()
                << "\n  Pass --token, set TERN_TOKEN, or name auth.token_file in the cluster file "
                   "(--cluster)."
                << std::endl;
      return kExitFailed;
    default:
      std::cerr << "tern " << what << ": " << status.to_string() << std::endl;
      return kExitFailed;
  }
}

namespace {

// Resolves the address or prints why not; returns nullopt on failure (exit code in *code).
std::unique_ptr<CoordinatorClient> connect(const ClientOptions& options, const std::string& what,
                                           int* code) {
  auto conn = resolve_connection(options);
  if (!conn.is_ok()) {
    if (conn.status().code() == StatusCode::kFailedPrecondition) {
      // Plain text to a remote coordinator: a setup problem, not a failed request.
      std::cerr << "tern " << what << ": " << conn.status().message() << std::endl;
      *code = kExitBadInput;
    } else {
      *code = report_error(what, conn.status());
    }
    return nullptr;
  }
  return std::make_unique<CoordinatorClient>(conn->address, conn->rpc);
}

// Follows a job until it ends, reconnecting while the coordinator restarts (up to a minute).
Result<v1::JobStatus> watch(const std::string& address, const RpcClientOptions& rpc,
                            const std::string& job_id, bool json) {
  const bool tty = !json && isatty(STDOUT_FILENO);
  ProgressLine line(std::cout, tty);
  v1::JobState shown = v1::JOB_STATE_UNSPECIFIED;
  auto give_up_at = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (true) {
    CoordinatorClient client(address, rpc);  // a fresh channel per attempt: no reconnect backoff
    auto last = client.watch_job(job_id, [&](const v1::JobStatus& j) {
      give_up_at = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      if (json) return true;
      if (j.state() != shown) {
        line.finish();
        shown = j.state();
        if (!terminal(j.state()))
          std::cout << j.job_id() << " " << short_state(j.state()) << ": " << j.reason() << "\n";
        std::cout << std::flush;
      }
      if (j.state() == v1::JOB_STATE_RUNNING && j.total_steps() > 0) {
        if (j.has_test_accuracy()) line.note_eval({{"test_accuracy", j.test_accuracy()}});
        line.update(progress_of(j));
      }
      return true;
    });
    if (last.is_ok() && terminal(last->state())) {
      line.finish();
      return last;
    }
    Status s = last.is_ok() ? unavailable("the watch stream ended early") : last.status();
    if (s.code() != StatusCode::kUnavailable || std::chrono::steady_clock::now() > give_up_at)
      return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

// The spec text `tern submit` sends (empty with --resume), checked before anything is sent:
// readable, UTF-8 (the request's fields are protobuf strings), --set values UTF-8 too.
// Returns the exit code of a refusal, or kExitOk.
int read_submitted_spec(const SubmitOptions& submit, std::string* spec_out) {
  const bool resume = !submit.resume_job.empty();
  if (resume && !submit.job_file.empty()) {
    std::cerr
        << "tern submit: --resume " << submit.resume_job
        << " starts from that job's own spec: give no spec file with it (change fields with --set)"
        << std::endl;
    return kExitBadInput;
  }
  if (resume && first_invalid_utf8(submit.resume_job) != std::string::npos) {
    std::cerr << "tern submit: --resume: the job id is not valid UTF-8" << std::endl;
    return kExitBadInput;
  }
  std::stringstream text;
  if (!resume) {
    std::ifstream in(submit.job_file, std::ios::binary);
    if (!in) {
      std::cerr << "tern submit: cannot read job spec " << submit.job_file << std::endl;
      return kExitBadInput;
    }
    text << in.rdbuf();
  }
  // The request's fields are protobuf strings, which must be UTF-8 (the coordinator would
  // refuse to parse the request): say where the file is not, before sending anything.
  const std::string& spec = *spec_out = text.str();
  if (size_t bad = first_invalid_utf8(spec); bad != std::string::npos) {
    std::cerr << "tern submit: " << submit.job_file << ": not valid UTF-8 at "
              << describe_byte_position(spec, bad)
              << "; job specs are UTF-8 text (save the file as UTF-8)" << std::endl;
    return kExitBadInput;
  }
  for (const auto& o : submit.overrides) {
    if (size_t bad = first_invalid_utf8(o); bad != std::string::npos) {
      std::cerr << "tern submit: --set " << o.substr(0, o.find('=')) << ": not valid UTF-8 at byte "
                << bad << std::endl;
      return kExitBadInput;
    }
  }
  return kExitOk;
}

// Prints what `tern submit` without --watch reports: the job id on stdout, a summary on stderr.
void print_submitted(const ClientOptions& options, const v1::SubmitJobReply& reply) {
  const v1::JobStatus& job = reply.job();
  if (options.json) {
    std::cout << to_json(reply) << std::endl;
    return;
  }
  std::cout << reply.job_id() << "\n";
  std::cerr << "submitted " << reply.job_id() << " (" << job.name() << "): " << job.world_size()
            << " ranks, " << short_state(job.state());
  if (job.has_resumed_step()) {
    std::cerr << ", resuming " << job.resumed_job() << " from its committed step "
              << job.resumed_step();
  }
  std::cerr << ". Follow it with `tern status " << reply.job_id() << "`" << std::endl;
}

}  // namespace

int submit_command(const ClientOptions& options, const SubmitOptions& submit) {
  const bool resume = !submit.resume_job.empty();
  std::string spec;
  if (int refused = read_submitted_spec(submit, &spec); refused != kExitOk) return refused;
  int code = 0;
  auto client = connect(options, "submit", &code);
  if (!client) return code;
  v1::SubmitJobRequest req;
  req.set_spec_yaml(spec);
  for (const auto& o : submit.overrides) req.add_overrides(o);
  // The name is only for messages: a file name that is not UTF-8 is sent with '?' for its bad
  // bytes.
  std::string source_name = submit.job_file;
  for (size_t bad; (bad = first_invalid_utf8(source_name)) != std::string::npos;)
    source_name[bad] = '?';
  req.set_source_name(source_name);
  if (resume) req.set_resume_job(submit.resume_job);
  const auto too_large = [&](const std::string& limit) {
    std::cerr << "tern submit: the job spec " << submit.job_file
              << " is too large: " << req.ByteSizeLong() << " bytes with its overrides, over "
              << limit
              << ". Job specs are small YAML files; the coordinator also caps them at "
                 "coordinator.max_spec_bytes (default "
              << (256 << 10) << ")" << std::endl;
    return kExitBadInput;
  };
  const int64_t max_message =
      client->options().security ? client->options().security->max_message_bytes : 4 << 20;
  if (static_cast<int64_t>(req.ByteSizeLong()) > max_message) {
    return too_large("the limit of " + std::to_string(max_message) +
                     " bytes on one message (coordinator.max_message_bytes)");
  }
  auto reply = client->submit_job(req);
  if (!reply.is_ok() && reply.status().code() == StatusCode::kResourceExhausted &&
      reply.status().message().find("larger than max") != std::string::npos) {
    // gRPC's own size check: the coordinator's limit is lower than this client's.
    return too_large(
        "the coordinator's limit on one message (coordinator.max_message_bytes; "
        "gRPC said: " +
        reply.status().message() + ")");
  }
  if (!reply.is_ok()) return report_error("submit", reply.status());
  const v1::JobStatus& job = reply->job();
  if (!submit.watch) {
    print_submitted(options, *reply);
    return kExitOk;
  }
  if (!options.json) {
    std::cout << "submitted " << reply->job_id() << " (" << job.name() << "): " << job.world_size()
              << " ranks" << std::endl;
  }
  auto last = watch(client->address(), client->options(), reply->job_id(), options.json);
  if (!last.is_ok()) return report_error("submit --watch", last.status());
  if (options.json) {
    std::cout << to_json(*last) << std::endl;
  } else {
    print_outcome(*last);
  }
  return last->state() == v1::JOB_STATE_SUCCEEDED ? kExitOk : kExitFailed;
}

int jobs_command(const ClientOptions& options) {
  int code = 0;
  auto client = connect(options, "jobs", &code);
  if (!client) return code;
  auto reply = client->list_jobs();
  if (!reply.is_ok()) return report_error("jobs", reply.status());
  if (options.json) {
    std::cout << to_json(*reply) << std::endl;
    return kExitOk;
  }
  Table t({"ID", "NAME", "STATE", "RANKS", "PROGRESS", "LOSS", "ACCURACY", "AGE", "REASON"});
  const double now = now_unix();
  for (const auto& j : reply->jobs()) {
    t.add_row({j.job_id(), j.name(), short_state(j.state()), std::to_string(j.world_size()),
               progress_cell(j), j.total_steps() > 0 ? strf("%.4f", j.loss()) : "-",
               accuracy_cell(j), format_age(now - unix_of(j.created_at())),
               first_line(j.reason())});
  }
  if (t.empty()) {
    std::cout << "no jobs yet (tern submit FILE)\n";
  } else {
    t.print(std::cout);
  }
  return kExitOk;
}

namespace {

// The job's state, progress and per-rank table (tern status).
// Recovery timelines: how long each group change took from the loss (or the standby's
// ready) to the coordinator's decision and to the last member's first step in the new group.
void print_timelines(std::ostream& out, const v1::JobStatus& j) {
  for (const auto& t : j.timelines()) {
    out << "regroup    generation " << t.generation() << (t.grow() ? " grow to " : " shrink to ")
        << t.world();
    const double start = t.lost() > 0 ? t.lost() : t.decided();
    if (t.lost() > 0) out << strf("  lost->decided %.3f s", t.decided() - t.lost());
    if (t.training_again() > 0) {
      out << strf("  ->training again %.3f s", t.training_again() - start);
    } else {
      out << "  (not training yet)";
    }
    out << "\n";
  }
}

// Accuracy, DLRM's test AUC and DP's epsilon, from the summary or the newest rank report.
void print_job_metrics(std::ostream& out, const v1::JobStatus& j) {
  if (j.has_test_accuracy()) out << "accuracy   " << strf("%.4f", j.test_accuracy()) << "\n";
  // DLRM's test AUC: rank 0's final summary, else the newest evaluation any rank reported.
  if (auto s = j.summary().find("test_auc"); s != j.summary().end()) {
    out << "test auc   " << strf("%.4f", s->second) << "\n";
  } else {
    for (const auto& r : j.ranks()) {
      if (auto m = r.metrics().find("test_auc"); m != r.metrics().end()) {
        out << "test auc   " << strf("%.4f", m->second) << " (rank " << r.rank() << ")\n";
        break;
      }
    }
  }
  // train.dp: the privacy spent, from the final summary, else the newest progress of any rank.
  {
    const auto& sm = j.summary();
    auto eps = sm.find("epsilon");
    auto delta = sm.find("dp_delta");
    if (eps != sm.end() && delta != sm.end()) {
      out << "privacy    " << strf("epsilon %.4g at delta %.3g", eps->second, delta->second)
          << "\n";
    } else {
      for (const auto& r : j.ranks()) {
        auto e = r.metrics().find("epsilon");
        auto d = r.metrics().find("dp_delta");
        if (e != r.metrics().end() && d != r.metrics().end()) {
          out << "privacy    " << strf("epsilon %.4g at delta %.3g", e->second, d->second)
              << " (rank " << r.rank() << ", step " << r.step() << ")\n";
          break;
        }
      }
    }
  }
}

// The per-rank table: progress, traffic, waiting, staleness, compression, straggler shares.
void print_rank_table(std::ostream& out, const v1::JobStatus& j) {
  if (j.ranks_size() == 0) return;
  Table t({"RANK", "WORKER", "HOST", "REGION", "STATE", "STEP", "LOSS", "SAMPLES/S", "SENT", "WAIT",
           "STALE", "COMPR", "DROP", "SHARE", "ACCURACY", "EXIT"});
  for (const auto& r : j.ranks()) {
    bool exited = r.state() == v1::RANK_STATE_SUCCEEDED || r.state() == v1::RANK_STATE_FAILED;
    auto metric = [&](const char* k) {
      auto it = r.metrics().find(k);
      return it == r.metrics().end() ? -1.0 : it->second;
    };
    // Share of the step time spent blocked on communication, staleness in steps, and the
    // gradient compression ratio (1 = dense).
    double wait = metric("wait_s"), compute = metric("compute_s");
    double ratio = metric("compression_ratio"), stale = metric("staleness");
    // Straggler mitigation: share of steps this rank's gradient was dropped (or skipped), and
    // its share of the global batch (speed-proportional modes).
    double drop = metric("straggler_drop_share"), share = metric("straggler_share");
    t.add_row({std::to_string(r.rank()), r.worker_id(), r.host().empty() ? "-" : r.host(),
               r.region(), short_rank_state(r.state()),
               r.total_steps() > 0 ? strf("%lld/%lld", static_cast<long long>(r.step()),
                                          static_cast<long long>(r.total_steps()))
                                   : "-",
               r.step() > 0 ? strf("%.4f", r.loss()) : "-",
               r.step() > 0 ? strf("%.0f", r.samples_per_s()) : "-", format_bytes(r.bytes_sent()),
               wait >= 0 && compute > 0 ? strf("%.0f%%", 100 * wait / (wait + compute)) : "-",
               stale >= 0 ? strf("%.0f", stale) : "-", ratio > 0 ? strf("%.0fx", ratio) : "-",
               drop >= 0 ? strf("%.0f%%", 100 * drop) : "-",
               share > 0 ? strf("%.1f%%", 100 * share) : "-",
               r.has_test_accuracy() ? strf("%.4f", r.test_accuracy()) : "-",
               exited ? std::to_string(r.exit_code()) : "-"});
  }
  out << "\n";
  t.print(out);
}

void print_job_status(std::ostream& out, const v1::JobStatus& j) {
  const double now = now_unix();
  out << "job        " << j.job_id() << " (" << j.name() << ")\n";
  out << "state      " << short_state(j.state())
      << (j.reason().empty() ? "" : ": " + first_line(j.reason(), 200)) << "\n";
  if (j.reason().find('\n') != std::string::npos) {
    out << j.reason().substr(j.reason().find('\n') + 1) << (j.reason().back() == '\n' ? "" : "\n");
  }
  out << "ranks      " << j.world_size() << " (placement " << j.placement() << ", generation "
      << j.generation() << ", recoveries " << j.recoveries() << ")\n";
  if (!j.master_addr().empty()) out << "master     " << j.master_addr() << "\n";
  if (j.has_resumed_step()) {
    out << "resumed    " << j.resumed_job() << " from its committed step " << j.resumed_step()
        << "\n";
  }
  if (j.has_checkpoint_step() || !j.checkpoint_dir().empty()) {
    out << "checkpoint "
        << (j.has_checkpoint_step() ? "step " + std::to_string(j.checkpoint_step()) + " committed"
                                    : std::string("none committed yet"))
        << (j.checkpoint_dir().empty() ? std::string(" (in each worker's job directory)")
                                       : " in " + j.checkpoint_dir())
        << "\n";
  }
  if (j.members_size() > 0 && j.members_size() < j.world_size()) {
    std::string list;
    for (int m : j.members()) list += (list.empty() ? "" : ",") + std::to_string(m);
    out << "group      " << j.members_size() << " of " << j.world_size() << " ranks (" << list
        << ")\n";
  }
  print_timelines(out, j);
  out << "submitted  " << format_age(now - unix_of(j.created_at())) << " ago\n";
  if (j.total_steps() > 0) {
    out << "progress   " << progress_cell(j) << strf("  loss %.4f", j.loss());
    if (j.state() == v1::JOB_STATE_RUNNING) {
      out << strf("  %.0f samples/s", j.samples_per_s()) << "  ETA " << format_duration(j.eta_s());
    }
    out << "\n";
  }
  print_job_metrics(out, j);
  print_rank_table(out, j);
}

}  // namespace

int status_command(const ClientOptions& options, const StatusOptions& status) {
  int code = 0;
  auto client = connect(options, "status", &code);
  if (!client) return code;
  const bool tty = !options.json && isatty(STDOUT_FILENO);
  while (true) {
    auto reply = client->get_job(status.job_id);
    if (!reply.is_ok()) return report_error("status", reply.status());
    const v1::JobStatus& j = reply->job();
    if (options.json) {
      std::cout << to_json(j) << std::endl;  // --watch: one JSON document per line
    } else {
      if (status.watch && tty) std::cout << "\033[H\033[2J";  // redraw in place
      print_job_status(std::cout, j);
      if (status.watch && !tty) std::cout << "\n";
      std::cout.flush();
    }
    if (!status.watch || terminal(j.state())) return kExitOk;
    std::this_thread::sleep_for(std::chrono::duration<double>(status.interval_s));
  }
}

int workers_command(const ClientOptions& options, bool network) {
  int code = 0;
  auto client = connect(options, "workers", &code);
  if (!client) return code;
  auto reply = client->list_workers();
  if (!reply.is_ok()) return report_error("workers", reply.status());
  if (network) {
    NetworkView view = network_view(*reply, NetworkMapOptions{}.ring_bytes);
    if (options.json) {
      std::cout << dump_json(network_json(view)) << std::endl;
    } else {
      print_network(std::cout, view);
    }
    return kExitOk;
  }
  if (options.json) {
    std::cout << to_json(*reply) << std::endl;
    return kExitOk;
  }
  Table t({"ID", "HOST", "REGION", "STATE", "SLOTS", "HEARTBEAT", "TASKS"});
  const double now = now_unix();
  for (const auto& w : reply->workers()) {
    std::string tasks;
    for (const auto& task : w.tasks()) {
      tasks += (tasks.empty() ? "" : ",") + task.job_id() + "/" + std::to_string(task.rank());
    }
    std::string state = short_enum_name(*v1::WorkerState_descriptor(), w.state());
    t.add_row(
        {w.worker_id(), w.host(), w.region(), state, strf("%d/%d", w.used_slots(), w.slots()),
         w.has_last_heartbeat() ? format_age(now - unix_of(w.last_heartbeat())) + " ago" : "-",
         tasks.empty() ? "-" : tasks});
  }
  if (t.empty()) {
    std::cout << "no workers registered\n";
  } else {
    t.print(std::cout);
  }
  return kExitOk;
}

int logs_command(const ClientOptions& options, const std::string& job_id, int rank, bool follow) {
  int code = 0;
  auto client = connect(options, "logs", &code);
  if (!client) return code;
  int64_t offset = 0;
  std::string partial;  // --json: the start of a line whose end has not arrived yet
  auto emit_line = [&](const std::string& line) {
    std::cout << dump_json({{"job_id", job_id}, {"rank", rank}, {"line", line}}) << "\n";
  };
  auto emit_lines = [&](const std::string& data, bool last) {
    partial += data;
    size_t start = 0;
    for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      emit_line(partial.substr(start, nl - start));
    }
    partial.erase(0, start);
    if (last && !partial.empty()) emit_line(partial);
    if (last) partial.clear();
    std::cout << std::flush;
  };
  while (true) {
    v1::GetLogsRequest req;
    req.set_job_id(job_id);
    req.set_rank(rank);
    req.set_offset(offset);
    auto reply = client->get_logs(req);
    if (!reply.is_ok()) return report_error("logs", reply.status());
    offset = reply->next_offset();
    const bool done = reply->complete() || (!follow && reply->data().empty());
    if (options.json) {
      emit_lines(reply->data(), done);  // JSON Lines: one object per log line
    } else {
      std::cout << reply->data() << std::flush;
    }
    if (done) break;
    if (reply->data().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return kExitOk;
}

int cancel_command(const ClientOptions& options, const std::string& job_id) {
  int code = 0;
  auto client = connect(options, "cancel", &code);
  if (!client) return code;
  auto reply = client->cancel_job(job_id);
  if (!reply.is_ok()) return report_error("cancel", reply.status());
  if (options.json) {
    std::cout << to_json(reply->job()) << std::endl;
  } else {
    std::cout << "cancelled " << job_id << "\n";
  }
  return kExitOk;
}

}  // namespace tern
