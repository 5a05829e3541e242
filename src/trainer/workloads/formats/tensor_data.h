// `data.source: tensors`: a data set the user exported as safetensors. data.path (training) and
// data.test_path (evaluation) each name ONE .safetensors file or a DIRECTORY of shards (every
// regular *.safetensors file in it, in file-name order, concatenated along dim 0). Every file
// holds a tensor named data.inputs and one named data.targets with the same first dimension
// (the samples); other tensors are ignored. The shards of both splits must agree on each
// tensor's dtype and trailing shape.
//
// Batch.x holds input rows, Batch.y target rows, both as stored (any dtype the safetensors
// reader supports: the model and loss decide what they accept). Everything is loaded into
// memory at construction; the object is then read-only, used by the loop thread only.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/workloads/data.h"

namespace tern {

class TensorData : public TrainingData {
 public:
  // A split: inputs and targets with the same number of rows.
  struct Split {
    at::Tensor inputs;
    at::Tensor targets;
  };
  TensorData(Split train, Split test) : train_(std::move(train)), test_(std::move(test)) {}

  int64_t train_size() const override { return train_.inputs.size(0); }
  int64_t test_size() const override { return test_.inputs.size(0); }
  // Rows `indices` (each in [0, train_size())) of the training split.
  Batch train_batch(const std::vector<int64_t>& indices) override;
  // Rows [begin, end) of the test split (views, no copy).
  Batch test_batch(int64_t begin, int64_t end) override;

 private:
  Split train_;
  Split test_;
};

// Loads data.path and data.test_path. Errors name the field and the file: NOT_FOUND for a
// missing file or directory or a directory without *.safetensors files; INVALID_ARGUMENT for
// a damaged file (safetensors.h), a shard without data.inputs or data.targets (listing the
// tensors it has), inputs and targets of different lengths, a 0-dimensional tensor, shards or
// splits that disagree on dtype or trailing shape, or an empty split.
Result<std::unique_ptr<TrainingData>> make_tensor_data(const DataSpec& spec);

// One split alone (`field` names it in errors: "data.path", "data.test_path").
Result<TensorData::Split> load_tensor_split(const std::string& path, const std::string& field,
                                            const DataSpec& spec);

}  // namespace tern
