#include "trainer/loop/training_loop.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "common/job_spec.h"
#include "common/lr_schedule.h"
#include "testing/gloo_group.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/sampler.h"
#include "trainer/workloads/image/dataset.h"
#include "trainer/workloads/image/models.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

using testing::same_bits;

JobSpec small_spec(int workers, const std::string& model = "mlp") {
  auto r = load_job_spec_text("name: t\nworkers: " + std::to_string(workers) +
                                  "\nmodel: {type: " + model +
                                  "}\n"
                                  "data: {source: synthetic, train_size: 384, test_size: 200}\n"
                                  "train: {epochs: 2, batch_size: 16, lr: 0.05, momentum: 0.9, "
                                  "weight_decay: 0.0001, seed: 5}\n",
                              "test.yaml");
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

std::vector<at::Tensor> train_with_tern(const JobSpec& spec, int rank,
                                        std::shared_ptr<Communicator> comm, MemorySink* sink,
                                        double* accuracy = nullptr) {
  TrainerOptions o;
  o.spec = spec;
  o.rank = rank;
  o.world = comm->size();
  TrainingLoop t(o, comm, sink, make_workload(o.spec));
  Status s = t.setup();
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  s = t.run();
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  if (accuracy) *accuracy = t.summary().value("test_accuracy", 0.0);
  std::vector<at::Tensor> out;
  for (auto& p : t.parameters()) out.push_back(p.detach().clone());
  return out;
}

// The same training as a plain LibTorch loop: torch::optim::SGD or AdamW (train.optimizer), no
// tern machinery.
std::vector<at::Tensor> train_plain(const JobSpec& spec) {
  auto data = load_image_data(spec.data);
  EXPECT_TRUE(data.is_ok());
  torch::manual_seed(static_cast<uint64_t>(spec.train.seed));
  auto model = std::make_shared<Mlp>();
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (spec.train.optimizer == OptimizerKind::kAdamw) {
    optimizer = std::make_unique<torch::optim::AdamW>(
        model->parameters(), torch::optim::AdamWOptions(spec.train.lr)
                                 .betas({spec.train.betas.at(0), spec.train.betas.at(1)})
                                 .eps(spec.train.eps)
                                 .weight_decay(spec.train.weight_decay));
  } else {
    optimizer = std::make_unique<torch::optim::SGD>(model->parameters(),
                                                    torch::optim::SGDOptions(spec.train.lr)
                                                        .momentum(spec.train.momentum)
                                                        .nesterov(spec.train.nesterov)
                                                        .weight_decay(spec.train.weight_decay));
  }
  torch::optim::Optimizer& opt = *optimizer;
  ShardedSampler sampler(data->train.size(), 1, 0, static_cast<uint64_t>(spec.train.seed));
  const int64_t bs = spec.train.batch_size;
  const int64_t total = spec.train.epochs * ((sampler.per_rank() + bs - 1) / bs);
  int64_t step = 0;
  for (int64_t e = 0; e < spec.train.epochs; ++e) {
    auto idx = sampler.epoch_indices(e);
    for (size_t b = 0; b < idx.size(); b += static_cast<size_t>(spec.train.batch_size)) {
      // The schedule by hand, step by step (constant: always spec.train.lr).
      opt.param_groups()[0].options().set_lr(scheduled_lr(spec.train, step++, total));
      size_t end = std::min(idx.size(), b + static_cast<size_t>(spec.train.batch_size));
      auto ix = at::tensor(std::vector<int64_t>(idx.begin() + static_cast<long>(b),
                                                idx.begin() + static_cast<long>(end)),
                           at::kLong);
      Batch batch{
          data->train.images.index_select(0, ix), {}, data->train.labels.index_select(0, ix)};
      opt.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(batch), batch.y);
      loss.backward();
      opt.step();
    }
  }
  std::vector<at::Tensor> out;
  for (auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(Trainer, OneWorkerEqualsPlainLibTorchLoopBitForBit) {
  JobSpec spec = small_spec(1);
  std::vector<at::Tensor> ours;
  MemorySink sink;
  testing::run_ranks(1, [&](int rank, std::shared_ptr<Communicator> comm) {
    ours = train_with_tern(spec, rank, comm, &sink);
  });
  auto plain = train_plain(spec);
  ASSERT_EQ(ours.size(), plain.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_TRUE(at::equal(ours[i], plain[i])) << "parameter " << i << " differs, max abs diff "
                                              << (ours[i] - plain[i]).abs().max().item<double>();
  }
}

TEST(Trainer, LearningRateSchedulesAndNesterovEqualThePlainLoop) {
  for (const char* schedule : {"cosine", "step"}) {
    JobSpec spec = small_spec(1);
    ASSERT_TRUE(parse_spec_enum(schedule, &spec.train.lr_schedule)) << schedule;
    spec.train.nesterov = std::string(schedule) == "step";
    spec.train.warmup_steps = 5;
    spec.train.lr_min = 0.001;
    std::vector<at::Tensor> ours;
    MemorySink sink;
    testing::run_ranks(1, [&](int rank, std::shared_ptr<Communicator> comm) {
      ours = train_with_tern(spec, rank, comm, &sink);
    });
    auto plain = train_plain(spec);
    JobSpec constant = small_spec(1);
    auto flat = train_plain(constant);
    ASSERT_EQ(ours.size(), plain.size());
    double vs_constant = 0;
    for (size_t i = 0; i < ours.size(); ++i) {
      EXPECT_TRUE(at::equal(ours[i], plain[i]))
          << schedule << ": parameter " << i << " differs, max abs diff "
          << (ours[i] - plain[i]).abs().max().item<double>();
      vs_constant = std::max(vs_constant, (ours[i] - flat[i]).abs().max().item<double>());
    }
    EXPECT_GT(vs_constant, 1e-4) << schedule << ": the schedule changed nothing";
  }
}

TEST(Trainer, AdamWEqualsThePlainLoopWithTorchAdamW) {
  // A warm-up and cosine schedule, decoupled weight decay, other betas and eps: every step's
  // rate reaches AdamW as it reaches torch::optim::AdamW.
  JobSpec spec = small_spec(1);
  spec.train.optimizer = OptimizerKind::kAdamw;
  spec.train.lr = 0.003;
  spec.train.lr_schedule = LrScheduleKind::kCosine;
  spec.train.warmup_steps = 5;
  spec.train.lr_min = 0.0001;
  spec.train.weight_decay = 0.05;
  spec.train.betas = {0.85, 0.99};
  spec.train.eps = 1e-7;
  std::vector<at::Tensor> ours;
  MemorySink sink;
  testing::run_ranks(1, [&](int rank, std::shared_ptr<Communicator> comm) {
    ours = train_with_tern(spec, rank, comm, &sink);
  });
  auto plain = train_plain(spec);
  JobSpec sgd = spec;
  sgd.train.optimizer = OptimizerKind::kSgd;
  auto with_sgd = train_plain(sgd);
  ASSERT_EQ(ours.size(), plain.size());
  double vs_sgd = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_TRUE(at::equal(ours[i], plain[i])) << "parameter " << i << " differs, max abs diff "
                                              << (ours[i] - plain[i]).abs().max().item<double>();
    vs_sgd = std::max(vs_sgd, (ours[i] - with_sgd[i]).abs().max().item<double>());
  }
  EXPECT_GT(vs_sgd, 1e-3) << "train.optimizer adamw trained as SGD";
}

TEST(Trainer, AverageMomentumAveragesAdamWsFirstMomentOnly) {
  // TSU, period 5 over 20 steps: the last step is a sync point. With sync.average_momentum the
  // ranks end with the same exp_avg; exp_avg_sq (each rank's own gradient scale) and without
  // it exp_avg too stay their own.
  for (bool average : {false, true}) {
    SCOPED_TRACE(average ? "average_momentum" : "local moments");
    JobSpec spec = small_spec(2);
    spec.train.optimizer = OptimizerKind::kAdamw;
    spec.train.lr = 0.002;
    spec.train.steps = 20;
    spec.sync.strategy = StrategyKind::kTsu;
    spec.sync.period = 5;
    spec.sync.average_momentum = average;
    std::vector<Optimizer::NamedTensors> state(2);
    std::vector<MemorySink> sinks(2);
    testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
      TrainerOptions o;
      o.spec = spec;
      o.rank = rank;
      o.world = 2;
      TrainingLoop t(o, comm, &sinks[static_cast<size_t>(rank)], make_workload(o.spec));
      Status st = t.setup();
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      st = t.run();
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      std::vector<std::string> names;
      for (size_t i = 0; i < t.parameters().size(); ++i) names.push_back("p" + std::to_string(i));
      for (auto& [n, v] : t.optimizer().state(names, false))
        state[static_cast<size_t>(rank)].emplace_back(n, v.clone());
    });
    ASSERT_EQ(state[0].size(), state[1].size());
    ASSERT_FALSE(state[0].empty());
    for (size_t i = 0; i < state[0].size(); ++i) {
      const std::string& name = state[0][i].first;
      const bool same = same_bits(state[0][i].second, state[1][i].second);
      if (name.rfind("adamw/exp_avg/", 0) == 0) {
        EXPECT_EQ(same, average) << name;
      } else if (name.rfind("adamw/exp_avg_sq/", 0) == 0) {
        EXPECT_FALSE(same) << name;
      } else {
        EXPECT_TRUE(same) << name << ": every rank took the same steps";
      }
    }
  }
}

TEST(Trainer, SsgdKeepsReplicasBitIdentical) {
  for (int world : {2, 4}) {
    JobSpec spec = small_spec(world);
    std::vector<std::vector<at::Tensor>> params(static_cast<size_t>(world));
    std::vector<double> acc(static_cast<size_t>(world));
    std::vector<MemorySink> sinks(static_cast<size_t>(world));
    testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
      params[static_cast<size_t>(rank)] = train_with_tern(
          spec, rank, comm, &sinks[static_cast<size_t>(rank)], &acc[static_cast<size_t>(rank)]);
    });
    for (int r = 1; r < world; ++r) {
      for (size_t i = 0; i < params[0].size(); ++i) {
        EXPECT_TRUE(at::equal(params[0][i], params[static_cast<size_t>(r)][i]))
            << "world " << world << ": rank " << r << " parameter " << i << " diverged";
      }
    }
    // It really trained: well above chance (0.1) on the 10-class synthetic set.
    EXPECT_GT(acc[0], 0.25) << "world " << world;
    EXPECT_EQ(acc[0], acc[static_cast<size_t>(world - 1)]);
  }
}

// Ranks that built the same model skip the initial broadcast (only their hashes travel); a rank
// that built another model (here: another seed) gets rank 0's parameters.
TEST(Trainer, InitialParametersAreBroadcastOnlyWhenRanksDiffer) {
  for (bool same_seed : {true, false}) {
    std::vector<std::vector<at::Tensor>> params(2);
    std::vector<int64_t> sent(2);
    int64_t model_bytes = 0;
    testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
      TrainerOptions o;
      o.spec = small_spec(2);
      if (!same_seed && rank == 1) o.spec.train.seed = 6;
      o.rank = rank;
      o.world = 2;
      MemorySink sink;
      TrainingLoop t(o, comm, &sink, make_workload(o.spec));
      ASSERT_TRUE(t.setup().is_ok());
      for (auto& p : t.parameters())
        params[static_cast<size_t>(rank)].push_back(p.detach().clone());
      sent[static_cast<size_t>(rank)] = t.bytes_sent();
      if (rank == 0) {
        for (auto& p : t.parameters()) model_bytes += p.numel() * p.element_size();
      }
    });
    for (size_t i = 0; i < params[0].size(); ++i) {
      EXPECT_TRUE(same_bits(params[0][i], params[1][i]))
          << "same seed " << same_seed << " parameter " << i;
    }
    if (same_seed) {
      EXPECT_LT(sent[0], 1024) << "a broadcast of identical parameters";
    } else {
      EXPECT_GE(sent[0] + sent[1], model_bytes) << "no broadcast although rank 1 differed";
    }
  }
}

TEST(Trainer, EmitsProtocolEvents) {
  JobSpec spec = small_spec(2);
  spec.train.log_every = 5;
  spec.train.eval_every = 10;
  std::vector<MemorySink> sinks(2);
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    train_with_tern(spec, rank, comm, &sinks[static_cast<size_t>(rank)]);
  });
  auto& ev = sinks[0].events;
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.front()["event"], "started");
  EXPECT_EQ(ev.back()["event"], "finished");
  int progress = 0, evals = 0;
  int64_t last_step = 0;
  for (auto& e : ev) {
    if (e["event"] == "progress") {
      ++progress;
      EXPECT_GT(e["step"].get<int64_t>(), last_step);
      last_step = e["step"].get<int64_t>();
      EXPECT_EQ(e["total_steps"].get<int64_t>(), 24);  // 2 epochs x 192/16
      EXPECT_GT(e["bytes_sent"].get<int64_t>(), 0);
    }
    if (e["event"] == "eval") ++evals;
  }
  EXPECT_GE(progress, 4);
  EXPECT_EQ(evals, 3);  // steps 10, 20 and the final one
  auto summary = ev.back()["summary"];
  EXPECT_EQ(summary["steps"], 24);
  EXPECT_EQ(summary["samples"], 2 * 192 * 2);
  EXPECT_GT(summary["bytes_sent_per_rank"].get<int64_t>(), 0);
}

TEST(Trainer, TooSmallDatasetIsAClearError) {
  JobSpec spec = small_spec(2);
  spec.data.train_size = 1;
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = 2;
    MemorySink sink;
    TrainingLoop t(o, comm, &sink, make_workload(o.spec));
    Status s = t.setup();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("too small for 2 workers"), std::string::npos);
  });
}

// Issue 18 item 4: train.lr 100 makes the loss non-finite within a few steps.
JobSpec diverging_spec(int workers, const std::string& on_nonfinite,
                       const std::string& strategy = "ssgd") {
  JobSpec spec = small_spec(workers);
  spec.train.lr = 100;
  EXPECT_TRUE(parse_spec_enum(on_nonfinite, &spec.train.on_nonfinite)) << on_nonfinite;
  EXPECT_TRUE(parse_spec_enum(strategy, &spec.sync.strategy)) << strategy;
  if (spec.sync.strategy == StrategyKind::kTsu) spec.sync.period = 4;
  return spec;
}

// Bitwise equality that also holds for NaN and infinity in the same places.
TEST(Trainer, NonFiniteLossFailsEveryRankAtTheSameStepNamingIt) {
  JobSpec spec = diverging_spec(2, "fail");
  std::vector<std::string> errors(2);
  std::vector<bool> nonfinite(2);
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = 2;
    MemorySink sink;
    TrainingLoop t(o, comm, &sink, make_workload(o.spec));
    ASSERT_TRUE(t.setup().is_ok());
    Status s = t.run();
    EXPECT_FALSE(s.is_ok()) << "rank " << rank << " finished with a non-finite loss";
    errors[static_cast<size_t>(rank)] = s.message();
    nonfinite[static_cast<size_t>(rank)] = t.stopped_on_nonfinite();
    for (auto& e : sink.events) EXPECT_NE(e["event"], "finished");
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(nonfinite[static_cast<size_t>(r)]) << errors[static_cast<size_t>(r)];
    EXPECT_NE(errors[static_cast<size_t>(r)].find("non-finite"), std::string::npos)
        << errors[static_cast<size_t>(r)];
    EXPECT_NE(errors[static_cast<size_t>(r)].find("train.on_nonfinite"), std::string::npos);
  }
  // "step N: ..." the same N on both ranks (SSGD hands the poison on through the all-reduce).
  auto step_of = [](const std::string& m) { return m.substr(0, m.find(':')); };
  EXPECT_EQ(step_of(errors[0]).rfind("step ", 0), 0u) << errors[0];
  EXPECT_EQ(step_of(errors[0]), step_of(errors[1])) << errors[0] << " / " << errors[1];
}

TEST(Trainer, SkipStepLeavesNonFiniteStepsOutOnEveryRankAndReplicasStayIdentical) {
  for (const std::string strategy : {"ssgd", "tsu"}) {
    JobSpec spec = diverging_spec(2, "skip_step", strategy);
    std::vector<std::vector<at::Tensor>> params(2);
    std::vector<MemorySink> sinks(2);
    std::vector<nlohmann::json> summaries(2);
    testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
      TrainerOptions o;
      o.spec = spec;
      o.rank = rank;
      o.world = 2;
      TrainingLoop t(o, comm, &sinks[static_cast<size_t>(rank)], make_workload(o.spec));
      ASSERT_TRUE(t.setup().is_ok());
      Status s = t.run();
      ASSERT_TRUE(s.is_ok()) << strategy << " rank " << rank << ": " << s.to_string();
      summaries[static_cast<size_t>(rank)] = t.summary();
      for (auto& p : t.parameters())
        params[static_cast<size_t>(rank)].push_back(p.detach().clone());
    });
    ASSERT_EQ(params[0].size(), params[1].size());
    for (size_t i = 0; i < params[0].size(); ++i) {
      EXPECT_TRUE(same_bits(params[0][i], params[1][i]))
          << strategy << ": parameter " << i << " diverged";
    }
    const int64_t skipped = summaries[0].value("skipped_steps", int64_t{-1});
    EXPECT_GT(skipped, 0) << strategy;
    EXPECT_EQ(skipped, summaries[1].value("skipped_steps", int64_t{-2})) << strategy;
    EXPECT_EQ(summaries[0].value("steps", 0), 24) << strategy << ": it ran to the end";
    // Both ranks skipped the same steps, and said so.
    std::vector<std::vector<int64_t>> steps(2);
    for (int r = 0; r < 2; ++r) {
      for (auto& e : sinks[static_cast<size_t>(r)].events) {
        if (e["event"] == "skipped")
          steps[static_cast<size_t>(r)].push_back(e["step"].get<int64_t>());
        if (e["event"] == "progress") {
          EXPECT_TRUE(e["loss"].is_number()) << e.dump();
        }
      }
    }
    EXPECT_EQ(static_cast<int64_t>(steps[0].size()), skipped) << strategy;
    EXPECT_EQ(steps[0], steps[1]) << strategy;
  }
}

}  // namespace
}  // namespace tern
