#include "common/subprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>

extern char** environ;

namespace tern {
namespace {

int decode_wait_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

}  // namespace

Result<std::unique_ptr<Subprocess>> Subprocess::spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return invalid_argument("spawn: empty argv");
  int out_pipe[2] = {-1, -1};
  int in_pipe[2] = {-1, -1};
  if (options.pipe_stdout && pipe2(out_pipe, O_CLOEXEC) != 0) {
    return internal_error(std::string("pipe: ") + std::strerror(errno));
  }
  if (options.pipe_stdin && pipe2(in_pipe, O_CLOEXEC) != 0) {
    return internal_error(std::string("pipe: ") + std::strerror(errno));
  }
  // Everything the child needs is prepared before fork(): only async-signal-safe calls after.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos && options.env.count(kv.substr(0, eq))) continue;
    env_strings.push_back(kv);
  }
  for (const auto& [k, v] : options.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = options.argv;
  std::vector<char*> argv;
  for (auto& s : argv_copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) return internal_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (options.new_session) setsid();
    if (options.nice_increment != 0) {
      // Relative to the parent's own priority (a child inherits it); failure is harmless.
      errno = 0;
      int base = getpriority(PRIO_PROCESS, 0);
      if (errno == 0) (void)setpriority(PRIO_PROCESS, 0, base + options.nice_increment);
    }
    if (options.die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
    }
    if (options.pipe_stdout)
      dup2(out_pipe[1], STDOUT_FILENO);
    else if (!options.stdout_file.empty()) {
      int fd = open(options.stdout_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) dup2(fd, STDOUT_FILENO);
    }
    if (options.pipe_stdin)
      dup2(in_pipe[0], STDIN_FILENO);
    else {
      int fd = open("/dev/null", O_RDONLY);
      if (fd >= 0) dup2(fd, STDIN_FILENO);
    }
    if (!options.stderr_file.empty()) {
      int fd = open(options.stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) dup2(fd, STDERR_FILENO);
    }
    if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) _exit(127);
    execve(argv[0], argv.data(), envp.data());
    const char msg[] = "tern: exec failed\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(127);
  }
  std::unique_ptr<Subprocess> p(new Subprocess());
  p->pid_ = pid;
  if (options.pipe_stdout) {
    close(out_pipe[1]);
    p->stdout_fd_ = out_pipe[0];
    fcntl(p->stdout_fd_, F_SETFL, fcntl(p->stdout_fd_, F_GETFL) | O_NONBLOCK);
  }
  if (options.pipe_stdin) {
    close(in_pipe[0]);
    p->stdin_fd_ = in_pipe[1];
  }
  return p;
}

Subprocess::~Subprocess() {
  if (!exit_status_ && pid_ > 0 && !detached_) {
    ::kill(pid_, SIGKILL);
    wait();
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (stdin_fd_ >= 0) close(stdin_fd_);
}

Status Subprocess::write_stdin(const std::string& data) {
  if (stdin_fd_ < 0) return failed_precondition("stdin is not piped");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(stdin_fd_, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return unavailable(std::string("write to child stdin: ") + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  return Status::ok();
}

void Subprocess::close_stdin() {
  if (stdin_fd_ >= 0) close(stdin_fd_);
  stdin_fd_ = -1;
}

std::optional<int> Subprocess::poll() {
  if (exit_status_) return exit_status_;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) exit_status_ = decode_wait_status(status);
  return exit_status_;
}

std::optional<int> Subprocess::wait_for(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!poll()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_status_;
}

int Subprocess::wait() {
  if (exit_status_) return *exit_status_;
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = decode_wait_status(status);
  return *exit_status_;
}

void Subprocess::send_signal(int sig) {
  if (!poll()) ::kill(pid_, sig);
}

int Subprocess::terminate(std::chrono::milliseconds grace) {
  send_signal(SIGTERM);
  if (auto s = wait_for(grace)) return *s;
  send_signal(SIGKILL);
  return wait();
}

bool LineReader::read_lines(std::vector<std::string>* out, std::chrono::milliseconds timeout) {
  if (eof_) return false;
  pollfd pfd{fd_, POLLIN, 0};
  int r = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  if (r > 0) {
    char buf[65536];
    while (true) {
      ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n > 0) {
        buffer_.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) eof_ = true;
      break;  // EAGAIN or EOF or error
    }
  }
  size_t start = 0;
  for (size_t nl; (nl = buffer_.find('\n', start)) != std::string::npos; start = nl + 1) {
    out->push_back(buffer_.substr(start, nl - start));
  }
  buffer_.erase(0, start);
  if (eof_ && !buffer_.empty()) {
    out->push_back(buffer_);
    buffer_.clear();
  }
  return true;
}

std::string tail_file_lines(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (lines.size() > n) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::vector<std::string> read_all_lines(int fd) {
  LineReader reader(fd);
  std::vector<std::string> lines;
  while (reader.read_lines(&lines, std::chrono::milliseconds(200))) {
  }
  return lines;
}

Result<int> find_free_port(const std::string& host) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return internal_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    close(fd);
    return invalid_argument("not an IPv4 address: " + host);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return unavailable(std::string("bind: ") + std::strerror(errno));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

std::string self_exe_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return ".";
  return p.parent_path().string();
}

}  // namespace tern
