#include "worker/trainer_events.h"

#include <cmath>
#include <type_traits>

namespace tern {
namespace {

template <class Map>
void copy_metrics(const MetricMap& from, Map* to) {
  for (const auto& [k, v] : from) {
    if (std::isfinite(v)) (*to)[k] = v;
  }
}

// The fields of one kind into `e`; false for kinds the coordinator does not track.
template <class T>
bool fill(const T& body, v1::TaskEvent* e) {
  if constexpr (std::is_same_v<T, StartedEvent>) {
    e->mutable_started()->set_pid(static_cast<int32_t>(body.pid));
  } else if constexpr (std::is_same_v<T, ProgressEvent>) {
    auto* p = e->mutable_progress();
    p->set_step(body.step);
    p->set_total_steps(body.total_steps);
    p->set_epoch(body.epoch);
    p->set_loss(body.loss);
    p->set_samples_per_s(body.samples_per_s);
    p->set_bytes_sent(body.bytes_sent);
    p->set_compute_s(body.compute_s);
    p->set_wait_s(body.wait_s);
    copy_metrics(body.metrics, p->mutable_metrics());
  } else if constexpr (std::is_same_v<T, EvalEvent>) {
    auto* ev = e->mutable_eval();
    ev->set_step(body.step);
    ev->set_test_accuracy(body.test_accuracy.value_or(0.0));
    ev->set_test_loss(body.test_loss.value_or(0.0));
    copy_metrics(body.metrics, ev->mutable_metrics());
  } else if constexpr (std::is_same_v<T, FinishedEvent>) {
    auto* f = e->mutable_finished();
    for (const auto& [k, v] : body.summary.items()) {
      if (!v.is_number()) continue;
      const double d = v.template get<double>();
      if (std::isfinite(d)) (*f->mutable_summary())[k] = d;
    }
  } else if constexpr (std::is_same_v<T, ReadyEvent>) {
    e->mutable_ready()->set_setup_s(body.setup_s);
  } else if constexpr (std::is_same_v<T, CheckpointCommittedEvent>) {
    // The group committed this step's MANIFEST: the coordinator journals the newest one.
    e->mutable_checkpoint()->set_step(body.step);
  } else if constexpr (std::is_same_v<T, ErrorEvent>) {
    e->mutable_error()->set_message(body.message);
    e->mutable_error()->set_code(static_cast<int32_t>(body.code));
  } else {
    return false;
  }
  return true;
}

}  // namespace

std::optional<v1::TaskEvent> to_task_event(const TrainerEvent& event, const v1::TaskRef& task) {
  v1::TaskEvent e;
  *e.mutable_task() = task;
  e.set_time(event.header.time);
  bool tracked = std::visit([&](const auto& body) { return fill(body, &e); }, event.body);
  if (!tracked) return std::nullopt;
  return e;
}

std::optional<v1::TaskEvent> parse_trainer_event(const std::string& line, const v1::TaskRef& task) {
  auto event = decode_event(line);
  if (!event.is_ok()) return std::nullopt;
  return to_task_event(*event, task);
}

std::string trainer_event_kind(const std::string& line) {
  auto event = decode_event(line);
  return event.is_ok() ? event_kind(event->body) : "";
}

}  // namespace tern
