#include "common/trainer_process.h"

#include <signal.h>

namespace tern {

void decode_trainer_lines(const std::vector<std::string>& lines, TrainerOutput* out) {
  for (const auto& line : lines) {
    auto e = decode_event(line);
    if (e.is_ok()) {
      out->events.push_back(std::move(e).value());
    } else if (!line.empty()) {
      out->other_lines.push_back(line);
    }
  }
}

Result<std::unique_ptr<TrainerProcess>> TrainerProcess::start(const TrainerProcessOptions& o) {
  SpawnOptions so;
  so.argv = to_argv(o.program, o.args);
  so.pipe_stdout = true;
  so.pipe_stdin = true;
  so.stderr_file = o.stderr_file;
  so.cwd = o.cwd;
  so.die_with_parent = true;
  so.nice_increment = o.nice_increment;
  TERN_ASSIGN_OR_RETURN(auto proc, Subprocess::spawn(so));
  return std::unique_ptr<TrainerProcess>(new TrainerProcess(std::move(proc)));
}

TrainerProcess::TrainerProcess(std::unique_ptr<Subprocess> proc)
    : proc_(std::move(proc)), reader_(proc_->stdout_fd()) {}

bool TrainerProcess::read(TrainerOutput* out, std::chrono::milliseconds timeout) {
  if (!open_) return false;
  std::vector<std::string> lines;
  open_ = reader_.read_lines(&lines, timeout);
  decode_trainer_lines(lines, out);
  return open_;
}

void TrainerProcess::drain(TrainerOutput* out) {
  for (int i = 0; open_ && i < 20; ++i) read(out, std::chrono::milliseconds(50));
}

Status TrainerProcess::send(const TrainerCommand& command) {
  return proc_->write_stdin(encode(command) + "\n");
}

void TrainerProcess::request_stop() {
  if (!send(StopCommand{}).is_ok()) proc_->send_signal(SIGTERM);
}

void TrainerProcess::kill() { proc_->send_signal(SIGKILL); }

std::optional<int> TrainerProcess::poll() { return proc_->poll(); }

int TrainerProcess::stop(std::chrono::milliseconds grace) {
  if (auto done = proc_->poll()) return *done;
  request_stop();
  if (auto done = proc_->wait_for(grace)) return *done;
  proc_->send_signal(SIGKILL);
  return proc_->wait();
}

}  // namespace tern
