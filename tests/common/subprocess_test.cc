#include "common/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

namespace tern {
namespace {

TEST(Subprocess, CapturesStdoutLinesAndExitCode) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "echo one; echo two; printf three; exit 3"};
  o.pipe_stdout = true;
  auto p = Subprocess::spawn(o);
  ASSERT_TRUE(p.is_ok());
  std::vector<std::string> lines = read_all_lines((*p)->stdout_fd());
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ((*p)->wait(), 3);
}

TEST(Subprocess, ArgumentsAreNotInterpretedByAShell) {
  SpawnOptions o;
  o.argv = {"/bin/echo", "$(touch /tmp/tern-should-not-exist)", ";", "ls"};
  o.pipe_stdout = true;
  auto p = Subprocess::spawn(o);
  ASSERT_TRUE(p.is_ok());
  std::vector<std::string> lines = read_all_lines((*p)->stdout_fd());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "$(touch /tmp/tern-should-not-exist) ; ls");
}

TEST(Subprocess, TerminateEscalatesToKill) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "trap '' TERM; exec sleep 30"};  // ignored signals survive exec
  auto p = Subprocess::spawn(o);
  ASSERT_TRUE(p.is_ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  int status = (*p)->terminate(std::chrono::milliseconds(200));
  EXPECT_EQ(status, -SIGKILL);
}

TEST(Subprocess, EnvironmentIsPassed) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "echo $TERN_X"};
  o.env["TERN_X"] = "hello";
  o.pipe_stdout = true;
  auto p = Subprocess::spawn(o);
  ASSERT_TRUE(p.is_ok());
  std::vector<std::string> lines = read_all_lines((*p)->stdout_fd());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "hello");
}

TEST(Subprocess, FreePort) {
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  EXPECT_GT(*port, 0);
}

}  // namespace
}  // namespace tern
