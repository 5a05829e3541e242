// Logging setup: spdlog, one line per event, tagged with the process role and, for
// trainers, job/rank/generation ("[trainer job=j-3 rank=1 gen=0]").
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace tern {

// Configures the default spdlog logger to write to stderr with the given tag and level
// ("trace".."error"). Safe to call again (e.g. when the generation changes).
void setup_logging(const std::string& tag, const std::string& level = "info");

// Same, but also appends to `file` (created with parents).
void setup_logging_to_file(const std::string& tag, const std::string& level,
                           const std::string& file);

}  // namespace tern
