// Reading and writing safetensors files (https://github.com/huggingface/safetensors) as LibTorch
// CPU tensors: the format `data.source: tensors` trains on and that users export from PyTorch
// with `safetensors.torch.save_file`. The layout checks are in safetensors_header.h; every
// error is INVALID_ARGUMENT naming the file (NOT_FOUND when it does not exist), and nothing a
// file holds can crash the reader. Stateless functions, safe from any thread.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "recovery/checkpoint.h"  // NamedTensors

namespace tern {

// Every tensor of `path`, in the order of their data in the file, as contiguous CPU tensors
// that own their memory (copies, not mappings of the file).
Result<NamedTensors> read_safetensors(const std::string& path);

// The same with the file's __metadata__ (empty when it has none) and the names of all its
// tensors; with `only` non-empty, just the tensors named there are read (the whole header is
// still validated), in file order, and names in `only` that the file lacks are skipped.
struct SafetensorsFile {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> names;  // every tensor in the file, in file order
};
Result<SafetensorsFile> read_safetensors_file(const std::string& path,
                                              const std::vector<std::string>& only = {});

// Writes `tensors` (any device, any strides: copied to contiguous CPU memory) in the given
// order, with `metadata` as __metadata__. Atomic: a temp file in the same directory renamed
// over `path`, so a reader sees the old file or the new one. Refuses (INVALID_ARGUMENT) an
// undefined tensor, a dtype safetensors_header.h does not list, an empty, duplicate or
// non-UTF-8 name, and the name "__metadata__".
Status write_safetensors(const std::string& path, const NamedTensors& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace tern
