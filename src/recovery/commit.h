// Agreeing on a step's MANIFEST across ranks: each rank wrote its own files (async_writer.h);
// one collective tells every rank what every other wrote, so the committing rank can write
// the manifest and every rank knows whether the step is complete.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "comm/communicator.h"
#include "common/status.h"
#include "recovery/async_writer.h"
#include "recovery/checkpoint_store.h"

namespace tern {

// Collective (one all-gather of 8 int64 per rank): every rank calls it at the same step with
// what it wrote for `step` (nullopt, or a different step, when its write failed; it must
// still call). Returns the same manifest on every rank: replicated.ckpt from whichever rank
// wrote it plus rank-K.ckpt of every rank. ABORTED (naming the ranks) on every rank when a
// rank did not write the step or the replicated file is missing or written twice;
// the communicator's error when the collective fails. `device` is where the collective's
// tensors live (the trainer's device: NCCL communicators take CUDA tensors only).
Result<Manifest> gather_manifest(Communicator& comm, const std::optional<WrittenStep>& mine,
                                 int64_t step, int64_t generation, const std::string& job_id,
                                 const at::Device& device = at::kCPU);

}  // namespace tern
