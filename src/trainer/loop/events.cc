#include "trainer/loop/events.h"

#include <chrono>

#include "common/trainer_codec.h"

namespace tern {

JsonLinesSink::JsonLinesSink(std::FILE* out, std::string job, int rank, int64_t generation)
    : out_(out), job_(std::move(job)), rank_(rank), generation_(generation) {}

void JsonLinesSink::emit(nlohmann::json event) {
  EventHeader header;
  header.job = job_;
  header.rank = rank_;
  header.generation = generation_;
  header.time =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // `event` is a body from trainer_codec's to_json: the codec adds the header and spells the line.
  std::string line = encode_event_object(header, std::move(event)) + "\n";
  std::lock_guard<std::mutex> l(mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace tern
