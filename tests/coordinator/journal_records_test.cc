// coordinator/journal_records.h: a job record keeps its spec words (placement, recovery mode)
// across encode/decode, and a record with a word no coordinator writes is refused as
// DATA_LOSS naming the field, never loaded with a default.
#include "coordinator/journal_records.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace tern {
namespace {

Job sample_job() {
  Job j;
  j.id = "j-7";
  j.seq = 7;
  j.name = "demo";
  j.world = 3;
  j.placement = PlacementPolicy::kSpread;
  j.recovery_mode = RecoveryMode::kPartial;
  j.min_workers = 2;
  return j;
}

TEST(JournalRecords, SpecWordsRoundTrip) {
  for (PlacementPolicy p :
       {PlacementPolicy::kAny, PlacementPolicy::kSpread, PlacementPolicy::kPack}) {
    for (RecoveryMode m : {RecoveryMode::kNone, RecoveryMode::kFull, RecoveryMode::kPartial}) {
      Job j = sample_job();
      j.placement = p;
      j.recovery_mode = m;
      const std::string payload = encode_job_record(j);
      EXPECT_NE(payload.find("\"placement\":\"" + name_of(p) + "\""), std::string::npos) << payload;
      std::optional<Job> job;
      std::optional<Worker> worker;
      ASSERT_TRUE(decode_journal_record(payload, &job, &worker).is_ok());
      ASSERT_TRUE(job.has_value());
      EXPECT_EQ(job->placement, p);
      EXPECT_EQ(job->recovery_mode, m);
      EXPECT_EQ(job->elastic(), m == RecoveryMode::kPartial);
    }
  }
}

TEST(JournalRecords, OlderRecordsWithoutTheWordsTakeTheDefaults) {
  nlohmann::json j = nlohmann::json::parse(encode_job_record(sample_job()));
  j.erase("placement");
  j.erase("recovery_mode");
  std::optional<Job> job;
  std::optional<Worker> worker;
  ASSERT_TRUE(decode_journal_record(j.dump(), &job, &worker).is_ok());
  EXPECT_EQ(job->placement, PlacementPolicy::kAny);
  EXPECT_EQ(job->recovery_mode, RecoveryMode::kNone);
}

TEST(JournalRecords, AnUnknownWordIsDataLossNamingTheField) {
  for (const char* field : {"placement", "recovery_mode"}) {
    for (const nlohmann::json& value :
         {nlohmann::json("diagonal"), nlohmann::json(3), nlohmann::json(nullptr)}) {
      nlohmann::json j = nlohmann::json::parse(encode_job_record(sample_job()));
      j[field] = value;
      std::optional<Job> job;
      std::optional<Worker> worker;
      Status s = decode_journal_record(j.dump(), &job, &worker);
      EXPECT_EQ(s.code(), StatusCode::kDataLoss) << field << " " << value.dump();
      if (value.is_string()) {
        EXPECT_NE(s.message().find(std::string("'") + field + "'"), std::string::npos)
            << s.message();
      }
    }
  }
}

}  // namespace
}  // namespace tern
