// Helpers the training-loop tests share: a fresh scratch directory per test, and bit-for-bit
// tensor equality (resume and replica tests compare parameters exactly).
#pragma once

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

namespace tern::testing {

// <tmp>/<prefix>_<pid>/<name>, emptied and created.
inline std::filesystem::path scratch_dir(const std::string& prefix, const std::string& name) {
  auto d =
      std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(getpid())) / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

inline bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

}  // namespace tern::testing
