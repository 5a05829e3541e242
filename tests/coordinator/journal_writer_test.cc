// JournalWriter: group commit (records queued under the core's mutex, written and synced off
// it), compaction in the queue, the job-id high-water mark, a failed commit, and the rule that
// no journal I/O runs under the core's mutex.
#include "coordinator/journal_writer.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "coordinator/core_lock.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

// Holds the committer in before_commit until release(): what is queued meanwhile forms the
// next batch.
class Gate {
 public:
  void enter() {
    std::unique_lock<std::mutex> lock(mu_);
    ++entered_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void wait_entered(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entered_ >= n; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int entered_ = 0;
  bool open_ = false;
};

class JournalWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_journal_writer_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<JournalWriter> open_writer(JournalWriterOptions options = {}) {
    auto j = Journal::open(dir_.string());
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    EXPECT_TRUE((*j)->replay([](const std::string&) { return Status::ok(); }).is_ok());
    auto ids = HighWaterMark::open((dir_ / "job_ids").string());
    EXPECT_TRUE(ids.is_ok()) << ids.status().to_string();
    return std::make_unique<JournalWriter>(std::move(j).value(), std::move(ids).value(),
                                           std::move(options));
  }
  std::vector<std::string> replay_all() {
    auto j = Journal::open(dir_.string());
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    std::vector<std::string> out;
    Status s = (*j)->replay([&](const std::string& p) {
      out.push_back(p);
      return Status::ok();
    });
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    return out;
  }

  fs::path dir_;
};

TEST_F(JournalWriterTest, QueuedRecordsAreOnDiskAfterSyncInOrder) {
  auto w = open_writer();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(w->append("record-" + std::to_string(i)).is_ok());
  EXPECT_EQ(w->record_count(), 100u);
  ASSERT_TRUE(w->sync().is_ok());
  JournalWriterStats st = w->stats();
  EXPECT_EQ(st.records_written, 100u);
  EXPECT_GE(st.commits, 1u);
  w.reset();
  std::vector<std::string> got = replay_all();
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i], "record-" + std::to_string(i));
}

TEST_F(JournalWriterTest, RecordsQueuedDuringACommitShareTheNextOne) {
  Gate gate;
  bool first = true;
  JournalWriterOptions o;
  o.before_commit = [&] {
    if (first) {
      first = false;
      gate.enter();
    }
  };
  auto w = open_writer(o);
  ASSERT_TRUE(w->append("first").is_ok());
  gate.wait_entered(1);  // the committer holds the first batch
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(w->append("t" + std::to_string(t) + "-" + std::to_string(i)).is_ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  gate.release();
  ASSERT_TRUE(w->sync().is_ok());
  JournalWriterStats st = w->stats();
  EXPECT_EQ(st.commits, 2u) << "81 records, two fdatasyncs";
  EXPECT_EQ(st.records_written, 81u);
  w.reset();
  EXPECT_EQ(replay_all().size(), 81u);
}

TEST_F(JournalWriterTest, ARewriteReplacesWhatWasQueuedBeforeIt) {
  Gate gate;
  JournalWriterOptions o;
  o.before_commit = [&] { gate.enter(); };
  auto w = open_writer(o);
  ASSERT_TRUE(w->append("a").is_ok());
  gate.wait_entered(1);
  ASSERT_TRUE(w->append("b").is_ok());
  ASSERT_TRUE(w->rewrite({"x", "y"}).is_ok());
  ASSERT_TRUE(w->append("c").is_ok());
  EXPECT_EQ(w->record_count(), 3u) << "the snapshot and what follows it";
  gate.release();
  ASSERT_TRUE(w->sync().is_ok());
  EXPECT_EQ(w->stats().rewrites, 1u);
  w.reset();
  EXPECT_EQ(replay_all(), (std::vector<std::string>{"x", "y", "c"}));
}

TEST_F(JournalWriterTest, TheJobIdMarkIsDurableAfterSync) {
  auto w = open_writer();
  w->advance_job_ids(41);
  w->advance_job_ids(7);  // never goes back
  ASSERT_TRUE(w->sync().is_ok());
  w.reset();
  auto v = HighWaterMark::read((dir_ / "job_ids").string());
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(*v, 41u);
}

TEST_F(JournalWriterTest, AnOversizedRecordIsRefusedWhenQueuedNotWhenWritten) {
  auto w = open_writer();
  EXPECT_EQ(w->append("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w->append(std::string(kJournalMaxRecordBytes + 1, 'x')).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(w->append("fine").is_ok());
  ASSERT_TRUE(w->sync().is_ok());
  EXPECT_TRUE(w->health().is_ok());
}

// A write that fails (here the file-size limit, EFBIG) fails every waiter and every later
// change; the file keeps exactly the batches that were acknowledged.
TEST_F(JournalWriterTest, AFailedCommitIsFinalAndLosesNothingAcknowledged) {
  auto w = open_writer();
  ASSERT_TRUE(w->append("acknowledged").is_ok());
  ASSERT_TRUE(w->sync().is_ok());
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto previous = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(fs::file_size(dir_ / "journal.log") + 16);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
  ASSERT_TRUE(w->append(std::string(4096, 'y')).is_ok());
  Status s = w->sync();
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
  ::signal(SIGXFSZ, previous);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.to_string();
  EXPECT_NE(s.message().find("journal.log"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("restart"), std::string::npos) << s.message();
  EXPECT_EQ(w->append("later").code(), StatusCode::kUnavailable);
  EXPECT_EQ(w->sync().code(), StatusCode::kUnavailable);
  EXPECT_EQ(w->health().code(), StatusCode::kUnavailable);
  w.reset();
  EXPECT_EQ(replay_all(), (std::vector<std::string>{"acknowledged"}));
}

TEST_F(JournalWriterTest, StopsAfterWritingWhatIsQueued) {
  {
    auto w = open_writer();
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(w->append("r" + std::to_string(i)).is_ok());
  }  // no sync: the destructor writes the queue
  EXPECT_EQ(replay_all().size(), 20u);
}

TEST(JournalLockDeathTest, JournalIoUnderTheCoreMutexAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const fs::path dir =
      fs::temp_directory_path() / ("tern_journal_lock_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_DEATH(
      {
        auto j = Journal::open(dir.string());
        if (!j.is_ok() || !(*j)->replay([](const std::string&) { return Status::ok(); }).is_ok())
          std::abort();
        std::mutex mu;
        CoreLock lock(mu);
        static_cast<void>((*j)->append("under the lock"));
      },
      "Journal::append_batch called with the coordinator's mutex held");
  EXPECT_DEATH(
      {
        auto ids = HighWaterMark::open((dir / "ids").string());
        std::mutex mu;
        CoreLock lock(mu);
        static_cast<void>((*ids)->advance(5));
      },
      "HighWaterMark::advance called with the coordinator's mutex held");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tern
