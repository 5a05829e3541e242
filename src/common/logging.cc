#include "common/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <filesystem>

namespace tern {
namespace {

void install(const std::string& tag, const std::string& level,
             std::vector<spdlog::sink_ptr> sinks) {
  auto logger = std::make_shared<spdlog::logger>("tern", sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [" + tag + "] %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace

void setup_logging(const std::string& tag, const std::string& level) {
  install(tag, level, {std::make_shared<spdlog::sinks::stderr_sink_mt>()});
}

void setup_logging_to_file(const std::string& tag, const std::string& level,
                           const std::string& file) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(file).parent_path(), ec);
  install(tag, level,
          {std::make_shared<spdlog::sinks::stderr_sink_mt>(),
           std::make_shared<spdlog::sinks::basic_file_sink_mt>(file)});
}

}  // namespace tern
