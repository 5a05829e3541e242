#include "trainer/workloads/image/dataset.h"

#include <zlib.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

namespace tern {
namespace {

uint32_t read_be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// Reads a whole gzip file (plain files pass through zlib unchanged).
Result<std::vector<unsigned char>> read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f)
    return not_found(path + ": cannot open (is dataset-fashion-mnist installed? set data.path)");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> closer(f, gzclose);
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  while (true) {
    int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      return data_loss(path + ": corrupt gzip: " + (msg ? msg : "unknown error"));
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

}  // namespace

Result<ImageDataset> load_idx_pair(const std::string& images_path, const std::string& labels_path,
                                   bool normalize) {
  TERN_ASSIGN_OR_RETURN(auto img, read_gzip(images_path));
  TERN_ASSIGN_OR_RETURN(auto lab, read_gzip(labels_path));
  if (img.size() < 16 || read_be32(img.data()) != 2051) {
    return data_loss(images_path + ": not an IDX image file (bad magic number)");
  }
  if (lab.size() < 8 || read_be32(lab.data()) != 2049) {
    return data_loss(labels_path + ": not an IDX label file (bad magic number)");
  }
  int64_t n = read_be32(img.data() + 4), rows = read_be32(img.data() + 8),
          cols = read_be32(img.data() + 12);
  int64_t nl = read_be32(lab.data() + 4);
  if (n != nl) {
    return data_loss(images_path + " has " + std::to_string(n) + " images but " + labels_path +
                     " has " + std::to_string(nl) + " labels");
  }
  if (rows != 28 || cols != 28) return data_loss(images_path + ": expected 28x28 images");
  if (static_cast<int64_t>(img.size()) != 16 + n * rows * cols) {
    return data_loss(images_path + ": truncated (" + std::to_string(img.size()) +
                     " bytes, expected " + std::to_string(16 + n * rows * cols) + ")");
  }
  if (static_cast<int64_t>(lab.size()) != 8 + n) return data_loss(labels_path + ": truncated");
  ImageDataset ds;
  ds.images =
      at::from_blob(img.data() + 16, {n, 1, rows, cols}, at::kByte).to(at::kFloat).div_(255.0);
  if (normalize) ds.images.sub_(kFashionMnistMean).div_(kFashionMnistStd);
  ds.labels = at::from_blob(lab.data() + 8, {n}, at::kByte).to(at::kLong);
  if (ds.labels.max().item<int64_t>() > 9)
    return data_loss(labels_path + ": label out of range 0..9");
  return ds;
}

ImageDataset make_synthetic_images(int64_t n, uint64_t class_seed, uint64_t sample_seed,
                                   bool normalize) {
  // A shared base image plus a sparse class-specific pattern, under strong pixel noise: hard
  // enough that accuracy lands well below 100 % and differences between algorithms show.
  std::mt19937_64 crng(class_seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> base(784), protos(10 * 784);
  for (auto& v : base) v = u(crng);
  for (int c = 0; c < 10; ++c) {
    for (int k = 0; k < 784; ++k) {
      float dev = u(crng) < 0.1f ? 0.4f * g(crng) : 0.f;
      protos[static_cast<size_t>(c * 784 + k)] = base[static_cast<size_t>(k)] + dev;
    }
  }
  std::mt19937_64 rng(sample_seed);
  std::normal_distribution<float> noise(0.f, 1.0f);
  std::vector<float> pix(static_cast<size_t>(n) * 784);
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = static_cast<int64_t>(rng() % 10);
    labels[static_cast<size_t>(i)] = c;
    for (int k = 0; k < 784; ++k) {
      pix[static_cast<size_t>(i * 784 + k)] = protos[static_cast<size_t>(c * 784 + k)] + noise(rng);
    }
  }
  ImageDataset ds;
  ds.images = at::from_blob(pix.data(), {n, 1, 28, 28}, at::kFloat).clone();
  if (normalize) ds.images.sub_(kFashionMnistMean).div_(kFashionMnistStd);
  ds.labels = at::from_blob(labels.data(), {n}, at::kLong).clone();
  return ds;
}

Result<ImageData> load_image_data(const DataSpec& spec) {
  ImageData d;
  if (spec.source == DataSource::kSynthetic) {
    uint64_t s = static_cast<uint64_t>(spec.seed);
    d.train = make_synthetic_images(spec.train_size, s, s + 1, spec.normalize);
    d.test = make_synthetic_images(spec.test_size, s, s + 2, spec.normalize);
    return d;
  }
  if (spec.source == DataSource::kFashionMnist) {
    TERN_ASSIGN_OR_RETURN(d.train,
                          load_idx_pair(spec.path + "/train-images-idx3-ubyte.gz",
                                        spec.path + "/train-labels-idx1-ubyte.gz", spec.normalize));
    TERN_ASSIGN_OR_RETURN(d.test,
                          load_idx_pair(spec.path + "/t10k-images-idx3-ubyte.gz",
                                        spec.path + "/t10k-labels-idx1-ubyte.gz", spec.normalize));
    return d;
  }
  return invalid_argument("data.source '" + name_of(spec.source) + "' is not an image dataset");
}

}  // namespace tern
