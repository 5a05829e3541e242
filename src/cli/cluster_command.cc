#include "cli/cluster_command.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/cluster_config.h"
#include "common/subprocess.h"
#include "rpc/client.h"
#include "rpc/proto_json.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

struct Daemon {
  std::string name;  // "coordinator" or the worker's id
  pid_t pid = 0;
};

std::string run_dir(const ClusterConfig& c) { return c.state_dir + "/run"; }

// A process is alive unless it is gone or a zombie (an unreaped corpse holds no resources).
bool alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

std::vector<std::string> cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string a;
  while (std::getline(in, a, '\0')) args.push_back(a);
  return args;
}

// True when `pid` is a `tern coordinator|worker` of this cluster: its command line names the
// cluster file or a path under its state_dir (relative ones resolved against its cwd). Guards
// against pid reuse and finds daemons restarted by hand.
bool is_our_daemon(pid_t pid, const ClusterConfig& c) {
  if (!alive(pid)) return false;
  auto args = cmdline(pid);
  if (args.size() < 2 || (args[1] != "coordinator" && args[1] != "worker")) return false;
  if (fs::path(args[0]).filename() != "tern") return false;
  std::error_code ec;
  fs::path cwd = fs::read_symlink("/proc/" + std::to_string(pid) + "/cwd", ec);
  const std::string config = fs::absolute(c.path).lexically_normal().string();
  for (const auto& a : args) {
    std::string abs =
        fs::path(a).is_absolute() || cwd.empty() ? a : (cwd / a).lexically_normal().string();
    if (abs == config || abs.rfind(c.state_dir + "/", 0) == 0 || abs == c.state_dir) return true;
  }
  return false;
}

// Daemons of this cluster that have no pid file (e.g. a coordinator restarted by hand).
std::vector<Daemon> find_unlisted_daemons(const ClusterConfig& c,
                                          const std::vector<Daemon>& listed) {
  std::set<pid_t> known;
  for (const auto& d : listed) known.insert(d.pid);
  std::vector<Daemon> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == getpid() || known.count(pid) || !is_our_daemon(pid, c)) continue;
    auto args = cmdline(pid);
    out.push_back({args[1] == "coordinator" ? "coordinator" : "worker-pid" + name, pid});
  }
  return out;
}

std::vector<Daemon> read_pid_files(const ClusterConfig& c) {
  std::vector<Daemon> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir(c), ec)) {
    if (entry.path().extension() != ".pid") continue;
    Daemon d;
    d.name = entry.path().stem().string();
    std::ifstream(entry.path()) >> d.pid;
    out.push_back(d);
  }
  return out;
}

void write_pid_file(const ClusterConfig& c, const Daemon& d) {
  std::ofstream(run_dir(c) + "/" + d.name + ".pid") << d.pid << "\n";
}

std::string tail(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string l;
  while (std::getline(in, l)) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i)
    out += "    " + lines[i] + "\n";
  return out;
}

// Stops daemons: SIGTERM workers first (they stop their trainers), then the coordinator,
// then SIGKILL whatever is left, process group and all. Returns how many were running.
int stop_daemons(const ClusterConfig& c, const std::vector<Daemon>& daemons, double grace_s) {
  std::vector<Daemon> live;
  for (const auto& d : daemons) {
    if (is_our_daemon(d.pid, c)) live.push_back(d);
  }
  auto wait_gone = [&](const std::vector<Daemon>& ds, double seconds) {
    auto until = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                          std::chrono::duration<double>(seconds));
    while (SteadyClock::now() < until) {
      bool any = false;
      for (const auto& d : ds) any = any || alive(d.pid);
      if (!any) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  std::vector<Daemon> workers, coordinators;
  for (const auto& d : live) (d.name == "coordinator" ? coordinators : workers).push_back(d);
  for (const auto& d : workers) ::kill(d.pid, SIGTERM);
  wait_gone(workers, grace_s);
  for (const auto& d : coordinators) ::kill(d.pid, SIGTERM);
  wait_gone(coordinators, std::min(grace_s, 5.0));
  for (const auto& d : live) {
    // Each daemon leads its own session and process group; its trainers are in that group.
    // The group is killed even when the leader already exited, so no trainer is left behind.
    if (alive(d.pid))
      std::cerr << "tern cluster down: " << d.name << " (pid " << d.pid
                << ") did not stop; killing it\n";
    ::kill(-d.pid, SIGKILL);
    ::kill(d.pid, SIGKILL);
  }
  wait_gone(live, 5.0);
  for (const auto& d : daemons) {
    std::error_code ec;
    fs::remove(run_dir(c) + "/" + d.name + ".pid", ec);
  }
  return static_cast<int>(live.size());
}

Result<std::unique_ptr<Subprocess>> spawn_daemon(const std::vector<std::string>& args,
                                                 const std::string& log) {
  SpawnOptions o;
  o.argv = {self_exe_dir() + "/tern"};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.stdout_file = log;
  o.stderr_file = log;
  o.new_session = true;  // outlives the terminal and the CLI
  o.die_with_parent = false;
  return Subprocess::spawn(o);
}

}  // namespace

namespace {

// What `tern cluster up` has started so far: stopped again when a later step fails.
struct Launch {
  const ClusterConfig& c;
  std::vector<Daemon> started;
  std::vector<std::unique_ptr<Subprocess>> procs;

  // Reports `msg`, stops every daemon started so far, returns the exit code.
  int fail(const std::string& msg) {
    std::cerr << "tern cluster up: " << msg << "\nstopping what was started" << std::endl;
    for (auto& p : procs) p->detach();
    stop_daemons(c, started, 3);
    return 1;
  }
  Status spawn(const std::string& name, const std::vector<std::string>& args) {
    auto d = spawn_daemon(args, c.log_dir() + "/" + name + ".log");
    if (!d.is_ok()) return d.status();
    started.push_back({name, (*d)->pid()});
    write_pid_file(c, started.back());
    procs.push_back(std::move(d).value());
    return Status::ok();
  }
  // The first daemon that exited, as an error with the end of its log; ok while all run.
  Status exited() {
    for (size_t i = 0; i < procs.size(); ++i) {
      if (auto code = procs[i]->poll()) {
        std::string log = c.log_dir() + "/" + started[i].name + ".log";
        return internal_error(started[i].name + " exited with code " + std::to_string(*code) +
                              "; its log (" + log + "):\n" + tail(log, 15));
      }
    }
    return Status::ok();
  }
};

// Refuses a cluster that is up already; creates its directories and drops stale pid files.
// Returns the exit code, or 0 to go on.
int prepare_cluster_up(const ClusterConfig& c, const ClusterCommandOptions& options) {
  for (const auto& d : read_pid_files(c)) {
    if (is_our_daemon(d.pid, c)) {
      std::cerr << "tern cluster up: cluster '" << c.name << "' is already up (" << d.name
                << " pid " << d.pid << "); run `tern cluster down " << options.file << "` first"
                << std::endl;
      return 1;
    }
  }
  std::error_code ec;
  for (const auto& d : {run_dir(c), c.log_dir(), c.work_dir()}) {
    fs::create_directories(d, ec);
    if (ec) {
      std::cerr << "tern cluster up: cannot create " << d << ": " << ec.message() << std::endl;
      return 1;
    }
  }
  for (const auto& d : read_pid_files(c))
    fs::remove(run_dir(c) + "/" + d.name + ".pid", ec);  // stale
  std::string trainer = c.trainer_path.empty() ? self_exe_dir() + "/tern-trainer" : c.trainer_path;
  if (access(trainer.c_str(), X_OK) != 0) {
    std::cerr << "tern cluster up: warning: trainer binary " << trainer
              << " is missing; jobs will fail until it is built" << std::endl;
  }
  return 0;
}

// Waits until the coordinator (launch.procs[0]) answers at `address`.
Status await_coordinator(Launch& launch, const std::string& address, const RpcClientOptions& quick,
                         SteadyClock::time_point deadline) {
  while (true) {
    TERN_RETURN_IF_ERROR(launch.exited());
    // A fresh channel per attempt: no reconnect backoff carried over from refused attempts.
    auto probe = CoordinatorClient(address, quick).list_workers();
    if (probe.is_ok()) return Status::ok();
    if (probe.status().code() == StatusCode::kUnauthenticated) {
      return unauthenticated("the coordinator refuses this CLI's token: " +
                             probe.status().message());
    }
    if (SteadyClock::now() > deadline)
      return unavailable("the coordinator does not answer at " + address);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// Starts every region's worker daemons; returns their names.
Result<std::set<std::string>> start_workers(Launch& launch, const std::string& config_path,
                                            const std::string& address) {
  const ClusterConfig& c = launch.c;
  std::set<std::string> names;
  for (const auto& region : c.regions) {
    for (int64_t i = 0; i < region.workers; ++i) {
      std::string name = region.name + "-" + std::to_string(i);
      std::vector<std::string> args = {"worker",
                                       "--cluster",
                                       config_path,
                                       "--coordinator",
                                       address,
                                       "--name",
                                       name,
                                       "--region",
                                       region.name,
                                       "--slots",
                                       std::to_string(region.slots),
                                       "--host",
                                       region.host,
                                       "--work-dir",
                                       c.work_dir() + "/" + name};
      if (!c.trainer_path.empty()) args.insert(args.end(), {"--trainer", c.trainer_path});
      TERN_RETURN_IF_ERROR(launch.spawn(name, args));
      names.insert(name);
    }
  }
  return names;
}

// Waits until every worker in `names` has registered and is READY.
Status await_workers(Launch& launch, CoordinatorClient& client, const std::set<std::string>& names,
                     SteadyClock::time_point deadline, double timeout_s) {
  while (true) {
    TERN_RETURN_IF_ERROR(launch.exited());
    auto reply = client.list_workers();
    size_t ready = 0;
    if (reply.is_ok()) {
      for (const auto& w : reply->workers())
        ready += names.count(w.worker_id()) && w.state() == v1::WORKER_STATE_READY;
    }
    if (ready == names.size()) return Status::ok();
    if (SteadyClock::now() > deadline) {
      return deadline_exceeded(std::to_string(ready) + " of " + std::to_string(names.size()) +
                               " workers registered within " +
                               std::to_string(static_cast<int>(timeout_s)) + " s; see " +
                               launch.c.log_dir());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// The summary of a cluster that is up: addresses, logs, the dashboard, how to stop it.
void print_cluster_up(const ClusterConfig& c, const ClusterCommandOptions& options,
                      const std::string& address, int64_t coordinator_pid, size_t workers) {
  // The dashboard (and /metrics) when the cluster serves HTTP; an unspecified host is dialled
  // on loopback, as the gRPC address is (dial_address).
  std::string dashboard;
  if (c.metrics_port > 0) {
    const std::string& host = c.metrics.host;
    const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
    dashboard =
        "http://" +
        dial_address((v6 ? "[" + host + "]" : host) + ":" + std::to_string(c.metrics_port)) +
        "/jobs";
  }
  if (options.json) {
    nlohmann::json j{
        {"cluster", c.name},  {"coordinator", address},   {"coordinator_pid", coordinator_pid},
        {"workers", workers}, {"state_dir", c.state_dir}, {"log_dir", c.log_dir()}};
    if (!dashboard.empty()) j["dashboard"] = dashboard;
    std::cout << dump_json(j) << std::endl;
    return;
  }
  std::cout << "cluster '" << c.name << "' is up: coordinator at " << address << " (pid "
            << coordinator_pid << "), " << workers << " workers in " << c.regions.size()
            << " region" << (c.regions.size() == 1 ? "" : "s") << "\n  logs:  " << c.log_dir()
            << " (coordinator.log, <worker>.log, jobs/<job>/rank-<r>.log)"
            << (dashboard.empty() ? "" : "\n  web:   " + dashboard) << "\n  state: " << c.state_dir
            << "\n  stop:  tern cluster down " << options.file << std::endl;
}

}  // namespace

int cluster_up_command(const ClusterCommandOptions& options) {
  auto loaded = load_cluster_config(options.file, {}, ClusterLoadOptions{true});
  if (!loaded.is_ok()) {
    std::cerr << "tern cluster up: " << loaded.status().message() << "\nnothing was started"
              << std::endl;
    return 2;
  }
  const ClusterConfig& c = *loaded;
  if (int code = prepare_cluster_up(c, options); code != 0) return code;
  const std::string address = dial_address(c.listen);
  const std::string config_path = fs::absolute(options.file).lexically_normal().string();
  // The daemons read TLS material and their token from the same file; so does this CLI.
  const char* env_token = std::getenv("TERN_TOKEN");
  auto security = make_client_security(&c, address, env_token ? env_token : "");
  if (!security.is_ok()) {
    std::cerr << "tern cluster up: " << security.status().message() << "\nnothing was started"
              << std::endl;
    return 2;
  }
  Launch launch{c, {}, {}};
  auto deadline = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                           std::chrono::duration<double>(options.timeout_s));
  // The coordinator first; wait until it answers. Then the workers.
  if (Status s = launch.spawn("coordinator", {"coordinator", "--config", config_path});
      !s.is_ok()) {
    return launch.fail(s.message());
  }
  RpcClientOptions quick{std::chrono::milliseconds(1000), 0, std::chrono::milliseconds(0)};
  quick.security = *security;
  if (Status s = await_coordinator(launch, address, quick, deadline); !s.is_ok())
    return launch.fail(s.message());
  auto names = start_workers(launch, config_path, address);
  if (!names.is_ok()) return launch.fail(names.status().message());
  CoordinatorClient client(address, quick);
  if (Status s = await_workers(launch, client, *names, deadline, options.timeout_s); !s.is_ok()) {
    return launch.fail(s.message());
  }
  for (auto& p : launch.procs) p->detach();
  print_cluster_up(c, options, address, launch.started[0].pid, names->size());
  return 0;
}

int cluster_down_command(const ClusterCommandOptions& options) {
  auto loaded = load_cluster_config(options.file);
  if (!loaded.is_ok()) {
    std::cerr << "tern cluster down: " << loaded.status().message() << std::endl;
    return 2;
  }
  const ClusterConfig& c = *loaded;
  auto daemons = read_pid_files(c);
  for (const auto& d : find_unlisted_daemons(c, daemons)) daemons.push_back(d);
  int stopped = stop_daemons(c, daemons, options.grace_s);
  if (options.json) {
    std::cout << dump_json(nlohmann::json{{"cluster", c.name}, {"stopped", stopped}}) << std::endl;
  } else if (stopped == 0) {
    std::cout << "cluster '" << c.name << "' is not running\n";
  } else {
    std::cout << "cluster '" << c.name << "' is down: stopped " << stopped << " processes\n";
  }
  return 0;
}

}  // namespace tern
