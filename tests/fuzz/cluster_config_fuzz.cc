// Fuzz target: arbitrary bytes as a cluster file. Must return a Status, never crash or throw.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/cluster_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)tern::parse_cluster_config(text, "fuzz-cluster.yaml");
  return 0;
}
