#include "trainer/loop/events.h"

#include <chrono>

namespace tern {

JsonLinesSink::JsonLinesSink(std::FILE* out, std::string job, int rank, int64_t generation)
    : out_(out), job_(std::move(job)), rank_(rank), generation_(generation) {}

void JsonLinesSink::emit(nlohmann::json event) {
  event["job"] = job_;
  event["rank"] = rank_;
  event["generation"] = generation_;
  event["time"] = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> l(mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace tern
