// Journal: durable append, replay, torn tails vs corruption (at every offset), sequence
// numbers, format 1, compaction, repair, the high-water mark, locking.
#include "coordinator/journal.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../fuzz/journal_invariant.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using journal_check::Built;

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
  std::string read_raw(const std::string& name = "journal.log") {
    std::ifstream in(dir_ / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string path() const { return (dir_ / "journal.log").string(); }

  fs::path dir_;
};

// A small journal of acknowledged records (letters only, see journal_invariant.h).
Built small_journal() { return journal_check::build({"alpha", "bravo-charlie", "d", "echo-fox"}); }

void expect_corruption(const Status& s, const std::string& path, const std::string& where) {
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  EXPECT_EQ(s.message().rfind(path + ": ", 0), 0u) << "names the file: " << s.message();
  EXPECT_NE(s.message().find(where), std::string::npos) << "names " << where << ": " << s.message();
  EXPECT_NE(s.message().find("tern coordinator --repair"), std::string::npos)
      << "gives the way out: " << s.message();
}

TEST(Crc32, KnownVector) {
  EXPECT_EQ(crc32_ieee("123456789", 9), 0xCBF43926u);  // the standard check value
  EXPECT_EQ(crc32_ieee("", 0), 0u);
  EXPECT_EQ(crc32_extend(crc32_ieee("1234", 4), "56789", 5), 0xCBF43926u);
}

TEST(JournalFormat, OlderCoordinatorsRefuseFormat2) {
  // The file header is a format-1 record whose payload is not JSON: a format-1 reader hands
  // it to the coordinator, which refuses it, instead of taking it for a torn tail.
  EXPECT_EQ(Journal::file_header(), Journal::frame_v1("tern-journal-v2\n"));
  EXPECT_EQ(Journal::file_header().size(), 24u);
}

TEST_F(JournalTest, AppendedRecordsReplayInOrder) {
  {
    auto j = Journal::open(dir_.string());
    ASSERT_TRUE(j.is_ok());
    ASSERT_TRUE((*j)->replay([](const std::string&) { return Status::ok(); }).is_ok());
    ASSERT_TRUE((*j)->append("one").is_ok());
    ASSERT_TRUE((*j)->append(std::string("t\0wo", 4)).is_ok());
    ASSERT_TRUE((*j)->append("three").is_ok());
    EXPECT_EQ((*j)->record_count(), 3u);
  }
  EXPECT_EQ(read_raw(), journal_image({"one", std::string("t\0wo", 4), "three"}))
      << "header, then frames numbered from 1";
  Status s;
  JournalReplayStats stats;
  auto records = replay_all(&s, &stats);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(records, (std::vector<std::string>{"one", std::string("t\0wo", 4), "three"}));
  EXPECT_FALSE(stats.torn_tail);
  EXPECT_EQ(stats.version, 2);
}

TEST_F(JournalTest, EmptyRecordsDoNotExist) {
  auto j = Journal::open(dir_.string());
  ASSERT_TRUE(j.is_ok());
  ASSERT_TRUE((*j)->replay([](const std::string&) { return Status::ok(); }).is_ok());
  EXPECT_EQ((*j)->append("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*j)->rewrite({"x", ""}).code(), StatusCode::kInvalidArgument);
}

TEST_F(JournalTest, AppendBeforeReplayIsRefused) {
  auto j = Journal::open(dir_.string());
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)->append("x").code(), StatusCode::kFailedPrecondition);
}

TEST_F(JournalTest, TornLastRecordIsDroppedAndTruncated) {
  const std::string good = journal_image({"first", "second"});
  const std::string torn = Journal::frame("third-record-payload", 3);
  for (size_t cut = 1; cut < torn.size(); ++cut) {  // short header, header only, short payload
    write_raw(good + torn.substr(0, cut));
    Status s;
    JournalReplayStats stats;
    auto records = replay_all(&s, &stats);
    ASSERT_TRUE(s.is_ok()) << "cut " << cut << ": " << s.to_string();
    EXPECT_EQ(records, (std::vector<std::string>{"first", "second"})) << "cut " << cut;
    EXPECT_TRUE(stats.torn_tail);
    EXPECT_EQ(stats.torn_bytes, cut);
    EXPECT_EQ(read_raw(), good) << "the torn bytes are truncated away";
  }
}

TEST_F(JournalTest, AppendAfterTornTailContinuesCleanly) {
  write_raw(journal_image({"a"}) + Journal::frame("bbbbbb", 2).substr(0, 22));
  {
    auto j = Journal::open(dir_.string());
    ASSERT_TRUE(j.is_ok());
    ASSERT_TRUE((*j)->replay([](const std::string&) { return Status::ok(); }).is_ok());
    ASSERT_TRUE((*j)->append("c").is_ok());
  }
  Status s;
  EXPECT_EQ(replay_all(&s), (std::vector<std::string>{"a", "c"}));
  EXPECT_TRUE(s.is_ok());
  EXPECT_EQ(read_raw(), journal_image({"a", "c"})) << "c got sequence number 2";
}

// Issue 18 item 2: a flipped bit in the last complete record dropped that job silently.
TEST_F(JournalTest, BadChecksumOnTheLastRecordIsCorruptionNotATornTail) {
  const std::string head = journal_image({"keep"});
  std::string last = Journal::frame("last", 2);
  last[last.size() - 1] ^= 0x55;
  write_raw(head + last);
  Status s;
  EXPECT_TRUE(replay_all(&s).empty()) << "nothing is handed over from a damaged journal";
  expect_corruption(s, path(), "record 2 at byte " + std::to_string(head.size()));
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.message();
  EXPECT_EQ(read_raw(), head + last) << "nothing changed on disk";
}

TEST_F(JournalTest, BadChecksumBeforeTheEndIsDataLoss) {
  std::string middle = Journal::frame("middle", 2);
  middle[21] ^= 0x01;  // a flipped bit in the payload
  write_raw(journal_image({"first"}) + middle + Journal::frame("after", 3));
  Status s;
  replay_all(&s);
  expect_corruption(s, path(), "record 2 at byte 49");
}

// Issue 18 item 2: a damaged length in the first record dropped every job and the journal was
// rewritten. Wherever the damaged length points (inside the file, exactly to its end, past
// it, beyond the largest record), it is corruption.
TEST_F(JournalTest, DamagedLengthFieldIsCorruptionWhereverItPoints) {
  const Built b = journal_check::build({"one-record", "two", "three"});
  const size_t first = Journal::file_header().size();
  const uint32_t to_end = static_cast<uint32_t>(b.bytes.size() - first - 20);
  for (uint32_t len : {uint32_t{1}, uint32_t{3}, to_end, to_end + 1, to_end + 1000,
                       kJournalMaxRecordBytes, kJournalMaxRecordBytes + 1, 0xFFFFFFFFu, 0u}) {
    std::string bytes = b.bytes;
    for (int i = 0; i < 4; ++i) bytes[first + i] = static_cast<char>((len >> (8 * i)) & 0xff);
    write_raw(bytes);
    Status s;
    replay_all(&s);
    SCOPED_TRACE("length " + std::to_string(len));
    expect_corruption(s, path(), "record 1 at byte 24");
    EXPECT_EQ(read_raw(), bytes) << "nothing changed on disk";
  }
}

// Issue 18 item 9: a zero-filled tail gave an empty error detail. A zero header used to be a
// valid empty record.
TEST_F(JournalTest, ZeroFilledTailIsCorruptionWithAClearMessage) {
  const std::string good = journal_image({"first", "second"});
  for (size_t zeros : {4, 8, 19, 20, 21, 64, 4096}) {
    write_raw(good + std::string(zeros, '\0'));
    Status s;
    replay_all(&s);
    SCOPED_TRACE(std::to_string(zeros) + " zero bytes");
    expect_corruption(s, path(), "record 3 at byte " + std::to_string(good.size()));
    EXPECT_NE(s.message().find("zero-filled"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("the last " + std::to_string(zeros) + " bytes"), std::string::npos)
        << s.message();
  }
  // Zeros where acknowledged records were (same file size) are corruption too.
  std::string zeroed = good;
  std::fill(zeroed.begin() + 24, zeroed.end(), '\0');
  write_raw(zeroed);
  Status s;
  replay_all(&s);
  expect_corruption(s, path(), "record 1 at byte 24");
  // Fewer than 4 bytes cannot hold a record: the start of a torn append (a length that is a
  // multiple of 256 begins with a zero byte).
  for (size_t zeros : {1, 2, 3}) {
    write_raw(good + std::string(zeros, '\0'));
    JournalReplayStats stats;
    EXPECT_EQ(replay_all(&s, &stats).size(), 2u);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    EXPECT_TRUE(stats.torn_tail);
  }
}

TEST_F(JournalTest, ReorderedDuplicatedOrDroppedRecordsAreCorruption) {
  const std::string h = Journal::file_header();
  const std::string r1 = Journal::frame("one", 1), r2 = Journal::frame("two", 2),
                    r3 = Journal::frame("three", 3);
  struct Case {
    std::string bytes, where;
  } cases[] = {
      {h + r2 + r1 + r3, "record 1 at byte 24"},                                   // reordered
      {h + r1 + r2 + r2 + r3, "record 3 at byte " + std::to_string(24 + 2 * 23)},  // duplicated
      {h + r1 + r3, "record 2 at byte 47"},  // a middle record dropped
      {h + r2 + r3, "record 1 at byte 24"},  // the first dropped
      {h + r1 + r2 + r3 + r1, "record 4 at byte " + std::to_string(24 + 23 * 2 + 25)},
  };
  for (const auto& c : cases) {
    write_raw(c.bytes);
    Status s;
    EXPECT_TRUE(replay_all(&s).empty());
    expect_corruption(s, path(), c.where);
    EXPECT_NE(s.message().find("sequence number"), std::string::npos) << s.message();
  }
}

TEST_F(JournalTest, DamagedFileHeaderIsCorruption) {
  std::string bytes = journal_image({"x"});
  bytes[10] ^= 0x20;
  write_raw(bytes);
  Status s;
  replay_all(&s);
  expect_corruption(s, path(), "file header at byte 0");
  // A torn file header (a crash while the journal was created) holds nothing: it is redone.
  write_raw(Journal::file_header().substr(0, 11));
  JournalReplayStats stats;
  EXPECT_TRUE(replay_all(&s, &stats).empty());
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(read_raw(), Journal::file_header());
}

// Found by journal_fuzz_timed: a format-2 file whose header was damaged, with no intact
// format-2 record left, must not be salvaged as format 1 (a 1-byte payload 0xff "framed" by
// bytes the damage left: CRC-32 of 0xff is 0xff000000). Salvage keeps nothing of it.
TEST_F(JournalTest, SalvageReadsADamagedFormat2HeaderAsFormat2) {
  const unsigned char raw[] = {
      0x11, 0x00, 0x00, 0x00, 0xe0, 0x1a, 0x6b, 0x62, 0x74, 0x65, 0x72, 0x6e, 0x2d, 0x6a, 0x6f,
      0x75, 0x72, 0x6e, 0x61, 0x6c, 0x2d, 0x76, 0x32, 0x0a, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x45, 0xeb, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  const std::string damaged(reinterpret_cast<const char*>(raw), sizeof(raw));
  JournalSalvage salvage = salvage_journal(damaged, "j.log", nullptr);
  EXPECT_EQ(salvage.report.version, 2);
  EXPECT_TRUE(salvage.payloads.empty()) << salvage.payloads.size() << " records kept";
  // The same header damage with an intact record after it: that record is kept.
  std::string with_record = journal_image({"kept"});
  with_record[4] ^= 0x01;  // the header's CRC
  salvage = salvage_journal(with_record, "j.log", nullptr);
  ASSERT_EQ(salvage.payloads.size(), 1u);
  EXPECT_EQ(salvage.payloads[0], "kept");
}

// A frame forged in front of an intact record whose span covers it (here: a valid frame whose
// payload is the record's own frame) must not hide that record from salvage.
TEST_F(JournalTest, SalvageFindsARecordInsideAnotherFramesSpan) {
  const std::string first = Journal::frame("aaaa", 1);
  const std::string second = Journal::frame("bbbb", 2);
  std::string damaged = journal_image({"aaaa"}) + Journal::frame(second, 7);
  damaged[Journal::file_header().size() + 3] ^= 0x40;  // record 1's header: not intact any more
  JournalSalvage salvage = salvage_journal(damaged, "j.log", nullptr);
  bool kept = false;
  for (const auto& p : salvage.payloads) kept = kept || p == "bbbb";
  EXPECT_TRUE(kept) << salvage.payloads.size() << " records kept";
  (void)first;
}

// Every flip, truncation, zeroed range, zero-filled hole, reorder, duplicate and deletion at
// every offset of a small journal keeps the invariant of journal_invariant.h: replay fails
// loudly or returns exactly the intact acknowledged records; salvage keeps every intact one.
TEST_F(JournalTest, ExhaustiveDamageNeverLosesAnAcknowledgedRecordSilently) {
  const Built b = small_journal();
  const std::string& orig = b.bytes;
  size_t cases = 0, refused = 0;
  auto check = [&](const std::string& damaged, const std::string& what) {
    auto scan = scan_journal(damaged, "j.log");
    std::string v = journal_check::check_replay(b, damaged, scan, "j.log");
    ASSERT_EQ(v, "") << what;
    v = journal_check::check_salvage(b, damaged, salvage_journal(damaged, "j.log", nullptr),
                                     "j.log");
    ASSERT_EQ(v, "") << what;
    ++cases;
    refused += !scan.is_ok();
  };
  check(orig, "undamaged");
  for (size_t off = 0; off <= orig.size(); ++off) {
    const std::string at = " at byte " + std::to_string(off);
    // A truncation is a torn append: it must replay (check_replay insists).
    check(orig.substr(0, off), "truncated" + at);
    check(orig.substr(0, off) + std::string(orig.size() - off, '\0'), "zero-filled from" + at);
    for (size_t n : {1, 3, 8, 20}) {
      check(orig.substr(0, off) + std::string(n, '\0') + orig.substr(off),
            std::to_string(n) + " zero bytes inserted" + at);
    }
    if (off == orig.size()) break;
    for (int bit = 0; bit < 8; ++bit) {
      std::string d = orig;
      d[off] ^= static_cast<char>(1 << bit);
      check(d, "bit " + std::to_string(bit) + " flipped" + at);
    }
    for (size_t n : {1, 4, 12, 20}) {
      std::string d = orig;
      for (size_t i = off; i < std::min(orig.size(), off + n); ++i) d[i] = 0;
      check(d, std::to_string(n) + " bytes zeroed" + at);
    }
    for (size_t i = 0; i < b.frames.size(); ++i) {
      check(orig.substr(0, off) + b.frames[i] + orig.substr(off),
            "record " + std::to_string(i + 1) + " duplicated" + at);
    }
    std::string without = orig;
    without.erase(off, 1);
    check(without, "a byte deleted" + at);
  }
  for (size_t i = 0; i < b.frames.size(); ++i) {
    auto [si, ei] = b.ranges[i];
    check(orig.substr(0, si) + orig.substr(ei), "record " + std::to_string(i + 1) + " deleted");
    for (size_t j = i + 1; j < b.frames.size(); ++j) {
      auto [sj, ej] = b.ranges[j];
      check(orig.substr(0, si) + orig.substr(sj, ej - sj) + orig.substr(ei, sj - ei) +
                orig.substr(si, ei - si) + orig.substr(ej),
            "records " + std::to_string(i + 1) + " and " + std::to_string(j + 1) + " swapped");
    }
  }
  EXPECT_GT(cases, 20 * orig.size());
  EXPECT_GT(refused, cases / 2) << "most damage is refused rather than accepted";
}

// The same for truncation through the real file: replay truncates the torn bytes, an append
// continues the sequence, and the next replay returns everything.
TEST_F(JournalTest, TruncationAtEveryOffsetReplaysTruncatesAndAppends) {
  const Built b = small_journal();
  for (size_t off = 0; off <= b.bytes.size(); ++off) {
    SCOPED_TRACE("truncated at byte " + std::to_string(off));
    write_raw(b.bytes.substr(0, off));
    std::vector<std::string> expect;
    for (size_t i = 0; i < b.frames.size(); ++i)
      if (b.ranges[i].second <= off) expect.push_back(b.payloads[i]);
    {
      auto j = Journal::open(dir_.string());
      ASSERT_TRUE(j.is_ok());
      std::vector<std::string> got;
      ASSERT_TRUE((*j)->replay([&](const std::string& p) {
                        got.push_back(p);
                        return Status::ok();
                      })
                      .is_ok());
      EXPECT_EQ(got, expect);
      ASSERT_TRUE((*j)->append("zulu").is_ok());
    }
    expect.push_back("zulu");
    EXPECT_EQ(read_raw(), journal_image(expect));
  }
}

TEST_F(JournalTest, Format1JournalStillReplaysAndIsRewrittenInFormat2) {
  write_raw(Journal::frame_v1("one") + Journal::frame_v1("two") + Journal::frame_v1("three"));
  Status s;
  JournalReplayStats stats;
  EXPECT_EQ(replay_all(&s, &stats), (std::vector<std::string>{"one", "two", "three"}));
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(stats.version, 1);
  EXPECT_EQ(read_raw(), journal_image({"one", "two", "three"}));
  EXPECT_EQ(replay_all(&s, &stats).size(), 3u);
  EXPECT_EQ(stats.version, 2);
}

TEST_F(JournalTest, Format1TornTailAndCorruption) {
  const std::string a = Journal::frame_v1("first"), b = Journal::frame_v1("second");
  const std::string c = Journal::frame_v1("third-record");
  Status s;
  JournalReplayStats stats;
  for (size_t cut = 1; cut < c.size(); ++cut) {  // a torn append
    write_raw(a + b + c.substr(0, cut));
    EXPECT_EQ(replay_all(&s, &stats), (std::vector<std::string>{"first", "second"})) << cut;
    EXPECT_TRUE(s.is_ok()) << cut << ": " << s.to_string();
  }
  std::string bad = c;
  bad.back() ^= 1;
  write_raw(a + b + bad);  // a complete last record that fails its checksum
  replay_all(&s);
  expect_corruption(s, path(), "record 3 at byte " + std::to_string(a.size() + b.size()));
  std::string longer = a;
  longer[0] = 100;  // the first length runs past the end, but intact records follow
  write_raw(longer + b + c);
  replay_all(&s);
  expect_corruption(s, path(), "record 1 at byte 0");
  EXPECT_NE(s.message().find("intact record starts at byte"), std::string::npos) << s.message();
  write_raw(a + std::string(8, '\0'));  // a zero header was a valid empty record
  replay_all(&s);
  expect_corruption(s, path(), "record 2 at byte " + std::to_string(a.size()));
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
  EXPECT_EQ(read_raw(), journal_image({"compacted-1", "compacted-2", "after"}))
      << "sequence numbers start again at 1 in the compacted file";
  Status s;
  EXPECT_EQ(replay_all(&s), (std::vector<std::string>{"compacted-1", "compacted-2", "after"}));
}

TEST_F(JournalTest, ReplayCallbackErrorsNameTheRecordAndOffset) {
  write_raw(journal_image({"good", "bad"}));
  auto j = Journal::open(dir_.string());
  ASSERT_TRUE(j.is_ok());
  Status s = (*j)->replay([](const std::string& p) {
    return p == "bad" ? data_loss("not a journal entry") : Status::ok();
  });
  expect_corruption(s, path(), "record 2 at byte 48: not a journal entry");
}

TEST_F(JournalTest, RepairSalvagesEveryIntactRecordAndKeepsTheDamagedFile) {
  const Built b = journal_check::build({"one", "two", "three", "four", "five"});
  std::string bytes = b.bytes;
  bytes[b.ranges[1].first + 2] ^= 0x10;   // record 2's length
  bytes[b.ranges[3].second - 1] ^= 0x01;  // record 4's payload
  write_raw(bytes);
  auto r = Journal::repair(dir_.string(), JournalRepairOptions{nullptr, 1700000000});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->changed);
  EXPECT_NE(r->problem.find("record 2 at byte " + std::to_string(b.ranges[1].first)),
            std::string::npos)
      << r->problem;
  EXPECT_EQ(r->records_kept, 3u);
  EXPECT_EQ(r->damaged_ranges,
            (std::vector<std::pair<uint64_t, uint64_t>>{b.ranges[1], b.ranges[3]}));
  EXPECT_EQ(r->bytes_lost(),
            (b.ranges[1].second - b.ranges[1].first) + (b.ranges[3].second - b.ranges[3].first));
  EXPECT_EQ(r->missing_sequences, (std::vector<std::pair<uint64_t, uint64_t>>{{2, 2}, {4, 4}}));
  EXPECT_EQ(r->records_known_lost(), 2u);
  EXPECT_EQ(r->damaged_copy, path() + ".damaged-1700000000");
  EXPECT_EQ(read_raw("journal.log.damaged-1700000000"), bytes) << "the damaged file is kept";
  Status s;
  EXPECT_EQ(replay_all(&s), (std::vector<std::string>{"one", "three", "five"}));
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  // Repairing an intact journal changes nothing.
  auto again = Journal::repair(dir_.string(), JournalRepairOptions{nullptr, 1700000001});
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(again->changed);
  EXPECT_EQ(again->records_kept, 3u);
  EXPECT_FALSE(fs::exists(dir_ / "journal.log.damaged-1700000001"));
}

TEST_F(JournalTest, RepairPutsReorderedRecordsBackAndDropsDuplicates) {
  const std::string h = Journal::file_header();
  write_raw(h + Journal::frame("one", 1) + Journal::frame("three", 3) + Journal::frame("two", 2) +
            Journal::frame("two", 2) + Journal::frame("four", 4));
  auto r = Journal::repair(dir_.string(), JournalRepairOptions{nullptr, 5});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->reordered);
  EXPECT_EQ(r->duplicates_dropped, 1u);
  EXPECT_TRUE(r->damaged_ranges.empty());
  Status s;
  EXPECT_EQ(replay_all(&s), (std::vector<std::string>{"one", "two", "three", "four"}));
}

TEST_F(JournalTest, RepairDropsRecordsTheCallerRefusesAndSalvagesFormat1) {
  std::string bytes =
      Journal::frame_v1("keep-1") + Journal::frame_v1("junk") + Journal::frame_v1("keep-2");
  bytes[Journal::frame_v1("keep-1").size() + 9] ^= 1;  // "junk" fails its checksum
  bytes += Journal::frame_v1("refuse-me") + Journal::frame_v1("keep-3");
  write_raw(bytes);
  JournalRepairOptions o;
  o.unix_time = 9;
  o.accept = [](const std::string& p) {
    return p.rfind("keep", 0) == 0 ? Status::ok() : data_loss("not for us");
  };
  auto r = Journal::repair(dir_.string(), o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(r->refused.size(), 1u);
  EXPECT_EQ(r->damaged_ranges.size(), 1u);
  Status s;
  EXPECT_EQ(replay_all(&s), (std::vector<std::string>{"keep-1", "keep-2", "keep-3"}));
}

TEST_F(JournalTest, RepairRefusesWhileTheJournalIsOpen) {
  auto j = Journal::open(dir_.string());
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ(Journal::repair(dir_.string(), {}).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(JournalTest, HighWaterMarkSurvivesATornOrDamagedSlot) {
  fs::create_directories(dir_);
  const std::string p = (dir_ / "ids").string();
  {
    auto m = HighWaterMark::open(p);
    ASSERT_TRUE(m.is_ok());
    EXPECT_EQ((*m)->value(), 0u);
    ASSERT_TRUE((*m)->advance(5).is_ok());
    ASSERT_TRUE((*m)->advance(6).is_ok());
    ASSERT_TRUE((*m)->advance(3).is_ok());  // never goes down
    EXPECT_EQ((*m)->value(), 6u);
  }
  EXPECT_EQ(*HighWaterMark::read(p), 6u);
  std::string bytes = read_raw("ids");
  ASSERT_EQ(bytes.size(), 32u);
  bytes[16 + 6] ^= 1;  // the newer slot (6) is damaged: the older one (5) still reads
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  {
    auto m = HighWaterMark::open(p);
    ASSERT_TRUE(m.is_ok());
    EXPECT_EQ((*m)->value(), 5u);
    ASSERT_TRUE((*m)->advance(7).is_ok());  // rewrites the damaged slot, keeps the other
  }
  EXPECT_EQ(*HighWaterMark::read(p), 7u);
  bytes = read_raw("ids");
  bytes[3] ^= 1;
  bytes[16 + 3] ^= 1;
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  auto m = HighWaterMark::open(p);
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find(p), std::string::npos) << m.status().message();
  ASSERT_TRUE(HighWaterMark::reset(p, 9).is_ok());
  EXPECT_EQ(*HighWaterMark::read(p), 9u);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << std::string("TJ");  // a torn first write
  EXPECT_EQ(*HighWaterMark::read(p), 0u);
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
