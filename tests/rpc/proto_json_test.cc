// rpc/proto_json: the one JSON style of every --json output.
#include "rpc/proto_json.h"

#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include "tern/v1/coordinator.pb.h"
#include "tern/v1/types.pb.h"

namespace tern {
namespace {

TEST(ProtoJson, EnumsByShortNameIntegersAsNumbersTimestampsAsText) {
  v1::JobStatus j;
  j.set_job_id("j-7");
  j.set_state(v1::JOB_STATE_SUCCEEDED);
  j.set_step(int64_t{1} << 40);
  j.set_total_steps(1407);
  j.set_generation(3);
  j.set_test_accuracy(0.875);
  (*j.mutable_summary())["wall_s"] = 12.5;
  auto* r = j.add_ranks();
  r->set_rank(1);
  r->set_state(v1::RANK_STATE_STOPPED);
  *j.mutable_created_at() = google::protobuf::util::TimeUtil::SecondsToTimestamp(1796091204);
  nlohmann::json out = proto_to_json(j);
  EXPECT_EQ(out["state"], "SUCCEEDED");
  EXPECT_TRUE(out["step"].is_number_integer());
  EXPECT_EQ(out["step"].get<int64_t>(), int64_t{1} << 40);
  EXPECT_EQ(out["generation"], 3);
  EXPECT_DOUBLE_EQ(out["test_accuracy"].get<double>(), 0.875);
  EXPECT_DOUBLE_EQ(out["summary"]["wall_s"].get<double>(), 12.5);
  EXPECT_EQ(out["ranks"][0]["state"], "STOPPED");
  EXPECT_EQ(out["ranks"][0]["rank"], 1);
  EXPECT_EQ(out["created_at"], "2026-12-01T02:13:24Z");
  // Defaults are printed; unset `optional` and message fields are left out.
  EXPECT_EQ(out["reason"], "");
  EXPECT_FALSE(out.contains("checkpoint_step"));
  EXPECT_FALSE(out.contains("finished_at"));
  EXPECT_EQ(out["ranks"][0]["metrics"], nlohmann::json::object());
}

TEST(ProtoJson, ShortEnumNamesForEveryEnumAndUnknownNumbers) {
  EXPECT_EQ(short_enum_name(*v1::WorkerState_descriptor(), v1::WORKER_STATE_READY), "READY");
  EXPECT_EQ(short_enum_name(*v1::JobState_descriptor(), v1::JOB_STATE_UNSPECIFIED), "UNSPECIFIED");
  EXPECT_EQ(short_enum_name(*v1::RankState_descriptor(), 99), "99")
      << "a number the type does not know";
  v1::JobStatus j;
  j.set_state(static_cast<v1::JobState>(42));  // open enums keep unknown values
  EXPECT_EQ(proto_to_json(j)["state"], "42");
}

TEST(ProtoJson, InvalidUtf8FromAPeerPrintsInsteadOfThrowing) {
  nlohmann::json j{{"line", std::string("ok \xff\xfe tail")}};
  std::string out;
  ASSERT_NO_THROW(out = dump_json(j));
  EXPECT_NE(out.find("tail"), std::string::npos);
  EXPECT_EQ(out.find('\n'), std::string::npos) << "one line";
}

}  // namespace
}  // namespace tern
