// CRC-32 (IEEE 802.3, the polynomial of zlib, gzip and PNG): the one checksum of tern's on-disk
// formats (the coordinator's journal and job id mark, checkpoints, the checkpoint step store).
// zlib's crc32() computes it; this wrapper feeds it buffers larger than its uInt length.
// Check value: crc32(0, "123456789", 9) == 0xCBF43926.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tern {

// Continues `crc` (0 to start) over `size` bytes: crc32(crc32(0, a), b) == crc32(0, a + b).
uint32_t crc32(uint32_t crc, const void* data, size_t size);

}  // namespace tern
