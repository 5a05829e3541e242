// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit mixing function with good avalanche, used to
// derive independent, reproducible seeds and hash values from (seed, index) pairs — every
// rank computes the same value from the same inputs, with no shared generator state.
#pragma once

#include <cstdint>

namespace tern {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace tern
