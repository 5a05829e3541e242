// LogStore: decisions in memory (retried chunks, the chunk cap, the job quota), writes only in
// flush() and in queue order, sizes of existing files learned by load(), and flush() refusing
// to run under the coordinator's mutex (CoreLock).
#include "coordinator/log_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "coordinator/core_lock.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

class LogStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("tern_log_store_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  LogStoreOptions options(int64_t quota = 1 << 20, int64_t chunk = 1 << 20) {
    return LogStoreOptions{dir_, quota, chunk};
  }
  std::string dir_;
};

TEST_F(LogStoreTest, AppendQueuesAndFlushWrites) {
  LogStore logs(options());
  logs.append("j-1", 0, 0, "hello ");
  EXPECT_EQ(logs.size("j-1", 0), 6);
  EXPECT_FALSE(fs::exists(logs.path("j-1", 0)));  // nothing written before flush
  logs.append("j-1", 0, 6, "world\n");
  logs.append("j-1", 0, 0, "hello ");          // a retried chunk: already there
  logs.append("j-1", 0, 3, "lo world\nmore");  // overlapping: only the new tail
  logs.append("j-1", 1, 0, "rank one\n");
  logs.flush();
  EXPECT_EQ(slurp(logs.path("j-1", 0)), "hello world\nmore");
  EXPECT_EQ(slurp(logs.path("j-1", 1)), "rank one\n");
  EXPECT_EQ(logs.size("j-1", 0), 16);
  logs.flush();  // nothing queued: nothing changes
  EXPECT_EQ(slurp(logs.path("j-1", 0)), "hello world\nmore");
}

TEST_F(LogStoreTest, ChunkCapAndQuotaLeaveOneMarker) {
  LogStore logs(options(/*quota=*/1000, /*chunk=*/300));
  logs.append("j-1", 0, 0, std::string(500, 'a'));  // capped at 300 with its marker
  logs.flush();
  const std::string first = slurp(logs.path("j-1", 0));
  EXPECT_LE(first.size(), 300u);
  EXPECT_NE(first.find("bytes of one log chunk dropped"), std::string::npos);
  EXPECT_GT(logs.bytes_dropped(), 0u);
  // The job's quota covers all its ranks: rank 1 gets the rest, then one marker, then nothing.
  for (int i = 0; i < 10; ++i) {
    logs.append("j-1", 1, logs.size("j-1", 1), std::string(200, 'b'));
  }
  logs.flush();
  const std::string second = slurp(logs.path("j-1", 1));
  EXPECT_EQ(second.find("log quota"), second.rfind("log quota"));
  EXPECT_NE(second.find("reached its log quota of 1000"), std::string::npos);
  const int64_t total = static_cast<int64_t>(first.size() + second.size());
  EXPECT_LE(total, 1000 + 200);  // the quota, plus the one marker line
  EXPECT_EQ(logs.size("j-1", 1), static_cast<int64_t>(second.size()));
}

TEST_F(LogStoreTest, LoadLearnsExistingFiles) {
  {
    LogStore logs(options(/*quota=*/100));
    logs.append("j-7", 2, 0, std::string(60, 'x'));
    logs.flush();
  }
  LogStore again(options(/*quota=*/100));
  again.load();
  EXPECT_EQ(again.size("j-7", 2), 60);
  again.append("j-7", 2, 0, std::string(60, 'x'));  // retried after a restart: nothing new
  again.append("j-7", 3, 0, std::string(60, 'y'));  // 40 bytes of quota left for the job
  again.flush();
  EXPECT_EQ(slurp(again.path("j-7", 2)), std::string(60, 'x'));
  EXPECT_EQ(slurp(again.path("j-7", 3)).substr(0, 41), std::string(40, 'y') + "\n");
}

TEST_F(LogStoreTest, ConcurrentFlushesKeepTheQueueOrder) {
  LogStore logs(options(int64_t{1} << 30));
  std::mutex order;  // stands in for the core's mutex: appends are serialised by it
  std::vector<std::thread> threads;
  int64_t next = 0;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        {
          std::lock_guard<std::mutex> lock(order);
          std::string line = std::to_string(next) + "\n";
          logs.append("j-1", 0, logs.size("j-1", 0), line);
          ++next;
        }
        logs.flush();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::istringstream in(slurp(logs.path("j-1", 0)));
  int64_t expect = 0, v = 0;
  while (in >> v) EXPECT_EQ(v, expect++);
  EXPECT_EQ(expect, 800);
}

TEST_F(LogStoreTest, FlushUnderTheCoreMutexAborts) {
  LogStore logs(options());
  logs.append("j-1", 0, 0, "x");
  std::mutex mu;
  EXPECT_FALSE(CoreLock::held());
  EXPECT_DEATH(
      {
        CoreLock lock(mu);
        logs.flush();
      },
      "mutex held");
  {
    CoreLock lock(mu);
    EXPECT_TRUE(CoreLock::held());
  }
  EXPECT_FALSE(CoreLock::held());
}

}  // namespace
}  // namespace tern
