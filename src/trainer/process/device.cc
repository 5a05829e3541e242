#include "trainer/process/device.h"

#include <cstdlib>

namespace tern {

Result<torch::Device> resolve_device(DeviceKind requested, int rank) {
  bool have_cuda = torch::cuda::is_available();
  if (requested == DeviceKind::kCpu || (requested == DeviceKind::kAuto && !have_cuda))
    return torch::Device(torch::kCPU);
  if (!have_cuda) {
    return failed_precondition(
        "device: cuda, but this tern-trainer sees no CUDA device (a CPU LibTorch build, or no GPU "
        "on this "
        "node); use device: auto or cpu, or build with scripts/build-gpu.sh on a GPU node");
  }
  int count = static_cast<int>(torch::cuda::device_count());
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  int index = (visible && *visible && count == 1) ? 0 : rank % count;
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace tern
