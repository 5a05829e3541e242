// TrainerProcess: one tern-trainer child, supervised by its parent (a worker daemon or
// `tern run`): spawns it with the command line of common/trainer_codec.h (no shell), reads its
// stdout event lines decoded, sends it commands on stdin, stops or kills it, and reports its
// exit status (classified with common/trainer_protocol.h's trainer_exit_is_loss).
//
// Thread-compatible: one owner thread calls its methods (the daemon's loop, `tern run`'s
// loop). The destructor kills (SIGKILL) and reaps a trainer that still runs.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/subprocess.h"
#include "common/trainer_codec.h"

namespace tern {

struct TrainerProcessOptions {
  std::string program;      // the tern-trainer binary
  TrainerArgs args;         // its command line
  std::string stderr_file;  // its log (appended); empty = inherit the parent's stderr
  std::string cwd;          // empty = inherit
  int nice_increment = 0;   // see SpawnOptions
};

// What one read of a trainer's stdout brought.
struct TrainerOutput {
  std::vector<TrainerEvent> events;      // decoded, in order (UnknownEvent included)
  std::vector<std::string> other_lines;  // lines that are not events (logged by callers)
};

class TrainerProcess {
 public:
  static Result<std::unique_ptr<TrainerProcess>> start(const TrainerProcessOptions& options);

  pid_t pid() const { return proc_->pid(); }
  // Reads what the trainer wrote (waiting up to `timeout` for the first byte). False once its
  // stdout is at EOF and drained.
  bool read(TrainerOutput* out, std::chrono::milliseconds timeout);
  // After the trainer exited: what is left on its stdout, bounded (a grandchild could hold the
  // pipe open forever).
  void drain(TrainerOutput* out);
  // Writes the command as one line on the trainer's stdin; an error when the pipe is closed.
  Status send(const TrainerCommand& command);
  // Asks it to stop (the stop command); SIGTERM when its stdin is closed.
  void request_stop();
  void kill();
  // Its exit status once exited: exit code, or -signal.
  std::optional<int> poll();
  // request_stop, wait up to `grace` for it to exit, then SIGKILL. Returns the exit status.
  int stop(std::chrono::milliseconds grace);

 private:
  explicit TrainerProcess(std::unique_ptr<Subprocess> proc);
  std::unique_ptr<Subprocess> proc_;
  LineReader reader_;
  bool open_ = true;  // stdout not at EOF yet
};

// Decodes `lines` into `out` (events, or other lines).
void decode_trainer_lines(const std::vector<std::string>& lines, TrainerOutput* out);

}  // namespace tern
