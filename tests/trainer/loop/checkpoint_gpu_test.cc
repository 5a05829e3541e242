// Checkpoints and resume with the model on a GPU (ctest label `gpu`; exit code 77 = skipped
// without CUDA): snapshots copy CUDA tensors to host memory, the manifest gather runs on the
// trainer's device, and a resumed run puts parameters, momentum and DGC state back on the GPU
// and ends where the uninterrupted run ends.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "common/job_spec.h"
#include "testing/gloo_group.h"
#include "trainer/loop/training_loop.h"
#include "trainer/process/device.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

JobSpec spec_with(std::vector<std::string> overrides) {
  auto r = load_job_spec_text(
      "name: ckpt-gpu\nworkers: 2\ndevice: cuda\nmodel: {type: mlp}\n"
      "data: {source: synthetic, train_size: 384, test_size: 64}\n"
      "train: {steps: 20, batch_size: 16, lr: 0.05, momentum: 0.9, seed: 5}\n",
      "ckpt-gpu.yaml", overrides);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

std::vector<std::vector<at::Tensor>> run_job(const JobSpec& spec, int64_t* resumed_from = nullptr) {
  std::vector<std::vector<at::Tensor>> out(2);
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = 2;
    o.device = resolve_device(DeviceKind::kCuda, 0).value();
    MemorySink sink;
    TrainingLoop t(o, comm, &sink, make_workload(o.spec));
    Status s = t.setup();
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    s = t.run();
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    for (auto& p : t.parameters()) {
      EXPECT_TRUE(p.is_cuda());
      out[static_cast<size_t>(rank)].push_back(p.detach().cpu());
    }
    if (resumed_from && rank == 0)
      *resumed_from = t.summary().value("resumed_from_step", int64_t{-1});
  });
  return out;
}

void resume_matches(const std::string& name, const std::vector<std::string>& extra) {
  fs::path dir = fs::temp_directory_path() / ("tern_ckpt_gpu_" + std::to_string(getpid())) / name;
  fs::remove_all(dir);
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.end(), extra.begin(), extra.end());
    return spec_with(more);
  };
  auto uninterrupted = run_job(with({}));
  run_job(with({"train.steps=12", "recovery.checkpoint_every=5", "recovery.dir=" + dir.string()}));
  int64_t from = -1;
  auto resumed = run_job(with({"recovery.resume_from=" + dir.string()}), &from);
  EXPECT_EQ(from, 10);
  for (size_t r = 0; r < 2; ++r) {
    ASSERT_EQ(resumed[r].size(), uninterrupted[r].size());
    for (size_t i = 0; i < resumed[r].size(); ++i) {
      double diff = (resumed[r][i] - uninterrupted[r][i]).abs().max().item<double>();
      EXPECT_LE(diff, 1e-6) << "rank " << r << " parameter " << i;
      if (diff > 0)
        std::cout << name << ": rank " << r << " parameter " << i << " differs by " << diff << "\n";
    }
  }
  fs::remove_all(dir.parent_path());
}

TEST(CheckpointGpu, ResumedSsgdRunOnCudaEqualsUninterrupted) { resume_matches("ssgd", {}); }

TEST(CheckpointGpu, ResumedDgcRunOnCudaEqualsUninterrupted) {
  resume_matches("dgc", {"compress.method=dgc", "compress.density=0.01", "compress.min_numel=256",
                         "compress.warmup_steps=4"});
}

}  // namespace
}  // namespace tern

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::cout << "no CUDA device or CPU-only LibTorch: gpu tests skipped\n";
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
