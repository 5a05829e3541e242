#include "trainer/workloads/image/training_data.h"

namespace tern {

Batch ImageTrainingData::train_batch(const std::vector<int64_t>& indices) {
  auto idx = at::tensor(indices, at::kLong);
  Batch b;
  b.x = data_.train.images.index_select(0, idx);
  b.y = data_.train.labels.index_select(0, idx);
  return b;
}

Batch ImageTrainingData::test_batch(int64_t begin, int64_t end) {
  Batch b;
  b.x = data_.test.images.slice(0, begin, end);
  b.y = data_.test.labels.slice(0, begin, end);
  return b;
}

Result<std::unique_ptr<TrainingData>> make_training_data(const JobSpec& spec) {
  if (spec.data.source == DataSource::kFashionMnist || spec.data.source == DataSource::kSynthetic) {
    TERN_ASSIGN_OR_RETURN(ImageData d, load_image_data(spec.data));
    return std::unique_ptr<TrainingData>(std::make_unique<ImageTrainingData>(std::move(d)));
  }
  return failed_precondition("data.source '" + name_of(spec.data.source) +
                             "' is not supported by this build");
}

}  // namespace tern
