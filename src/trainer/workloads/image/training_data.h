// The image data sets (Fashion-MNIST, synthetic images) as TrainingData (workloads/data.h):
// batches by sample index for training and contiguous ranges for evaluation.
#pragma once

#include <memory>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/workloads/data.h"
#include "trainer/workloads/image/dataset.h"

namespace tern {

class ImageTrainingData : public TrainingData {
 public:
  explicit ImageTrainingData(ImageData data) : data_(std::move(data)) {}
  int64_t train_size() const override { return data_.train.size(); }
  int64_t test_size() const override { return data_.test.size(); }
  Batch train_batch(const std::vector<int64_t>& indices) override;
  Batch test_batch(int64_t begin, int64_t end) override;

 private:
  ImageData data_;
};

// Loads what data.source names.
Result<std::unique_ptr<TrainingData>> make_training_data(const JobSpec& spec);

}  // namespace tern
