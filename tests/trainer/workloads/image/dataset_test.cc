#include "trainer/workloads/image/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>

namespace tern {
namespace {

std::string temp_dir() {
  auto d = std::filesystem::temp_directory_path() / ("tern_ds_" + std::to_string(getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

void put_be32(std::string* s, uint32_t v) {
  for (int k = 3; k >= 0; --k) s->push_back(static_cast<char>((v >> (8 * k)) & 0xff));
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

// n images whose pixels all equal the image index, labels i % 10.
void write_idx(const std::string& dir, int n, bool truncate = false, uint32_t magic = 2051) {
  std::string img, lab;
  put_be32(&img, magic);
  put_be32(&img, n);
  put_be32(&img, 28);
  put_be32(&img, 28);
  for (int i = 0; i < n; ++i) img.append(784, static_cast<char>(i));
  if (truncate) img.resize(img.size() - 100);
  put_be32(&lab, 2049);
  put_be32(&lab, n);
  for (int i = 0; i < n; ++i) lab.push_back(static_cast<char>(i % 10));
  write_gz(dir + "/img.gz", img);
  write_gz(dir + "/lab.gz", lab);
}

TEST(Dataset, ReadsIdxGzip) {
  std::string d = temp_dir();
  write_idx(d, 12);
  auto r = load_idx_pair(d + "/img.gz", d + "/lab.gz", false);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->size(), 12);
  EXPECT_EQ(r->images.sizes(), (std::vector<int64_t>{12, 1, 28, 28}));
  EXPECT_FLOAT_EQ(r->images[5][0][3][3].item<float>(), 5.f / 255.f);
  EXPECT_EQ(r->labels[11].item<int64_t>(), 1);
}

TEST(Dataset, NormalizesWithFashionMnistStatistics) {
  std::string d = temp_dir();
  write_idx(d, 3);
  auto r = load_idx_pair(d + "/img.gz", d + "/lab.gz", true);
  ASSERT_TRUE(r.is_ok());
  EXPECT_NEAR(r->images[0][0][0][0].item<float>(), (0 - 0.2860) / 0.3530, 1e-5);
}

TEST(Dataset, TruncatedFileIsDataLoss) {
  std::string d = temp_dir();
  write_idx(d, 4, /*truncate=*/true);
  auto r = load_idx_pair(d + "/img.gz", d + "/lab.gz", false);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos);
}

TEST(Dataset, BadMagicIsDataLoss) {
  std::string d = temp_dir();
  write_idx(d, 4, false, 1234);
  auto r = load_idx_pair(d + "/img.gz", d + "/lab.gz", false);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("magic"), std::string::npos);
}

TEST(Dataset, MissingFileNamesThePath) {
  DataSpec spec;
  spec.path = "/nonexistent-dir";
  auto r = load_image_data(spec);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent-dir/train-images-idx3-ubyte.gz"),
            std::string::npos);
}

TEST(Dataset, SyntheticIsReproducibleAndBalanced) {
  auto a = make_synthetic_images(500, 1, 2, true), b = make_synthetic_images(500, 1, 2, true);
  EXPECT_TRUE(at::equal(a.images, b.images));
  EXPECT_TRUE(at::equal(a.labels, b.labels));
  auto counts = at::bincount(a.labels);
  EXPECT_EQ(counts.size(0), 10);
  EXPECT_GT(counts.min().item<int64_t>(), 20);
}

TEST(Dataset, RealFashionMnistWhenInstalled) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  auto r = load_image_data(DataSpec{});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->train.size(), 60000);
  EXPECT_EQ(r->test.size(), 10000);
  // Mean/std of the normalised training set are ~0/~1 (docs/algorithms.md §1: 0.2860, 0.3530).
  EXPECT_NEAR(r->train.images.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(r->train.images.std().item<double>(), 1.0, 0.01);
}

}  // namespace
}  // namespace tern
