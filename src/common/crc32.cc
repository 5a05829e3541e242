#include "common/crc32.h"

#include <zlib.h>

#include <algorithm>
#include <limits>

namespace tern {

uint32_t crc32(uint32_t crc, const void* data, size_t size) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  if (size == 0) return static_cast<uint32_t>(c);  // zlib reads no byte, but p may be null
  while (size > 0) {
    const size_t n = std::min<size_t>(size, std::numeric_limits<uInt>::max());
    c = ::crc32(c, p, static_cast<uInt>(n));
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

}  // namespace tern
