// TrainingData: the trainer's view of a dataset — batches by sample index for training and
// contiguous ranges for evaluation. Image data now; the CTR/DLRM data plugs in the same way.
#pragma once

#include <memory>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/dataset.h"
#include "trainer/models.h"

namespace tern {

class TrainingData {
 public:
  virtual ~TrainingData() = default;
  virtual int64_t train_size() const = 0;
  virtual int64_t test_size() const = 0;
  virtual Batch train_batch(const std::vector<int64_t>& indices) = 0;
  virtual Batch test_batch(int64_t begin, int64_t end) = 0;
};

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
