// common/spec_enums.h: every word parses to its value and back, and the job spec's parser takes
// exactly those words (a word added to an enum but not to the parser, or the other way round,
// fails here).
#include "common/spec_enums.h"

#include <gtest/gtest.h>

#include <string>

#include "common/job_spec.h"
#include "testing/specs.h"

namespace tern {
namespace {

template <class E>
void expect_round_trip() {
  for (std::size_t i = 0; i < SpecEnum<E>::kCount; ++i) {
    const E value = static_cast<E>(i);
    E parsed{};
    ASSERT_TRUE(parse_spec_enum(name_of(value), &parsed)) << name_of(value);
    EXPECT_EQ(parsed, value);
  }
  E untouched = static_cast<E>(0);
  EXPECT_FALSE(parse_spec_enum("no-such-word", &untouched));
  EXPECT_EQ(untouched, static_cast<E>(0));
  EXPECT_EQ(name_of(static_cast<E>(SpecEnum<E>::kCount)), "?");
}

TEST(SpecEnums, EveryWordRoundTrips) {
  expect_round_trip<ModelType>();
  expect_round_trip<LossKind>();
  expect_round_trip<EvalMetric>();
  expect_round_trip<EmbeddingSharding>();
  expect_round_trip<DataSource>();
  expect_round_trip<TokenDtype>();
  expect_round_trip<OnMalformed>();
  expect_round_trip<EmbeddingNoise>();
  expect_round_trip<PerSampleGrad>();
  expect_round_trip<LrScheduleKind>();
  expect_round_trip<OptimizerKind>();
  expect_round_trip<OnNonFinite>();
  expect_round_trip<StrategyKind>();
  expect_round_trip<OnMismatch>();
  expect_round_trip<CompressMethod>();
  expect_round_trip<StragglerMode>();
  expect_round_trip<RecoveryMode>();
  expect_round_trip<RowPolicy>();
  expect_round_trip<IntervalPolicy>();
  expect_round_trip<DeviceKind>();
  expect_round_trip<PlacementPolicy>();
}

// The parser lists exactly the enum's words in its error, in order.
template <class E>
void expect_parser_words(const std::string& field) {
  std::string all;
  for (const char* w : SpecEnum<E>::kWords) all += (all.empty() ? "" : ", ") + std::string(w);
  auto r = load_job_spec_text(testing_specs::kMinimalSpec, "job.yaml", {field + "=not_a_word"});
  ASSERT_FALSE(r.is_ok()) << field;
  EXPECT_NE(r.status().message().find(field + " must be one of [" + all + "], got 'not_a_word'"),
            std::string::npos)
      << r.status().message();
}

TEST(SpecEnums, TheParserTakesTheEnumsWords) {
  expect_parser_words<ModelType>("model.type");
  expect_parser_words<LossKind>("model.loss");
  expect_parser_words<EmbeddingSharding>("model.sharding");
  expect_parser_words<DataSource>("data.source");
  expect_parser_words<TokenDtype>("data.token_dtype");
  expect_parser_words<OnMalformed>("data.malformed");
  expect_parser_words<LrScheduleKind>("train.lr_schedule");
  expect_parser_words<OptimizerKind>("train.optimizer");
  expect_parser_words<OnNonFinite>("train.on_nonfinite");
  expect_parser_words<StrategyKind>("sync.strategy");
  expect_parser_words<OnMismatch>("sync.on_mismatch");
  expect_parser_words<CompressMethod>("compress.method");
  expect_parser_words<StragglerMode>("straggler.mode");
  expect_parser_words<RecoveryMode>("recovery.mode");
  expect_parser_words<RowPolicy>("recovery.policy");
  expect_parser_words<IntervalPolicy>("recovery.interval");
  expect_parser_words<DeviceKind>("device");
  expect_parser_words<PlacementPolicy>("placement");
}

TEST(SpecEnums, ParsedSpecsCarryTheValues) {
  auto r = load_job_spec_text(
      testing_specs::kMinimalSpec, "job.yaml",
      {"sync.strategy=dts", "sync.delay=1", "sync.period=4", "compress.method=int8",
       "placement=spread", "train.optimizer=adamw", "train.momentum=0"});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->spec.sync.strategy, StrategyKind::kDts);
  EXPECT_EQ(r->spec.compress.method, CompressMethod::kInt8);
  EXPECT_EQ(r->spec.placement, PlacementPolicy::kSpread);
  EXPECT_EQ(r->spec.train.optimizer, OptimizerKind::kAdamw);
  EXPECT_EQ(r->spec.recovery.mode, RecoveryMode::kNone);  // the default
}

TEST(SpecEnums, MetricsAreAListOfKnownWords) {
  auto ok = load_job_spec_text(testing_specs::kMinimalSpec, "job.yaml",
                               {"model.metrics=[loss, accuracy]"});
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(ok->spec.model.metrics,
            (std::vector<EvalMetric>{EvalMetric::kLoss, EvalMetric::kAccuracy}));
  auto bad =
      load_job_spec_text(testing_specs::kMinimalSpec, "job.yaml", {"model.metrics=[loss, bleu]"});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("model.metrics"), std::string::npos)
      << bad.status().message();
  EXPECT_NE(bad.status().message().find("unknown 'bleu' (accuracy, loss, perplexity, auc)"),
            std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace tern
