// Subprocess: spawns and supervises a child process (trainers under `tern run` and the
// worker daemon; daemons under `tern cluster up`). argv is passed to execv directly — no
// shell, so nothing in a job spec is ever interpolated into a command line.
//
// Thread-compatible: one owner thread calls its methods. The destructor kills (SIGKILL) and
// reaps a child that is still running, so no orphan outlives its owner.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

struct SpawnOptions {
  std::vector<std::string> argv;           // argv[0] is the program path
  std::map<std::string, std::string> env;  // added to (or replacing in) the parent's env
  std::string cwd;                         // empty = inherit
  bool pipe_stdout = false;                // read it via stdout_fd()
  bool pipe_stdin = false;                 // write it via stdin_fd()
  std::string stdout_file;                 // append stdout here (when not piped)
  std::string stderr_file;                 // append stderr here; empty = inherit
  bool new_session = false;                // setsid(): survives the parent's terminal
  bool die_with_parent = true;             // PR_SET_PDEATHSIG(SIGKILL)
  // Added to the child's nice value before exec (setpriority): > 0 runs it at a lower
  // priority than its parent, so a busy child cannot starve the parent's own threads.
  int nice_increment = 0;
};

class Subprocess {
 public:
  static Result<std::unique_ptr<Subprocess>> spawn(const SpawnOptions& options);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return stdout_fd_; }
  int stdin_fd() const { return stdin_fd_; }
  // Writes all of `data` to the child's stdin.
  Status write_stdin(const std::string& data);
  void close_stdin();

  // Exit status once the child has exited: exit code, or -signal if killed by a signal.
  std::optional<int> poll();
  // Blocks up to `timeout` for the child to exit.
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  int wait();
  void send_signal(int sig);
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
  int terminate(std::chrono::milliseconds grace);
  // Lets the child outlive this object: the destructor neither kills nor reaps it (daemons
  // started by `tern cluster up`, spawned with new_session and die_with_parent = false).
  void detach() { detached_ = true; }

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int stdin_fd_ = -1;
  std::optional<int> exit_status_;
  bool detached_ = false;
};

// Splits a byte stream from a non-blocking fd into lines.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  // Reads what is available (waiting up to `timeout` for the first byte) and appends
  // complete lines to `out`. Returns false once the stream is at EOF and drained.
  bool read_lines(std::vector<std::string>* out, std::chrono::milliseconds timeout);

 private:
  int fd_;
  std::string buffer_;
  bool eof_ = false;
};

// The last `n` lines of a text file (a trainer's log), newline-terminated; "" if unreadable.
std::string tail_file_lines(const std::string& path, size_t n);

// Reads every line from `fd` until EOF (blocking).
std::vector<std::string> read_all_lines(int fd);

// Finds a free TCP port on `host` by binding port 0 (racy by nature; callers retry).
Result<int> find_free_port(const std::string& host = "127.0.0.1");

// Path of the running executable's directory (for finding sibling binaries).
std::string self_exe_dir();

}  // namespace tern
