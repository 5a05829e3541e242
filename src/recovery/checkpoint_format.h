// The checkpoint file format: a versioned binary file of named tensors plus a small key/value
// metadata section, every part checksummed. Torch-free on purpose: the parser is what a
// fuzzer exercises, and the writer takes raw byte spans so the Torch layer (checkpoint.h)
// and tests can share it.
//
// Layout (all integers little endian; tensor data is the tensor's raw contiguous bytes in the
// host byte order, which is little endian on every platform tern builds for):
//
//   file header, 32 bytes:
//     0  magic "TERNCKPT"          8 bytes
//     8  u32 version               kCheckpointVersion (1)
//     12 u32 section_count         meta section + one per tensor
//     16 u64 total_length          the file's exact size in bytes
//     24 u32 flags                 0 (non-zero is refused: a future feature we cannot read)
//     28 u32 header_crc            CRC-32 of bytes 0..27
//   then section_count sections, each:
//     0  u32 kind                  1 = meta (exactly one, first), 2 = tensor
//     4  u32 reserved              0
//     8  u64 payload_length
//     16 u32 payload_crc           CRC-32 of the payload
//     20 u32 header_crc            CRC-32 of bytes 0..19 of this section header
//     24 payload
//   meta payload:   u32 count, then count × (u32 key_len, key, u32 value_len, value)
//   tensor payload: u32 name_len, name, u8 dtype, u8 ndim, u16 0, i64 dims[ndim],
//                   u64 data_len, data (data_len = numel × element size, ending the payload)
//
// The checksum is CRC-32 (IEEE 802.3, zlib's crc32()): Debian 12 has no C/C++ CRC-32C
// library (no libcrc32c-dev; abseil 20220623 predates absl::crc32c), and zlib is already a
// dependency. The file digest (recorded in the step MANIFEST) is the CRC-32 of the file
// header followed by every section header: it covers every payload through the payload CRCs,
// yet can be checked by reading headers only.
//
// The parser trusts nothing: every length is checked against the bytes actually present
// before it is used, so it never allocates or reads beyond the input, and every error names
// the file and what is wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tern {

inline constexpr char kCheckpointMagic[8] = {'T', 'E', 'R', 'N', 'C', 'K', 'P', 'T'};
inline constexpr uint32_t kCheckpointVersion = 1;
inline constexpr size_t kCheckpointHeaderBytes = 32;
inline constexpr size_t kSectionHeaderBytes = 24;
inline constexpr uint32_t kMaxTensorDims = 32;
inline constexpr uint32_t kMaxNameBytes = 4096;

// CRC-32 (IEEE) with a running value (start at 0): common/crc32.h (zlib), as the journal.
uint32_t checkpoint_crc32(uint32_t crc, const void* data, size_t size);

// On-disk dtype codes: stable numbers, independent of c10::ScalarType's enum values.
enum class DType : uint8_t {
  kFloat32 = 1,
  kFloat64 = 2,
  kFloat16 = 3,
  kBFloat16 = 4,
  kInt8 = 5,
  kUInt8 = 6,
  kInt16 = 7,
  kInt32 = 8,
  kInt64 = 9,
  kBool = 10,
};
// Element size in bytes, or 0 for an unknown code.
size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
bool dtype_valid(uint8_t code);

// Step, position and identity of a checkpoint, plus free-form key/value pairs (the trainer
// may put a JSON document in a value). Integers default to -1 = "not set".
struct CheckpointMeta {
  int64_t step = -1;
  int64_t epoch = -1;
  int64_t sampler_position = -1;  // samples of the current epoch already consumed
  int64_t rank = -1;              // -1 for replicated state
  int64_t world = -1;
  int64_t generation = -1;
  std::string job_id;
  std::map<std::string, std::string> extra;
};

// A tensor to write: raw contiguous bytes the caller keeps alive during the write.
struct TensorSpan {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t bytes = 0;  // must equal numel × dtype_size
};

// A parsed tensor: its bytes point into the buffer given to parse_checkpoint().
struct TensorView {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::string_view data;
};

struct ParsedCheckpoint {
  CheckpointMeta meta;
  std::vector<TensorView> tensors;  // file order
  uint32_t digest = 0;              // see the header comment
};

// Where the encoder writes. FdSink (fs_util.h) writes to a file; StringSink to memory.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual Status write(const void* data, size_t size) = 0;
};

class StringSink : public ByteSink {
 public:
  Status write(const void* data, size_t size) override {
    out.append(static_cast<const char*>(data), size);
    return Status::ok();
  }
  std::string out;
};

struct EncodeResult {
  uint64_t bytes = 0;
  uint32_t digest = 0;
};

// Encodes meta + tensors into `sink`. INVALID_ARGUMENT (naming `name` and the tensor) for a
// span whose byte count does not match its shape and dtype, a duplicate or empty name, too
// many dims, or a negative dim.
Result<EncodeResult> encode_checkpoint(const CheckpointMeta& meta,
                                       const std::vector<TensorSpan>& tensors, ByteSink& sink,
                                       const std::string& name);
// Convenience for tests and the fuzz corpus generator.
Result<std::string> encode_checkpoint_to_string(const CheckpointMeta& meta,
                                                const std::vector<TensorSpan>& tensors);

// Parses and validates a whole file image: magic, version, flags, lengths, every CRC, meta
// keys, tensor dtype/ndim/dims/byte counts, bool values in {0, 1}, unique names, no trailing
// bytes. DATA_LOSS for corruption or truncation, FAILED_PRECONDITION for a newer version;
// messages start with `name` (the file path).
Result<ParsedCheckpoint> parse_checkpoint(std::string_view bytes, const std::string& name);

// Structural check from headers only (reads header + section headers with pread, skipping
// payloads): magic, version, lengths, header CRCs, file size. Returns the digest. Used by
// retention and manifest checks, where reading every payload would be too slow.
Result<uint32_t> checkpoint_file_digest(const std::string& path);

}  // namespace tern
