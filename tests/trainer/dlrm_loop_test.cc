// DLRM in the trainer loop (issue 7), ranks as threads over real Gloo groups: the loop learns
// the planted signal (test AUC well above 0.5) and reports the DLRM summary; CPR checkpoints
// plan their interval from the measured throughput and cost, save whole shards or the rows
// the policy picks, and a shard rebuilt from them equals the saved rows; full recovery's
// rollback reloads them.
#include "trainer/dlrm_loop.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/job_spec.h"
#include "recovery/checkpoint_store.h"
#include "testing/gloo_group.h"
#include "trainer/dlrm_state.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  auto d = fs::temp_directory_path() / ("tern_dlrm_loop_test_" + std::to_string(getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

JobSpec spec_with(std::vector<std::string> overrides) {
  auto r = load_job_spec_text(
      "name: dlrm\nworkers: 2\nmodel: {type: dlrm, embedding_dim: 8, bottom_mlp: [16, 8], top_mlp: "
      "[16, 1]}\n"
      "data: {source: synthetic_ctr, num_tables: 6, table_size: 200, train_size: 16384, test_size: "
      "2048}\n"
      "train: {epochs: 1, batch_size: 64, lr: 0.1, seed: 3, log_every: 16}\n",
      "dlrm.yaml", overrides);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

struct RankRun {
  Status setup, run;
  nlohmann::json summary;
  std::vector<nlohmann::json> events;
  std::vector<std::pair<int64_t, at::Tensor>> tables;  // owned tables at the end
  int64_t interval = 0;
};

std::vector<RankRun> run_job(const JobSpec& spec, int world = 2) {
  std::vector<RankRun> out(static_cast<size_t>(world));
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    MemorySink sink;
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = world;
    o.job_id = "dlrm-test";
    DlrmLoop loop(o, comm, &sink);
    RankRun& r = out[static_cast<size_t>(rank)];
    r.setup = loop.setup();
    if (r.setup.is_ok()) r.run = loop.run();
    r.summary = loop.summary();
    r.events = sink.events;
    r.interval = loop.checkpoint_interval_steps();
    if (r.setup.is_ok()) {
      for (int64_t t : loop.model().owned_tables())
        r.tables.emplace_back(t, loop.model().table(t).clone());
    }
  });
  return out;
}

void expect_ok(const std::vector<RankRun>& runs) {
  for (size_t r = 0; r < runs.size(); ++r) {
    ASSERT_TRUE(runs[r].setup.is_ok()) << "rank " << r << ": " << runs[r].setup.to_string();
    ASSERT_TRUE(runs[r].run.is_ok()) << "rank " << r << ": " << runs[r].run.to_string();
  }
}

std::vector<nlohmann::json> of_kind(const std::vector<nlohmann::json>& ev,
                                    const std::string& kind) {
  std::vector<nlohmann::json> out;
  for (const auto& e : ev) {
    if (e.value("event", "") == kind) out.push_back(e);
  }
  return out;
}

TEST(DlrmLoop, LearnsThePlantedSignalAndReportsCtrMetrics) {
  auto runs = run_job(spec_with({}));
  expect_ok(runs);
  const auto& s = runs[0].summary;
  EXPECT_EQ(s["model"], "dlrm");
  EXPECT_EQ(s["steps"], 128);  // 8192 samples per rank / 64
  EXPECT_EQ(s["samples"], 16384);
  EXPECT_GT(s["test_auc"].get<double>(), 0.58)
      << s.dump();  // one short epoch (the config reaches ~0.79)
  EXPECT_LT(s["test_logloss"].get<double>(), 0.69) << s.dump();
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.5);
  EXPECT_EQ(s["test_samples"], 2048);
  EXPECT_GT(s["samples_per_s"].get<double>(), 0);
  EXPECT_EQ(s["checkpoints"], 0);
  // Every rank evaluates the same global test set and ends with the same MLPs.
  EXPECT_DOUBLE_EQ(runs[1].summary["test_auc"].get<double>(), s["test_auc"].get<double>());
  auto progress = of_kind(runs[0].events, "progress");
  ASSERT_EQ(progress.size(), 8u);
  EXPECT_EQ(progress.back()["step"], 128);
  EXPECT_GT(progress.front()["loss"].get<double>(), progress.back()["loss"].get<double>());
}

TEST(DlrmSpec, CprFieldsAreValidatedAndNeedDlrm) {
  JobSpec s =
      spec_with({"recovery.interval=young_daly", "recovery.mtbf_s=30", "recovery.policy=ssu",
                 "recovery.row_fraction=0.2", "recovery.full_every=3"});
  EXPECT_EQ(s.recovery.interval, "young_daly");
  EXPECT_DOUBLE_EQ(s.recovery.mtbf_s, 30);
  EXPECT_DOUBLE_EQ(s.recovery.row_fraction, 0.2);
  EXPECT_EQ(s.recovery.full_every, 3);
  auto bad = load_job_spec_text("name: m\nworkers: 1\nrecovery: {interval: cpr}\n", "m.yaml");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("they need model.type dlrm"), std::string::npos)
      << bad.status().message();
  auto zero = load_job_spec_text("name: m\nworkers: 1\nrecovery: {full_every: 0}\n", "m.yaml");
  EXPECT_FALSE(zero.is_ok());
}

TEST(DlrmLoop, RefusesSyncStrategiesItDoesNotRun) {
  auto runs = run_job(spec_with({"sync.strategy=dssgd", "sync.delay=2"}));
  EXPECT_EQ(runs[0].setup.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(runs[0].setup.message().find("sync.strategy ssgd"), std::string::npos)
      << runs[0].setup.message();
}

TEST(DlrmLoop, CprPlanSavesWholeShardsThenHotRowsAndRestoresThem) {
  const fs::path dir = scratch("mfu");
  // An assumed failure every 2 s of this tiny job keeps the planned interval inside it.
  auto runs =
      run_job(spec_with({"recovery.interval=cpr", "recovery.mtbf_s=2", "recovery.pls_target=0.05",
                         "recovery.policy=mfu", "recovery.full_every=2", "recovery.keep=10",
                         "recovery.row_fraction=0.25", "recovery.dir=" + dir.string()}));
  expect_ok(runs);
  auto plans = of_kind(runs[0].events, "checkpoint_plan");
  ASSERT_EQ(plans.size(), 1u);
  const auto& plan = plans[0]["plan"];
  EXPECT_EQ(plans[0]["step"], 12);  // total_steps / 10
  EXPECT_EQ(plan["interval_steps"], plan["cpr_interval_steps"]);
  EXPECT_GT(plan["checkpoint_cost_s"].get<double>(), 0);
  EXPECT_GT(plan["young_daly_interval_s"].get<double>(), 0);
  EXPECT_LE(plan["cpr_expected_pls"].get<double>(), 0.05 + 1e-12);
  const int64_t every = runs[0].interval;
  ASSERT_GT(every, 0);
  EXPECT_EQ(runs[1].interval, every) << "every rank plans the same interval";
  const auto& s = runs[0].summary;
  EXPECT_GT(s["checkpoints"].get<int64_t>(), 0);
  EXPECT_GE(s["checkpoint_overhead"].get<double>(), 0);
  EXPECT_LT(s["checkpoint_overhead"].get<double>(), 1);

  // The newest complete step: a whole-shard save (k even) or hot rows (k odd) of every rank.
  CheckpointStore store(dir.string());
  auto complete = store.complete_steps();
  ASSERT_TRUE(complete.is_ok());
  ASSERT_FALSE(complete->empty());
  const int64_t newest = complete->front().step;
  EXPECT_EQ((newest - 12) % every, 0);
  // Rebuilt shards equal the live tables on every row the newest save took (the job ended
  // right after it only when the last step was a save, so compare saved rows only).
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    JobSpec spec = spec_with({});
    auto fresh = DlrmTrainer::create(*DlrmOptions::from_spec(spec), *comm);
    ASSERT_TRUE(fresh.is_ok());
    auto restored = restore_shard(**fresh, store, newest);
    ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
    EXPECT_EQ(restored->newest_step, newest);
    EXPECT_GE(restored->base_step, 12);
    EXPECT_GT(restored->captured_updates, 0);
    LoadOptions lo;
    lo.replicated = false;
    lo.ranks = {rank};
    auto c = load_checkpoint_step(store, newest, lo);
    ASSERT_TRUE(c.is_ok());
    const Checkpoint& file = c->ranks.at(rank);
    for (int64_t t : (*fresh)->owned_tables()) {
      const std::string p = "embedding." + std::to_string(t);
      if (const at::Tensor* w = file.find(p + ".weight")) {
        EXPECT_TRUE(at::equal((*fresh)->table(t), *w)) << p;
      } else {
        const at::Tensor* rows = file.find(p + "/rows");
        const at::Tensor* values = file.find(p + "/values");
        ASSERT_TRUE(rows && values) << p;
        EXPECT_EQ(rows->numel(), 50) << "row_fraction 0.25 of 200 rows";
        EXPECT_TRUE(at::equal((*fresh)->table(t).index_select(0, *rows), *values)) << p;
      }
    }
  });
}

TEST(DlrmLoop, SsuSavesASampleOfTheUpdatedRows) {
  const fs::path dir = scratch("ssu");
  auto runs =
      run_job(spec_with({"recovery.interval=fixed", "recovery.checkpoint_every=20",
                         "recovery.policy=ssu", "recovery.full_every=100", "recovery.keep=20",
                         "recovery.row_fraction=0.5", "recovery.dir=" + dir.string()}));
  expect_ok(runs);
  CheckpointStore store(dir.string());
  LoadOptions lo;
  lo.replicated = true;
  lo.ranks = {0};
  auto first = load_checkpoint_step(store, 20, lo);
  auto second = load_checkpoint_step(store, 40, lo);
  ASSERT_TRUE(first.is_ok() && second.is_ok());
  EXPECT_EQ(first->ranks.at(0).meta.extra.at("shard"), "full");
  EXPECT_EQ(second->ranks.at(0).meta.extra.at("shard"), "rows");
  EXPECT_NE(second->replicated->find("param/top.0.weight"), nullptr);
  const at::Tensor* rows = second->ranks.at(0).find("embedding.0/rows");
  ASSERT_NE(rows, nullptr);
  // Half of the rows 20 steps of Zipf lookups touched: more than none, fewer than all.
  EXPECT_GT(rows->numel(), 0);
  EXPECT_LT(rows->numel(), 200);
}

}  // namespace
}  // namespace tern
