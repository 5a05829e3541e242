// The periodic strategies with an outer optimizer (DiLoCo), streaming fragments and automatic d
// and T (issue 21): plain averaging stays bit-identical to the strategy as it was before the outer
// optimizer existed; one outer Nesterov step and the delayed outer step equal a hand computation;
// fragments sync every parameter, each at its own step; replicas are bit-identical after the final
// drain in every mode; a resumed DiLoCo run ends where the uninterrupted one does.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <thread>

#include "comm/reducer.h"
#include "comm/wan_communicator.h"
#include "common/job_spec.h"
#include "sync/strategy.h"
#include "testing/gloo_group.h"
#include "testing/train_ranks.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

// The periodic strategy exactly as it was before issue 21 (no outer optimizer, no fragments):
// the reference the plain-averaging case must equal bit for bit.
class LegacyPeriodic {
 public:
  LegacyPeriodic(Communicator& comm, int64_t period, int64_t delay,
                 std::vector<at::Tensor>* momentum)
      : comm_(comm), period_(period), delay_(delay), momentum_(momentum), dense_(comm, 25 << 20) {}
  void begin(std::vector<at::Tensor>& params) {
    for (const auto& p : params) last_.push_back(p.detach().clone());
  }
  struct InFlight {
    int64_t step;
    std::vector<at::Tensor> local;
    std::unique_ptr<PendingReduction> pending;
  };
  void apply(InFlight& f, std::vector<at::Tensor>& params) {
    std::vector<at::Tensor> mean;
    for (const auto& t : f.local) mean.push_back(at::empty_like(t));
    ASSERT_TRUE(f.pending->finish(mean).is_ok());
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor correction = mean[i].sub_(f.local[i]);
      params[i].data().add_(correction);
      last_[i].add_(correction);
    }
  }
  void after_step(int64_t step, std::vector<at::Tensor>& params) {
    while (!in_flight_.empty() && step - in_flight_.front().step >= delay_) {
      InFlight f = std::move(in_flight_.front());
      in_flight_.pop_front();
      apply(f, params);
      if (delay_ > 0) break;
    }
    if ((step + 1) % period_ != 0) return;
    InFlight f;
    f.step = step;
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor delta = params[i].detach() - last_[i];
      last_[i].copy_(params[i].detach());
      f.local.push_back(delta);
    }
    f.pending = dense_.start(f.local, step);
    if (momentum_ != nullptr) {
      std::vector<at::Tensor> defined;
      for (auto& b : *momentum_) defined.push_back(b);
      ASSERT_TRUE(average_tensors(comm_, defined, 25 << 20).is_ok());
    }
    in_flight_.push_back(std::move(f));
    if (delay_ == 0) {
      InFlight now = std::move(in_flight_.front());
      in_flight_.pop_front();
      apply(now, params);
    }
  }
  void drain(std::vector<at::Tensor>& params) {
    while (!in_flight_.empty()) {
      InFlight f = std::move(in_flight_.front());
      in_flight_.pop_front();
      apply(f, params);
    }
    std::vector<at::Tensor> data;
    for (auto& p : params) data.push_back(p.data());
    ASSERT_TRUE(average_tensors(comm_, data, 25 << 20).is_ok());
  }

 private:
  Communicator& comm_;
  int64_t period_, delay_;
  std::vector<at::Tensor>* momentum_;
  DenseReducer dense_;
  std::vector<at::Tensor> last_;
  std::deque<InFlight> in_flight_;
};

std::vector<at::Tensor> shapes() { return {at::zeros({6, 5}), at::zeros({6}), at::zeros({3, 6})}; }

// A rank's local "training": a deterministic update per rank and step.
void local_step(std::vector<at::Tensor>& params, int rank, int64_t step) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor idx = at::arange(params[i].numel(), at::kFloat).reshape(params[i].sizes());
    params[i].add_(
        at::sin(idx * 0.37 + static_cast<double>(step * 7 + rank * 3 + static_cast<int64_t>(i))) *
        0.01);
  }
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& v) {
  std::vector<at::Tensor> out;
  for (const auto& t : v) out.push_back(t.clone());
  return out;
}

TEST(Periodic, PlainAveragingEqualsTheStrategyBeforeTheOuterOptimizerBitForBit) {
  struct Case {
    int64_t period, delay;
    bool momentum;
  };
  for (Case c : {Case{1, 0, false}, Case{3, 0, true}, Case{4, 2, false}, Case{3, 5, false},
                 Case{5, 3, true}}) {
    SCOPED_TRACE("T=" + std::to_string(c.period) + " d=" + std::to_string(c.delay));
    testing::run_ranks(3, [&](int rank, std::shared_ptr<Communicator> comm) {
      std::vector<at::Tensor> a = shapes(), b = shapes();
      std::vector<at::Tensor> ma = shapes(), mb = shapes();
      LegacyPeriodic legacy(*comm, c.period, c.delay, c.momentum ? &ma : nullptr);
      PeriodicOptions o;
      o.period = c.period;
      o.delay = c.delay;
      o.average_momentum = c.momentum;
      o.outer.lr = 1.0;  // explicitly plain averaging
      PeriodicAveragingStrategy now(*comm, o, &mb);
      legacy.begin(a);
      ASSERT_TRUE(now.begin(b).is_ok());
      for (int64_t step = 0; step < 13; ++step) {
        local_step(a, rank, step);
        local_step(b, rank, step);
        local_step(ma, rank + 10, step);
        local_step(mb, rank + 10, step);
        legacy.after_step(step, a);
        ASSERT_TRUE(now.after_step(step, b).is_ok());
        for (size_t i = 0; i < a.size(); ++i) {
          ASSERT_TRUE(testing::same_bits(a[i], b[i])) << "step " << step << " parameter " << i;
          ASSERT_TRUE(testing::same_bits(ma[i], mb[i])) << "step " << step << " momentum " << i;
        }
      }
      legacy.drain(a);
      ASSERT_TRUE(now.drain(b).is_ok());
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_TRUE(testing::same_bits(a[i], b[i])) << "drain, parameter " << i;
    });
  }
}

TEST(Periodic, OneOuterNesterovStepEqualsTheHandComputation) {
  const double lr = 0.7, mu = 0.9;
  std::vector<std::vector<at::Tensor>> out(2);
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    PeriodicOptions o;
    o.period = 1;
    o.outer = OuterSpec{lr, mu, true};
    PeriodicAveragingStrategy s(*comm, o, nullptr);
    std::vector<at::Tensor> p{at::tensor({1.0f, 2.0f, 3.0f, 4.0f})};
    ASSERT_TRUE(s.begin(p).is_ok());
    const at::Tensor v = at::tensor({0.1f, -0.2f, 0.3f, 0.05f});
    const at::Tensor w = at::tensor({-0.4f, 0.1f, 0.0f, 0.2f});
    p[0].add_(v * (rank + 1));
    ASSERT_TRUE(s.after_step(0, p).is_ok());
    out[static_cast<size_t>(rank)].push_back(p[0].clone());
    p[0].add_(w * (rank + 1));
    ASSERT_TRUE(s.after_step(1, p).is_ok());
    out[static_cast<size_t>(rank)].push_back(p[0].clone());
  });
  // By hand, in double: the ranks' deltas average to 1.5 v, then 1.5 w.
  auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  at::Tensor theta = d(at::tensor({1.0f, 2.0f, 3.0f, 4.0f}));
  at::Tensor v = d(at::tensor({0.1f, -0.2f, 0.3f, 0.05f})),
             w = d(at::tensor({-0.4f, 0.1f, 0.0f, 0.2f}));
  at::Tensor g1 = -1.5 * v;   // pseudo-gradient of sync 1
  at::Tensor m = g1.clone();  // m = 0.9 * 0 + g1
  theta = theta - lr * (g1 + mu * m);
  at::Tensor after1 = theta.clone();
  at::Tensor g2 = -1.5 * w;
  m = mu * m + g2;
  theta = theta - lr * (g2 + mu * m);
  for (int r = 0; r < 2; ++r) {
    EXPECT_LT((d(out[r][0]) - after1).abs().max().item<double>(), 1e-6) << "rank " << r;
    EXPECT_LT((d(out[r][1]) - theta).abs().max().item<double>(), 1e-6) << "rank " << r;
  }
  EXPECT_TRUE(testing::same_bits(out[0][1], out[1][1])) << "replicas differ after an outer step";
}

TEST(Periodic, DelayedOuterStepKeepsTheLocalProgressMadeMeanwhile) {
  // d = 1, T = 2: the sync started after step 1 lands after step 2, on top of what each rank
  // trained in step 2.
  const double lr = 0.5, mu = 0.0;
  std::vector<at::Tensor> got(2);
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    PeriodicOptions o;
    o.period = 2;
    o.delay = 1;
    o.outer = OuterSpec{lr, mu, false};
    PeriodicAveragingStrategy s(*comm, o, nullptr);
    std::vector<at::Tensor> p{at::zeros({3})};
    ASSERT_TRUE(s.begin(p).is_ok());
    p[0].add_(at::full({3}, 1.0f * (rank + 1)));  // step 0
    ASSERT_TRUE(s.after_step(0, p).is_ok());
    p[0].add_(at::full({3}, 2.0f * (rank + 1)));  // step 1: the sync starts (delta = 3 (r+1))
    ASSERT_TRUE(s.after_step(1, p).is_ok());
    p[0].add_(at::full({3}, 0.25f * (rank + 1)));  // step 2: progress while in flight
    ASSERT_TRUE(s.after_step(2, p).is_ok());       // the sync lands
    got[static_cast<size_t>(rank)] = p[0].clone();
  });
  // theta' = 0 - 0.5 * (-(3*1 + 3*2)/2) = 2.25; each rank keeps its step-2 progress 0.25 (r+1).
  EXPECT_TRUE(at::allclose(got[0], at::full({3}, 2.5f)));
  EXPECT_TRUE(at::allclose(got[1], at::full({3}, 2.75f)));
}

TEST(Periodic, FragmentsSyncEveryParameterEachAtItsOwnStep) {
  // T = 4, F = 4: fragment f syncs after steps s with (s + 1) % 4 == f. After 4 steps with
  // d = 0 and no further training every fragment has synced exactly once, so the replicas agree
  // without a drain.
  testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    PeriodicOptions o;
    o.period = 4;
    o.fragments = 4;
    PeriodicAveragingStrategy s(
        *comm, o, nullptr, nullptr, [&]() -> Result<std::unique_ptr<GradientReducer>> {
          return std::unique_ptr<GradientReducer>(std::make_unique<DenseReducer>(*comm, 1 << 20));
        });
    std::vector<at::Tensor> p = shapes();
    ASSERT_TRUE(s.begin(p).is_ok());
    ASSERT_EQ(s.fragment_count(), 4u);
    int64_t syncs_before = 0;
    for (int64_t step = 0; step < 4; ++step) {
      // Ranks differ after step 0 only: each fragment's sync (one per step) averages that
      // difference away, and the same update on every rank keeps it away.
      local_step(p, step == 0 ? rank : 0, step);
      ASSERT_TRUE(s.after_step(step, p).is_ok());
      EXPECT_EQ(s.metrics().syncs, syncs_before + 1) << "one fragment per step";
      syncs_before = s.metrics().syncs;
    }
    std::vector<at::Tensor> mine = clones(p);
    // Every element is the same on both ranks, since every fragment synced once.
    for (size_t i = 0; i < p.size(); ++i) {
      std::vector<at::Tensor> from0{mine[i].clone()};
      ASSERT_TRUE(broadcast_sync(*comm, from0, 0).is_ok());
      // (Plain averaging adds mean - delta_j to w_j: equal up to rounding, not bit for bit, until
      // the drain; the ranks' updates differ by about 1e-2 where a fragment did not sync.)
      EXPECT_LT((from0[0] - mine[i]).abs().max().item<double>(), 1e-6) << "parameter " << i;
    }
  });
}

// --- through the training loop -----------------------------------------------------------------

JobSpec spec_with(int workers, std::vector<std::string> sets) {
  sets.push_back("workers=" + std::to_string(workers));
  auto r = load_job_spec_text(
      "name: s\nmodel: {type: mlp}\ndata: {source: synthetic, train_size: 512, test_size: 128}\n"
      "train: {steps: 30, batch_size: 16, lr: 0.05, momentum: 0.9, seed: 3}\n",
      "periodic.yaml", sets);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->spec;
}

struct Run {
  std::vector<std::vector<at::Tensor>> params;
  std::vector<nlohmann::json> summary;
};

Run train(const JobSpec& spec) {
  Run out;
  for (auto& r : testing::train_ranks(spec)) {
    out.params.push_back(std::move(r.params));
    out.summary.push_back(std::move(r.summary));
  }
  return out;
}

void expect_identical_replicas(const Run& run, const std::string& what) {
  for (size_t r = 1; r < run.params.size(); ++r) {
    ASSERT_EQ(run.params[r].size(), run.params[0].size());
    for (size_t i = 0; i < run.params[0].size(); ++i) {
      EXPECT_TRUE(testing::same_bits(run.params[0][i], run.params[r][i]))
          << what << ": rank " << r << " parameter " << i;
    }
  }
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

TEST(Periodic, ReplicasAreBitIdenticalAfterTheFinalDrainInEveryNewMode) {
  const std::string diloco = "sync.outer={lr: 0.7, momentum: 0.9, nesterov: true}";
  for (auto sets : std::vector<std::vector<std::string>>{
           {"sync.strategy=tsu", "sync.period=4", diloco},
           {"sync.strategy=dts", "sync.delay=2", "sync.period=4", diloco},
           {"sync.strategy=dts", "sync.delay=1", "sync.period=4", "sync.fragments=3"},
           {"sync.strategy=dts", "sync.delay=1", "sync.period=4", "sync.fragments=3", diloco},
           {"sync.strategy=dts", "sync.delay=2", "sync.period=6", "sync.fragments=2", diloco,
            "compress.method=int8"},
           {"sync.strategy=dts", "sync.delay=2", "sync.period=6", diloco, "compress.method=topk",
            "compress.chunk_size=64", "compress.value_bits=4", "compress.density=0.125",
            "compress.ef_decay=0.95"},
           {"sync.strategy=dts", "sync.delay=1", "sync.period=4", "sync.fragments=2", diloco,
            "compress.method=topk", "compress.chunk_size=300", "compress.value_bits=8",
            "compress.density=0.1"},
           // Planned at step 46 (after the delayed probe syncs), then 14 steps with the plan.
           {"train.steps=60", "sync.strategy=dts", "sync.delay=auto", "sync.period=auto", diloco},
           {"train.steps=45", "sync.strategy=tsu", "sync.period=auto", "sync.fragments=2"}}) {
    auto run = train(spec_with(3, sets));
    expect_identical_replicas(run, joined(sets));
  }
}

TEST(Periodic, OuterPlainAveragingIsBitIdenticalToNoOuterSection) {
  auto plain = train(spec_with(2, {"sync.strategy=dts", "sync.delay=2", "sync.period=4"}));
  auto outer = train(spec_with(2, {"sync.strategy=dts", "sync.delay=2", "sync.period=4",
                                   "sync.outer={lr: 1, momentum: 0}"}));
  auto diloco = train(spec_with(2, {"sync.strategy=dts", "sync.delay=2", "sync.period=4",
                                    "sync.outer={lr: 0.7, momentum: 0.9, nesterov: true}"}));
  bool differs = false;
  for (size_t i = 0; i < plain.params[0].size(); ++i) {
    EXPECT_TRUE(testing::same_bits(plain.params[0][i], outer.params[0][i])) << "parameter " << i;
    differs = differs || !testing::same_bits(plain.params[0][i], diloco.params[0][i]);
  }
  EXPECT_TRUE(differs) << "the outer optimizer changed nothing";
}

TEST(Periodic, FragmentsCutThePeakBytesPerSync) {
  auto one = train(spec_with(2, {"sync.strategy=tsu", "sync.period=4"}));
  auto four = train(spec_with(2, {"sync.strategy=tsu", "sync.period=4", "sync.fragments=4"}));
  const double peak1 = one.summary[0].value("peak_sync_bytes", 0.0);
  const double peak4 = four.summary[0].value("peak_sync_bytes", 0.0);
  ASSERT_GT(peak1, 0);
  EXPECT_LT(peak4, 0.3 * peak1) << peak4 << " vs " << peak1;
  EXPECT_EQ(four.summary[0].value("fragments", 0.0), 4.0);
}

TEST(Periodic, AutomaticDelayAndPeriodArePlannedOnceTheSameOnEveryRank) {
  // The probe is 2 syncs 16 steps apart (after steps 15 and 31), each applied d = 15 steps later
  // so that its collective runs beside training: the plan follows at step 46 on every rank.
  auto run = train(
      spec_with(2, {"train.steps=56", "sync.strategy=dts", "sync.delay=auto", "sync.period=auto",
                    "sync.outer={lr: 0.7, momentum: 0.9, nesterov: true}"}));
  for (const auto& s : run.summary) {
    ASSERT_TRUE(s.contains("auto_planned_at_step")) << s.dump();
    EXPECT_EQ(s["auto_planned_at_step"].get<double>(), 46);
    EXPECT_GE(s["period"].get<double>(), 2);
    EXPECT_LT(s["delay"].get<double>(), s["period"].get<double>());
    EXPECT_GT(s["auto_step_s"].get<double>(), 0);
  }
  EXPECT_EQ(run.summary[0]["delay"], run.summary[1]["delay"]);
  EXPECT_EQ(run.summary[0]["period"], run.summary[1]["period"]);
}

// The planned delay is then tried against shorter ones, one period each, and the smallest as fast
// as the fastest is kept. A 100 ms modelled all-reduce against 1 ms steps with T fixed at 16:
// no d <= 8 meets the target, so the plan is d 8 (the lowest share) at step 46, and the windows
// of d 8, 6, 4, 8, 6, 4 open after steps 47, 63, ..., 127; the choice follows at step 143. The
// test slows the steps of the windows it wants to lose by 12 ms each (+190 ms a window), and puts
// a 0.4 s pause the strategy is told about (exclude_time) into a window that must still win.
TEST(Periodic, AnAutomaticDelayIsTriedAgainstShorterOnesAndTheSmallestAsFastIsKept) {
  NetworkSpec net;
  net.inter_region_default = {50, 0, 0};
  for (int64_t winner : {8, 4}) {
    std::vector<int64_t> chosen(2, -1);
    testing::run_ranks(2, [&](int rank, std::shared_ptr<Communicator> inner) {
      WanCommunicator wan(inner, WanModel({"x", "y"}, net));
      PeriodicOptions o;
      o.kind = StrategyKind::kDts;
      o.period = 16;
      o.delay_auto = true;
      PeriodicAveragingStrategy strategy(wan, o, nullptr);
      std::vector<at::Tensor> params{at::zeros({64})};
      ASSERT_TRUE(strategy.begin(params).is_ok());
      for (int64_t step = 0; step < 150; ++step) {
        params[0].add_(static_cast<float>(rank + 1));
        int ms = 1;
        if (strategy.trying_delays() && strategy.delay() != winner) ms += 12;
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        if (step == 55 && strategy.delay() == winner) {
          std::this_thread::sleep_for(std::chrono::milliseconds(400));
          strategy.exclude_time(0.4);
        }
        ASSERT_TRUE(strategy.after_step(step, params).is_ok()) << step;
      }
      ASSERT_TRUE(strategy.drain(params).is_ok());
      SyncMetrics m = strategy.metrics();
      EXPECT_EQ(m.extra["auto_planned_at_step"], 46);
      EXPECT_EQ(m.extra["auto_model_delay"], 8);
      EXPECT_EQ(m.extra["auto_tried_at_step"], 143);
      EXPECT_FALSE(strategy.trying_delays());
      chosen[static_cast<size_t>(rank)] = strategy.delay();
      for (const auto& [name, t] : strategy.replicated_state()) {
        if (name == kAutoPlanState) {
          EXPECT_EQ(t[1].item<double>(), strategy.delay());
        }
      }
    });
    EXPECT_EQ(chosen[0], winner);
    EXPECT_EQ(chosen[1], winner);
  }
}

TEST(Periodic, ResumedDilocoRunEqualsTheCheckpointedRunBitForBit) {
  // Outer momentum (replicated), per-rank inner momentum, the fragments' compressors' error
  // feedback: all must come back. The drain at each checkpoint is part of the trajectory, so
  // the reference is the same job with the same checkpoints, uninterrupted.
  namespace fs = std::filesystem;
  std::vector<std::string> sets = {"sync.strategy=dts",
                                   "sync.delay=1",
                                   "sync.period=4",
                                   "sync.fragments=2",
                                   "sync.outer={lr: 0.7, momentum: 0.9, nesterov: true}",
                                   "compress.method=int8",
                                   "recovery.checkpoint_every=10"};
  auto with = [&](const fs::path& dir, std::vector<std::string> more) {
    more.insert(more.end(), sets.begin(), sets.end());
    more.push_back("recovery.dir=" + dir.string());
    return spec_with(2, more);
  };
  auto reference = train(with(testing::scratch_dir("tern_periodic_test", "ref"), {}));
  const fs::path dir = testing::scratch_dir("tern_periodic_test", "first");
  train(with(dir, {"train.steps=24"}));  // stops after 24 steps: newest checkpoint at step 20
  auto resumed = train(with(testing::scratch_dir("tern_periodic_test", "resumed"),
                            {"recovery.resume_from=" + dir.string()}));
  for (size_t r = 0; r < 2; ++r) {
    EXPECT_EQ(resumed.summary[r].value("resumed_from_step", -1), 20);
    for (size_t i = 0; i < reference.params[r].size(); ++i) {
      EXPECT_TRUE(testing::same_bits(reference.params[r][i], resumed.params[r][i]))
          << "rank " << r << " parameter " << i;
    }
  }
}

}  // namespace
}  // namespace tern
