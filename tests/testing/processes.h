// What the process-level tests (tests/integration, tests/cli) share: where the built binaries
// are, reading a file whole, and the JSON-lines events a trainer writes on stdout.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tern {

// build/bin/NAME, or $TERN_BIN_DIR/NAME (ctest sets it).
inline std::string bin(const std::string& name) {
  const char* dir = std::getenv("TERN_BIN_DIR");
  return std::string(dir ? dir : "build/bin") + "/" + name;
}

// The whole file ("" when it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The events of a trainer's stdout file, one JSON object per line (others skipped).
inline std::vector<nlohmann::json> events(const std::filesystem::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

// The first event of `kind` (at `generation` when >= 0); null when there is none.
inline nlohmann::json first(const std::vector<nlohmann::json>& ev, const std::string& kind,
                            int64_t generation = -1) {
  for (const auto& e : ev) {
    if (e.value("event", "") == kind &&
        (generation < 0 || e.value("generation", int64_t{-1}) == generation))
      return e;
  }
  return nlohmann::json();
}

}  // namespace tern
