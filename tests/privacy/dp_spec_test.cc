// train.dp in the job spec: defaults, every field's range named with the file, and the
// combinations whose privacy accounting would be wrong refused with the reason.
#include <gtest/gtest.h>

#include "common/job_spec.h"
#include "testing/specs.h"

namespace tern {
namespace {

Result<LoadedJobSpec> load(std::vector<std::string> overrides) {
  return load_job_spec_text(testing_specs::kMinimalSpec, "job.yaml", overrides);
}

TEST(DpSpec, AbsentIsOffPresentTakesDefaultsAndValues) {
  auto off = load({});
  ASSERT_TRUE(off.is_ok()) << off.status().to_string();
  EXPECT_FALSE(off->spec.train.dp.enabled);
  auto on = load({"train.dp.clip=0.5"});
  ASSERT_TRUE(on.is_ok()) << on.status().to_string();
  EXPECT_TRUE(on->spec.train.dp.enabled);
  EXPECT_DOUBLE_EQ(on->spec.train.dp.clip, 0.5);
  EXPECT_DOUBLE_EQ(on->spec.train.dp.noise_multiplier, 1.0);
  EXPECT_DOUBLE_EQ(on->spec.train.dp.delta, 1e-5);
  EXPECT_EQ(on->spec.train.dp.embedding_noise, EmbeddingNoise::kLazy);
  auto all = load({"train.dp.clip=2", "train.dp.noise_multiplier=0.7", "train.dp.delta=1e-6",
                   "train.dp.per_sample=microbatch", "sync.strategy=dssgd", "sync.delay=2"});
  ASSERT_TRUE(all.is_ok()) << all.status().to_string();
  EXPECT_DOUBLE_EQ(all->spec.train.dp.noise_multiplier, 0.7);
  EXPECT_EQ(all->spec.train.dp.per_sample, PerSampleGrad::kMicrobatch);
  // The effective YAML carries it (what trainers get).
  auto again = load_job_spec_text(all->yaml, "again.yaml");
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_DOUBLE_EQ(again->spec.train.dp.delta, 1e-6);
}

TEST(DpSpec, BadFieldsNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train.dp.clip=0", "train.dp.clip must be > 0"},
      {"train.dp.clip=-1", "train.dp.clip"},
      {"train.dp.clip=abc", "train.dp.clip"},
      {"train.dp.noise_multiplier=0", "train.dp.noise_multiplier must be > 0"},
      {"train.dp.noise_multiplier=-2", "train.dp.noise_multiplier"},
      {"train.dp.delta=0", "train.dp.delta must be in (0, 1)"},
      {"train.dp.delta=1", "train.dp.delta must be in (0, 1)"},
      {"train.dp.delta=2", "train.dp.delta"},
      {"train.dp.embedding_noise=sometimes", "train.dp.embedding_noise"},
      {"train.dp.per_sample=fast", "train.dp.per_sample"},
      {"train.dp.sigma=1", "train.dp.sigma"},  // unknown key
  };
  for (const auto& [set, want] : cases) {
    auto r = load({set});
    ASSERT_FALSE(r.is_ok()) << set;
    EXPECT_NE(r.status().message().find("job.yaml"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(want), std::string::npos)
        << set << ": " << r.status().message();
  }
}

TEST(DpSpec, RefusesCombinationsThatBreakTheAccountingWithTheReason) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"sync.strategy=tsu", "sync.period=4"}, "sync.strategy tsu"},
      {{"sync.strategy=dts", "sync.period=4", "sync.delay=1"}, "sync.strategy dts"},
      {{"compress.method=topk"}, "compress.method topk"},
      {{"compress.method=fp16"}, "compress.method fp16"},
      {{"straggler.mode=gradient_coding"}, "straggler.mode gradient_coding"},
      {{"straggler.mode=proportional"}, "straggler.mode proportional"},
  };
  for (const auto& [sets, want] : cases) {
    std::vector<std::string> o = sets;
    o.push_back("train.dp.clip=1");
    auto r = load(o);
    ASSERT_FALSE(r.is_ok()) << sets[0];
    EXPECT_NE(r.status().message().find("dp"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(want), std::string::npos)
        << sets[0] << ": " << r.status().message();
    // And without dp the same spec is fine (the refusal is dp's).
    auto plain = load(sets);
    EXPECT_TRUE(plain.is_ok()) << sets[0] << ": " << plain.status().to_string();
  }
}

TEST(DpSpec, StreamedCtrDataAndTorchScriptAreRefused) {
  auto criteo = load_job_spec_text(R"(name: t
workers: 2
model: {type: dlrm}
data: {source: criteo, path: /nonexistent.tsv}
train: {dp: {clip: 1}}
)",
                                   "job.yaml");
  ASSERT_FALSE(criteo.is_ok());
  EXPECT_NE(criteo.status().message().find("stream"), std::string::npos)
      << criteo.status().message();
  auto ctr = load_job_spec_text(R"(name: t
workers: 2
model: {type: dlrm}
data: {source: synthetic_ctr, num_tables: 4, table_size: 100}
train: {dp: {clip: 1, embedding_noise: eager}}
)",
                                "job.yaml");
  EXPECT_TRUE(ctr.is_ok()) << ctr.status().to_string();
  auto ts = load_job_spec_text(R"(name: t
workers: 1
model: {type: torchscript, path: /m.pt}
data: {source: synthetic}
train: {dp: {clip: 1}}
)",
                               "job.yaml");
  ASSERT_FALSE(ts.is_ok());
  EXPECT_NE(ts.status().message().find("per-sample gradients"), std::string::npos)
      << ts.status().message();
}

TEST(DpSpec, ElasticAndRecoveryAreAllowed) {
  auto r = load({"train.dp.clip=1", "recovery.mode=partial", "recovery.min_workers=1"});
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
}

}  // namespace
}  // namespace tern
