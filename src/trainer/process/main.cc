// tern-trainer: one rank of a training job (see src/common/trainer_protocol.h).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <csignal>
#include <iostream>
#include <thread>

#include "trainer/process/trainer_main.h"

int main(int argc, char** argv) {
  tern::TrainerArgs args;
  CLI::App app{"tern-trainer: one rank of a tern training job"};
  app.add_option("--spec", args.spec_file, "effective job spec (YAML)")->required();
  app.add_option("--rank", args.rank, "this process's rank")->required();
  app.add_option("--world", args.world, "number of ranks")->required();
  app.add_option("--master", args.master, "HOST:PORT of the rendezvous store (hosted by rank 0)")->required();
  app.add_option("--generation", args.generation, "process-group generation");
  app.add_option("--job", args.job_id, "job id for events and logs");
  app.add_option("--work-dir", args.work_dir, "directory for checkpoints and scratch files");
  app.add_option("--cluster", args.cluster_file, "cluster config (regions, network model)");
  app.add_option("--regions", args.regions, "region of each rank, comma separated")->delimiter(',');
  app.add_option("--bind", args.bind_host, "address Gloo binds to");
  app.add_option("--members", args.members,
                 "elastic jobs: the ranks of the current group, comma separated (default: all)")
      ->delimiter(',');
  app.add_flag("--standby", args.standby,
               "elastic jobs: load data and model, report ready, join at the regroup that names this rank");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : tern::kTrainerBadArgs;
  }
  return tern::trainer_main(args);
}
