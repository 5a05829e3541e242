// common/trainer_process.h against the fake trainer of the control-plane tests
// (tests/worker/fake_trainer.sh): the command line it builds is accepted, events come back
// decoded, the stop command ends the trainer with kTrainerStopped, a failing trainer's error
// event and exit code reach the parent.
#include "common/trainer_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/trainer_protocol.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class TrainerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* src = std::getenv("TERN_SOURCE_DIR");  // set by tern_add_test
    ASSERT_NE(src, nullptr) << "run through ctest (TERN_SOURCE_DIR)";
    fake_ = std::string(src) + "/tests/worker/fake_trainer.sh";
    dir_ = fs::temp_directory_path() / ("tern-trainer-process-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<TrainerProcess> start(const std::string& name, int world) {
    const std::string spec = (dir_ / (name + ".yaml")).string();
    std::ofstream(spec) << "name: " << name << "\n";
    TrainerProcessOptions o;
    o.program = fake_;
    o.args.spec_file = spec;
    o.args.rank = 0;
    o.args.world = world;
    o.args.master = "127.0.0.1:1";
    o.args.generation = 1;
    o.args.job_id = "j-" + name;
    o.args.work_dir = dir_.string();
    o.stderr_file = (dir_ / (name + ".log")).string();
    auto p = TrainerProcess::start(o);
    EXPECT_TRUE(p.is_ok()) << p.status().to_string();
    return p.is_ok() ? std::move(p).value() : nullptr;
  }

  // Reads until an event of kind T arrives (or 10 s pass).
  template <class T>
  std::optional<TrainerEvent> read_until(TrainerProcess* p, TrainerOutput* all) {
    auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      TrainerOutput out;
      bool open = p->read(&out, 50ms);
      for (auto& e : out.events) {
        all->events.push_back(e);
        if (std::holds_alternative<T>(e.body)) return e;
      }
      if (!open) break;
    }
    return std::nullopt;
  }

  std::string fake_;
  fs::path dir_;
};

TEST_F(TrainerProcessTest, EventsComeBackDecodedAndStopEndsTheTrainer) {
  auto p = start("hang", 2);
  ASSERT_NE(p, nullptr);
  TrainerOutput all;
  auto started = read_until<StartedEvent>(p.get(), &all);
  ASSERT_TRUE(started.has_value());
  EXPECT_EQ(started->header.job, "j-hang");
  EXPECT_EQ(started->header.generation, 1);
  EXPECT_EQ(std::get<StartedEvent>(started->body).world, 2);
  EXPECT_EQ(std::get<StartedEvent>(started->body).pid, p->pid());
  auto progress = read_until<ProgressEvent>(p.get(), &all);
  ASSERT_TRUE(progress.has_value());
  EXPECT_DOUBLE_EQ(std::get<ProgressEvent>(progress->body).metrics.at("staleness"), 1.5);
  EXPECT_FALSE(p->poll().has_value());
  const int code = p->stop(5000ms);
  EXPECT_EQ(code, kTrainerStopped);
  EXPECT_TRUE(trainer_exit_is_loss(code));
  TrainerOutput rest;
  p->drain(&rest);
  bool error_seen = false;
  for (const auto& e : rest.events) {
    if (const auto* er = std::get_if<ErrorEvent>(&e.body)) error_seen = er->code == kTrainerStopped;
  }
  EXPECT_TRUE(error_seen) << "the trainer's error event says it was stopped";
}

TEST_F(TrainerProcessTest, AFailingTrainersErrorAndExitCodeReachTheParent) {
  auto p = start("crash", 1);
  ASSERT_NE(p, nullptr);
  TrainerOutput all;
  auto error = read_until<ErrorEvent>(p.get(), &all);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(std::get<ErrorEvent>(error->body).code, kTrainerCommFailure);
  std::optional<int> code;
  for (int i = 0; i < 200 && !code; ++i) {
    code = p->poll();
    if (!code) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, kTrainerCommFailure);
  // Its stdin is closed now: a command is an error for the parent, never a SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  EXPECT_FALSE(p->send(StopCommand{}).is_ok());
}

}  // namespace
}  // namespace tern
