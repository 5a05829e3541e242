// Non-finite losses and gradients (train.on_nonfinite), shared by the image trainer and DLRM.
//
// A NaN or infinity in one rank's gradient poisons every all-reduce it enters, and a rank
// that decides alone to skip a step leaves its replica different from the others. So the
// decision is a group's: agree_nonfinite() all-reduces one flag per rank, and every rank gets
// the same list of ranks whose step was not finite. Thread-compatible; collective.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "common/status.h"

namespace tern {

// True when every element of every defined tensor is finite.
bool all_finite(const std::vector<at::Tensor>& tensors);

// True when `loss` is finite and every gradient is.
inline bool step_is_finite(double loss, const std::vector<at::Tensor>& grads) {
  return std::isfinite(loss) && all_finite(grads);
}

// Every rank passes whether its own step was finite; returns the ranks whose step was not
// (the same, ascending, on every rank). One all-reduce of `world` floats over `comm`.
Result<std::vector<int>> agree_nonfinite(Communicator& comm, bool mine_finite);

// "1, 3" for {1, 3}.
std::string rank_list(const std::vector<int>& ranks);

// The text of a loss for messages: "nan", "inf", "-inf" or the number.
std::string loss_text(double loss);

}  // namespace tern
