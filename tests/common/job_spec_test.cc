#include "common/job_spec.h"

#include <gtest/gtest.h>

#include "testing/specs.h"

namespace tern {
namespace {

constexpr const char* kGood = testing_specs::kMinimalSpec;

Status load_error(const std::string& text, std::vector<std::string> overrides = {}) {
  auto r = load_job_spec_text(text, "job.yaml", overrides);
  return r.status();
}

TEST(JobSpec, ParsesValidSpecWithDefaults) {
  auto r = load_job_spec_text(kGood, "job.yaml");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.name, "t1");
  EXPECT_EQ(r->spec.workers, 2);
  EXPECT_EQ(r->spec.data.source, DataSource::kSynthetic);
  EXPECT_EQ(r->spec.data.train_size, 256);
  EXPECT_EQ(r->spec.train.epochs, 2);
  EXPECT_DOUBLE_EQ(r->spec.train.lr, 0.1);
  EXPECT_DOUBLE_EQ(r->spec.train.momentum, 0.9);  // default
  EXPECT_EQ(r->spec.sync.strategy, StrategyKind::kSsgd);
}

TEST(JobSpec, EffectiveYamlRoundTrips) {
  auto r = load_job_spec_text(kGood, "job.yaml", {"train.epochs=5"});
  ASSERT_TRUE(r.is_ok());
  auto again = load_job_spec_text(r->yaml, "again.yaml");
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_EQ(again->spec.train.epochs, 5);
}

TEST(JobSpec, OverridesApplyAndCreateSections) {
  auto r = load_job_spec_text(kGood, "job.yaml",
                              {"train.epochs=1", "sync.strategy=dssgd", "sync.delay=3"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.train.epochs, 1);
  EXPECT_EQ(r->spec.sync.strategy, StrategyKind::kDssgd);
  EXPECT_EQ(r->spec.sync.delay, 3);
}

TEST(JobSpec, NegativeValueNamesFileLineAndField) {
  std::string text = kGood;
  text += "recovery: {keep: 0}\n";
  Status s = load_error(text);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("job.yaml:10: recovery.keep must be >= 1, got 0"), std::string::npos)
      << s.message();
}

TEST(JobSpec, MaxRecoveriesDefaultsToThreeAndRefusesNegative) {
  auto r = load_job_spec_text(kGood, "job.yaml", {"recovery.mode=partial"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.recovery.max_recoveries, 3);
  r = load_job_spec_text(kGood, "job.yaml", {"recovery.max_recoveries=0"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.recovery.max_recoveries, 0);
  Status s = load_error(kGood, {"recovery.max_recoveries=-1"});
  EXPECT_NE(s.message().find("recovery.max_recoveries must be >= 0, got -1"), std::string::npos)
      << s.message();
}

// recovery.resume_step (issue 22: `tern submit --resume` pins the journaled committed step).
TEST(JobSpec, ResumeStepNeedsResumeFromAndIsAStepCount) {
  auto r = load_job_spec_text(kGood, "job.yaml",
                              {"recovery.resume_from=/ckpt/j-1", "recovery.resume_step=40"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.recovery.resume_step, 40);
  EXPECT_EQ(load_job_spec_text(kGood, "job.yaml")->spec.recovery.resume_step, 0);
  for (const auto& [value, why] :
       std::vector<std::pair<std::string, std::string>>{{"-1", "recovery.resume_step must be >= 0"},
                                                        {"1.5", "recovery.resume_step"},
                                                        {"ten", "recovery.resume_step"},
                                                        {"", "recovery.resume_step"}}) {
    Status s =
        load_error(kGood, {"recovery.resume_from=/ckpt/j-1", "recovery.resume_step=" + value});
    EXPECT_FALSE(s.is_ok()) << value;
    EXPECT_NE(s.message().find(why), std::string::npos) << value << ": " << s.message();
  }
  Status alone = load_error(kGood, {"recovery.resume_step=5"});
  EXPECT_NE(alone.message().find("recovery.resume_step needs recovery.resume_from"),
            std::string::npos)
      << alone.message();
}

TEST(JobSpec, DebugKillNamesARankAndAStep) {
  auto r = load_job_spec_text(std::string(kGood) + "debug: {kill: {rank: 1, at_step: 40}}\n",
                              "job.yaml");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.debug.kill_rank, 1);
  EXPECT_EQ(r->spec.debug.kill_step, 40);
  EXPECT_NE(load_error(std::string(kGood) + "debug: {kill: {rank: 2, at_step: 4}}\n")
                .message()
                .find("kill.rank must be < workers"),
            std::string::npos);
  EXPECT_NE(load_error(std::string(kGood) + "debug: {kill: {rank: 0, step: 4}}\n")
                .message()
                .find("debug.kill.step is not a known field"),
            std::string::npos);
}

TEST(JobSpec, VerifyEveryOnMismatchAndCorruptAreValidatedNamingTheField) {
  auto d = load_job_spec_text(kGood, "job.yaml");
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_EQ(d->spec.sync.verify_every, 0);  // off by default
  EXPECT_EQ(d->spec.sync.on_mismatch, OnMismatch::kFail);
  EXPECT_EQ(d->spec.debug.corrupt_rank, -1);
  EXPECT_EQ(d->spec.debug.corrupt_step, -1);
  auto r = load_job_spec_text(std::string(kGood) + "debug: {corrupt: {rank: 1, at_step: 40}}\n",
                              "job.yaml", {"sync.verify_every=8", "sync.on_mismatch=majority"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.sync.verify_every, 8);
  EXPECT_EQ(r->spec.sync.on_mismatch, OnMismatch::kMajority);
  EXPECT_EQ(r->spec.debug.corrupt_rank, 1);
  EXPECT_EQ(r->spec.debug.corrupt_step, 40);
  auto again = load_job_spec_text(r->yaml, "again.yaml");  // the effective document round-trips
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_EQ(again->spec.debug.corrupt_step, 40);
  EXPECT_EQ(again->spec.sync.verify_every, 8);

  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"sync.verify_every=-1"}, "job.yaml (--set): sync.verify_every must be >= 0, got -1"},
      {{"sync.verify_every=often"}, "sync.verify_every must be an integer, got 'often'"},
      {{"sync.verify_every=2.5"}, "sync.verify_every must be an integer"},
      {{"sync.verify_every="}, "sync.verify_every"},
      {{"sync.on_mismatch=repair"}, "sync.on_mismatch must be one of"},
      {{"sync.on_mismatch=[fail]"}, "sync.on_mismatch"},
      {{"debug.corrupt={rank: 2, at_step: 4}"}, "debug corrupt.rank (2) must be < workers (2)"},
      {{"debug.corrupt={rank: -1, at_step: 4}"}, "debug.corrupt.rank must be >= 0, got -1"},
      {{"debug.corrupt={rank: 0, at_step: -2}"}, "debug.corrupt.at_step must be >= 0, got -2"},
      {{"debug.corrupt={rank: 0}"}, "debug.corrupt.at_step is required"},
      {{"debug.corrupt={at_step: 3}"}, "debug.corrupt.rank is required"},
      {{"debug.corrupt={rank: 0, step: 4}"}, "debug.corrupt.step is not a known field"},
      {{"debug.corrupt=3"}, "debug.corrupt must be a map"},
  };
  for (const auto& [overrides, want] : bad) {
    Status s = load_error(kGood, overrides);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << overrides[0];
    EXPECT_NE(s.message().find(want), std::string::npos) << overrides[0] << ": " << s.message();
  }
  // In the file, the line is named too.
  Status s = load_error(std::string(kGood) + "debug:\n  corrupt: {rank: 5, at_step: 1}\n");
  EXPECT_NE(s.message().find("job.yaml:"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("corrupt.rank (5) must be < workers (2)"), std::string::npos)
      << s.message();
}

TEST(JobSpec, BadOverrideIsReportedAsOverride) {
  Status s = load_error(kGood, {"sync.delay=-3"});
  EXPECT_NE(s.message().find("job.yaml (--set): sync.delay must be >= 0, got -3"),
            std::string::npos)
      << s.message();
}

TEST(JobSpec, UnknownKeyIsAnError) {
  std::string text = kGood;
  text += "trian: {epochs: 3}\n";
  Status s = load_error(text);
  EXPECT_NE(s.message().find("job.yaml:10: trian is not a known field"), std::string::npos)
      << s.message();
  Status nested = load_error(kGood, {"train.epoch=3"});
  EXPECT_NE(nested.message().find("train.epoch is not a known field"), std::string::npos)
      << nested.message();
}

TEST(JobSpec, MissingNameIsAnError) {
  Status s = load_error("workers: 2\n");
  EXPECT_NE(s.message().find("name is required"), std::string::npos) << s.message();
}

TEST(JobSpec, BadNameCharacters) {
  Status s = load_error(kGood, {"name=a/b"});
  EXPECT_NE(s.message().find("name must be 1-63 characters"), std::string::npos) << s.message();
}

TEST(JobSpec, WrongTypesAreErrors) {
  EXPECT_NE(
      load_error(kGood, {"workers=two"}).message().find("workers must be an integer, got 'two'"),
      std::string::npos);
  EXPECT_NE(load_error(kGood, {"train.lr=fast"}).message().find("train.lr must be a number"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"sync.correction=maybe"})
                .message()
                .find("sync.correction must be true or false"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"train=3"}).message().find("train must be a map"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"debug.slowdown=[1, x]"}).message().find("debug.slowdown[1]"),
            std::string::npos);
}

TEST(JobSpec, EnumListsAllowedValues) {
  Status s = load_error(kGood, {"sync.strategy=gossip"});
  EXPECT_NE(s.message().find(
                "sync.strategy must be one of [ssgd, dssgd, tsu, dts, hierarchical], got 'gossip'"),
            std::string::npos)
      << s.message();
  EXPECT_NE(load_error(kGood, {"model.type=resnet"}).message().find("model.type must be one of"),
            std::string::npos);
  EXPECT_NE(
      load_error(kGood, {"data.source=imagenet"}).message().find("data.source must be one of"),
      std::string::npos);
  EXPECT_NE(
      load_error(kGood, {"compress.method=zip"}).message().find("compress.method must be one of"),
      std::string::npos);
}

TEST(JobSpec, RangeChecksEverySection) {
  EXPECT_NE(load_error(kGood, {"workers=0"}).message().find("workers must be >= 1"),
            std::string::npos);
  EXPECT_NE(
      load_error(kGood, {"train.batch_size=0"}).message().find("train.batch_size must be >= 1"),
      std::string::npos);
  EXPECT_NE(
      load_error(kGood, {"train.momentum=1.5"}).message().find("train.momentum must be <= 0.9999"),
      std::string::npos);
  EXPECT_NE(load_error(kGood, {"sync.period=0"}).message().find("sync.period must be >= 1"),
            std::string::npos);
  EXPECT_NE(
      load_error(kGood, {"compress.density=2"}).message().find("compress.density must be <= 1"),
      std::string::npos);
  EXPECT_NE(load_error(kGood, {"straggler.ewma=-1"}).message().find("straggler.ewma must be >= 0"),
            std::string::npos);
}

TEST(JobSpec, CrossFieldChecks) {
  EXPECT_NE(
      load_error(kGood, {"debug.slowdown=[1, 4, 1]"}).message().find("slowdown has 3 entries"),
      std::string::npos);
  EXPECT_NE(load_error(kGood, {"straggler.mode=gradient_coding", "straggler.s=2"})
                .message()
                .find("straggler s must be < workers"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"straggler.mode=random_code", "straggler.s=2"})
                .message()
                .find("straggler s must be < workers"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"straggler.mode=random_code", "compress.method=gradiveq"})
                .message()
                .find("compress.method gradiveq"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"model.type=dlrm"}).message().find("does not fit data.source"),
            std::string::npos);
}

TEST(JobSpec, CompressionMustFitTheSyncStrategy) {
  EXPECT_NE(load_error(kGood, {"sync.strategy=dts", "compress.method=dgc"})
                .message()
                .find("sends parameter deltas"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"sync.strategy=hierarchical", "compress.method=fp16"})
                .message()
                .find("not supported with sync.strategy hierarchical"),
            std::string::npos);
  EXPECT_TRUE(
      load_job_spec_text(kGood, "job.yaml", {"sync.strategy=tsu", "compress.method=fp16"}).is_ok());
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml",
                                 {"sync.strategy=dts", "sync.delay=2", "compress.method=powersgd"})
                  .is_ok());
  EXPECT_NE(load_error(kGood, {"sync.strategy=dssgd", "sync.delay=2", "compress.method=dgc"})
                .message()
                .find("cannot be combined with sync.strategy dssgd"),
            std::string::npos);
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml",
                                 {"sync.strategy=dssgd", "sync.delay=2", "compress.method=int8"})
                  .is_ok());
}

TEST(JobSpec, OuterOptimizerFragmentsAndAutomaticSync) {
  auto r =
      load_job_spec_text(kGood, "job.yaml",
                         {"sync.strategy=dts", "sync.delay=auto", "sync.period=auto",
                          "sync.fragments=4", "sync.outer={lr: 0.7, momentum: 0.9, nesterov: true}",
                          "sync.auto_wait_share=0.1", "sync.auto_trials=false"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->spec.sync.delay_auto);
  EXPECT_TRUE(r->spec.sync.period_auto);
  EXPECT_EQ(r->spec.sync.fragments, 4);
  EXPECT_DOUBLE_EQ(r->spec.sync.outer.lr, 0.7);
  EXPECT_DOUBLE_EQ(r->spec.sync.outer.momentum, 0.9);
  EXPECT_TRUE(r->spec.sync.outer.nesterov);
  EXPECT_DOUBLE_EQ(r->spec.sync.auto_wait_share, 0.1);
  EXPECT_FALSE(r->spec.sync.auto_trials);
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml",
                                 {"sync.strategy=tsu", "sync.period=8", "sync.outer.lr=0.5"})
                  .is_ok());
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml",
                                 {"sync.strategy=hierarchical", "sync.inter_period=8",
                                  "sync.inter_delay=2", "sync.outer.momentum=0.9"})
                  .is_ok());
  // Defaults: plain averaging, one fragment, fixed d and T.
  auto d = load_job_spec_text(kGood, "job.yaml", {});
  ASSERT_TRUE(d.is_ok());
  EXPECT_TRUE(d->spec.sync.outer.identity());
  EXPECT_FALSE(d->spec.sync.delay_auto || d->spec.sync.period_auto);
  EXPECT_TRUE(d->spec.sync.auto_trials);
  EXPECT_EQ(d->spec.sync.fragments, 1);

  auto err = [](std::vector<std::string> sets, const std::string& want) {
    Status s = load_error(kGood, sets);
    EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
  };
  err({"sync.strategy=dts", "sync.delay=soon"},
      "sync.delay must be an integer or auto, got 'soon'");
  err({"sync.strategy=dts", "sync.period=-2"}, "sync.period must be >= 1");
  err({"sync.strategy=ssgd", "sync.outer.lr=0.7"},
      "applies to pseudo-gradients of tsu, dts and hierarchical");
  err({"sync.strategy=dssgd", "sync.delay=auto"}, "delay: auto needs sync.strategy dts");
  err({"sync.strategy=dts", "sync.delay=auto", "sync.auto_trials=sometimes"}, "sync.auto_trials");
  err({"sync.strategy=ssgd", "sync.period=auto"}, "period: auto needs sync.strategy tsu or dts");
  err({"sync.strategy=dssgd", "sync.fragments=2"},
      "fragments (streaming sync) needs sync.strategy tsu or dts");
  err({"sync.strategy=tsu", "sync.period=4", "sync.fragments=8"},
      "fragments (8) must be <= period (4)");
  err({"sync.strategy=dts", "sync.period=4", "sync.delay=4", "sync.outer.lr=0.7"},
      "delay (4) must be < period (4)");
  err({"sync.strategy=dts", "sync.period=4", "sync.outer.nesterov=true"},
      "outer.nesterov needs outer.momentum > 0");
  err({"sync.strategy=dts", "sync.outer.lr=0"}, "sync.outer.lr must be >=");
  err({"sync.strategy=dts", "sync.outer.momentum=1"}, "sync.outer.momentum must be <=");
  err({"sync.strategy=dts", "sync.outer.beta=1"}, "sync.outer.beta");
  err({"sync.strategy=dts", "sync.fragments=0"}, "sync.fragments must be >= 1");
  // Plain averaging may keep several syncs in flight (d >= T), as before.
  EXPECT_TRUE(
      load_job_spec_text(kGood, "job.yaml", {"sync.strategy=dts", "sync.period=4", "sync.delay=6"})
          .is_ok());
}

TEST(JobSpec, Int4AndTopkParseWithTheirOwnDefaults) {
  auto topk = load_job_spec_text(kGood, "job.yaml", {"compress.method=topk"});
  ASSERT_TRUE(topk.is_ok()) << topk.status().to_string();
  EXPECT_DOUBLE_EQ(topk->spec.compress.density, kTopkDefaultDensity);  // not DGC's
  EXPECT_DOUBLE_EQ(kTopkDefaultDensity, 0.02);
  auto dgc = load_job_spec_text(kGood, "job.yaml", {"compress.method=dgc"});
  ASSERT_TRUE(dgc.is_ok()) << dgc.status().to_string();
  EXPECT_DOUBLE_EQ(dgc->spec.compress.density, CompressSpec{}.density);
  // A density the user sets wins, given before or after the method.
  auto set = load_job_spec_text(std::string(kGood) + "compress: {density: 0.1, method: topk}\n",
                                "job.yaml");
  ASSERT_TRUE(set.is_ok()) << set.status().to_string();
  EXPECT_DOUBLE_EQ(set->spec.compress.density, 0.1);
  // ... and survives the effective YAML's round trip, as does the default.
  for (const auto& r : {*topk, *set}) {
    auto again = load_job_spec_text(r.yaml, "again.yaml");
    ASSERT_TRUE(again.is_ok()) << again.status().to_string();
    EXPECT_DOUBLE_EQ(again->spec.compress.density, r.spec.compress.density);
  }
  auto int4 = load_job_spec_text(kGood, "job.yaml", {"compress.method=int4"});
  ASSERT_TRUE(int4.is_ok()) << int4.status().to_string();
  EXPECT_EQ(int4->spec.compress.block_size, 64);
  EXPECT_TRUE(int4->spec.compress.error_feedback);
  auto b = load_job_spec_text(kGood, "job.yaml", {"compress.method=int4", "compress.block_size=2"});
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->spec.compress.block_size, 2);
  // Both carry parameter deltas (no momentum of their own) and delayed gradients.
  for (const char* m : {"int4", "topk"}) {
    for (auto sync : std::vector<std::vector<std::string>>{
             {"sync.strategy=dts", "sync.delay=2", "sync.period=4"},
             {"sync.strategy=tsu", "sync.period=4"},
             {"sync.strategy=dssgd", "sync.delay=2"}}) {
      sync.push_back(std::string("compress.method=") + m);
      auto r = load_job_spec_text(kGood, "job.yaml", sync);
      EXPECT_TRUE(r.is_ok()) << m << " " << sync[0] << ": " << r.status().to_string();
    }
  }
}

TEST(JobSpec, Int4AndTopkFieldsAreValidated) {
  const std::string text = std::string(kGood) + "compress:\n  method: int4\n  block_size: BS\n";
  auto with_block = [&](const std::string& v) {
    std::string t = text;
    t.replace(t.find("BS"), 2, v);
    return load_error(t).message();
  };
  // The line of the field (line 12 of the file), the dotted name, the value.
  EXPECT_NE(with_block("63").find("job.yaml:12: compress.block_size must be even"),
            std::string::npos)
      << with_block("63");
  EXPECT_NE(with_block("63").find("got 63"), std::string::npos);
  EXPECT_NE(with_block("1").find("compress.block_size must be >= 2, got 1"), std::string::npos)
      << with_block("1");
  EXPECT_NE(with_block("0").find("compress.block_size must be >= 2"), std::string::npos);
  EXPECT_NE(with_block("-64").find("compress.block_size must be >= 2"), std::string::npos);
  EXPECT_NE(with_block("x").find("compress.block_size must be an integer"), std::string::npos);
  EXPECT_NE(with_block("~").find("compress.block_size"), std::string::npos);
  EXPECT_NE(with_block("2097152").find("compress.block_size must be <="), std::string::npos);
  for (const char* bad : {"0", "-0.5", "1.5", ".nan", ".inf", "x", "~"}) {
    Status s = load_error(kGood, {"compress.method=topk", std::string("compress.density=") + bad});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("compress.density"), std::string::npos)
        << bad << ": " << s.message();
  }
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml", {"compress.method=topk", "compress.density=1"})
                  .is_ok());
  EXPECT_NE(load_error(kGood, {"compress.method=topk", "compress.value_bits=8"})
                .message()
                .find("value_bits"),
            std::string::npos);
  // Chunked top-k and the error-feedback decay: each bad combination names its field.
  const std::vector<std::string> chunked = {"compress.method=topk", "compress.chunk_size=256"};
  for (const char* bits : {"32", "16", "8", "4"}) {
    auto with = chunked;
    with.push_back(std::string("compress.value_bits=") + bits);
    EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml", with).is_ok()) << bits;
  }
  auto expect_names = [&](std::vector<std::string> sets, const std::string& want) {
    Status s = load_error(kGood, sets);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << want;
    EXPECT_NE(s.message().find(want), std::string::npos) << want << ": " << s.message();
  };
  expect_names({"compress.method=topk", "compress.chunk_size=256", "compress.value_bits=2"},
               "value_bits");
  expect_names({"compress.method=topk", "compress.value_bits=4"},
               "8 and 4 need method topk with chunk_size");
  expect_names({"compress.method=int4", "compress.chunk_size=256"},
               "chunk_size applies to method topk only");
  expect_names({"compress.method=topk", "compress.chunk_size=1"}, "compress.chunk_size must be 0");
  expect_names({"compress.method=topk", "compress.chunk_size=65537"},
               "compress.chunk_size must be <=");
  expect_names({"compress.method=topk", "compress.chunk_size=-2"}, "compress.chunk_size");
  expect_names({"compress.method=int8", "compress.ef_decay=0.9"},
               "ef_decay applies to methods topk, int4 and gradiveq");
  // GradiVeQ: each bad combination names its field.
  expect_names({"compress.method=gradiveq", "compress.basis_size=64"},
               "basis_size must be < slice_size");
  expect_names({"compress.method=gradiveq", "compress.slice_size=16", "compress.basis_size=16"},
               "basis_size must be < slice_size (16)");
  expect_names({"compress.method=gradiveq", "compress.start_iter=0"},
               "start_iter must be >= 1 for method gradiveq");
  expect_names({"compress.method=gradiveq", "compress.refresh_every=-1"},
               "compress.refresh_every must be >= 0");
  expect_names({"compress.method=gradiveq", "compress.slice_size=1"},
               "compress.slice_size must be >= 2");
  expect_names({"compress.method=gradiveq", "compress.basis_size=0"},
               "compress.basis_size must be >= 1");
  expect_names({"compress.method=gradiveq", "compress.slicing=kernels"}, "compress.slicing");
  for (const char* slicing : {"shaped", "flat", "matrix"}) {
    EXPECT_TRUE(
        load_job_spec_text(kGood, "job.yaml",
                           {"compress.method=gradiveq", std::string("compress.slicing=") + slicing})
            .is_ok())
        << slicing;
  }
  EXPECT_TRUE(load_job_spec_text(
                  kGood, "job.yaml",
                  {"compress.method=gradiveq", "compress.error_feedback=true",
                   "compress.ef_decay=0.9", "compress.slice_size=32", "compress.basis_size=4"})
                  .is_ok());
  // GradiVeQ: each step's own basis (refresh_every 0) with error feedback by default; a periodic
  // basis runs without error feedback unless the spec asks for it (it diverged on the CNN).
  auto gq = load_job_spec_text(kGood, "job.yaml", {"compress.method=gradiveq"});
  ASSERT_TRUE(gq.is_ok()) << gq.status().message();
  EXPECT_EQ(gq->spec.compress.refresh_every, 0);
  EXPECT_EQ(gq->spec.compress.slicing, SliceLayout::kShaped);
  EXPECT_EQ(gq->spec.compress.slice_size, 64);
  auto matrix = load_job_spec_text(kGood, "job.yaml",
                                   {"compress.method=gradiveq", "compress.slicing=matrix"});
  ASSERT_TRUE(matrix.is_ok()) << matrix.status().message();
  EXPECT_EQ(matrix->spec.compress.slice_size, 1024);
  EXPECT_TRUE(matrix->spec.compress.error_feedback);
  auto matrix_d = load_job_spec_text(
      kGood, "job.yaml",
      {"compress.method=gradiveq", "compress.slicing=matrix", "compress.slice_size=256"});
  ASSERT_TRUE(matrix_d.is_ok());
  EXPECT_EQ(matrix_d->spec.compress.slice_size, 256);
  EXPECT_TRUE(gq->spec.compress.error_feedback);
  auto periodic = load_job_spec_text(kGood, "job.yaml",
                                     {"compress.method=gradiveq", "compress.refresh_every=20"});
  ASSERT_TRUE(periodic.is_ok());
  EXPECT_FALSE(periodic->spec.compress.error_feedback);
  auto gq_ef = load_job_spec_text(
      kGood, "job.yaml",
      {"compress.method=gradiveq", "compress.refresh_every=20", "compress.error_feedback=true"});
  ASSERT_TRUE(gq_ef.is_ok());
  EXPECT_TRUE(gq_ef->spec.compress.error_feedback);
  expect_names({"compress.method=topk", "compress.ef_decay=0"}, "ef_decay must be in (0, 1]");
  expect_names({"compress.method=topk", "compress.ef_decay=1.5"}, "compress.ef_decay");
  expect_names({"compress.method=int4", "compress.ef_decay=0.9", "compress.error_feedback=false"},
               "ef_decay needs error_feedback");
  EXPECT_TRUE(
      load_job_spec_text(kGood, "job.yaml", {"compress.method=int4", "compress.ef_decay=0.95"})
          .is_ok());
  EXPECT_NE(load_error(kGood, {"compress.method=int5"}).message().find("int4, topk"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"sync.strategy=hierarchical", "compress.method=topk"})
                .message()
                .find("not supported with sync.strategy hierarchical"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"straggler.mode=backup", "compress.method=int4"})
                .message()
                .find("exchanges dense gradients"),
            std::string::npos);
}

TEST(JobSpec, ReportsAllErrorsAtOnce) {
  Status s = load_error(kGood, {"workers=0", "train.lr=-1"});
  EXPECT_NE(s.message().find("workers"), std::string::npos);
  EXPECT_NE(s.message().find("train.lr"), std::string::npos);
}

TEST(JobSpec, SyntaxErrorNamesLine) {
  Status s = load_error("name: a\nworkers: [1,\n");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("job.yaml:"), std::string::npos);
  EXPECT_NE(s.message().find("YAML syntax error"), std::string::npos) << s.message();
}

TEST(JobSpec, MissingFile) {
  auto r = load_job_spec_file("/nonexistent/job.yaml");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/job.yaml"), std::string::npos);
}

TEST(JobSpec, MalformedOverride) {
  EXPECT_NE(load_error(kGood, {"novalue"}).message().find("expected key.path=value"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"train..lr=1"}).message().find("empty path component"),
            std::string::npos);
  EXPECT_NE(load_error(kGood, {"name.x=1"}).message().find("is not a map"), std::string::npos);
}

TEST(JobSpec, DlrmShapesAreChecked) {
  const std::vector<std::string> dlrm = {"model.type=dlrm", "data.source=synthetic_ctr"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), dlrm.begin(), dlrm.end());
    return load_error(kGood, more).message();
  };
  auto r =
      load_job_spec_text(kGood, "job.yaml",
                         {"model.type=dlrm", "data.source=synthetic_ctr", "model.sharding=balanced",
                          "data.num_tables=3", "data.table_sizes=[10, 20, 30]"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.model.sharding, EmbeddingSharding::kBalanced);
  EXPECT_EQ(r->spec.data.table_sizes.size(), 3u);
  EXPECT_EQ(r->spec.data.holdout_every, 10);
  EXPECT_NE(
      with({"model.bottom_mlp=[64, 8]"}).find("bottom_mlp must end in embedding_dim (16), got 8"),
      std::string::npos);
  EXPECT_NE(with({"model.top_mlp=[64, 2]"}).find("top_mlp must end in 1"), std::string::npos);
  EXPECT_NE(
      with({"data.num_tables=3", "data.table_sizes=[10, 20]"}).find("table_sizes has 2 entries"),
      std::string::npos);
  EXPECT_NE(with({"data.num_tables=2", "data.table_sizes=[10, 2.5]"}).find("whole numbers"),
            std::string::npos);
  EXPECT_NE(with({"data.num_tables=1"}).find("num_tables (1) must be >= workers (2)"),
            std::string::npos);
  EXPECT_NE(with({"model.sharding=random"}).find("model.sharding"), std::string::npos);
}

// Issue 22: the Criteo malformed-line policy (data.malformed skip | fail, and skip's bounds),
// each bad value named by its field and line (or override), and what a criteo source needs.
TEST(JobSpec, CriteoMalformedPolicyIsValidatedByField) {
  auto load = [&](const std::string& data_extra, std::vector<std::string> more = {}) {
    std::string text = kGood;
    text.replace(text.find("model: {type: mlp}"), 18, "model: {type: dlrm}");
    text.replace(text.find("data: {source: synthetic, train_size: 256}"), 42,
                 "data: {source: criteo, path: /data/train.tsv" + data_extra + "}");
    return load_job_spec_text(text, "job.yaml", more);
  };
  auto ok = load("");
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->spec.data.malformed, OnMalformed::kSkip);  // the default
  EXPECT_EQ(ok->spec.data.max_malformed, 1000);
  EXPECT_DOUBLE_EQ(ok->spec.data.max_malformed_fraction, 1.0);
  auto set = load(", malformed: skip, max_malformed: 0, max_malformed_fraction: 0.01");
  ASSERT_TRUE(set.is_ok()) << set.status().to_string();
  EXPECT_EQ(set->spec.data.max_malformed, 0);
  EXPECT_DOUBLE_EQ(set->spec.data.max_malformed_fraction, 0.01);
  auto fail = load(", malformed: fail");
  ASSERT_TRUE(fail.is_ok()) << fail.status().to_string();
  EXPECT_EQ(fail->spec.data.malformed, OnMalformed::kFail);

  auto error = [&](const std::string& data_extra, std::vector<std::string> more = {}) {
    auto r = load(data_extra, std::move(more));
    EXPECT_FALSE(r.is_ok()) << data_extra;
    return r.status().message();
  };
  EXPECT_NE(error(", malformed: drop").find("job.yaml:4: data.malformed must be one of"),
            std::string::npos)
      << error(", malformed: drop");
  EXPECT_NE(error(", max_malformed: -1").find("data.max_malformed must be >= 0, got -1"),
            std::string::npos)
      << error(", max_malformed: -1");
  EXPECT_NE(error(", max_malformed: many").find("data.max_malformed"), std::string::npos);
  EXPECT_NE(error(", max_malformed_fraction: 1.5").find("data.max_malformed_fraction must be <= 1"),
            std::string::npos)
      << error(", max_malformed_fraction: 1.5");
  EXPECT_NE(
      error(", max_malformed_fraction: -0.1").find("data.max_malformed_fraction must be >= 0"),
      std::string::npos);
  // fail leaves the bounds unused rather than refusing them: --set data.malformed=fail works on
  // a template that sets them.
  auto both = load(", max_malformed: 5, max_malformed_fraction: 0.5", {"data.malformed=fail"});
  ASSERT_TRUE(both.is_ok()) << both.status().to_string();
  EXPECT_EQ(both->spec.data.malformed, OnMalformed::kFail);
  // --set is validated the same way, and names the override.
  EXPECT_NE(error("", {"data.malformed=sometimes"}).find("data.malformed"), std::string::npos);
  EXPECT_NE(error("", {"data.max_malformed=-5"}).find("data.max_malformed must be >= 0, got -5"),
            std::string::npos)
      << error("", {"data.max_malformed=-5"});
  // criteo needs a file and 26 tables (one per categorical field).
  EXPECT_NE(error("", {"data.num_tables=8"})
                .find("num_tables (or the entries of table_sizes) must be 26 for source criteo"),
            std::string::npos)
      << error("", {"data.num_tables=8"});
  std::string no_path = kGood;
  no_path.replace(no_path.find("model: {type: mlp}"), 18, "model: {type: dlrm}");
  no_path.replace(no_path.find("data: {source: synthetic, train_size: 256}"), 42,
                  "data: {source: criteo}");
  EXPECT_NE(load_error(no_path).message().find("path must name the Criteo TSV"), std::string::npos)
      << load_error(no_path).message();
}

// Issue 18 items 4 and 6.
TEST(JobSpec, OnNonFiniteDefaultsToFailAndIsAnEnum) {
  auto r = load_job_spec_text(kGood, "job.yaml");
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->spec.train.on_nonfinite, OnNonFinite::kFail);
  r = load_job_spec_text(kGood, "job.yaml", {"train.on_nonfinite=skip_step"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.train.on_nonfinite, OnNonFinite::kSkipStep);
  Status s = load_error(kGood, {"train.on_nonfinite=ignore"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("train.on_nonfinite"), std::string::npos) << s.message();
}

TEST(JobSpec, AbsurdTrainThreadsAreRefused) {
  EXPECT_TRUE(
      load_job_spec_text(kGood, "job.yaml", {"train.threads=" + std::to_string(kMaxTrainThreads)})
          .is_ok());
  for (const char* bad : {"256", "100000", "0", "-1"}) {
    Status s = load_error(kGood, {std::string("train.threads=") + bad});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("train.threads"), std::string::npos) << s.message();
  }
}

TEST(JobSpec, OptimizerDefaultsToSgdAndReadsAdamWFields) {
  auto r = load_job_spec_text(kGood, "job.yaml");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.train.optimizer, OptimizerKind::kSgd);
  EXPECT_EQ(r->spec.train.betas, (std::vector<double>{0.9, 0.999}));
  EXPECT_DOUBLE_EQ(r->spec.train.eps, 1e-8);
  EXPECT_DOUBLE_EQ(r->spec.train.weight_decay, 0.0);
  r = load_job_spec_text(
      kGood, "job.yaml",
      {"train.optimizer=adamw", "train.betas=[0.8, 0.95]", "train.eps=1e-6",
       "train.weight_decay=0.1",
       "train.momentum=0.9"});  // (SGD's momentum, which every template sets, is left alone)
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->spec.train.optimizer, OptimizerKind::kAdamw);
  EXPECT_EQ(r->spec.train.betas, (std::vector<double>{0.8, 0.95}));
  EXPECT_DOUBLE_EQ(r->spec.train.eps, 1e-6);
  EXPECT_DOUBLE_EQ(r->spec.train.weight_decay, 0.1);
  // The edges of the ranges: beta 0 and eps 1 are valid.
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml",
                                 {"train.optimizer=adamw", "train.betas=[0, 0]", "train.eps=1"})
                  .is_ok());
  // The effective YAML carries them.
  auto again = load_job_spec_text(r->yaml, "again.yaml");
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_EQ(again->spec.train.betas, (std::vector<double>{0.8, 0.95}));
}

TEST(JobSpec, BadOptimizerFieldsAreRefusedNamingFileLineAndField) {
  // In a file: the line of the field.
  std::string text = kGood;
  text.replace(text.find("  lr: 0.1\n"), 10,
               "  lr: 0.1\n  optimizer: adamw\n  betas: [0.9, 1]\n  eps: 0\n");
  Status s = load_error(text);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("job.yaml:10: train.betas must be two numbers [beta1, beta2], each in "
                             "[0, 1), got [0.9, 1]"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("job.yaml:11: train.eps must be > 0"), std::string::npos)
      << s.message();

  // Every class of bad value, each named.
  struct Case {
    std::vector<std::string> set;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{"train.optimizer=adam"}, "train.optimizer must be one of [sgd, adamw], got 'adam'"},
      {{"train.optimizer=ADAMW"}, "train.optimizer must be one of"},
      {{"train.optimizer="}, "train.optimizer must be"},  // null
      {{"train.betas=[0.9]"}, "train.betas must be two numbers"},
      {{"train.betas=[]"}, "train.betas must be two numbers"},
      {{"train.betas=[0.9, 0.99, 0.999]"}, "train.betas must be two numbers"},
      {{"train.betas=[1, 0.999]"},
       "train.betas must be two numbers [beta1, beta2], each in [0, 1), got [1, 0.999]"},
      {{"train.betas=[-0.1, 0.9]"}, "train.betas[0] must be a number in [0, 1]"},
      {{"train.betas=[0.9, 2]"}, "train.betas[1] must be a number in [0, 1]"},
      {{"train.betas=[0.9, fast]"}, "train.betas[1] must be a number"},
      {{"train.betas=[.nan, 0.9]"}, "train.betas must be two numbers"},
      {{"train.betas=0.9"}, "train.betas must be a list of numbers"},
      {{"train.betas="}, "train.betas must be a list of numbers, got null"},
      {{"train.eps=0"}, "train.eps must be > 0 (AdamW divides by sqrt(v) + eps), got 0"},
      {{"train.eps=-1e-8"}, "train.eps must be > 0"},
      {{"train.eps=2"}, "train.eps must be <= 1"},
      {{"train.eps=tiny"}, "train.eps must be a number, got 'tiny'"},
      {{"train.eps=.inf"}, "train.eps must be a number"},
      {{"train.optimizer=adamw", "train.nesterov=true"},
       "train.nesterov is SGD's Nesterov momentum"},
      {{"train.optimizer=adamw", "compress.method=dgc"},
       "cannot be combined with train.optimizer adamw"},
      {{"train.optimizer=adamw", "train.weight_decay=-0.1"}, "train.weight_decay must be >= 0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.set.back());
    Status e = load_error(kGood, c.set);
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << e.to_string();
    EXPECT_EQ(e.message().rfind("job.yaml", 0), 0u) << "names the file: " << e.message();
    EXPECT_NE(e.message().find(c.expect), std::string::npos) << e.message();
  }
  // SGD keeps its Nesterov momentum (and DGC) as before.
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml", {"train.nesterov=true"}).is_ok());
  EXPECT_TRUE(load_job_spec_text(kGood, "job.yaml", {"compress.method=dgc"}).is_ok());
}

}  // namespace
}  // namespace tern
