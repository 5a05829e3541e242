// Replica integrity (sync.verify_every, sync.on_mismatch, debug.corrupt; issue 22): the hash
// tells every single flipped bit apart and groups ranks by it; in the training loop (ranks as
// threads over real Gloo) a bit flipped in one rank's replicated parameters is caught at the
// first verify at or after it, naming that rank, under ssgd and under dts with an outer
// optimizer; majority repairs it and the run ends with identical replicas; two ranks have no
// majority; and without corruption no strategy reports a mismatch (ssgd, dssgd, tsu, dts,
// hierarchical, a compressor with error feedback, AdamW).
#include "trainer/loop/replica_check.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <set>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "common/job_spec.h"
#include "common/trainer_protocol.h"
#include "testing/gloo_group.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

// --- the hash and the groups ---------------------------------------------------------------

TEST(ReplicaHash, EverySingleFlippedBitChangesTheHash) {
  at::Tensor base = at::tensor({1.5f, -2.25f, 3.0f, 0.0f, 7.0f});  // 20 bytes: two words and a tail
  const uint64_t h0 = hash_named_tensors({{"w", base}});
  const int64_t bits = base.numel() * base.element_size() * 8;
  std::set<uint64_t> seen{h0};
  for (int64_t b = 0; b < bits; ++b) {
    at::Tensor t = base.clone();
    static_cast<unsigned char*>(t.data_ptr())[b / 8] ^= static_cast<unsigned char>(1u << (b % 8));
    const uint64_t h = hash_named_tensors({{"w", t}});
    EXPECT_NE(h, h0) << "bit " << b;
    seen.insert(h);
    EXPECT_EQ(hash_named_tensors({{"w", t}}, /*layout_only=*/true),
              hash_named_tensors({{"w", base}}, true));
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), bits + 1) << "two different flips hashed alike";
}

TEST(ReplicaHash, NamesDtypesShapesAndOrderCount) {
  at::Tensor a = at::arange(6, at::kFloat);
  const uint64_t h = hash_named_tensors({{"a", a}});
  EXPECT_EQ(h, hash_named_tensors({{"a", a.clone()}}));  // the values, not the storage
  EXPECT_NE(h, hash_named_tensors({{"b", a}}));
  EXPECT_NE(h, hash_named_tensors({{"a", a.view({2, 3})}}));
  EXPECT_NE(h, hash_named_tensors({{"a", a.to(at::kDouble)}}));
  at::Tensor z = at::zeros({2});
  EXPECT_NE(hash_named_tensors({{"a", a}, {"z", z}}), hash_named_tensors({{"z", z}, {"a", a}}));
  EXPECT_NE(hash_named_tensors({{"a", a}}), hash_named_tensors({{"a", at::Tensor()}}));
  // Bytes of a non-contiguous view are those of its elements in order.
  at::Tensor m = at::arange(6, at::kFloat).view({3, 2});
  EXPECT_EQ(hash_named_tensors({{"t", m.t()}}), hash_named_tensors({{"t", m.t().contiguous()}}));
  // Different values, same layout.
  EXPECT_EQ(hash_named_tensors({{"a", a}}, true), hash_named_tensors({{"a", a + 1}}, true));
}

TEST(ReplicaHash, GroupsLargestFirstThenLowestRank) {
  EXPECT_EQ(group_ranks_by_hash({7, 9, 7, 7}), (std::vector<std::vector<int>>{{0, 2, 3}, {1}}));
  EXPECT_EQ(group_ranks_by_hash({9, 7, 7, 7}), (std::vector<std::vector<int>>{{1, 2, 3}, {0}}));
  EXPECT_EQ(group_ranks_by_hash({5, 3}), (std::vector<std::vector<int>>{{0}, {1}}));
  EXPECT_EQ(group_ranks_by_hash({4, 8, 8, 4, 1}),
            (std::vector<std::vector<int>>{{0, 3}, {1, 2}, {4}}));
  EXPECT_EQ(group_ranks_by_hash({2, 2}), (std::vector<std::vector<int>>{{0, 1}}));
  EXPECT_EQ(groups_text({{0, 2, 3}, {1}}), "0, 2, 3 | 1");
}

TEST(ReplicaHash, FlipOneBitChangesExactlyTheChosenBitOfTheFirstElement) {
  EXPECT_EQ(corrupt_bit(at::kFloat), 22);  // the highest of float's 23 mantissa bits
  EXPECT_EQ(corrupt_bit(at::kDouble), 51);
  EXPECT_EQ(corrupt_bit(at::kLong), 0);
  for (auto dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong}) {
    // Non-contiguous: the first element in logical order is what changes.
    at::Tensor t = (at::arange(12, at::kDouble) + 1.5).to(dtype).view({3, 4}).t();
    at::Tensor before = t.contiguous().clone();
    flip_one_bit(t);
    at::Tensor after = t.contiguous();
    const auto* a = static_cast<const unsigned char*>(before.data_ptr());
    const auto* b = static_cast<const unsigned char*>(after.data_ptr());
    const int bit = corrupt_bit(dtype);
    for (int64_t i = 0; i < before.numel() * before.element_size(); ++i) {
      const unsigned want = i == bit / 8 ? 1u << (bit % 8) : 0u;
      EXPECT_EQ(static_cast<unsigned>(a[i] ^ b[i]), want) << dtype << " byte " << i;
    }
  }
  // A float's highest mantissa bit moves 1.5 to 1.0: far more than an update can round away.
  at::Tensor f = at::tensor({1.5f, 2.0f});
  flip_one_bit(f);
  EXPECT_EQ(f[0].item<float>(), 1.0f);
  EXPECT_EQ(f[1].item<float>(), 2.0f);
}

TEST(ReplicaHash, ExchangeGivesEveryRankEveryRanksHashes) {
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> got(3);
  testing::run_ranks(3, [&](int rank, std::shared_ptr<Communicator> comm) {
    // Values near and above 2^63 must come back bit for bit.
    uint64_t v = ~uint64_t{0} - static_cast<uint64_t>(rank),
             l = (uint64_t{1} << 63) + static_cast<uint64_t>(rank);
    auto r = exchange_hashes(*comm, v, l, torch::kCPU);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    got[static_cast<size_t>(rank)] = *r;
  });
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_EQ(got[rank].size(), 3u);
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(got[rank][r].first, ~uint64_t{0} - static_cast<uint64_t>(r));
      EXPECT_EQ(got[rank][r].second, (uint64_t{1} << 63) + static_cast<uint64_t>(r));
    }
  }
}

// --- in the training loop ------------------------------------------------------------------

constexpr const char* kJob = R"(name: rc
workers: 4
model: {type: mlp}
data: {source: synthetic, train_size: 1024, test_size: 128}
train: {steps: 16, batch_size: 16, lr: 0.05, log_every: 100}
sync: {strategy: ssgd}
)";

JobSpec job(const std::vector<std::string>& overrides) {
  auto r = load_job_spec_text(kJob, "job.yaml", overrides);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? r->spec : JobSpec{};
}

struct RankOutcome {
  Status status;
  bool mismatch_stop = false;
  std::vector<at::Tensor> params;
  nlohmann::json summary;
  std::vector<nlohmann::json> mismatches;  // replica_mismatch events
};

// Every rank's setup + run. `regions`: hierarchical sync with this many regions of equal size
// (a region group per region, a leaders' group). `generation` > 1: every rank joins a running job
// (setup() syncs state with the group, then verifies it).
std::vector<RankOutcome> run_job(const JobSpec& spec, int regions = 0, int64_t generation = 1) {
  const int world = static_cast<int>(spec.workers);
  std::vector<RankOutcome> out(static_cast<size_t>(world));
  static int next = 0;
  auto root = c10::make_intrusive<c10d::HashStore>();
  const std::string tag = "rc" + std::to_string(next++);
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = world;
    o.generation = generation;
    if (regions > 0) {
      const int size = world / regions, region = rank / size, member = rank % size;
      CommunicatorOptions co;
      co.timeout = std::chrono::seconds(60);
      auto intra = make_communicator(
          c10::make_intrusive<c10d::PrefixStore>(tag + "intra" + std::to_string(region), root),
          member, size, co);
      ASSERT_TRUE(intra.is_ok()) << intra.status().to_string();
      o.intra_comm = *intra;
      if (member == 0) {
        auto inter = make_communicator(c10::make_intrusive<c10d::PrefixStore>(tag + "inter", root),
                                       region, regions, co);
        ASSERT_TRUE(inter.is_ok()) << inter.status().to_string();
        o.inter_comm = *inter;
      }
    }
    MemorySink sink;
    TrainingLoop t(o, comm, &sink, make_workload(o.spec));
    RankOutcome& r = out[static_cast<size_t>(rank)];
    r.status = t.setup();
    if (r.status.is_ok()) r.status = t.run();
    r.mismatch_stop = t.stopped_on_mismatch();
    for (auto& p : t.parameters()) r.params.push_back(p.detach().clone());
    r.summary = t.summary();
    for (const auto& e : sink.events) {
      if (e.value("event", "") == "replica_mismatch") r.mismatches.push_back(e);
    }
  });
  return out;
}

// The first step s >= at with (s + 1) % every == 0: where the corruption must be caught.
int64_t first_verify_at_or_after(int64_t at, int64_t every) {
  return ((at + every) / every) * every - 1;
}

void expect_caught(const std::vector<RankOutcome>& runs, int bad_rank, int64_t step) {
  const int world = static_cast<int>(runs.size());
  std::vector<int> good;
  for (int r = 0; r < world; ++r) {
    if (r != bad_rank) good.push_back(r);
  }
  for (int r = 0; r < world; ++r) {
    const RankOutcome& o = runs[static_cast<size_t>(r)];
    EXPECT_EQ(o.status.code(), StatusCode::kDataLoss)
        << "rank " << r << ": " << o.status.to_string();
    EXPECT_TRUE(o.mismatch_stop) << "rank " << r;
    EXPECT_NE(o.status.message().find("after step " + std::to_string(step)), std::string::npos)
        << o.status.message();
    EXPECT_NE(o.status.message().find("rank " + std::to_string(bad_rank) + " differs from"),
              std::string::npos)
        << o.status.message();
    EXPECT_NE(o.status.message().find("sync.on_mismatch fail"), std::string::npos)
        << o.status.message();
    ASSERT_EQ(o.mismatches.size(), 1u) << "rank " << r;
    const nlohmann::json& e = o.mismatches[0];
    EXPECT_EQ(e["step"].get<int64_t>(), step);
    EXPECT_EQ(e["when"], "step");
    EXPECT_EQ(e["action"], "fail");
    EXPECT_EQ(e["groups"],
              nlohmann::json::array({nlohmann::json(good), nlohmann::json::array({bad_rank})}))
        << e.dump();
  }
}

TEST(ReplicaCheck, SsgdCatchesTheFlippedBitAtTheFirstVerifyNamingTheRank) {
  const int64_t at = 5, every = 4;
  auto runs = run_job(
      job({"sync.verify_every=" + std::to_string(every), "debug.corrupt={rank: 2, at_step: 5}"}));
  expect_caught(runs, 2, first_verify_at_or_after(at, every));
  EXPECT_EQ(first_verify_at_or_after(at, every), 7);
  EXPECT_EQ(first_verify_at_or_after(7, every), 7);  // at the verify's own step: caught there
  EXPECT_EQ(kTrainerReplicaMismatch, 10);
}

TEST(ReplicaCheck, SsgdCorruptionAtAVerifyStepIsCaughtAtThatStep) {
  auto runs = run_job(job({"sync.verify_every=3", "debug.corrupt={rank: 0, at_step: 8}"}));
  expect_caught(runs, 0, 8);
}

// DTS with DiLoCo's outer optimizer: the outer model is the replicated copy of the parameters.
const std::vector<std::string> kDiloco = {
    "sync.strategy=dts", "sync.period=4",           "sync.delay=1",
    "sync.outer.lr=0.7", "sync.outer.momentum=0.5", "sync.outer.nesterov=true"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(ReplicaCheck, DtsCatchesTheFlippedBitInTheOuterModelNamingTheRank) {
  auto runs =
      run_job(job(with(kDiloco, {"sync.verify_every=3", "debug.corrupt={rank: 1, at_step: 6}"})));
  expect_caught(runs, 1, first_verify_at_or_after(6, 3));
}

void expect_repaired(const std::vector<RankOutcome>& runs, int bad_rank, int64_t step) {
  for (size_t r = 0; r < runs.size(); ++r) {
    const RankOutcome& o = runs[r];
    ASSERT_TRUE(o.status.is_ok()) << "rank " << r << ": " << o.status.to_string();
    EXPECT_EQ(o.summary["mismatches"], 1);
    EXPECT_EQ(o.summary["replica_repairs"], 1);
    EXPECT_GT(o.summary["verifies"].get<int64_t>(), 2);
    EXPECT_GE(o.summary["verify_s"].get<double>(), 0.0);
    ASSERT_EQ(o.mismatches.size(), 1u);
    EXPECT_EQ(o.mismatches[0]["step"].get<int64_t>(), step);
    EXPECT_EQ(o.mismatches[0]["action"], "majority");
    EXPECT_EQ(o.mismatches[0]["source"], bad_rank == 0 ? 1 : 0);
    EXPECT_EQ(o.mismatches[0]["groups"].back(), nlohmann::json::array({bad_rank}));
    ASSERT_EQ(o.params.size(), runs[0].params.size());
    for (size_t i = 0; i < o.params.size(); ++i) {
      EXPECT_TRUE(testing::same_bits(o.params[i], runs[0].params[i]))
          << "rank " << r << " parameter " << i;
    }
  }
}

TEST(ReplicaCheck, MajorityRepairsSsgdAndTheRunEndsWithIdenticalReplicas) {
  auto runs = run_job(job(
      {"sync.verify_every=4", "sync.on_mismatch=majority", "debug.corrupt={rank: 3, at_step: 5}"}));
  expect_repaired(runs, 3, 7);
}

TEST(ReplicaCheck, MajorityRepairsAdamWStateToo) {
  // AdamW's step counts are integers: they travel as doubles and load back through the optimizer.
  auto runs = run_job(job({"train.optimizer=adamw", "train.lr=0.001", "sync.verify_every=2",
                           "sync.on_mismatch=majority", "debug.corrupt={rank: 0, at_step: 4}"}));
  expect_repaired(runs, 0, 5);
}

TEST(ReplicaCheck, MajorityRepairsTheOuterModelOfDts) {
  auto runs = run_job(job(with(kDiloco, {"sync.verify_every=3", "sync.on_mismatch=majority",
                                         "debug.corrupt={rank: 2, at_step: 6}"})));
  expect_repaired(runs, 2, 8);
}

TEST(ReplicaCheck, TwoRanksHaveNoMajority) {
  auto runs = run_job(job({"workers=2", "sync.verify_every=2", "sync.on_mismatch=majority",
                           "debug.corrupt={rank: 1, at_step: 2}"}));
  for (const RankOutcome& o : runs) {
    EXPECT_EQ(o.status.code(), StatusCode::kDataLoss) << o.status.to_string();
    EXPECT_TRUE(o.mismatch_stop);
    EXPECT_NE(o.status.message().find("no strict majority (1 of 2 ranks agree)"), std::string::npos)
        << o.status.message();
    ASSERT_EQ(o.mismatches.size(), 1u);
    EXPECT_EQ(o.mismatches[0]["action"], "fail");
    EXPECT_EQ(o.mismatches[0]["step"], 3);
  }
}

TEST(ReplicaCheck, CorruptionWithoutVerificationGoesUnnoticed) {
  // The control: the flip is real (replicas end different) when nothing verifies.
  auto runs = run_job(job({"debug.corrupt={rank: 1, at_step: 3}"}));
  for (const RankOutcome& o : runs) {
    ASSERT_TRUE(o.status.is_ok()) << o.status.to_string();
    EXPECT_EQ(o.summary["verifies"], 0);
  }
  EXPECT_FALSE(testing::same_bits(runs[1].params[0], runs[0].params[0]));
  EXPECT_TRUE(testing::same_bits(runs[2].params[0], runs[0].params[0]));
}

TEST(ReplicaCheck, AJoiningGroupVerifiesTheSyncedStateBeforeTraining) {
  // After a state sync more is identical than after a step: the parameters, buffers, optimizer
  // state (recovery.mode partial broadcasts it) and the strategy's sync point, whatever the
  // strategy; so even plain averaging is verified once there.
  struct Case {
    std::string name;
    std::vector<std::string> overrides;
    int64_t step_verifies;
  };
  for (const Case& c :
       std::vector<Case>{{"ssgd", {}, 4},
                         {"ssgd adamw", {"train.optimizer=adamw", "train.lr=0.001"}, 4},
                         {"dts outer", kDiloco, 4},
                         {"tsu plain", {"sync.strategy=tsu", "sync.period=3"}, 0}}) {
    SCOPED_TRACE(c.name);
    auto runs = run_job(job(with(c.overrides, {"sync.verify_every=4", "recovery.mode=partial"})), 0,
                        /*generation=*/2);
    for (size_t r = 0; r < runs.size(); ++r) {
      const RankOutcome& o = runs[r];
      ASSERT_TRUE(o.status.is_ok()) << "rank " << r << ": " << o.status.to_string();
      EXPECT_EQ(o.summary["verifies"], c.step_verifies + 1) << "rank " << r;
      EXPECT_EQ(o.summary["mismatches"], 0) << "rank " << r;
    }
  }
}

struct CleanCase {
  std::string name;
  std::vector<std::string> overrides;
  int regions = 0;
  bool verifies_between_regroups = true;  // the strategy keeps something identical after steps
};

TEST(ReplicaCheck, NoMismatchWithoutCorruptionForEveryStrategy) {
  const std::vector<CleanCase> cases = {
      {"ssgd", {}},
      {"ssgd int4 (error feedback)", {"compress.method=int4"}},
      {"ssgd topk (error feedback)", {"compress.method=topk"}},
      {"dssgd d0", {"sync.strategy=dssgd", "sync.delay=0"}},
      {"dssgd d2", {"sync.strategy=dssgd", "sync.delay=2"}, 0, false},
      {"tsu outer",
       {"sync.strategy=tsu", "sync.period=3", "sync.outer.lr=0.7", "sync.outer.momentum=0.5"}},
      {"tsu plain", {"sync.strategy=tsu", "sync.period=3"}, 0, false},
      {"dts outer", kDiloco},
      {"dts outer int4 (error feedback)", with(kDiloco, {"compress.method=int4"})},
      {"dts outer 2 fragments", with(kDiloco, {"sync.fragments=2"})},
      {"dts plain, automatic plan", {"sync.strategy=dts", "sync.delay=auto", "sync.period=auto"}},
      {"hierarchical outer",
       {"sync.strategy=hierarchical", "sync.inter_period=3", "sync.outer.lr=0.7",
        "sync.outer.momentum=0.5"},
       2},
      {"hierarchical plain", {"sync.strategy=hierarchical", "sync.inter_period=3"}, 2, false},
  };
  for (const CleanCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto runs = run_job(job(with(c.overrides, {"sync.verify_every=2"})), c.regions);
    for (size_t r = 0; r < runs.size(); ++r) {
      const RankOutcome& o = runs[r];
      ASSERT_TRUE(o.status.is_ok()) << "rank " << r << ": " << o.status.to_string();
      EXPECT_EQ(o.summary["mismatches"], 0) << "rank " << r;
      EXPECT_TRUE(o.mismatches.empty()) << "rank " << r << ": " << o.mismatches.front().dump();
      if (c.verifies_between_regroups) {
        EXPECT_EQ(o.summary["verifies"], 8) << "rank " << r;  // 16 steps, every 2
      } else {
        EXPECT_EQ(o.summary["verifies"], 0) << "rank " << r;
      }
    }
  }
}

}  // namespace
}  // namespace tern
