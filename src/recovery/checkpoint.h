// Checkpoint files of named at::Tensors (over checkpoint_format.h) and loading the newest
// good checkpoint of a store, with fallback past damaged ones.
//
// Tensors are written as raw contiguous CPU bytes + dtype + shape by our own encoder, never
// torch::save, so the reader is small, fuzzable and allocates only what the validated file
// describes. Loaded tensors are fresh, contiguous CPU tensors the caller owns (copy them to
// a device with .to()). Free functions; thread-safe.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "recovery/checkpoint_format.h"
#include "recovery/checkpoint_store.h"

namespace tern {

// The same shape as GradientReducer::state() and Compressor::load_state().
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct Checkpoint {
  CheckpointMeta meta;
  NamedTensors tensors;  // file order
  // The tensor called `name`, or nullptr.
  const at::Tensor* find(const std::string& name) const;
};

// at::ScalarType <-> on-disk dtype. INVALID_ARGUMENT for types the format does not carry
// (complex, quantized).
Result<DType> dtype_from_scalar_type(at::ScalarType type);
at::ScalarType scalar_type_from_dtype(DType dtype);

// Atomically writes `tensors` (each defined, on the CPU and contiguous, else
// INVALID_ARGUMENT naming it) with `meta` to `path`. Returns the size and digest for the
// manifest.
Result<EncodeResult> write_checkpoint_file(const std::string& path, const CheckpointMeta& meta,
                                           const NamedTensors& tensors);
// Reads and fully validates `path` (parse_checkpoint) and copies the tensors out.
Result<Checkpoint> read_checkpoint_file(const std::string& path);
Result<Checkpoint> decode_checkpoint(std::string_view bytes, const std::string& name);

// Which parts of a step to load.
struct LoadOptions {
  bool replicated = true;      // replicated.ckpt
  bool all_ranks = false;      // every rank-K.ckpt (full recovery / resume)
  std::vector<int64_t> ranks;  // or these ranks only (partial recovery of lost ranks)
  int64_t max_step = std::numeric_limits<int64_t>::max();  // newest step to consider
};

struct LoadedCheckpoint {
  int64_t step = -1;
  Manifest manifest;
  std::optional<Checkpoint> replicated;
  std::map<int64_t, Checkpoint> ranks;
  // Newer steps passed over, one message each naming the file and what is wrong (also
  // logged as warnings).
  std::vector<std::string> skipped;
};

// Newest step <= max_step whose manifest is complete and whose requested files all pass
// full validation (every checksum). A damaged newer step is skipped with a warning and the
// next older one tried; nothing that fails a check is ever returned. NOT_FOUND (listing what
// was skipped) when no step qualifies.
Result<LoadedCheckpoint> load_latest_checkpoint(const CheckpointStore& store,
                                                const LoadOptions& options);
// One given step, no fallback.
Result<LoadedCheckpoint> load_checkpoint_step(const CheckpointStore& store, int64_t step,
                                              const LoadOptions& options);

}  // namespace tern
