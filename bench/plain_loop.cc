// The baseline for bench/overhead.sh: the same model, data, batch order and optimizer as
// `tern run --workers 1`, written as a plain LibTorch loop with torch::optim::SGD and no tern
// machinery (no communicator, no strategy, no events). Prints one JSON line.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/job_spec.h"
#include "common/lr_schedule.h"
#include "trainer/loop/sampler.h"
#include "trainer/workloads/image/dataset.h"
#include "trainer/workloads/image/models.h"

int main(int argc, char** argv) {
  std::string spec_file;
  std::vector<std::string> sets;
  CLI::App app{"plain LibTorch training loop (benchmark baseline)"};
  app.add_option("spec", spec_file)->required();
  app.add_option("--set", sets);
  CLI11_PARSE(app, argc, argv);
  auto loaded = tern::load_job_spec_file(spec_file, sets);
  if (!loaded.is_ok()) {
    std::cerr << loaded.status().message() << "\n";
    return 2;
  }
  const tern::JobSpec& spec = loaded->spec;
  torch::set_num_threads(static_cast<int>(spec.train.threads));
  auto data = tern::load_image_data(spec.data);
  if (!data.is_ok()) {
    std::cerr << data.status().message() << "\n";
    return 3;
  }
  torch::manual_seed(static_cast<uint64_t>(spec.train.seed));
  auto model = tern::make_image_model(spec.model).value();
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(spec.train.lr)
                                                 .momentum(spec.train.momentum)
                                                 .nesterov(spec.train.nesterov)
                                                 .weight_decay(spec.train.weight_decay));
  tern::ShardedSampler sampler(data->train.size(), 1, 0, static_cast<uint64_t>(spec.train.seed));
  int64_t bs = spec.train.batch_size;
  int64_t steps_per_epoch = (sampler.per_rank() + bs - 1) / bs;
  int64_t total = spec.train.steps > 0 ? spec.train.steps : spec.train.epochs * steps_per_epoch;
  std::vector<int64_t> idx;
  int64_t samples = 0;
  double last_loss = 0;
  auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < total; ++step) {
    int64_t epoch = step / steps_per_epoch, pos = step % steps_per_epoch;
    if (pos == 0 || idx.empty()) idx = sampler.epoch_indices(epoch);
    int64_t b = pos * bs, e = std::min<int64_t>(b + bs, static_cast<int64_t>(idx.size()));
    auto ix = at::tensor(std::vector<int64_t>(idx.begin() + b, idx.begin() + e), at::kLong);
    tern::Batch batch{
        data->train.images.index_select(0, ix), {}, data->train.labels.index_select(0, ix)};
    for (auto& group : opt.param_groups()) {
      static_cast<torch::optim::SGDOptions&>(group.options())
          .lr(tern::scheduled_lr(spec.train, step, total));
    }
    opt.zero_grad();
    auto loss = model->loss(model->forward(batch), batch);
    loss.backward();
    opt.step();
    last_loss = loss.item<double>();
    samples += batch.size();
  }
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << nlohmann::json{{"steps", total},
                              {"samples", samples},
                              {"wall_s", wall},
                              {"samples_per_s", samples / wall},
                              {"final_loss", last_loss}}
                   .dump()
            << std::endl;
  return 0;
}
