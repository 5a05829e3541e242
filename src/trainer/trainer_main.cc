#include "trainer/trainer_main.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "comm/process_group.h"
#include "common/job_spec.h"
#include "common/logging.h"
#include "trainer/comm_stack.h"
#include "trainer/device.h"
#include "trainer/trainer.h"

namespace tern {
namespace {

std::atomic<Trainer*> g_trainer{nullptr};  // for the signal handler only

void on_signal(int) {
  if (Trainer* t = g_trainer.load()) t->request_stop();
}

int exit_code_for(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return kTrainerOk;
    case StatusCode::kInvalidArgument: return kTrainerBadArgs;
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss: return kTrainerDataError;
    case StatusCode::kUnavailable:
    case StatusCode::kDeadlineExceeded: return kTrainerCommFailure;
    case StatusCode::kCancelled: return kTrainerStopped;
    default: return kTrainerInternal;
  }
}

// Reads {"cmd": ...} lines from the parent on stdin.
void stdin_commands(Trainer* trainer) {
  std::string line;
  while (std::getline(std::cin, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("cmd", "") == "stop") {
        spdlog::info("stop requested by parent");
        trainer->request_stop();
      }
    } catch (const std::exception& e) {
      spdlog::warn("ignoring malformed command line from parent: {}", e.what());
    }
  }
}

}  // namespace

int trainer_main(const TrainerArgs& args) {
  setup_logging("trainer job=" + args.job_id + " rank=" + std::to_string(args.rank) +
                " gen=" + std::to_string(args.generation));
  JsonLinesSink sink(stdout, args.job_id, args.rank, args.generation);
  auto fail = [&](const Status& s) {
    int code = exit_code_for(s);
    spdlog::error("{}", s.to_string());
    sink.emit({{"event", "error"}, {"message", s.to_string()}, {"code", code}});
    return code;
  };
  auto loaded = load_job_spec_file(args.spec_file);
  if (!loaded.is_ok()) return fail(loaded.status());
  const JobSpec& spec = loaded->spec;
  spdlog::set_level(spdlog::level::from_str(spec.log_level));
  if (args.world < 1 || args.rank < 0 || args.rank >= args.world) {
    return fail(invalid_argument("--rank must be in [0, --world)"));
  }
  auto colon = args.master.rfind(':');
  if (colon == std::string::npos) return fail(invalid_argument("--master must be HOST:PORT"));
  torch::set_num_threads(static_cast<int>(spec.train.threads));
  at::set_num_interop_threads(1);

  RendezvousOptions rv;
  rv.master_host = args.master.substr(0, colon);
  rv.master_port = std::stoi(args.master.substr(colon + 1));
  rv.rank = args.rank;
  rv.world = args.world;
  rv.generation = args.generation;
  rv.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.sync.timeout_s * 1000));
  auto store = connect_store(rv);
  if (!store.is_ok()) return fail(store.status());
  auto device = resolve_device(spec.device, args.rank);
  if (!device.is_ok()) return fail(device.status());
  CommunicatorOptions co;
  co.backend = backend_for(*device);
  co.bind_host = args.bind_host;
  co.timeout = rv.timeout;
  CommStackOptions so;
  so.rank = args.rank;
  so.world = args.world;
  so.comm = co;
  so.cluster_file = args.cluster_file;
  so.regions = args.regions;
  so.seed = static_cast<uint64_t>(spec.train.seed);
  auto comm = build_comm_stack(generation_store(*store, args.generation), spec, so);
  if (!comm.is_ok()) return fail(comm.status());

  TrainerOptions to;
  to.spec = spec;
  to.rank = args.rank;
  to.world = args.world;
  to.generation = args.generation;
  to.job_id = args.job_id;
  to.work_dir = args.work_dir;
  to.device = *device;
  to.intra_comm = comm->intra;
  to.inter_comm = comm->inter;
  Trainer trainer(to, comm->world, &sink);
  g_trainer.store(&trainer);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  std::thread(stdin_commands, &trainer).detach();

  Status s = trainer.setup();
  if (s.is_ok()) s = trainer.run();
  g_trainer.store(nullptr);
  if (!s.is_ok()) return fail(s);
  spdlog::info("finished: {}", trainer.summary().dump());
  // Skip static destructors of c10d/Gloo threads, which can race at exit.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(kTrainerOk);
}

}  // namespace tern
