// Journal: durable append, replay, torn tails, checksum corruption, compaction, locking.
#include "coordinator/journal.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tern {
namespace {

namespace fs = std::filesystem;

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_journal_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> replay_all(Status* status, JournalReplayStats* stats = nullptr) {
    auto j = Journal::open(dir_.string());
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    std::vector<std::string> out;
    *status = (*j)->replay(
        [&](const std::string& p) {
          out.push_back(p);
          return Status::ok();
        },
        stats);
    return out;
  }
  void write_raw(const std::string& bytes) {
    fs::create_directories(dir_);
    std::ofstream(dir_ / "journal.log", std::ios::binary | std::ios::trunc) << bytes;
  }
  std::string read_raw() {
    std::ifstream in(dir_ / "journal.log", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
};

TEST(Crc32, KnownVector) {
  EXPECT_EQ(crc32_ieee("123456789", 9), 0xCBF43926u);  // the standard check value
  EXPECT_EQ(crc32_ieee("", 0), 0u);
}

TEST_F(JournalTest, AppendedRecordsReplayInOrder) {
  {
    auto j = Journal::open(dir_.string());
    ASSERT_TRUE(j.is_ok());
    ASSERT_TRUE((*j)->replay([](const std::string&) { return Status::ok(); }).is_ok());
    ASSERT_TRUE((*j)->append("one").is_ok());
    ASSERT_TRUE((*j)->append(std::string("t\0wo", 4)).is_ok());
    ASSERT_TRUE((*j)->append("").is_ok());
    EXPECT_EQ((*j)->record_count(), 3u);
  }
  Status s;
  JournalReplayStats stats;
  auto records = replay_all(&s, &stats);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(records, (std::vector<std::string>{"one", std::string("t\0wo", 4), ""}));
  EXPECT_FALSE(stats.torn_tail);
}

TEST_F(JournalTest, AppendBeforeReplayIsRefused) {
  auto j = Journal::open(dir_.string());
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)->append("x").code(), StatusCode::kFailedPrecondition);
}

TEST_F(JournalTest, TornLastRecordIsDroppedAndTruncated) {
  std::string good = Journal::frame("first") + Journal::frame("second");
  std::string torn = Journal::frame("third-record-payload");
  for (size_t cut :
       {size_t{3}, size_t{8}, torn.size() - 1}) {  // short header, header only, short payload
    write_raw(good + torn.substr(0, cut));
    Status s;
    JournalReplayStats stats;
    auto records = replay_all(&s, &stats);
    ASSERT_TRUE(s.is_ok()) << "cut " << cut << ": " << s.to_string();
    EXPECT_EQ(records, (std::vector<std::string>{"first", "second"})) << "cut " << cut;
    EXPECT_TRUE(stats.torn_tail);
    EXPECT_EQ(read_raw(), good) << "the torn bytes are truncated away";
  }
}

TEST_F(JournalTest, AppendAfterTornTailContinuesCleanly) {
  write_raw(Journal::frame("a") + Journal::frame("bbbbbb").substr(0, 10));
  {
    auto j = Journal::open(dir_.string());
    ASSERT_TRUE(j.is_ok());
    ASSERT_TRUE((*j)->replay([](const std::string&) { return Status::ok(); }).is_ok());
    ASSERT_TRUE((*j)->append("c").is_ok());
  }
  Status s;
  EXPECT_EQ(replay_all(&s), (std::vector<std::string>{"a", "c"}));
  EXPECT_TRUE(s.is_ok());
}

TEST_F(JournalTest, BadChecksumOnLastRecordIsATornTail) {
  std::string last = Journal::frame("last");
  last[last.size() - 1] ^= 0x55;
  write_raw(Journal::frame("keep") + last);
  Status s;
  JournalReplayStats stats;
  EXPECT_EQ(replay_all(&s, &stats), (std::vector<std::string>{"keep"}));
  EXPECT_TRUE(s.is_ok());
  EXPECT_TRUE(stats.torn_tail);
}

TEST_F(JournalTest, BadChecksumBeforeTheEndIsDataLoss) {
  std::string middle = Journal::frame("middle");
  middle[9] ^= 0x01;  // a flipped bit in the payload
  write_raw(Journal::frame("first") + middle + Journal::frame("after"));
  Status s;
  replay_all(&s);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("record 2"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.message();
}

TEST_F(JournalTest, RewriteReplacesTheJournalAtomically) {
  {
    auto j = Journal::open(dir_.string());
    ASSERT_TRUE(j.is_ok());
    ASSERT_TRUE((*j)->replay([](const std::string&) { return Status::ok(); }).is_ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*j)->append("r" + std::to_string(i)).is_ok());
    ASSERT_TRUE((*j)->rewrite({"compacted-1", "compacted-2"}).is_ok());
    EXPECT_EQ((*j)->record_count(), 2u);
    ASSERT_TRUE((*j)->append("after").is_ok());
  }
  EXPECT_FALSE(fs::exists(dir_ / "journal.log.compact"));
  Status s;
  EXPECT_EQ(replay_all(&s), (std::vector<std::string>{"compacted-1", "compacted-2", "after"}));
}

TEST_F(JournalTest, SecondOpenIsRefusedWhileLocked) {
  auto first = Journal::open(dir_.string());
  ASSERT_TRUE(first.is_ok());
  auto second = Journal::open(dir_.string());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  first = Status(StatusCode::kCancelled, "released");
  EXPECT_TRUE(Journal::open(dir_.string()).is_ok()) << "the lock goes with the Journal";
}

}  // namespace
}  // namespace tern
