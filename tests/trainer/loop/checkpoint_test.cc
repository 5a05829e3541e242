// Checkpoints and resume in the trainer (issue 7), ranks as threads over real Gloo groups:
// periodic checkpoints write complete steps and honour retention; a run resumed from a
// checkpoint ends with exactly the parameters of an uninterrupted run (SSGD, DGC with its
// error feedback and sampling RNG, DSSGD with per-rank momentum); a corrupt newest step (a
// flipped byte in any rank's file) or a truncated MANIFEST makes every rank fall back to the
// previous step and say so; nothing loadable is an error naming the directory.
#include "recovery/checkpoint.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/job_spec.h"
#include "recovery/checkpoint_store.h"
#include "testing/gloo_group.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

constexpr int kWorld = 2;

struct RankRun {
  Status setup;
  Status run;
  std::vector<at::Tensor> params;
  nlohmann::json summary;
  std::vector<nlohmann::json> events;
};

fs::path scratch(const std::string& name) { return testing::scratch_dir("tern_ckpt_test", name); }

// 2 ranks x 192 samples, batch 16: 12 steps per epoch.
JobSpec spec_with(std::vector<std::string> overrides) {
  auto r = load_job_spec_text(
      "name: ckpt\nworkers: 2\nmodel: {type: mlp}\n"
      "data: {source: synthetic, train_size: 384, test_size: 64}\n"
      "train: {steps: 20, batch_size: 16, lr: 0.05, momentum: 0.9, weight_decay: 0.0001, seed: 5, "
      "log_every: 5}\n",
      "ckpt.yaml", overrides);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

std::vector<RankRun> run_job(const JobSpec& spec, int world = kWorld) {
  std::vector<RankRun> out(static_cast<size_t>(world));
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    MemorySink sink;
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = world;
    o.job_id = "ckpt-test";
    TrainingLoop t(o, comm, &sink, make_workload(o.spec));
    RankRun& r = out[static_cast<size_t>(rank)];
    r.setup = t.setup();
    if (r.setup.is_ok()) r.run = t.run();
    for (auto& p : t.parameters()) r.params.push_back(p.detach().clone());
    r.summary = t.summary();
    r.events = sink.events;
  });
  return out;
}

void expect_ok(const std::vector<RankRun>& runs) {
  for (size_t r = 0; r < runs.size(); ++r) {
    EXPECT_TRUE(runs[r].setup.is_ok()) << "rank " << r << ": " << runs[r].setup.to_string();
    EXPECT_TRUE(runs[r].run.is_ok()) << "rank " << r << ": " << runs[r].run.to_string();
  }
}

void expect_same_params(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i], b[i])) << "parameter " << i << " differs, max abs diff "
                                       << (a[i] - b[i]).abs().max().item<double>();
  }
}

const nlohmann::json* find_event(const RankRun& r, const std::string& kind) {
  for (const auto& e : r.events) {
    if (e.value("event", "") == kind) return &e;
  }
  return nullptr;
}

void flip_byte(const fs::path& file, size_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << file;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

// Captures the log lines of a scope (the default logger, all ranks).
class LogCapture {
 public:
  LogCapture() : ring_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(4096)) {
    spdlog::default_logger()->sinks().push_back(ring_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), ring_), sinks.end());
  }
  std::string text() const {
    std::string out;
    for (const auto& l : ring_->last_formatted()) out += l;
    return out;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> ring_;
};

TEST(TrainerCheckpoint, EveryKStepsWritesCompleteStepsAndHonoursKeep) {
  fs::path dir = scratch("every_k");
  auto runs = run_job(spec_with(
      {"recovery.checkpoint_every=3", "recovery.keep=2", "recovery.dir=" + dir.string()}));
  expect_ok(runs);
  // Steps 3, 6, ..., 18 were committed; retention kept the newest 2 and deleted the rest.
  CheckpointStore store(dir.string());
  std::vector<std::string> skipped;
  auto complete = store.complete_steps(&skipped);
  ASSERT_TRUE(complete.is_ok()) << complete.status().to_string();
  ASSERT_EQ(complete->size(), 2u);
  EXPECT_EQ((*complete)[0].step, 18);
  EXPECT_EQ((*complete)[1].step, 15);
  EXPECT_TRUE(skipped.empty());
  auto listed = store.list_steps();
  ASSERT_TRUE(listed.is_ok());
  EXPECT_EQ(*listed, (std::vector<int64_t>{15, 18}));
  const Manifest& m = (*complete)[0];
  EXPECT_EQ(m.world, kWorld);
  std::vector<std::string> names;
  for (const auto& f : m.files) names.push_back(f.name);
  EXPECT_EQ(names, (std::vector<std::string>{"rank-0.ckpt", "rank-1.ckpt", "replicated.ckpt"}));
  for (const auto& r : runs) {
    EXPECT_EQ(r.summary.value("checkpoints", 0), 6) << r.summary.dump();
    EXPECT_GT(r.summary.value("checkpoint_s", 0.0), 0.0);
    EXPECT_GE(r.summary.value("checkpoint_background_s", 0.0), 0.0);
    EXPECT_EQ(r.summary.value("checkpoint_failures", -1), 0);
    EXPECT_NE(find_event(r, "checkpoint"), nullptr);
    EXPECT_NE(find_event(r, "checkpoint_committed"), nullptr);
  }
  // Only rank 0 writes the replicated parameters.
  EXPECT_GT(runs[0].summary.value("checkpoint_bytes", 0),
            runs[1].summary.value("checkpoint_bytes", 0) * 100);
}

// Issue 19: the planned schedules are the loop's, for every workload: young_daly measures the
// throughput and the cost of a first whole checkpoint, plans an interval and keeps to it.
TEST(TrainerCheckpoint, YoungDalyIntervalIsPlannedForAnImageModelToo) {
  fs::path dir = scratch("young_daly");
  auto runs = run_job(spec_with({"train.steps=40", "recovery.interval=young_daly",
                                 "recovery.mtbf_s=1", "recovery.dir=" + dir.string()}));
  expect_ok(runs);
  for (const auto& r : runs) {
    ASSERT_TRUE(r.summary.contains("checkpoint_plan")) << r.summary.dump();
    const int64_t interval = r.summary["checkpoint_interval_steps"].get<int64_t>();
    EXPECT_GE(interval, 1);
    EXPECT_EQ(r.summary["checkpoint_plan"]["interval_steps"], interval);
    EXPECT_EQ(r.summary["checkpoint_interval"], "young_daly");
    EXPECT_GE(r.summary["checkpoints"].get<int64_t>(), 2) << r.summary.dump();
    EXPECT_NE(find_event(r, "checkpoint_plan"), nullptr);
  }
  EXPECT_EQ(runs[0].summary["checkpoint_interval_steps"],
            runs[1].summary["checkpoint_interval_steps"]);
}

TEST(TrainerCheckpoint, ResumedSsgdRunEqualsUninterruptedBitForBit) {
  fs::path dir = scratch("resume_ssgd");
  auto uninterrupted = run_job(spec_with({}));
  expect_ok(uninterrupted);
  // "Interrupted": a run that stops after 12 steps, its last checkpoint at step 10.
  auto first = run_job(
      spec_with({"train.steps=12", "recovery.checkpoint_every=5", "recovery.dir=" + dir.string()}));
  expect_ok(first);
  auto resumed = run_job(spec_with({"recovery.resume_from=" + dir.string()}));
  expect_ok(resumed);
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    expect_same_params(resumed[r].params, uninterrupted[r].params);
    EXPECT_EQ(resumed[r].summary.value("steps", 0), 20);
    EXPECT_EQ(resumed[r].summary.value("resumed_from_step", -1), 10);
    // The samples counter carries over: the resumed run reports the whole job's.
    EXPECT_EQ(resumed[r].summary.value("samples", 0), uninterrupted[r].summary.value("samples", 0));
    const nlohmann::json* e = find_event(resumed[r], "resumed");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->value("step", -1), 10);
    EXPECT_TRUE((*e)["skipped"].empty());
  }
}

TEST(TrainerCheckpoint, ResumedDgcRunEqualsUninterruptedBitForBit) {
  // Error-feedback memories, momentum and velocities, and the threshold-sampling RNG are
  // per-rank state: all must come back for the same result.
  std::vector<std::string> dgc = {"compress.method=dgc", "compress.density=0.01",
                                  "compress.min_numel=256", "compress.warmup_steps=4"};
  fs::path dir = scratch("resume_dgc");
  auto uninterrupted = run_job(spec_with(dgc));
  expect_ok(uninterrupted);
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.end(), dgc.begin(), dgc.end());
    return spec_with(more);
  };
  auto first = run_job(
      with({"train.steps=12", "recovery.checkpoint_every=5", "recovery.dir=" + dir.string()}));
  expect_ok(first);
  auto resumed = run_job(with({"recovery.resume_from=" + dir.string()}));
  expect_ok(resumed);
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    expect_same_params(resumed[r].params, uninterrupted[r].params);
  }
}

TEST(TrainerCheckpoint, ResumedDssgdRunEqualsCheckpointedRunBitForBit) {
  // DSSGD drains (averages parameters) at every checkpoint, so the reference is the same job
  // with the same checkpoints, uninterrupted. Momentum differs per rank and is saved per rank.
  std::vector<std::string> dssgd = {"sync.strategy=dssgd", "sync.delay=2",
                                    "recovery.checkpoint_every=5"};
  auto with = [&](const fs::path& dir, std::vector<std::string> more) {
    more.insert(more.end(), dssgd.begin(), dssgd.end());
    more.push_back("recovery.dir=" + dir.string());
    return spec_with(more);
  };
  auto uninterrupted = run_job(with(scratch("dssgd_ref"), {}));
  expect_ok(uninterrupted);
  fs::path dir = scratch("resume_dssgd");
  auto first = run_job(with(dir, {"train.steps=12"}));
  expect_ok(first);
  auto resumed = run_job(with(scratch("dssgd_resumed"), {"recovery.resume_from=" + dir.string()}));
  expect_ok(resumed);
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    expect_same_params(resumed[r].params, uninterrupted[r].params);
    EXPECT_EQ(resumed[r].summary.value("resumed_from_step", -1), 10);
  }
}

// AdamW (train.optimizer adamw, issue 21): its moments and step counts are checkpointed and
// restored, so a resumed run ends bit for bit where the uninterrupted one does. (A warm-up, so
// the rate changes; not a cosine or step decay, which would follow the shorter first run's end.)
const std::vector<std::string> kAdamW = {"train.optimizer=adamw", "train.lr=0.002",
                                         "train.weight_decay=0.01", "train.betas=[0.85, 0.995]",
                                         "train.warmup_steps=3"};

std::vector<std::string> adamw_with(std::vector<std::string> more) {
  more.insert(more.end(), kAdamW.begin(), kAdamW.end());
  return more;
}

TEST(TrainerCheckpoint, ResumedAdamWRunEqualsUninterruptedBitForBit) {
  fs::path dir = scratch("resume_adamw");
  auto uninterrupted = run_job(spec_with(adamw_with({})));
  expect_ok(uninterrupted);
  auto sgd = run_job(spec_with({}));
  auto first = run_job(spec_with(adamw_with(
      {"train.steps=12", "recovery.checkpoint_every=5", "recovery.dir=" + dir.string()})));
  expect_ok(first);
  // Under SSGD the moments are the same on every rank: saved once, in replicated.ckpt, under
  // AdamW's names, with the optimizer named in the metadata.
  auto rep = read_checkpoint_file((dir / "step-000000000010" / "replicated.ckpt").string());
  ASSERT_TRUE(rep.is_ok()) << rep.status().to_string();
  EXPECT_EQ(rep->meta.extra["optimizer"], "adamw");
  EXPECT_EQ(rep->meta.extra["momentum"], "replicated");
  size_t exp_avg = 0, exp_avg_sq = 0, steps = 0, momentum = 0;
  for (const auto& [name, t] : rep->tensors) {
    exp_avg += name.rfind("adamw/exp_avg/", 0) == 0;
    exp_avg_sq += name.rfind("adamw/exp_avg_sq/", 0) == 0;
    momentum += name.rfind("momentum/", 0) == 0;
    if (name.rfind("adamw/step/", 0) == 0) {
      ++steps;
      EXPECT_EQ(t.item<int64_t>(), 10) << name;
    }
  }
  EXPECT_EQ(exp_avg, uninterrupted[0].params.size());
  EXPECT_EQ(exp_avg_sq, uninterrupted[0].params.size());
  EXPECT_EQ(steps, uninterrupted[0].params.size());
  EXPECT_EQ(momentum, 0u);
  auto mine = read_checkpoint_file((dir / "step-000000000010" / "rank-1.ckpt").string());
  ASSERT_TRUE(mine.is_ok()) << mine.status().to_string();
  for (const auto& [name, t] : mine->tensors) EXPECT_NE(name.rfind("adamw/", 0), 0u) << name;

  auto resumed = run_job(spec_with(adamw_with({"recovery.resume_from=" + dir.string()})));
  expect_ok(resumed);
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    expect_same_params(resumed[r].params, uninterrupted[r].params);
    EXPECT_EQ(resumed[r].summary.value("resumed_from_step", -1), 10);
    // (AdamW trained: not SGD's parameters.)
    EXPECT_FALSE(at::equal(uninterrupted[r].params[0], sgd[r].params[0]));
  }
}

TEST(TrainerCheckpoint, ResumedAdamWDtsRunWithPerRankMomentsEqualsCheckpointedRun) {
  // DTS: every rank's moments are its own, saved in its own file; the drain at each
  // checkpoint is an averaging point, so the reference is the same job with the same checkpoints.
  auto with = [&](const fs::path& dir, std::vector<std::string> more) {
    for (const char* o :
         {"sync.strategy=dts", "sync.delay=1", "sync.period=3", "recovery.checkpoint_every=5"}) {
      more.push_back(o);
    }
    more.push_back("recovery.dir=" + dir.string());
    return spec_with(adamw_with(more));
  };
  auto uninterrupted = run_job(with(scratch("adamw_dts_ref"), {}));
  expect_ok(uninterrupted);
  fs::path dir = scratch("resume_adamw_dts");
  auto first = run_job(with(dir, {"train.steps=12"}));
  expect_ok(first);
  auto rep = read_checkpoint_file((dir / "step-000000000010" / "replicated.ckpt").string());
  ASSERT_TRUE(rep.is_ok()) << rep.status().to_string();
  EXPECT_EQ(rep->meta.extra["momentum"], "per_rank");
  auto r0 = read_checkpoint_file((dir / "step-000000000010" / "rank-0.ckpt").string());
  auto r1 = read_checkpoint_file((dir / "step-000000000010" / "rank-1.ckpt").string());
  ASSERT_TRUE(r0.is_ok() && r1.is_ok());
  const at::Tensor* m0 = r0->find("adamw/exp_avg_sq/fc1.weight");
  const at::Tensor* m1 = r1->find("adamw/exp_avg_sq/fc1.weight");
  ASSERT_TRUE(m0 != nullptr && m1 != nullptr);
  EXPECT_FALSE(at::equal(*m0, *m1)) << "each rank's own second moment";
  auto resumed =
      run_job(with(scratch("adamw_dts_resumed"), {"recovery.resume_from=" + dir.string()}));
  expect_ok(resumed);
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    expect_same_params(resumed[r].params, uninterrupted[r].params);
    EXPECT_EQ(resumed[r].summary.value("resumed_from_step", -1), 10);
  }
}

TEST(TrainerCheckpoint, ACheckpointOfAnotherOptimizerIsRefusedNamingTheFile) {
  // Both ways: SGD's momentum is no AdamW state and AdamW's moments are no momentum; nothing
  // is half loaded, the job stops at setup naming the file and the fix.
  fs::path sgd_dir = scratch("sgd_written");
  expect_ok(run_job(spec_with(
      {"train.steps=6", "recovery.checkpoint_every=5", "recovery.dir=" + sgd_dir.string()})));
  fs::path adamw_dir = scratch("adamw_written");
  expect_ok(run_job(spec_with(adamw_with(
      {"train.steps=6", "recovery.checkpoint_every=5", "recovery.dir=" + adamw_dir.string()}))));
  struct Case {
    fs::path dir;
    std::vector<std::string> overrides;
    std::string written, wanted;
  };
  for (const Case& c :
       {Case{sgd_dir, adamw_with({}), "sgd", "adamw"}, Case{adamw_dir, {}, "adamw", "sgd"}}) {
    SCOPED_TRACE(c.written + " checkpoint, " + c.wanted + " job");
    auto overrides = c.overrides;
    overrides.push_back("recovery.resume_from=" + c.dir.string());
    auto runs = run_job(spec_with(overrides));
    for (const auto& r : runs) {
      EXPECT_EQ(r.setup.code(), StatusCode::kFailedPrecondition) << r.setup.to_string();
      EXPECT_NE(r.setup.message().find((c.dir / "step-000000000005" / "replicated.ckpt").string()),
                std::string::npos)
          << r.setup.to_string();
      EXPECT_NE(r.setup.message().find("written with train.optimizer " + c.written +
                                       ", this job has " + c.wanted),
                std::string::npos)
          << r.setup.to_string();
    }
  }
}

// A 12-step run with checkpoints at 5 and 10, kept both.
fs::path two_checkpoints(const std::string& name) {
  fs::path dir = scratch(name);
  auto first = run_job(
      spec_with({"train.steps=12", "recovery.checkpoint_every=5", "recovery.dir=" + dir.string()}));
  expect_ok(first);
  return dir;
}

void expect_resumed_from_5(const fs::path& dir, const std::string& damaged_file) {
  LogCapture log;
  auto resumed = run_job(spec_with({"recovery.resume_from=" + dir.string()}));
  expect_ok(resumed);
  auto uninterrupted = run_job(spec_with({}));
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(resumed[r].summary.value("resumed_from_step", -1), 5);
    EXPECT_EQ(resumed[r].summary.value("steps", 0), 20);
    expect_same_params(resumed[r].params, uninterrupted[r].params);
    const nlohmann::json* e = find_event(resumed[r], "resumed");
    ASSERT_NE(e, nullptr);
    ASSERT_FALSE((*e)["skipped"].empty());
    EXPECT_NE((*e)["skipped"][0].get<std::string>().find("step-000000000010"), std::string::npos)
        << e->dump();
  }
  std::string text = log.text();
  EXPECT_NE(text.find("checkpoint step 10 skipped"), std::string::npos) << text;
  EXPECT_NE(text.find(damaged_file), std::string::npos) << text;
  EXPECT_NE(text.find("resumed from " + (dir / "step-000000000005").string() + " at step 5"),
            std::string::npos)
      << text;
}

TEST(TrainerCheckpoint, CorruptNewestReplicatedFileFallsBackToThePreviousStep) {
  fs::path dir = two_checkpoints("corrupt_replicated");
  fs::path file = dir / "step-000000000010" / "replicated.ckpt";
  flip_byte(file, fs::file_size(file) / 2);  // inside the parameters: only the payload CRC sees it
  expect_resumed_from_5(dir, "step-000000000010/replicated.ckpt");
}

TEST(TrainerCheckpoint, CorruptNewestFileOfOneRankMovesEveryRankToThePreviousStep) {
  // Only rank 1 reads rank-1.ckpt: the ranks must agree on step 5 anyway.
  fs::path dir = two_checkpoints("corrupt_rank1");
  fs::path file = dir / "step-000000000010" / "rank-1.ckpt";
  flip_byte(file, fs::file_size(file) - 3);
  expect_resumed_from_5(dir, "step-000000000010/rank-1.ckpt");
}

TEST(TrainerCheckpoint, TruncatedManifestIsIgnored) {
  fs::path dir = two_checkpoints("truncated_manifest");
  fs::path manifest = dir / "step-000000000010" / "MANIFEST";
  fs::resize_file(manifest, fs::file_size(manifest) / 2);
  expect_resumed_from_5(dir, "step-000000000010/MANIFEST");
}

TEST(TrainerCheckpoint, TruncatedNewestFileFallsBack) {
  fs::path dir = two_checkpoints("truncated_file");
  fs::path file = dir / "step-000000000010" / "replicated.ckpt";
  fs::resize_file(file, fs::file_size(file) - 100);
  expect_resumed_from_5(dir, "step-000000000010/replicated.ckpt");
}

TEST(TrainerCheckpoint, NothingToResumeFromFailsNamingTheDirectory) {
  fs::path dir = scratch("empty");
  auto runs = run_job(spec_with({"recovery.resume_from=" + dir.string()}));
  for (const auto& r : runs) {
    EXPECT_EQ(r.setup.code(), StatusCode::kNotFound) << r.setup.to_string();
    EXPECT_NE(r.setup.message().find("recovery.resume_from"), std::string::npos)
        << r.setup.to_string();
    EXPECT_NE(r.setup.message().find(dir.string()), std::string::npos) << r.setup.to_string();
  }
}

TEST(TrainerCheckpoint, ResumeWithAnotherBatchSizeIsRefused) {
  fs::path dir = two_checkpoints("other_batch");
  auto runs = run_job(spec_with({"train.batch_size=32", "recovery.resume_from=" + dir.string()}));
  for (const auto& r : runs) {
    EXPECT_EQ(r.setup.code(), StatusCode::kFailedPrecondition) << r.setup.to_string();
    EXPECT_NE(r.setup.message().find("steps per epoch"), std::string::npos) << r.setup.to_string();
  }
}

// Resume on another cluster (issue 22): a job checkpointed by 2 ranks resumes with 3 and with
// 1. The parameters and SSGD's replicated momentum reload; the job continues from the
// checkpoint's sample position (step 10 of 2 x 16 samples = 320 samples: step 6 of 3 x 16, step
// 20 of 1 x 16) with the job-wide sample count carried on; every rank ends with the same
// parameters.
TEST(TrainerCheckpoint, ResumeAtAnotherWorldSizeContinuesFromTheSamplePosition) {
  fs::path dir = scratch("other_world");
  auto first = run_job(
      spec_with({"train.steps=12", "recovery.checkpoint_every=5", "recovery.dir=" + dir.string()}));
  expect_ok(first);
  for (int world : {3, 1}) {
    SCOPED_TRACE(std::to_string(world) + " ranks");
    auto resumed =
        run_job(spec_with({"train.steps=24", "recovery.resume_from=" + dir.string()}), world);
    expect_ok(resumed);
    const int64_t at = 320 / (16 * world);
    for (const auto& r : resumed) {
      EXPECT_EQ(r.summary.value("resumed_from_step", -1), 10) << r.summary.dump();
      EXPECT_EQ(r.summary.value("resumed_from_world", -1), 2);
      EXPECT_EQ(r.summary.value("steps", 0), 24);
      EXPECT_EQ(r.summary.value("samples", int64_t{0}), 320 + (24 - at) * 16 * world)
          << r.summary.dump();
      const nlohmann::json* e = find_event(r, "resumed");
      ASSERT_NE(e, nullptr);
      EXPECT_EQ(e->value("step", -1), 10);
      EXPECT_EQ(e->value("at_step", -1), at);
      EXPECT_EQ(e->value("written_world", -1), 2);
      EXPECT_TRUE((*e)["dropped"].empty()) << "SSGD keeps no per-rank state: " << e->dump();
      expect_same_params(r.params, resumed[0].params);
    }
  }
}

// Per-rank state has no owner at another world: DGC's error feedback (velocities) is dropped,
// said in the event and the log, and the job trains on.
TEST(TrainerCheckpoint, ResumeAtAnotherWorldSizeDropsPerRankStateAndSaysSo) {
  fs::path dir = scratch("other_world_dgc");
  auto dgc = [&](std::vector<std::string> o) {
    o.insert(o.end(), {"compress.method=dgc", "compress.density=0.1"});
    return spec_with(o);
  };
  expect_ok(run_job(
      dgc({"train.steps=12", "recovery.checkpoint_every=5", "recovery.dir=" + dir.string()})));
  LogCapture log;
  auto resumed = run_job(dgc({"recovery.resume_from=" + dir.string()}), 3);
  expect_ok(resumed);
  for (const auto& r : resumed) {
    const nlohmann::json* e = find_event(r, "resumed");
    ASSERT_NE(e, nullptr);
    ASSERT_FALSE((*e)["dropped"].empty()) << e->dump();
    EXPECT_NE((*e)["dropped"].dump().find("error feedback"), std::string::npos) << e->dump();
  }
  EXPECT_NE(log.text().find("per-rank state dropped"), std::string::npos) << log.text();
}

// Removes this process's scratch directories (checkpoints of several MB each) at the end.
class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(fs::temp_directory_path() / ("tern_ckpt_test_" + std::to_string(getpid())), ec);
  }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

}  // namespace
}  // namespace tern
