// Which device a rank trains on: job spec `device: cpu | cuda | auto`. On CUDA, each rank uses
// one GPU: device 0 when the daemon restricted CUDA_VISIBLE_DEVICES to the rank's GPU, else
// rank % device_count.
#pragma once

#include <torch/torch.h>

#include <string>

#include "common/spec_enums.h"
#include "common/status.h"

namespace tern {

Result<torch::Device> resolve_device(DeviceKind requested, int rank);

// The c10d backend for a device: nccl on CUDA, gloo on CPU.
inline std::string backend_for(const torch::Device& d) { return d.is_cuda() ? "nccl" : "gloo"; }

}  // namespace tern
