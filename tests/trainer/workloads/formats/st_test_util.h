// Helpers for the safetensors and tensor-data tests: temp paths and hand-made file images.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace tern::testing {

// A fresh directory under the test temp dir, unique per process and name.
inline std::string fresh_dir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/st_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// `n` as 8 little-endian bytes.
inline std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file image: the length of `header`, `header`, then `data`.
inline std::string image(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

}  // namespace tern::testing
