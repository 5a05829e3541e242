#include "worker/trainer_events.h"

#include <cmath>
#include <deque>
#include <limits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace tern {
namespace {

using json = nlohmann::json;

// Numbers from a trainer may be null (a non-finite value: JSON has no NaN), missing, or of
// another type: all read as 0, never an exception. Integers are clamped to int64.
double num(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0.0;
  double v = it->get<double>();
  return std::isfinite(v) ? v : 0.0;
}

int64_t integer(const json& j, const char* key) {
  double v = num(j, key);
  if (v >= 9.2e18) return std::numeric_limits<int64_t>::max();
  if (v <= -9.2e18) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::optional<v1::TaskEvent> parse_trainer_event(const std::string& line, const v1::TaskRef& task) {
  if (line.empty() || line[0] != '{') return std::nullopt;
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("event") || !j["event"].is_string())
    return std::nullopt;
  const std::string kind = j["event"].get<std::string>();
  v1::TaskEvent e;
  *e.mutable_task() = task;
  e.set_time(num(j, "time"));
  if (kind == "started") {
    e.mutable_started()->set_pid(static_cast<int32_t>(integer(j, "pid")));
  } else if (kind == "progress") {
    static const std::set<std::string> known = {
        "event", "job",  "rank",          "generation", "time",      "step",   "total_steps",
        "epoch", "loss", "samples_per_s", "bytes_sent", "compute_s", "wait_s", "world"};
    auto* p = e.mutable_progress();
    p->set_step(integer(j, "step"));
    p->set_total_steps(integer(j, "total_steps"));
    p->set_epoch(num(j, "epoch"));
    p->set_loss(num(j, "loss"));
    p->set_samples_per_s(num(j, "samples_per_s"));
    p->set_bytes_sent(num(j, "bytes_sent"));
    p->set_compute_s(num(j, "compute_s"));
    p->set_wait_s(num(j, "wait_s"));
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.value().is_number() && !known.count(it.key()) &&
          std::isfinite(it.value().get<double>()))
        (*p->mutable_metrics())[it.key()] = it.value().get<double>();
    }
  } else if (kind == "eval") {
    auto* ev = e.mutable_eval();
    ev->set_step(integer(j, "step"));
    ev->set_test_accuracy(num(j, "test_accuracy"));
    ev->set_test_loss(num(j, "test_loss"));
    static const std::set<std::string> known_eval = {"event", "job",  "rank", "generation", "time",
                                                     "step",  "test_accuracy", "test_loss"};
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.value().is_number() && !known_eval.count(it.key()) && std::isfinite(it.value().get<double>()))
        (*ev->mutable_metrics())[it.key()] = it.value().get<double>();
    }
  } else if (kind == "finished") {
    auto* f = e.mutable_finished();
    const json& s = j.contains("summary") && j["summary"].is_object() ? j["summary"] : j;
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.value().is_number() && std::isfinite(it.value().get<double>()) &&
          it.key() != "time" && it.key() != "rank" && it.key() != "generation") {
        (*f->mutable_summary())[it.key()] = it.value().get<double>();
      }
    }
  } else if (kind == "ready") {
    e.mutable_ready()->set_setup_s(num(j, "setup_s"));
  } else if (kind == "checkpoint_committed") {
    // The group committed this step's MANIFEST: the coordinator journals the newest one.
    e.mutable_checkpoint()->set_step(integer(j, "step"));
  } else if (kind == "error") {
    auto* er = e.mutable_error();
    er->set_message(text(j, "message"));
    er->set_code(static_cast<int32_t>(integer(j, "code")));
  } else {
    return std::nullopt;
  }
  return e;
}

std::string trainer_event_kind(const std::string& line) {
  if (line.empty() || line[0] != '{') return "";
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return "";
  auto it = j.find("event");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace tern
