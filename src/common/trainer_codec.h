// The trainer protocol's codec: the one definition of the JSON lines a trainer writes on stdout
// (events) and reads on stdin (commands), and of its command line. common/trainer_protocol.h
// says what they mean; this file says how they are spelled, and every writer and reader (the
// training loop, trainer_main, the worker daemon, `tern run`) goes through it.
//
// Encoding: one JSON object per line, no newline in it (callers add "\n"). A non-finite
// number is written as null (JSON has no NaN or infinity).
// Decoding never throws and never crashes on any input:
//   - events are read leniently, as the protocol asks: a number that is null, missing, of
//     another type or non-finite reads as absent (its default, or an empty optional);
//     integers are clamped to int64. Only a line that is not a JSON object with a string
//     "event" is an error (INVALID_ARGUMENT). An event kind this codec does not know decodes
//     to UnknownEvent (parents ignore it: a newer trainer may emit more kinds);
//   - commands are read strictly (they steer the trainer): a missing or mistyped field is an
//     error naming the field, an unknown command is UNIMPLEMENTED.
// Metrics travel generically: every numeric field of a progress or eval event that is not one
// of its typed fields lands in its `metrics` map (and is written back at the top level), so a
// new metric (test_auc, test_perplexity, a strategy's counter) needs no change here.
//
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"

namespace tern {

using MetricMap = std::map<std::string, double>;

// Fields every event carries (JsonLinesSink adds them in the trainer).
struct EventHeader {
  std::string job;
  int rank = 0;
  int64_t generation = 0;
  double time = 0;  // unix seconds
};

struct StartedEvent {
  int64_t world = 0;
  int64_t pid = 0;
  int64_t total_steps = 0;
};

// This rank's training since the previous progress event.
struct ProgressEvent {
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  double loss = 0;
  double samples_per_s = 0;  // this rank's; the job's is the sum over ranks
  double bytes_sent = 0;
  double compute_s = 0;
  double wait_s = 0;
  std::optional<int64_t> world;  // the group's size now
  // Every other number: staleness, skipped_steps, compression_ratio, checkpoints,
  // regroup_generation and regroup_s (the first progress after a regroup), epsilon, ...
  MetricMap metrics;
};

struct EvalEvent {
  int64_t step = 0;
  std::optional<double> test_accuracy;
  std::optional<double> test_loss;
  // Every other number: train_s, test_auc, test_logloss (DLRM), test_perplexity, ...
  MetricMap metrics;
};

// A checkpoint snapshot taken (written in the background).
struct CheckpointEvent {
  int64_t step = 0;
  double snapshot_s = 0;
  double drain_s = 0;
  double checkpoint_s = 0;  // blocking seconds so far
};

struct CheckpointFailedEvent {
  int64_t step = 0;
  std::string message;
};

// Every rank wrote the step and its MANIFEST is queued: the job's newest complete checkpoint.
struct CheckpointCommittedEvent {
  int64_t step = 0;
  double write_s = 0;
  int64_t bytes = 0;
  int64_t checkpoints = 0;
  double checkpoint_s = 0;
};

// recovery.interval auto: the interval chosen and the figures behind it (free-form).
struct CheckpointPlanEvent {
  int64_t step = 0;
  nlohmann::json plan = nlohmann::json::object();
};

// State reloaded from a checkpoint: at start (resumed) or by a recovery.mode full regroup
// (rolled_back). The *_world fields only when written by another number of ranks.
struct RestoreFields {
  int64_t step = 0;
  std::string dir;
  std::vector<std::string> skipped;
  std::optional<int64_t> at_step;
  std::optional<int64_t> written_world;
  std::optional<int64_t> world;
  std::vector<std::string> dropped;
};
struct ResumedEvent : RestoreFields {};
struct RolledBackEvent : RestoreFields {};

// recovery.mode partial: a replacement rank restored its own state; `state` holds what the
// workload restored (free-form, written at the top level).
struct PartialRestoreEvent {
  int64_t step = 0;
  std::optional<int64_t> from_step;
  std::optional<int64_t> tensors;
  nlohmann::json state = nlohmann::json::object();
};

struct FinishedEvent {
  // steps, epochs, samples, samples_per_s, final_loss, test_accuracy, bytes_sent_per_rank,
  // wall_s, ...: free-form (an object), so new figures flow through.
  nlohmann::json summary = nlohmann::json::object();
};

struct ErrorEvent {
  std::string message;
  int64_t code = 0;  // the exit code the trainer is about to exit with
  std::optional<int64_t> step;
};

// train.on_nonfinite skip_step left out a step on every rank.
struct SkippedEvent {
  int64_t step = 0;
  std::vector<int64_t> ranks;
  int64_t skipped_steps = 0;
  std::string message;
};

struct PeerLostEvent {
  int64_t step = 0;
  std::string message;
};

// The process group was rebuilt at the header's generation (the line's "generation").
struct RegroupedEvent {
  int64_t step = 0;
  int64_t world = 0;
  double recovery_s = 0;
  int64_t recoveries = 0;
  bool rollback = false;
  int64_t steps_rolled_back = 0;
};

struct ReadyEvent {
  double setup_s = 0;
};

// sync.verify_every found replicas that differ.
struct ReplicaMismatchEvent {
  int64_t step = 0;
  std::string when;
  std::vector<std::vector<int64_t>> groups;  // ranks that agree, one group per value
  std::vector<std::string> hashes;           // one per group
  std::string action;                        // majority | fail
  int64_t source = -1;                       // the rank whose state every rank takes
  int64_t mismatches = 0;
  std::string message;
};

// A kind this codec does not know; `fields` is the line's object (header included).
struct UnknownEvent {
  std::string kind;
  nlohmann::json fields = nlohmann::json::object();
};

using TrainerEventBody =
    std::variant<StartedEvent, ProgressEvent, EvalEvent, CheckpointEvent, CheckpointFailedEvent,
                 CheckpointCommittedEvent, CheckpointPlanEvent, ResumedEvent, RolledBackEvent,
                 PartialRestoreEvent, FinishedEvent, ErrorEvent, SkippedEvent, PeerLostEvent,
                 RegroupedEvent, ReadyEvent, ReplicaMismatchEvent, UnknownEvent>;

struct TrainerEvent {
  EventHeader header;
  TrainerEventBody body;
};

// The "event" field of a body ("progress", ...; UnknownEvent's own kind).
std::string event_kind(const TrainerEventBody& body);
// The body as a JSON object with its "event" field (no header): what an EventSink receives.
nlohmann::json to_json(const TrainerEventBody& body);
// Adds the header's fields to `object` (a body from to_json) and dumps it as one line.
std::string encode_event_object(const EventHeader& header, nlohmann::json object);
// One line (no "\n").
std::string encode(const TrainerEvent& event);
// Decodes one stdout line of a trainer (see the top of this file for what is an error).
Result<TrainerEvent> decode_event(std::string_view line);

// --- commands (stdin) ------------------------------------------------------------------------

struct StopCommand {};

// Rebuild the process group at `generation` with rank 0's store at `master`.
struct RegroupCommand {
  int64_t generation = 0;
  int world = 0;
  std::string master;        // HOST:PORT
  bool rollback = false;     // recovery.mode full: reload the last checkpoint
  std::vector<int> members;  // elastic: the group's job ranks in group order (size world)
};

using TrainerCommand = std::variant<StopCommand, RegroupCommand>;

// One line (no "\n").
std::string encode(const TrainerCommand& command);
Result<TrainerCommand> decode_command(std::string_view line);

// --- command line ----------------------------------------------------------------------------

struct TrainerArgs {
  std::string spec_file;
  int rank = 0;
  int world = 1;
  std::string master;
  int64_t generation = 0;
  std::string job_id = "local";
  std::string work_dir = ".";
  std::string cluster_file;
  std::vector<std::string> regions;
  std::string bind_host = "127.0.0.1";
  std::vector<int> members;  // the group's ranks (empty: all); --rank is the job rank
  bool standby = false;
};

// `program` followed by the flags of trainer_protocol.h (optional ones only when set).
std::vector<std::string> to_argv(const std::string& program, const TrainerArgs& args);
// Parses the flags (argv[0], the program, is skipped). INVALID_ARGUMENT naming the flag for an
// unknown flag, a missing value or required flag, or a value that is not a number;
// NOT_FOUND ("help") for --help / -h.
Result<TrainerArgs> parse_trainer_args(const std::vector<std::string>& argv);
// The flags, one per line (for --help and errors).
std::string trainer_usage();

}  // namespace tern
