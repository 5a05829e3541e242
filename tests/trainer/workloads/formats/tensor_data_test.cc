// data.source tensors: one file or a directory of shards per split, concatenated in file-name
// order; batches by index and by slice; every refusal names the field and the file.
#include "trainer/workloads/formats/tensor_data.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "trainer/workloads/formats/safetensors.h"
#include "trainer/workloads/formats/st_test_util.h"

namespace tern {
namespace {

using testing::fresh_dir;
using testing::write_bytes;

// Rows [first, first + n) of a data set whose sample i has inputs [i, i + 0.5, i + 0.25] and
// target i % 3.
NamedTensors rows(int64_t first, int64_t n) {
  at::Tensor i = at::arange(first, first + n, at::kFloat).unsqueeze(1);
  at::Tensor x = at::cat({i, i + 0.5, i + 0.25}, 1);
  at::Tensor y = at::arange(first, first + n, at::kLong).remainder(3);
  return {{"inputs", x}, {"targets", y}};
}

void put(const std::string& path, const NamedTensors& t) {
  Status st = write_safetensors(path, t);
  ASSERT_TRUE(st.is_ok()) << st.to_string();
}

DataSpec spec_for(const std::string& train, const std::string& test) {
  DataSpec s;
  s.source = DataSource::kTensors;
  s.path = train;
  s.test_path = test;
  return s;
}

// The error of make_tensor_data, which must name `field` and `file`.
Status error_of(const DataSpec& spec) {
  auto r = make_tensor_data(spec);
  EXPECT_FALSE(r.is_ok());
  return r.is_ok() ? Status::ok() : r.status();
}

void expect_names(const Status& st, StatusCode code, const std::vector<std::string>& phrases) {
  EXPECT_EQ(st.code(), code) << st.to_string();
  for (const auto& p : phrases) {
    EXPECT_NE(st.message().find(p), std::string::npos) << "'" << p << "' not in: " << st.message();
  }
}

TEST(TensorData, ShardsConcatenateInFileNameOrder) {
  const std::string dir = fresh_dir("shards");
  // Created out of name order, so directory order cannot pass for name order; a file that is not
  // *.safetensors and a subdirectory are ignored.
  put(dir + "/part-c.safetensors", rows(5, 4));
  put(dir + "/part-a.safetensors", rows(0, 2));
  put(dir + "/part-b.safetensors", rows(2, 3));
  write_bytes(dir + "/README.txt", "not a shard");
  std::filesystem::create_directories(dir + "/sub.safetensors");
  const std::string test = fresh_dir("shards_test") + "/test.safetensors";
  put(test, rows(100, 5));

  auto data = make_tensor_data(spec_for(dir, test));
  ASSERT_TRUE(data.is_ok()) << data.status().to_string();
  TrainingData& d = **data;
  EXPECT_EQ(d.train_size(), 9);
  EXPECT_EQ(d.test_size(), 5);
  Batch all = d.train_batch({0, 1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_TRUE(at::equal(all.x, rows(0, 9)[0].second));
  EXPECT_TRUE(at::equal(all.y, rows(0, 9)[1].second));

  Batch some = d.train_batch({7, 0, 7});  // rows by index, repeats allowed
  ASSERT_EQ(some.size(), 3);
  EXPECT_EQ(some.x[0][0].item<float>(), 7.0f);
  EXPECT_EQ(some.x[1][0].item<float>(), 0.0f);
  EXPECT_EQ(some.y[0].item<int64_t>(), 7 % 3);

  Batch t = d.test_batch(1, 4);
  ASSERT_EQ(t.size(), 3);
  EXPECT_TRUE(at::equal(t.x, rows(101, 3)[0].second));
  EXPECT_TRUE(at::equal(t.y, rows(101, 3)[1].second));
}

TEST(TensorData, CustomTensorNamesAndOtherTensorsIgnored) {
  const std::string dir = fresh_dir("names");
  NamedTensors t = {{"extra", at::ones({1000})},
                    {"img", at::rand({6, 1, 4, 4})},
                    {"lbl", at::arange(6, at::kLong)}};
  put(dir + "/train.safetensors", t);
  DataSpec s = spec_for(dir + "/train.safetensors", dir + "/train.safetensors");
  s.inputs = "img";
  s.targets = "lbl";
  auto data = make_tensor_data(s);
  ASSERT_TRUE(data.is_ok()) << data.status().to_string();
  Batch b = (*data)->train_batch({5, 2});
  EXPECT_EQ(b.x.sizes(), at::IntArrayRef({2, 1, 4, 4}));
  EXPECT_TRUE(at::equal(b.x[0], t[1].second[5]));
  EXPECT_EQ(b.y[1].item<int64_t>(), 2);
}

TEST(TensorData, RefusesMissingAndEmptyPaths) {
  const std::string dir = fresh_dir("missing");
  const std::string good = dir + "/good.safetensors";
  put(good, rows(0, 4));
  expect_names(error_of(spec_for(dir + "/nope", good)), StatusCode::kNotFound,
               {"data.path", dir + "/nope", "does not exist"});
  expect_names(error_of(spec_for(good, dir + "/nope.safetensors")), StatusCode::kNotFound,
               {"data.test_path", dir + "/nope.safetensors"});
  const std::string empty = fresh_dir("empty_dir");
  write_bytes(empty + "/notes.txt", "x");
  expect_names(error_of(spec_for(empty, good)), StatusCode::kNotFound,
               {"data.path", empty, "no *.safetensors files"});
  expect_names(error_of(spec_for(good, "")), StatusCode::kInvalidArgument, {"data.test_path"});
}

TEST(TensorData, RefusesInconsistentShardsNamingTheFiles) {
  const std::string test = fresh_dir("bad_test") + "/test.safetensors";
  put(test, rows(0, 2));
  struct Case {
    const char* what;
    std::vector<std::pair<std::string, NamedTensors>> shards;  // file name, tensors
    std::vector<std::string> says;                             // besides data.path
  };
  at::Tensor x3 = at::zeros({3, 3}), y3 = at::zeros({3}, at::kLong);
  const std::vector<Case> cases = {
      {"no inputs",
       {{"a.safetensors", {{"targets", y3}, {"foo", x3}}}},
       {"a.safetensors", "has no tensor 'inputs' (data.inputs)", "it has targets, foo"}},
      {"no targets",
       {{"a.safetensors", {{"inputs", x3}}}},
       {"a.safetensors", "has no tensor 'targets' (data.targets)", "it has inputs"}},
      {"missing in the second shard",
       {{"a.safetensors", rows(0, 2)}, {"b.safetensors", {{"inputs", x3}}}},
       {"b.safetensors", "'targets'"}},
      {"row counts differ",
       {{"a.safetensors", {{"inputs", x3}, {"targets", at::zeros({2}, at::kLong)}}}},
       {"a.safetensors", "3 rows", "has 2"}},
      {"scalar inputs",
       {{"a.safetensors", {{"inputs", at::scalar_tensor(1.0)}, {"targets", y3}}}},
       {"a.safetensors", "scalar"}},
      {"trailing shape differs",
       {{"a.safetensors", rows(0, 2)},
        {"b.safetensors", {{"inputs", at::zeros({2, 4})}, {"targets", at::zeros({2}, at::kLong)}}}},
       {"a.safetensors", "b.safetensors", "[2, 4]", "[2, 3]", "'inputs'"}},
      {"dtype differs",
       {{"a.safetensors", rows(0, 2)},
        {"b.safetensors", {{"inputs", at::zeros({2, 3})}, {"targets", at::zeros({2}, at::kInt)}}}},
       {"a.safetensors", "b.safetensors", "Int", "Long", "'targets'"}},
      {"no samples",
       {{"a.safetensors", {{"inputs", at::zeros({0, 3})}, {"targets", at::zeros({0}, at::kLong)}}}},
       {"no samples"}},
  };
  int i = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string dir = fresh_dir("bad" + std::to_string(i++));
    for (const auto& [name, tensors] : c.shards) put(dir + "/" + name, tensors);
    Status st = error_of(spec_for(dir, test));
    std::vector<std::string> says = c.says;
    says.push_back("data.path");
    says.push_back(dir);
    expect_names(st, StatusCode::kInvalidArgument, says);
  }
}

TEST(TensorData, RefusesADamagedShardNamingTheFieldAndFile) {
  const std::string dir = fresh_dir("damaged");
  put(dir + "/a.safetensors", rows(0, 2));
  write_bytes(dir + "/b.safetensors", std::string("\x02\x00\x00\x00\x00\x00\x00\x00{}", 10) + "x");
  const std::string test = dir + "/a.safetensors";
  expect_names(error_of(spec_for(dir, test)), StatusCode::kInvalidArgument,
               {"data.path: " + dir + "/b.safetensors: "});
}

TEST(TensorData, RefusesSplitsThatDisagree) {
  const std::string dir = fresh_dir("splits");
  put(dir + "/train.safetensors", rows(0, 4));
  put(dir + "/test.safetensors",
      {{"inputs", at::zeros({2, 5})}, {"targets", at::zeros({2}, at::kLong)}});
  expect_names(error_of(spec_for(dir + "/train.safetensors", dir + "/test.safetensors")),
               StatusCode::kInvalidArgument,
               {"data.test_path", dir + "/test.safetensors", dir + "/train.safetensors", "[2, 5]"});
  DataSpec same = spec_for(dir + "/train.safetensors", dir + "/train.safetensors");
  same.targets = same.inputs;
  expect_names(error_of(same), StatusCode::kInvalidArgument, {"data.inputs", "data.targets"});
}

}  // namespace
}  // namespace tern
