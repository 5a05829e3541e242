// Translation of a trainer's events (common/trainer_codec.h) into the TaskEvent messages a
// worker daemon relays to the coordinator. Pure functions.
#pragma once

#include <optional>
#include <string>

#include "common/subprocess.h"  // tail_file_lines(), used with these events
#include "common/trainer_codec.h"
#include "tern/v1/worker.pb.h"

namespace tern {

// The TaskEvent for `event`, or nullopt for a kind the coordinator does not track (like
// "checkpoint", "peer_lost", "regrouped" or an unknown kind: harmless). "checkpoint_committed"
// becomes a TaskCheckpoint (the coordinator journals the job's newest committed step). Every
// metric of a progress or eval event travels in its metrics map (test_auc, test_perplexity,
// staleness, ...). `task` is the task the event came from (authoritative over the event's own
// job/rank fields).
std::optional<v1::TaskEvent> to_task_event(const TrainerEvent& event, const v1::TaskRef& task);

// decode_event + to_task_event for one stdout line; nullopt for a line that is not an event.
std::optional<v1::TaskEvent> parse_trainer_event(const std::string& line, const v1::TaskRef& task);

// The "event" field of a trainer's stdout line; "" when the line is not an event.
std::string trainer_event_kind(const std::string& line);

}  // namespace tern
