// EventSink: where a trainer reports started/progress/eval/finished/error events
// (src/common/trainer_protocol.h). The process writes JSON lines to stdout; tests collect them.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tern {

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void emit(nlohmann::json event) = 0;
};

// Adds job/rank/generation/time and writes one line per event to a FILE* (stdout), flushed.
class JsonLinesSink : public EventSink {
 public:
  JsonLinesSink(std::FILE* out, std::string job, int rank, int64_t generation);
  void emit(nlohmann::json event) override;
  void set_generation(int64_t g) { generation_ = g; }

 private:
  std::mutex mu_;
  std::FILE* out_;
  std::string job_;
  int rank_;
  int64_t generation_;
};

// Keeps events in memory (tests).
class MemorySink : public EventSink {
 public:
  void emit(nlohmann::json event) override {
    std::lock_guard<std::mutex> l(mu_);
    events.push_back(std::move(event));
  }
  std::vector<nlohmann::json> events;

 private:
  std::mutex mu_;
};

}  // namespace tern
