// The safetensors layout without Torch: the 8-byte header length, the JSON header and the
// checks that make a file's layout trustworthy before any tensor byte is read. safetensors.h
// builds on it to read and write LibTorch tensors; the fuzzer (tests/fuzz/safetensors_fuzz.cc)
// drives it directly, so it must stay free of Torch and gRPC.
//
// The format (https://github.com/huggingface/safetensors):
//   [8 bytes: N, little-endian u64][N bytes: UTF-8 JSON header][data area]
// The header is an object: each key a tensor name, its value {"dtype": "F32", "shape": [2, 3],
// "data_offsets": [begin, end]} with offsets relative to the start of the data area, plus an
// optional "__metadata__" object of string -> string. Data is little-endian, row-major.
//
// What this parser accepts (everything else is an INVALID_ARGUMENT naming the file): a header
// of at most kMaxSafetensorsHeaderBytes that starts with '{' and is one JSON object (trailing
// spaces are the format's alignment padding); no key appears twice in any object; every tensor
// entry has exactly the three fields with the right JSON types; a supported dtype; a shape of
// non-negative integers whose element count and byte size fit in int64; data_offsets that
// equal the shape's byte size and, taken in offset order, cover the data area exactly (no
// overlap, no hole, nothing after the last tensor).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tern {

// A header larger than this is refused before it is read (the reference implementation's cap).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// The dtypes tern reads and writes (those LibTorch 1.13 has). The format's other dtypes (U16,
// U32, U64, the F8/F6/F4 variants, C64, ...) are named as unsupported.
enum class SafetensorsDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

const char* safetensors_dtype_name(SafetensorsDtype dtype);  // "F32"
uint64_t safetensors_dtype_size(SafetensorsDtype dtype);     // bytes per element

// One tensor of a header. begin/end are offsets into the data area.
struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
  bool operator==(const SafetensorsEntry& o) const {
    return name == o.name && dtype == o.dtype && shape == o.shape && begin == o.begin &&
           end == o.end;
  }
};

struct SafetensorsLayout {
  std::vector<SafetensorsEntry> tensors;  // in data order (by begin offset), header order on ties
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data area: 8 + header length
};

// The header length from the first 8 bytes of a file of `file_size` bytes: errors when the file
// is shorter than 8 bytes, or the length exceeds the file or kMaxSafetensorsHeaderBytes.
Result<uint64_t> parse_safetensors_length(std::string_view first_bytes, uint64_t file_size,
                                          const std::string& file);

// Parses and validates the JSON header of a file whose data area holds `data_size` bytes.
// Errors start with "<file>: ".
Result<SafetensorsLayout> parse_safetensors_header(std::string_view header, uint64_t data_size,
                                                   const std::string& file);

// A whole file image in memory: length, header, and the contents the layout cannot vouch for
// (BOOL tensors must hold only bytes 0 and 1). What the fuzzer runs.
Result<SafetensorsLayout> parse_safetensors_image(std::string_view bytes, const std::string& file);

// Checks that the bytes of a BOOL tensor are all 0 or 1 (anything else is undefined behaviour
// for a bool in C++ and LibTorch).
Status check_safetensors_bool(const SafetensorsEntry& entry, const uint8_t* data, uint64_t size,
                              const std::string& file);

// Text from a file (a tensor name, a JSON value) for an error message: at most `limit` bytes,
// cut at a character boundary, and valid UTF-8, since errors travel in protobuf strings and a
// name may be megabytes long.
std::string clip_for_message(std::string_view text, size_t limit = 64);

// The 8-byte length plus the JSON header for `tensors` (in the given order, which must be the
// data order) and `metadata`, padded with spaces to a multiple of 8 bytes so the data area is
// 8-byte aligned, as the reference writer does. Errors (starting with "<file>: ") for what the
// reader would refuse: an empty, duplicate or non-UTF-8 name, "__metadata__" as a name,
// non-UTF-8 metadata, entries that do not tile the data area.
Result<std::string> encode_safetensors_header(const std::vector<SafetensorsEntry>& tensors,
                                              const std::map<std::string, std::string>& metadata,
                                              const std::string& file);

}  // namespace tern
