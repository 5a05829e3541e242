// CPR row policies for embedding tables (docs/algorithms.md §5): which rows a partial checkpoint
// saves, and saving/restoring a chosen set of rows.
//
//  - CPR-MFU: count lookups per row (EmbeddingAccessTracker::record, one index_add per
//    batch) and save the k most-frequently-used rows; under Zipf a small hot set covers most
//    accesses.
//  - CPR-SSU: remember which rows were updated since the last checkpoint (a bool mask) and
//    save a uniform random sample of them.
//
// A partial row checkpoint is two named tensors in the rank's file: "<prefix>/rows" (int64
// row indices, sorted) and "<prefix>/values" (those rows of the table, [k, dim]). Restoring
// writes them back into the table; rows not saved keep whatever the table holds (the trainer
// restores an older full save of the table first, then the row saves in step order).
//
// The tracker is for the trainer-loop thread only. Counters live on the CPU.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <random>
#include <string>

#include "common/status.h"
#include "recovery/checkpoint.h"

namespace tern {

class EmbeddingAccessTracker {
 public:
  explicit EmbeddingAccessTracker(int64_t rows);
  // Counts one lookup per entry of `indices` (any shape, integer, any device). OUT_OF_RANGE
  // when an index is outside [0, rows); nothing is counted then.
  Status record(const at::Tensor& indices);
  int64_t rows() const { return counts_.size(0); }
  // Lookups per row since construction (or reset_counts()), int64 [rows].
  const at::Tensor& counts() const { return counts_; }
  // Rows looked up (hence updated) since the last clear_updated(), int64, ascending.
  at::Tensor updated_rows() const;
  void clear_updated();
  void reset_counts();

 private:
  at::Tensor counts_;   // int64 [rows]
  at::Tensor touched_;  // bool [rows]
};

// Indices of the k largest counts (ties to the lower index), ascending; all rows when k >=
// rows, none when k <= 0.
at::Tensor select_rows_mfu(const at::Tensor& counts, int64_t k);
// A uniform random subset of `updated_rows` of size round(fraction × n), ascending.
// Deterministic for a given rng state (seed it from the job spec).
at::Tensor select_rows_ssu(const at::Tensor& updated_rows, double fraction, std::mt19937_64& rng);

// Appends "<prefix>/rows" and "<prefix>/values" (copies) for rows `rows` of `table`
// ([rows, dim]). INVALID_ARGUMENT for a bad table or a row out of range.
Status append_rows(const std::string& prefix, const at::Tensor& table, const at::Tensor& rows,
                   NamedTensors* out);
// Writes `values` ([k, dim]) into rows `rows` (int64 [k]) of `table`, in place.
// INVALID_ARGUMENT (nothing written) for mismatched shapes/dtypes or a row out of range.
Status restore_rows(at::Tensor& table, const at::Tensor& rows, const at::Tensor& values);
// restore_rows from the "<prefix>/rows" and "<prefix>/values" of a loaded checkpoint;
// NOT_FOUND when the checkpoint does not have them.
Status restore_rows_from(const Checkpoint& checkpoint, const std::string& prefix,
                         at::Tensor& table);

}  // namespace tern
