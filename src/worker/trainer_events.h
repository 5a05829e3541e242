// Translation of the trainer's JSON-lines events (common/trainer_protocol.h) into the
// TaskEvent messages a worker daemon relays to the coordinator. Pure functions.
#pragma once

#include <optional>
#include <string>

#include "common/subprocess.h"  // tail_file_lines(), used with these events
#include "tern/v1/worker.pb.h"

namespace tern {

// Parses one stdout line of a trainer. Returns nullopt for lines that are not a known event
// (not JSON, or an event kind the coordinator does not track, like "checkpoint", "peer_lost"
// or "regrouped": unknown kinds are harmless). "checkpoint_committed" becomes a TaskCheckpoint
// (the coordinator journals the job's newest committed step).
// `task` is the task the line came from (authoritative over the line's own job/rank fields).
std::optional<v1::TaskEvent> parse_trainer_event(const std::string& line, const v1::TaskRef& task);

// The "event" field of a trainer's stdout line; "" when the line is not an event.
std::string trainer_event_kind(const std::string& line);

}  // namespace tern
