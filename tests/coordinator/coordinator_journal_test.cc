// CoordinatorCore over a damaged state directory (issue 18 item 2): a damaged journal stops
// open() with the file, record and offset; CoordinatorCore::repair (`tern coordinator
// --repair`) salvages every intact record; job ids are never reused, not after a repair, a
// torn tail, a lost journal or a lost high-water mark.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "coordinator/coordinator_core.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

std::string spec(const std::string& name) {
  return "name: " + name +
         "\nworkers: 1\ndata: {source: synthetic, train_size: 512, test_size: 128}\n";
}

class CoreJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_core_journal_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    options_.state_dir = dir_.string();
  }
  void TearDown() override {
    core_.reset();
    fs::remove_all(dir_);
  }
  Status reopen() {
    core_.reset();
    auto c = CoordinatorCore::open(options_, &clock_);
    if (!c.is_ok()) return c.status();
    core_ = std::move(c).value();
    return Status::ok();
  }
  std::string submit(const std::string& name) {
    auto j = core_->submit_job(spec(name), {}, name + ".yaml");
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    return j.is_ok() ? j->id : "";
  }
  std::vector<std::string> job_ids() {
    std::vector<std::string> out;
    for (const auto& j : core_->list_jobs()) out.push_back(j.id);
    return out;
  }
  fs::path journal() const { return dir_ / "journal" / "journal.log"; }
  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void write(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  }
  // The journal's records (the file is intact), with their offsets.
  std::vector<JournalRecord> records(std::string* bytes) {
    *bytes = read(journal());
    auto scan = scan_journal(*bytes, journal().string());
    EXPECT_TRUE(scan.is_ok()) << scan.status().to_string();
    return scan.is_ok() ? scan->records : std::vector<JournalRecord>{};
  }

  fs::path dir_;
  ManualClock clock_;
  CoordinatorOptions options_;
  std::unique_ptr<CoordinatorCore> core_;
};

TEST_F(CoreJournalTest, DamagedLastRecordStopsOpenThenRepairSalvagesAndIdsMoveOn) {
  ASSERT_TRUE(reopen().is_ok());
  submit("a");
  submit("b");
  submit("c");  // pending: no workers, so one record per job
  core_.reset();
  std::string bytes;
  auto recs = records(&bytes);
  ASSERT_EQ(recs.size(), 3u);
  const uint64_t last = recs.back().offset;
  bytes[bytes.size() - 3] ^= 0x04;  // a flipped bit in the last job's record
  write(journal(), bytes);

  Status s = reopen();
  ASSERT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  EXPECT_NE(s.message().find(journal().string()), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("record 3 at byte " + std::to_string(last)), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("tern coordinator --repair"), std::string::npos) << s.message();
  EXPECT_EQ(read(journal()), bytes) << "a refused start changes nothing";

  auto r = CoordinatorCore::repair(options_, 1234);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->journal.changed);
  EXPECT_EQ(r->journal.records_kept, 2u);
  EXPECT_EQ(r->journal.damaged_ranges.size(), 1u);
  EXPECT_EQ(r->journal.damaged_ranges[0].first, last);
  EXPECT_EQ(read(r->journal.damaged_copy), bytes);
  EXPECT_EQ(r->last_job_seq, 3) << "j-3 was handed out even though its record is lost";

  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(job_ids(), (std::vector<std::string>{"j-1", "j-2"}));
  EXPECT_EQ(submit("d"), "j-4") << "j-3 is never handed out again";
}

TEST_F(CoreJournalTest, DamagedFirstLengthLosesNothingSilently) {
  ASSERT_TRUE(reopen().is_ok());
  submit("a");
  submit("b");
  core_.reset();
  std::string bytes;
  auto recs = records(&bytes);
  ASSERT_EQ(recs.size(), 2u);
  bytes[recs[0].offset + 1] ^= 0x01;  // the first record's length
  write(journal(), bytes);
  Status s = reopen();
  ASSERT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  EXPECT_NE(s.message().find("record 1 at byte " + std::to_string(recs[0].offset)),
            std::string::npos)
      << s.message();
  EXPECT_EQ(read(journal()), bytes) << "the journal is not rewritten without its jobs";
  auto r = CoordinatorCore::repair(options_, 1);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->journal.records_kept, 1u);
  EXPECT_EQ(r->journal.missing_sequences, (std::vector<std::pair<uint64_t, uint64_t>>{{1, 1}}));
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(job_ids(), (std::vector<std::string>{"j-2"}));
  EXPECT_EQ(submit("c"), "j-3");
}

TEST_F(CoreJournalTest, TornTailIsDroppedAndIdsStayAboveIt) {
  ASSERT_TRUE(reopen().is_ok());
  submit("a");
  submit("b");
  core_.reset();
  std::string bytes = read(journal());
  write(journal(), bytes.substr(0, bytes.size() - 5));  // a crash in the middle of b's append
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_TRUE(core_->replay_stats().torn_tail);
  EXPECT_EQ(job_ids(), (std::vector<std::string>{"j-1"}));
  EXPECT_EQ(submit("c"), "j-3") << "j-2 may have been seen by a client waiting for the reply";
}

TEST_F(CoreJournalTest, JobIdsAreNeverReusedWhenTheJournalIsLost) {
  ASSERT_TRUE(reopen().is_ok());
  submit("a");
  submit("b");
  core_.reset();
  fs::remove(journal());
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_TRUE(job_ids().empty());
  EXPECT_EQ(submit("c"), "j-3");
  // The high-water mark lost as well: the job log directories still count.
  core_.reset();
  fs::remove(journal());
  fs::remove(dir_ / "job_ids");
  fs::create_directories(dir_ / "logs" / "jobs" / "j-7");
  fs::create_directories(dir_ / "logs" / "jobs" / "not-a-job");
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(submit("d"), "j-8");
}

TEST_F(CoreJournalTest, DamagedHighWaterMarkStopsOpenAndRepairRebuildsIt) {
  ASSERT_TRUE(reopen().is_ok());
  submit("a");
  submit("b");
  core_.reset();
  write(dir_ / "job_ids", std::string(32, 'x'));
  Status s = reopen();
  ASSERT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  EXPECT_NE(s.message().find((dir_ / "job_ids").string()), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("tern coordinator --repair"), std::string::npos) << s.message();
  fs::create_directories(dir_ / "logs" / "jobs" / "j-5");
  auto r = CoordinatorCore::repair(options_, 1);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_FALSE(r->journal.changed) << "the journal itself is intact";
  EXPECT_FALSE(r->job_ids_note.empty());
  EXPECT_EQ(r->last_job_seq, 5);
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(submit("c"), "j-6");
}

TEST_F(CoreJournalTest, RecordThatIsNotAJournalEntryIsCorruptionAndRepairDropsIt) {
  ASSERT_TRUE(reopen().is_ok());
  submit("a");
  core_.reset();
  std::string bytes = read(journal());
  for (const std::string& junk :
       {std::string("not json"), std::string("{\"type\":\"job\",\"id\":\"j-9\",\"seq\":\"x\"}"),
        std::string("{\"type\":\"job\",\"id\":7}"), std::string("{\"type\":\"gpu\",\"id\":\"g\"}"),
        std::string(3, '\0')}) {
    write(journal(), bytes + Journal::frame(junk, 2));
    Status s = reopen();
    SCOPED_TRACE(junk);
    ASSERT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
    EXPECT_NE(s.message().find("record 2 at byte " + std::to_string(bytes.size())),
              std::string::npos)
        << s.message();
  }
  auto r = CoordinatorCore::repair(options_, 1);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->journal.refused.size(), 1u);
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(job_ids(), (std::vector<std::string>{"j-1"}));
}

TEST_F(CoreJournalTest, Format1StateDirectoryStillStarts) {
  ASSERT_TRUE(reopen().is_ok());
  submit("a");
  submit("b");
  core_.reset();
  std::string bytes;
  std::string v1;
  for (const auto& r : records(&bytes)) v1 += Journal::frame_v1(std::string(r.payload));
  write(journal(), v1);
  fs::remove(dir_ / "job_ids");  // an old state directory has none
  ASSERT_TRUE(reopen().is_ok());
  EXPECT_EQ(core_->replay_stats().version, 1);
  EXPECT_EQ(job_ids(), (std::vector<std::string>{"j-1", "j-2"}));
  EXPECT_EQ(read(journal()).rfind(Journal::file_header(), 0), 0u) << "rewritten in format 2";
  EXPECT_EQ(submit("c"), "j-3");
}

}  // namespace
}  // namespace tern
