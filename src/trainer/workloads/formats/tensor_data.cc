#include "trainer/workloads/formats/tensor_data.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "trainer/workloads/formats/safetensors.h"
#include "trainer/workloads/formats/safetensors_header.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

constexpr const char* kExtension = ".safetensors";
constexpr size_t kNamesListed = 20;  // an error lists at most this many of a file's tensors

std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

std::string names_list(const std::vector<std::string>& names) {
  if (names.empty()) return "no tensors";
  std::string s;
  for (size_t i = 0; i < names.size() && i < kNamesListed; ++i) {
    s += (i ? ", " : "") + clip_for_message(names[i]);
  }
  if (names.size() > kNamesListed) {
    s += ", ... (" + std::to_string(names.size() - kNamesListed) + " more)";
  }
  return s;
}

// The files of a split: `path` itself, or the *.safetensors regular files in it, by name.
Result<std::vector<std::string>> split_files(const std::string& path, const std::string& field) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return not_found(field + ": " + path + " does not exist" +
                     (ec ? " (" + ec.message() + ")" : ""));
  }
  if (!fs::is_directory(st)) return std::vector<std::string>{path};
  std::vector<std::string> files;
  fs::directory_iterator it(path, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    std::error_code ec2;
    if (p.extension() == kExtension && fs::is_regular_file(it->status(ec2)))
      files.push_back(p.string());
  }
  if (ec) return not_found(field + ": cannot list directory " + path + ": " + ec.message());
  if (files.empty()) {
    return not_found(field + ": directory " + path + " holds no *" + std::string(kExtension) +
                     " files");
  }
  std::sort(files.begin(), files.end(), [](const std::string& a, const std::string& b) {
    return fs::path(a).filename().string() < fs::path(b).filename().string();
  });
  return files;
}

// The tensor `name` (data.inputs or data.targets, `which`) of one shard.
Result<at::Tensor> take(SafetensorsFile& f, const std::string& name, const std::string& which,
                        const std::string& file, const std::string& field) {
  for (auto& [n, t] : f.tensors) {
    if (n == name) {
      if (t.dim() == 0) {
        return invalid_argument(field + ": " + file + ": tensor '" + name + "' (" + which +
                                ") is a scalar; it needs a first dimension of samples");
      }
      return t;
    }
  }
  return invalid_argument(field + ": " + file + " has no tensor '" + name + "' (" + which +
                          "); it has " + names_list(f.names));
}

// `t` of `file` agrees in dtype and trailing shape with `ref` of `ref_file`; `who` says what
// must agree ("shards", "the splits").
Status same_kind(const at::Tensor& t, const std::string& file, const at::Tensor& ref,
                 const std::string& ref_file, const std::string& name, const std::string& field,
                 const std::string& who) {
  if (t.scalar_type() == ref.scalar_type() && t.sizes().slice(1) == ref.sizes().slice(1)) {
    return Status::ok();
  }
  return invalid_argument(
      field + ": tensor '" + name + "' is " + std::string(c10::toString(t.scalar_type())) + " " +
      shape_string(t.sizes()) + " in " + file + " but " +
      std::string(c10::toString(ref.scalar_type())) + " " + shape_string(ref.sizes()) + " in " +
      ref_file + " (" + who + " must agree on dtype and every dimension but the first)");
}

Result<at::Tensor> concat(std::vector<at::Tensor> parts, const std::string& what) {
  if (parts.size() == 1) return std::move(parts[0]);
  try {
    return at::cat(parts, 0);
  } catch (const std::exception& e) {  // c10::Error (allocation), std::bad_alloc
    return resource_exhausted(what + ": cannot concatenate the shards: " + e.what());
  }
}

}  // namespace

Batch TensorData::train_batch(const std::vector<int64_t>& indices) {
  auto idx = at::tensor(indices, at::kLong);
  Batch b;
  b.x = train_.inputs.index_select(0, idx);
  b.y = train_.targets.index_select(0, idx);
  return b;
}

Batch TensorData::test_batch(int64_t begin, int64_t end) {
  Batch b;
  b.x = test_.inputs.slice(0, begin, end);
  b.y = test_.targets.slice(0, begin, end);
  return b;
}

Result<TensorData::Split> load_tensor_split(const std::string& path, const std::string& field,
                                            const DataSpec& spec) {
  if (spec.inputs == spec.targets) {
    return invalid_argument("data.inputs and data.targets both name '" + spec.inputs + "'");
  }
  TERN_ASSIGN_OR_RETURN(std::vector<std::string> files, split_files(path, field));
  std::vector<at::Tensor> inputs, targets;
  for (const auto& file : files) {
    auto read = read_safetensors_file(file, {spec.inputs, spec.targets});
    if (!read.is_ok()) return read.status().with_context(field);
    TERN_ASSIGN_OR_RETURN(at::Tensor x, take(*read, spec.inputs, "data.inputs", file, field));
    TERN_ASSIGN_OR_RETURN(at::Tensor y, take(*read, spec.targets, "data.targets", file, field));
    if (x.size(0) != y.size(0)) {
      return invalid_argument(field + ": " + file + ": '" + spec.inputs + "' has " +
                              std::to_string(x.size(0)) + " rows but '" + spec.targets + "' has " +
                              std::to_string(y.size(0)) + " (one row of each per sample)");
    }
    if (!inputs.empty()) {
      TERN_RETURN_IF_ERROR(same_kind(x, file, inputs[0], files[0], spec.inputs, field, "shards"));
      TERN_RETURN_IF_ERROR(same_kind(y, file, targets[0], files[0], spec.targets, field, "shards"));
    }
    inputs.push_back(std::move(x));
    targets.push_back(std::move(y));
  }
  TensorData::Split split;
  TERN_ASSIGN_OR_RETURN(split.inputs, concat(std::move(inputs), field + ": " + path));
  TERN_ASSIGN_OR_RETURN(split.targets, concat(std::move(targets), field + ": " + path));
  if (split.inputs.size(0) == 0) {
    return invalid_argument(field + ": " + path + " holds no samples (tensor '" + spec.inputs +
                            "' has 0 rows)");
  }
  return split;
}

Result<std::unique_ptr<TrainingData>> make_tensor_data(const DataSpec& spec) {
  if (spec.test_path.empty()) {
    return invalid_argument("data.test_path is required with data.source tensors");
  }
  TERN_ASSIGN_OR_RETURN(TensorData::Split train, load_tensor_split(spec.path, "data.path", spec));
  TERN_ASSIGN_OR_RETURN(TensorData::Split test,
                        load_tensor_split(spec.test_path, "data.test_path", spec));
  // The model sees both splits: they must agree as the shards of one split do.
  const std::string train_where = "data.path " + spec.path;
  TERN_RETURN_IF_ERROR(same_kind(test.inputs, spec.test_path, train.inputs, train_where,
                                 spec.inputs, "data.test_path", "the splits"));
  TERN_RETURN_IF_ERROR(same_kind(test.targets, spec.test_path, train.targets, train_where,
                                 spec.targets, "data.test_path", "the splits"));
  return std::unique_ptr<TrainingData>(
      std::make_unique<TensorData>(std::move(train), std::move(test)));
}

}  // namespace tern
