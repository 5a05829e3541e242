// Datasets held in memory as tensors: Fashion-MNIST from IDX gzip files (Debian's
// dataset-fashion-mnist), and a synthetic image set with a planted class structure for
// tests. Loading validates magic numbers and sizes; a truncated or corrupt file is an error.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common/job_spec.h"
#include "common/status.h"

namespace tern {

struct ImageDataset {
  at::Tensor images;  // float32 [N, 1, 28, 28], normalised as the spec says
  at::Tensor labels;  // int64 [N]
  int64_t size() const { return labels.size(0); }
};

struct ImageData {
  ImageDataset train;
  ImageDataset test;
};

constexpr double kFashionMnistMean = 0.2860;
constexpr double kFashionMnistStd = 0.3530;

// Reads one IDX gzip image file and its label file.
Result<ImageDataset> load_idx_pair(const std::string& images_path, const std::string& labels_path,
                                   bool normalize);
// Train + test sets for data.source fashion_mnist or synthetic.
Result<ImageData> load_image_data(const DataSpec& spec);
// `n` images of 10 classes: per-class prototypes (from class_seed, shared by train and test)
// plus noise (from sample_seed). Reproducible.
ImageDataset make_synthetic_images(int64_t n, uint64_t class_seed, uint64_t sample_seed,
                                   bool normalize);

}  // namespace tern
