// DLRM in the one training loop (issues 7, 19), ranks as threads over real Gloo groups: the
// loop learns the planted signal (test AUC well above 0.5) and reports the DLRM summary with
// every sync strategy, compressor, the proportional straggler mode and resume; CPR checkpoints
// plan their interval from the measured throughput and cost, save whole shards or the rows
// the policy picks, and a shard rebuilt from them equals the saved rows; full recovery's
// rollback reloads them.
#include "trainer/workloads/dlrm/dlrm_workload.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "common/job_spec.h"
#include "recovery/checkpoint_store.h"
#include "testing/gloo_group.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/dlrm/shard_checkpoint.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using testing::same_bits;

fs::path scratch(const std::string& name) {
  return testing::scratch_dir("tern_dlrm_workload_test", name);
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
  std::vector<at::Tensor> params;                      // the MLPs at the end
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
    TrainingLoop loop(o, comm, &sink, std::make_unique<DlrmWorkload>());
    auto& dlrm = static_cast<DlrmWorkload&>(loop.workload());
    RankRun& r = out[static_cast<size_t>(rank)];
    r.setup = loop.setup();
    if (r.setup.is_ok()) r.run = loop.run();
    r.summary = loop.summary();
    r.events = sink.events;
    r.interval = loop.checkpoint_interval_steps();
    for (auto& p : loop.parameters()) r.params.push_back(p.detach().clone());
    if (r.setup.is_ok()) {
      for (int64_t t : dlrm.model().owned_tables())
        r.tables.emplace_back(t, dlrm.model().table(t).clone());
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

TEST(DlrmSpec, CprFieldsAreValidatedAndRowSavesNeedDlrm) {
  JobSpec s =
      spec_with({"recovery.interval=young_daly", "recovery.mtbf_s=30", "recovery.policy=ssu",
                 "recovery.row_fraction=0.2", "recovery.full_every=3"});
  EXPECT_EQ(s.recovery.interval, IntervalPolicy::kYoungDaly);
  EXPECT_DOUBLE_EQ(s.recovery.mtbf_s, 30);
  EXPECT_DOUBLE_EQ(s.recovery.row_fraction, 0.2);
  EXPECT_EQ(s.recovery.full_every, 3);
  // The interval schedules are the loop's, for every workload; row saves need a sharded model.
  EXPECT_TRUE(
      load_job_spec_text("name: m\nworkers: 1\nrecovery: {interval: cpr}\n", "m.yaml").is_ok());
  auto bad = load_job_spec_text("name: m\nworkers: 1\nrecovery: {policy: mfu}\n", "m.yaml");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("they need model.type dlrm"), std::string::npos)
      << bad.status().message();
  auto zero = load_job_spec_text("name: m\nworkers: 1\nrecovery: {full_every: 0}\n", "m.yaml");
  EXPECT_FALSE(zero.is_ok());
}

// Issue 19: the MLPs of a DLRM run with every sync strategy of the one training loop; each
// learns the planted signal and ends with the same MLPs on every rank (the final drain).
TEST(DlrmLoop, RunsEverySyncStrategyOnItsMlps) {
  const std::vector<std::vector<std::string>> cases = {
      {"sync.strategy=dssgd", "sync.delay=2"},
      {"sync.strategy=tsu", "sync.period=4"},
      {"sync.strategy=dts", "sync.period=4", "sync.delay=1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c[0]);
    auto runs = run_job(spec_with(c));
    expect_ok(runs);
    const auto& s = runs[0].summary;
    EXPECT_EQ(s["strategy"], c[0].substr(std::string("sync.strategy=").size()));
    EXPECT_GT(s["test_auc"].get<double>(), 0.58) << s.dump();
    EXPECT_EQ(s["samples"], 16384);
    ASSERT_EQ(runs[0].params.size(), runs[1].params.size());
    for (size_t i = 0; i < runs[0].params.size(); ++i) {
      EXPECT_TRUE(torch::allclose(runs[0].params[i], runs[1].params[i], 1e-5, 1e-6))
          << "parameter " << i;
    }
  }
}

// Issue 21: train.optimizer adamw acts on the MLPs (the loop's parameters) only; the embedding
// rows keep their own sparse SGD at the same lr. After one step the rows' update (from
// gradients at the common initial state) is the same under either optimizer, the MLPs are not.
TEST(DlrmLoop, AdamWActsOnTheMlpsWhileTheTablesKeepTheirSparseSgd) {
  auto sgd = run_job(spec_with({"train.steps=1"}));
  auto adamw =
      run_job(spec_with({"train.steps=1", "train.optimizer=adamw", "train.weight_decay=0.01"}));
  expect_ok(sgd);
  expect_ok(adamw);
  for (size_t r = 0; r < 2; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    ASSERT_EQ(adamw[r].tables.size(), sgd[r].tables.size());
    ASSERT_FALSE(adamw[r].tables.empty());
    for (size_t t = 0; t < adamw[r].tables.size(); ++t) {
      EXPECT_TRUE(same_bits(adamw[r].tables[t].second, sgd[r].tables[t].second)) << "table " << t;
    }
    ASSERT_EQ(adamw[r].params.size(), sgd[r].params.size());
    size_t differ = 0;
    for (size_t i = 0; i < adamw[r].params.size(); ++i)
      differ += !same_bits(adamw[r].params[i], sgd[r].params[i]);
    EXPECT_EQ(differ, adamw[r].params.size()) << "every MLP parameter took AdamW's step";
  }
  // And it trains: one short epoch learns the planted signal with AdamW's usual rate.
  auto trained = run_job(spec_with({"train.optimizer=adamw", "train.lr=0.003"}));
  expect_ok(trained);
  EXPECT_GT(trained[0].summary["test_auc"].get<double>(), 0.58) << trained[0].summary.dump();
  for (size_t i = 0; i < trained[0].params.size(); ++i) {
    EXPECT_TRUE(same_bits(trained[0].params[i], trained[1].params[i])) << "parameter " << i;
  }
}

// Temporally sparse sync sends far fewer bytes than SSGD for the same samples.
TEST(DlrmLoop, DtsSendsFewerMlpBytesThanSsgd) {
  auto ssgd = run_job(spec_with({}));
  auto dts = run_job(spec_with({"sync.strategy=dts", "sync.period=8", "sync.delay=1"}));
  expect_ok(ssgd);
  expect_ok(dts);
  EXPECT_LT(dts[0].summary["reducer_bytes_per_rank"].get<double>(),
            ssgd[0].summary["reducer_bytes_per_rank"].get<double>() / 4)
      << dts[0].summary.dump();
}

// Compressors on the MLP gradients: the summary reports them and the model still learns.
TEST(DlrmLoop, CompressesItsMlpGradients) {
  for (const std::string method : {"fp16", "powersgd"}) {
    SCOPED_TRACE(method);
    auto runs = run_job(
        spec_with({"compress.method=" + method, "compress.rank=2", "compress.min_numel=64"}));
    expect_ok(runs);
    const auto& s = runs[0].summary;
    EXPECT_EQ(s["compressor"], method);
    EXPECT_GT(s["compression_ratio"].get<double>(), 1.5) << s.dump();
    EXPECT_GT(s["test_auc"].get<double>(), 0.58) << s.dump();
  }
}

// A DLRM job resumed from a checkpoint (MLPs, momentum, embedding shard, counters) ends where
// the uninterrupted run ends, bit for bit.
TEST(DlrmLoop, ResumedRunEndsWhereTheUninterruptedRunEnds) {
  const fs::path dir = scratch("resume");
  const std::vector<std::string> base = {"train.steps=40", "train.momentum=0.5"};
  auto through = run_job(spec_with(base));
  expect_ok(through);
  auto first = spec_with({"train.steps=24", "train.momentum=0.5", "recovery.checkpoint_every=10",
                          "recovery.dir=" + dir.string()});
  expect_ok(run_job(first));
  auto resumed = run_job(
      spec_with({"train.steps=40", "train.momentum=0.5", "recovery.resume_from=" + dir.string()}));
  expect_ok(resumed);
  for (size_t r = 0; r < resumed.size(); ++r) {
    EXPECT_EQ(resumed[r].summary["resumed_from_step"], 20);
    EXPECT_EQ(resumed[r].summary["steps"], 40);
    ASSERT_EQ(resumed[r].params.size(), through[r].params.size());
    for (size_t i = 0; i < through[r].params.size(); ++i) {
      EXPECT_TRUE(same_bits(resumed[r].params[i], through[r].params[i]))
          << "rank " << r << " parameter " << i;
    }
    ASSERT_EQ(resumed[r].tables.size(), through[r].tables.size());
    for (size_t t = 0; t < through[r].tables.size(); ++t) {
      EXPECT_TRUE(same_bits(resumed[r].tables[t].second, through[r].tables[t].second))
          << "rank " << r << " table " << through[r].tables[t].first;
    }
  }
  EXPECT_DOUBLE_EQ(resumed[0].summary["test_auc"].get<double>(),
                   through[0].summary["test_auc"].get<double>());
}

// straggler.mode proportional: a slowed rank gets a smaller share of every step's samples, the
// step still covers the global batch, and the model learns.
TEST(DlrmLoop, ProportionalStragglerModeShiftsWorkFromASlowRank) {
  auto runs = run_job(spec_with(
      {"straggler.mode=proportional", "straggler.report_every=8", "debug.slowdown=[1, 4]"}));
  expect_ok(runs);
  const auto& s = runs[0].summary;
  EXPECT_EQ(s["strategy"], "ssgd+proportional");
  EXPECT_EQ(s["samples"], 16384);
  EXPECT_GT(s["test_auc"].get<double>(), 0.58) << s.dump();
  EXPECT_GT(runs[0].summary["computed_samples"].get<int64_t>(),
            runs[1].summary["computed_samples"].get<int64_t>() * 3 / 2)
      << runs[0].summary.dump() << "\n"
      << runs[1].summary.dump();
}

// What DLRM cannot do is refused at validation, naming the field and why.
TEST(DlrmSpec, RefusesStragglerModesThatDecideAStepWithoutEveryRank) {
  const std::string text =
      "name: dlrm\nworkers: 3\nmodel: {type: dlrm, embedding_dim: 8, bottom_mlp: [16, 8], top_mlp: "
      "[16, 1]}\n"
      "data: {source: synthetic_ctr, num_tables: 6, table_size: 200}\n";
  for (const std::string mode : {"gradient_coding", "coded_proportional", "backup"}) {
    auto r = load_job_spec_text(text, "dlrm.yaml",
                                {"straggler.mode=" + mode, "straggler.s=1", "straggler.backup=1"});
    ASSERT_FALSE(r.is_ok()) << mode;
    EXPECT_NE(r.status().message().find("straggler"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("all-to-all"), std::string::npos) << r.status().message();
  }
  EXPECT_TRUE(load_job_spec_text(text, "dlrm.yaml", {"straggler.mode=proportional"}).is_ok());
  auto criteo = load_job_spec_text(
      "name: c\nworkers: 2\nmodel: {type: dlrm}\ndata: {source: criteo, path: x.tsv}\n", "c.yaml",
      {"straggler.mode=proportional"});
  ASSERT_FALSE(criteo.is_ok());
  EXPECT_NE(criteo.status().message().find("read as a stream"), std::string::npos)
      << criteo.status().message();
  auto cuda = load_job_spec_text(text, "dlrm.yaml", {"device=cuda"});
  ASSERT_FALSE(cuda.is_ok());
  EXPECT_NE(cuda.status().message().find("device"), std::string::npos) << cuda.status().message();
  // DLRM's MLPs default to plain SGD; a spec may still ask for momentum.
  EXPECT_EQ(load_job_spec_text(text, "dlrm.yaml")->spec.train.momentum, 0.0);
  EXPECT_EQ(load_job_spec_text(text, "dlrm.yaml", {"train.momentum=0.9"})->spec.train.momentum,
            0.9);
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
    auto fresh = DlrmModel::create(*DlrmOptions::from_spec(spec), *comm);
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

// Re-sharding (issue 22): the tables saved at `step` of `store`, by name, read from every rank
// file of the step whatever the world that wrote it (whole saves: "embedding.<t>.weight").
std::map<std::string, at::Tensor> saved_tables(const CheckpointStore& store, int64_t step) {
  std::map<std::string, at::Tensor> out;
  auto m = store.check_step(step);
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  if (!m.is_ok()) return out;
  LoadOptions lo;
  lo.replicated = false;
  lo.all_ranks = true;
  for (int64_t k = 0; k < m->world; ++k) lo.ranks.push_back(k);
  auto c = load_checkpoint_step(store, step, lo);
  EXPECT_TRUE(c.is_ok()) << c.status().to_string();
  if (!c.is_ok()) return out;
  for (const auto& [rank, file] : c->ranks) {
    for (const auto& [name, t] : file.tensors) {
      if (name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
        EXPECT_EQ(out.count(name), 0u) << name << " saved by two ranks";
        out[name] = t;
      }
    }
  }
  return out;
}

// Checkpoints written by `from` ranks, restored into `to` ranks' fresh models: every table a
// rank owns now equals the saved one on every row, and the tables of all new ranks together are
// every saved table.
void expect_reshard(int from, int to, const std::string& name) {
  const fs::path dir = scratch(name);
  JobSpec spec =
      spec_with({"train.steps=20", "recovery.checkpoint_every=10", "recovery.dir=" + dir.string()});
  expect_ok(run_job(spec, from));
  CheckpointStore store(dir.string());
  auto complete = store.complete_steps();
  ASSERT_TRUE(complete.is_ok() && !complete->empty());
  const int64_t newest = complete->front().step;
  ASSERT_EQ(complete->front().world, from);
  const std::map<std::string, at::Tensor> saved = saved_tables(store, newest);
  ASSERT_EQ(saved.size(), 6u) << "data.num_tables";
  std::mutex mu;
  std::set<std::string> restored;
  testing::run_ranks(to, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto fresh = DlrmModel::create(*DlrmOptions::from_spec(spec), *comm);
    ASSERT_TRUE(fresh.is_ok()) << fresh.status().to_string();
    auto r = restore_shard(**fresh, store, newest);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->newest_step, newest);
    EXPECT_EQ(r->base_step, newest);
    EXPECT_EQ(r->resharded_from_world, from);
    EXPECT_GT(r->captured_updates, 0);
    for (int64_t t : (*fresh)->owned_tables()) {
      const std::string key = "embedding." + std::to_string(t) + ".weight";
      ASSERT_EQ(saved.count(key), 1u) << key;
      EXPECT_TRUE(at::equal((*fresh)->table(t), saved.at(key)))
          << key << " on rank " << rank << " of " << to;
      std::lock_guard<std::mutex> lock(mu);
      restored.insert(key);
    }
  });
  EXPECT_EQ(restored.size(), saved.size()) << "every saved table has an owner in the new world";
}

TEST(DlrmReshard, TwoRanksCheckpointsRestoreIntoThree) { expect_reshard(2, 3, "reshard_2_3"); }

TEST(DlrmReshard, FourRanksCheckpointsRestoreIntoTwo) { expect_reshard(4, 2, "reshard_4_2"); }

// Whole saves then hot rows, written by 2 ranks, restored into 3: each table is its whole save
// with the newer row saves applied, read from whichever old rank held it.
TEST(DlrmReshard, RowSavesAreReshardedOnTopOfTheirWholeSave) {
  const fs::path dir = scratch("reshard_rows");
  JobSpec spec = spec_with({"train.steps=20", "recovery.checkpoint_every=5", "recovery.policy=mfu",
                            "recovery.full_every=2", "recovery.keep=10",
                            "recovery.row_fraction=0.25", "recovery.dir=" + dir.string()});
  expect_ok(run_job(spec, 2));
  CheckpointStore store(dir.string());
  // Saves at 5 (whole), 10 (rows), 15 (whole), 20 (rows): restore as of step 10.
  std::map<std::string, at::Tensor> expected = saved_tables(store, 5);
  ASSERT_EQ(expected.size(), 6u);
  LoadOptions lo;
  lo.replicated = false;
  lo.ranks = {0, 1};
  auto rows_save = load_checkpoint_step(store, 10, lo);
  ASSERT_TRUE(rows_save.is_ok()) << rows_save.status().to_string();
  int64_t row_tables = 0;
  for (const auto& [rank, file] : rows_save->ranks) {
    ASSERT_EQ(file.meta.extra.at("shard"), "rows");
    for (int64_t t = 0; t < 6; ++t) {
      const std::string p = "embedding." + std::to_string(t);
      const at::Tensor* rows = file.find(p + "/rows");
      const at::Tensor* values = file.find(p + "/values");
      if (rows == nullptr) continue;
      ASSERT_NE(values, nullptr);
      expected[p + ".weight"] = expected[p + ".weight"].clone().index_copy_(0, *rows, *values);
      ++row_tables;
    }
  }
  EXPECT_EQ(row_tables, 6);
  testing::run_ranks(3, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto fresh = DlrmModel::create(*DlrmOptions::from_spec(spec), *comm);
    ASSERT_TRUE(fresh.is_ok());
    auto r = restore_shard(**fresh, store, 10);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->base_step, 5);
    EXPECT_EQ(r->newest_step, 10);
    EXPECT_EQ(r->row_saves, 1);
    for (int64_t t : (*fresh)->owned_tables()) {
      const std::string key = "embedding." + std::to_string(t) + ".weight";
      EXPECT_TRUE(at::equal((*fresh)->table(t), expected.at(key))) << key << " on rank " << rank;
    }
  });
}

// A saved table of another shape (another data.table_size) is refused naming the file, never
// loaded in part.
TEST(DlrmReshard, AnotherTableLayoutIsRefusedNamingTheFile) {
  const fs::path dir = scratch("reshard_layout");
  expect_ok(run_job(
      spec_with({"train.steps=10", "recovery.checkpoint_every=10", "recovery.dir=" + dir.string()}),
      2));
  CheckpointStore store(dir.string());
  JobSpec other = spec_with({"data.table_size=300"});
  testing::run_ranks(3, [&](int rank, std::shared_ptr<Communicator> comm) {
    auto fresh = DlrmModel::create(*DlrmOptions::from_spec(other), *comm);
    ASSERT_TRUE(fresh.is_ok());
    auto r = restore_shard(**fresh, store, 10);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().to_string();
    EXPECT_NE(r.status().message().find("rank-"), std::string::npos) << r.status().to_string();
  });
}

// The whole loop: a DLRM job checkpointed by 2 ranks resumes with 3 (the MLPs reload, the
// tables re-shard) and trains to its end.
TEST(DlrmReshard, TheLoopResumesAtAnotherWorldSize) {
  const fs::path dir = scratch("reshard_loop");
  expect_ok(run_job(
      spec_with({"train.steps=20", "recovery.checkpoint_every=10", "recovery.dir=" + dir.string()}),
      2));
  auto resumed = run_job(spec_with({"train.steps=30", "recovery.resume_from=" + dir.string()}), 3);
  expect_ok(resumed);
  for (const auto& r : resumed) {
    EXPECT_EQ(r.summary.value("resumed_from_step", -1), 20) << r.summary.dump();
    EXPECT_EQ(r.summary.value("resumed_from_world", -1), 2) << r.summary.dump();
    EXPECT_EQ(r.summary.value("steps", 0), 30);
  }
}

}  // namespace
}  // namespace tern
