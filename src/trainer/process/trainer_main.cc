#include "trainer/process/trainer_main.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/abandon.h"
#include "comm/process_group.h"
#include "common/job_spec.h"
#include "common/logging.h"
#include "common/trainer_codec.h"
#include "common/workload_traits.h"
#include "trainer/loop/training_loop.h"
#include "trainer/process/comm_stack.h"
#include "trainer/process/device.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

std::atomic<TrainingLoop*> g_trainer{nullptr};  // for the signal handler only

void on_signal(int) {
  if (TrainingLoop* t = g_trainer.load()) t->request_stop();
}

int exit_code_for(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return kTrainerOk;
    case StatusCode::kInvalidArgument:
      return kTrainerBadArgs;
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss:
      return kTrainerDataError;
    case StatusCode::kUnavailable:
    case StatusCode::kDeadlineExceeded:
    case StatusCode::kAborted:
      return kTrainerCommFailure;
    case StatusCode::kResourceExhausted:
      return kTrainerOutOfMemory;
    case StatusCode::kCancelled:
      return kTrainerStopped;
    default:
      return kTrainerInternal;
  }
}

std::optional<int> parse_port(const std::string& text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  int port = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return std::nullopt;
  return port;
}

// True for what LibTorch throws when an allocation fails (CPU: "DefaultCPUAllocator: can't
// allocate memory", CUDA: "CUDA out of memory").
bool is_allocation_failure(const std::string& what) {
  return what.find("can't allocate memory") != std::string::npos ||
         what.find("out of memory") != std::string::npos ||
         what.find("Out of memory") != std::string::npos;
}

// Runs `f` (setup or run), turning what escapes as an exception into a Status: an allocation
// failure is RESOURCE_EXHAUSTED (exit kTrainerOutOfMemory), anything else INTERNAL.
template <typename F>
Status guarded(const char* what, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return resource_exhausted(std::string(what) + ": out of memory (std::bad_alloc)");
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    if (is_allocation_failure(msg))
      return resource_exhausted(std::string(what) + ": out of memory: " + msg);
    return internal_error(std::string(what) + ": " + msg);
  } catch (const std::exception& e) {
    if (is_allocation_failure(e.what()))
      return resource_exhausted(std::string(what) + ": out of memory: " + e.what());
    return internal_error(std::string(what) + ": unexpected exception: " + e.what());
  }
}

// Regroup commands from the parent, handed from the stdin reader to the training thread.
class RegroupMailbox {
 public:
  void post(RegroupRequest r) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = std::move(r);
    cv_.notify_all();
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  Result<RegroupRequest> wait(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return pending_.has_value() || closed_; })) {
      return deadline_exceeded("no regroup command from the parent within " +
                               std::to_string(timeout.count()) + " ms");
    }
    if (!pending_) return unavailable("the parent closed stdin while a regroup was awaited");
    RegroupRequest r = std::move(*pending_);
    pending_.reset();
    return r;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<RegroupRequest> pending_;
  bool closed_ = false;
};

// Reads command lines (common/trainer_codec.h) from the parent on stdin: stop, regroup.
void stdin_commands(TrainingLoop* trainer, RegroupMailbox* mailbox) {
  std::string line;
  while (std::getline(std::cin, line)) {
    auto command = decode_command(line);
    if (!command.is_ok()) {
      spdlog::warn("ignoring command line from parent ({}): {}", command.status().to_string(),
                   line);
      continue;
    }
    if (std::holds_alternative<StopCommand>(*command)) {
      spdlog::info("stop requested by parent");
      trainer->request_stop();
      mailbox->close();  // a standby waiting to be admitted stops now
      continue;
    }
    const auto& c = std::get<RegroupCommand>(*command);
    RegroupRequest r;
    r.generation = c.generation;
    r.world = c.world;
    r.master = c.master;
    r.rollback = c.rollback;
    r.members = c.members;
    spdlog::info("regroup command: generation {} world {} master {}", r.generation, r.world,
                 r.master);
    // A collective stuck on the old group (a peer that is alive but waits on the dead one)
    // would sit out sync.timeout_s: end it now, the coordinator already knows.
    abandon_collectives("the coordinator regroups the job at generation " +
                        std::to_string(r.generation));
    mailbox->post(std::move(r));
  }
  mailbox->close();
}

// Sets the nice value of every thread of this process (Linux keeps one per thread; threads
// inherit their creator's). False when one could not be set (lowering it needs privileges).
bool set_process_nice(int nice) {
  bool ok = true;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    const id_t tid = static_cast<id_t>(std::strtol(t.path().filename().c_str(), nullptr, 10));
    ok = ::setpriority(PRIO_PROCESS, tid, nice) == 0 && ok;
  }
  return ok && !ec;
}

// The regions of a group's members in group order (`regions` lists the job's ranks); all of
// them when there is no member list.
std::vector<std::string> group_regions(const std::vector<std::string>& regions,
                                       const std::vector<int>& members) {
  if (regions.empty() || members.empty()) return regions;
  std::vector<std::string> out;
  for (int m : members) {
    if (m >= 0 && m < static_cast<int>(regions.size()))
      out.push_back(regions[static_cast<size_t>(m)]);
  }
  return out;
}

// Ends the process after the error event for `s`: the exit code is the loop's own verdict
// (a non-finite loss, replicas that differ) or the status's. The process ends here: returning
// through main would run the static destructors of c10d/Gloo while their threads may still
// run (a crash at exit that turned a clear failure into a signal, read as a lost machine).
[[noreturn]] void fail_and_exit(const Status& s, TrainingLoop* trainer, JsonLinesSink* sink) {
  ErrorEvent e;
  e.code = trainer && trainer->stopped_on_nonfinite()  ? kTrainerNonFinite
           : trainer && trainer->stopped_on_mismatch() ? kTrainerReplicaMismatch
                                                       : exit_code_for(s);
  e.message = s.to_string();
  spdlog::error("{}", e.message);
  sink->emit(to_json(e));
  spdlog::default_logger()->flush();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(static_cast<int>(e.code));
}

// Points `rv` at `master` (HOST:PORT); `what` names it in the error.
Status set_master(const std::string& master, const std::string& what, RendezvousOptions* rv) {
  auto colon = master.rfind(':');
  if (colon == std::string::npos)
    return invalid_argument(what + " must be HOST:PORT, got '" + master + "'");
  auto port = parse_port(master.substr(colon + 1));
  if (!port)
    return invalid_argument(what + " must be HOST:PORT with a port in 1..65535, got '" + master +
                            "'");
  rv->master_host = master.substr(0, colon);
  rv->master_port = *port;
  return Status::ok();
}

// The group this process starts in (from the flags, checked) and its rendezvous.
struct FirstGroup {
  RegroupRequest request;
  RendezvousOptions rv;
};

Result<FirstGroup> first_group(const TrainerArgs& args, const JobSpec& spec) {
  if (args.world < 1 || args.rank < 0 || args.rank >= args.world) {
    return invalid_argument("--rank must be in [0, --world)");
  }
  FirstGroup g;
  g.request.generation = args.generation;
  g.request.world = args.members.empty() ? args.world : static_cast<int>(args.members.size());
  g.request.master = args.master;
  g.request.members = args.members;
  for (int m : args.members) {
    if (m < 0 || m >= args.world)
      return invalid_argument("--members: rank " + std::to_string(m) + " is not in [0, --world)");
  }
  if (!args.standby && g.request.group_rank(args.rank) < 0) {
    return invalid_argument("--members does not name --rank " + std::to_string(args.rank));
  }
  TERN_RETURN_IF_ERROR(set_master(args.master, "--master", &g.rv));
  g.rv.rank = args.standby ? 0 : g.request.group_rank(args.rank);
  g.rv.world = g.request.world;
  g.rv.generation = args.generation;
  g.rv.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.sync.timeout_s * 1000));
  return g;
}

CommStackOptions stack_options(const TrainerArgs& args, const JobSpec& spec,
                               const RendezvousOptions& rv, const at::Device& device) {
  CommunicatorOptions co;
  co.backend = backend_for(device);
  co.bind_host = args.bind_host;
  co.timeout = rv.timeout;
  CommStackOptions so;
  so.rank = rv.rank;
  so.world = rv.world;
  so.comm = co;
  so.cluster_file = args.cluster_file;
  so.regions = group_regions(args.regions, args.standby ? std::vector<int>{} : args.members);
  so.seed = static_cast<uint64_t>(spec.train.seed);
  return so;
}

// The regroup hook that connects to a new generation's group (regroup.h's RegroupHooks).
std::function<Result<CommStack>(const RegroupRequest&)> regroup_connector(const TrainerArgs& args,
                                                                          const JobSpec& spec,
                                                                          RendezvousOptions rv,
                                                                          CommStackOptions so,
                                                                          JsonLinesSink* sink) {
  return [&args, &spec, rv, so, sink](const RegroupRequest& req) mutable -> Result<CommStack> {
    TERN_RETURN_IF_ERROR(set_master(req.master, "regroup master", &rv));
    rv.generation = req.generation;
    rv.world = req.world;
    rv.rank = req.group_rank(args.rank);
    so.world = req.world;
    so.rank = rv.rank;
    // The group's regions (the WAN model and hierarchical groups): those of its members.
    so.regions = group_regions(args.regions, req.members);
    TERN_ASSIGN_OR_RETURN(auto root, connect_store(rv));
    TERN_ASSIGN_OR_RETURN(CommStack stack,
                          build_comm_stack(generation_store(root, req.generation), spec, so));
    sink->set_generation(req.generation);
    setup_logging("trainer job=" + args.job_id + " rank=" + std::to_string(args.rank) +
                      " gen=" + std::to_string(req.generation),
                  spec.log_level);
    return stack;
  };
}

// A standby: loads everything that needs no group, says so (ready), and waits to be admitted
// (minutes: until the coordinator grows the group; a regroup that does not name this rank only
// re-keys it). It loads at the lowest priority: on a machine it shares with the group it is
// about to join, the load must not slow the group down (on a machine of its own it changes
// nothing). Its priority comes back once loaded, where the process may raise it again (as root).
Status run_standby(const TrainerArgs& args, TrainingLoop* trainer, RegroupMailbox* mailbox,
                   const RegroupHooks& hooks, JsonLinesSink* sink) {
  errno = 0;
  const int nice0 = ::getpriority(PRIO_PROCESS, 0);
  const bool lowered = errno == 0 && nice0 < 19 && set_process_nice(19);
  auto t0 = std::chrono::steady_clock::now();
  Status s = guarded("setup", [&] { return trainer->prepare(); });
  if (lowered && !set_process_nice(nice0)) {
    spdlog::warn(
        "standby: cannot restore the nice value {} after loading (no privilege): it trains at nice "
        "19",
        nice0);
  }
  TERN_RETURN_IF_ERROR(s);
  ReadyEvent ready;
  ready.setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("standby for rank {}: ready after {:.2f} s; waiting to join", args.rank,
               ready.setup_s);
  sink->emit(to_json(ready));
  std::fflush(stdout);
  for (;;) {
    auto req = mailbox->wait(std::chrono::hours(24));
    if (!req.is_ok()) {
      // Stopped by the parent (the job ended without it), or the parent is gone.
      return cancelled("standby for rank " + std::to_string(args.rank) +
                       " stopped before it joined (" + req.status().message() + ")");
    }
    if (req->group_rank(args.rank) < 0) {
      spdlog::info("standby: generation {} does not include rank {} yet", req->generation,
                   args.rank);
      sink->set_generation(req->generation);
      continue;
    }
    auto joined = hooks.connect(*req);
    if (!joined.is_ok()) {
      // The group changed again while it formed (comm/abandon.h): wait for the next regroup.
      spdlog::warn("standby: generation {} did not form ({}); waiting for the next regroup",
                   req->generation, joined.status().to_string());
      continue;
    }
    trainer->attach_group(req->generation, req->members, joined->world);
    spdlog::info("standby for rank {} joins generation {} ({} ranks)", args.rank, req->generation,
                 req->world);
    return Status::ok();
  }
}

}  // namespace

int trainer_main(const TrainerArgs& args) {
  setup_logging("trainer job=" + args.job_id + " rank=" + std::to_string(args.rank) +
                " gen=" + std::to_string(args.generation));
  JsonLinesSink sink(stdout, args.job_id, args.rank, args.generation);
  std::unique_ptr<TrainingLoop> trainer;
  auto loaded = load_job_spec_file(args.spec_file);
  if (!loaded.is_ok()) fail_and_exit(loaded.status(), nullptr, &sink);
  const JobSpec& spec = loaded->spec;
  spdlog::set_level(spdlog::level::from_str(spec.log_level));
  auto group = first_group(args, spec);
  if (!group.is_ok()) fail_and_exit(group.status(), nullptr, &sink);
  torch::set_num_threads(static_cast<int>(spec.train.threads));
  at::set_num_interop_threads(1);
  // A CPU-only workload (DLRM) takes `device: auto` as the CPU; `cuda` it refuses at validation.
  auto device =
      resolve_device(workload_traits(spec).cpu_only ? DeviceKind::kCpu : spec.device, args.rank);
  if (!device.is_ok()) fail_and_exit(device.status(), nullptr, &sink);
  const CommStackOptions so = stack_options(args, spec, group->rv, *device);
  // A standby has no group yet: it connects when a regroup names it.
  CommStack stack0;
  if (!args.standby) {
    auto store = connect_store(group->rv);
    if (!store.is_ok()) fail_and_exit(store.status(), nullptr, &sink);
    auto comm = build_comm_stack(generation_store(*store, args.generation), spec, so);
    if (!comm.is_ok()) fail_and_exit(comm.status(), nullptr, &sink);
    stack0 = std::move(comm).value();
  }
  RegroupMailbox mailbox;
  TrainerOptions to;
  to.spec = spec;
  to.rank = args.rank;
  to.world = args.world;
  to.generation = args.generation;
  to.job_id = args.job_id;
  to.work_dir = args.work_dir;
  to.device = *device;
  to.members = args.members;
  to.intra_comm = stack0.intra;
  to.inter_comm = stack0.inter;
  to.regroup.wait = [&](std::chrono::milliseconds timeout) { return mailbox.wait(timeout); };
  to.regroup.connect = regroup_connector(args, spec, group->rv, so, &sink);
  const RegroupHooks hooks = to.regroup;
  trainer = std::make_unique<TrainingLoop>(to, stack0.world, &sink, make_workload(spec));
  g_trainer.store(trainer.get());
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  std::thread(stdin_commands, trainer.get(), &mailbox).detach();

  Status s = args.standby ? run_standby(args, trainer.get(), &mailbox, hooks, &sink) : Status::ok();
  if (s.is_ok()) s = guarded("setup", [&] { return trainer->setup(); });
  if (s.is_ok()) s = guarded("training", [&] { return trainer->run(); });
  g_trainer.store(nullptr);
  if (!s.is_ok()) fail_and_exit(s, trainer.get(), &sink);
  spdlog::info("finished: {}", trainer->summary().dump());
  // Skip static destructors of c10d/Gloo threads, which can race at exit.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(kTrainerOk);
}

}  // namespace tern
