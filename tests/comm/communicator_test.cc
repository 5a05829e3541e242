#include <gtest/gtest.h>
#include <torch/torch.h>

#include <future>
#include <set>
#include <thread>

#include "comm/abandon.h"
#include "comm/counting_communicator.h"
#include "comm/reducer.h"
#include "testing/gloo_group.h"

namespace tern {
namespace {

TEST(Communicator, AllReduceAllGatherBroadcastOverGloo) {
  testing::run_ranks(3, [](int rank, std::shared_ptr<Communicator> comm) {
    std::vector<at::Tensor> t{at::full({4}, static_cast<float>(rank + 1))};
    ASSERT_TRUE(all_reduce_sync(*comm, t).is_ok());
    EXPECT_TRUE(at::equal(t[0], at::full({4}, 6.f)));

    at::Tensor in = at::full({2}, static_cast<float>(rank));
    std::vector<at::Tensor> out{at::zeros({2}), at::zeros({2}), at::zeros({2})};
    ASSERT_TRUE(all_gather_sync(*comm, out, in).is_ok());
    for (int r = 0; r < 3; ++r)
      EXPECT_TRUE(at::equal(out[static_cast<size_t>(r)], at::full({2}, static_cast<float>(r))));

    std::vector<at::Tensor> b{rank == 1 ? at::arange(5, at::kFloat) : at::zeros({5})};
    ASSERT_TRUE(broadcast_sync(*comm, b, 1).is_ok());
    EXPECT_TRUE(at::equal(b[0], at::arange(5, at::kFloat)));
  });
}

TEST(Communicator, PointToPointAndRecvAny) {
  testing::run_ranks(3, [](int rank, std::shared_ptr<Communicator> comm) {
    at::Tensor t = at::full({3}, static_cast<float>(rank));
    if (rank == 0) {
      std::set<int> senders;
      for (int i = 0; i < 2; ++i) {
        at::Tensor buf = at::zeros({3});
        auto w = comm->recv_any(buf, 7);
        ASSERT_TRUE(w->wait(std::chrono::seconds(10)).is_ok());
        int src = w->source_rank();
        senders.insert(src);
        EXPECT_TRUE(at::equal(buf, at::full({3}, static_cast<float>(src))));
      }
      EXPECT_EQ(senders, (std::set<int>{1, 2}));
    } else {
      ASSERT_TRUE(comm->send(t, 0, 7)->wait(std::chrono::seconds(10)).is_ok());
    }
  });
}

TEST(Communicator, WaitTimesOutWhenAPeerNeverJoins) {
  std::promise<void> done;
  std::shared_future<void> done_f = done.get_future().share();
  testing::run_ranks(
      2,
      [&](int rank, std::shared_ptr<Communicator> comm) {
        if (rank == 1) {  // alive, but never joins the collective
          done_f.wait();
          return;
        }
        std::vector<at::Tensor> t{at::ones({2})};
        auto start = std::chrono::steady_clock::now();
        Status s = comm->all_reduce(t, ReduceOp::kSum)->wait(std::chrono::milliseconds(300));
        EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.to_string();
        EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
        done.set_value();
      },
      std::chrono::milliseconds(2000));
}

// A survivor blocked on a peer that is alive but stuck (not its ring neighbour that died)
// leaves the collective as soon as the regroup command abandons the group, long before the
// collective timeout; communicators made afterwards are unaffected.
TEST(Communicator, AbandonEndsABlockedWaitAtOnce) {
  std::promise<void> done;
  std::shared_future<void> done_f = done.get_future().share();
  testing::run_ranks(
      2,
      [&](int rank, std::shared_ptr<Communicator> comm) {
        if (rank == 1) {  // alive, but never joins the collective
          done_f.wait();
          return;
        }
        std::vector<at::Tensor> t{at::ones({2})};
        auto work = comm->all_reduce(t, ReduceOp::kSum);
        std::thread regroup([] {
          std::this_thread::sleep_for(std::chrono::milliseconds(300));
          abandon_collectives("regroup to generation 2");
        });
        auto start = std::chrono::steady_clock::now();
        Status s = work->wait(std::chrono::seconds(30));
        auto waited = std::chrono::steady_clock::now() - start;
        regroup.join();
        EXPECT_EQ(s.code(), StatusCode::kAborted) << s.to_string();
        EXPECT_NE(s.message().find("regroup to generation 2"), std::string::npos) << s.message();
        EXPECT_LT(waited, std::chrono::seconds(5));
        // A new collective on the old group fails at once, too.
        Status again = comm->all_reduce(t, ReduceOp::kSum)->wait(std::chrono::seconds(30));
        EXPECT_EQ(again.code(), StatusCode::kAborted);
        done.set_value();
      },
      std::chrono::milliseconds(30000));
  // The next generation's groups work.
  testing::run_ranks(2, [](int, std::shared_ptr<Communicator> comm) {
    std::vector<at::Tensor> t{at::ones({2})};
    ASSERT_TRUE(all_reduce_sync(*comm, t).is_ok());
    EXPECT_TRUE(at::equal(t[0], at::full({2}, 2.f)));
  });
}

// Waits longer than one abandon-check slice still complete normally.
TEST(Communicator, SlicedWaitCompletesLateCollectives) {
  testing::run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    if (rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(700));
    std::vector<at::Tensor> t{at::ones({2})};
    ASSERT_TRUE(all_reduce_sync(*comm, t).is_ok());
    EXPECT_TRUE(at::equal(t[0], at::full({2}, 2.f)));
    at::Tensor buf = at::zeros({1});
    if (rank == 0) {
      ASSERT_TRUE(comm->recv(buf, 1, 3)->wait(std::chrono::seconds(10)).is_ok());
      EXPECT_EQ(buf.item<float>(), 5.f);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      at::Tensor v = at::full({1}, 5.f);
      ASSERT_TRUE(comm->send(v, 0, 3)->wait(std::chrono::seconds(10)).is_ok());
    }
  });
}

TEST(CountingCommunicator, CountsRingAlgorithmBytes) {
  testing::run_ranks(4, [](int rank, std::shared_ptr<Communicator> inner) {
    CountingCommunicator comm(inner);
    std::vector<at::Tensor> t{at::ones({1000})};  // 4000 bytes
    ASSERT_TRUE(all_reduce_sync(comm, t).is_ok());
    EXPECT_EQ(comm.counts().all_reduce, 2 * 3 * 4000 / 4);
    at::Tensor in = at::ones({10});  // 40 bytes
    std::vector<at::Tensor> out(4, at::zeros({10}));
    for (auto& o : out) o = at::zeros({10});
    ASSERT_TRUE(all_gather_sync(comm, out, in).is_ok());
    EXPECT_EQ(comm.counts().all_gather, 3 * 40);
    EXPECT_EQ(comm.counts().total(), 6000 + 120);
  });
}

TEST(DenseReducer, AveragesBucketedGradientsOfMixedShapes) {
  testing::run_ranks(3, [](int rank, std::shared_ptr<Communicator> comm) {
    // A tiny bucket size forces several buckets.
    DenseReducer reducer(*comm, 64);
    std::vector<at::Tensor> g{at::full({3, 5}, static_cast<float>(rank)), at::full({7}, 2.f * rank),
                              at::full({40}, 1.f)};
    auto pending = reducer.start(g, 0);
    // start() snapshots: overwriting the inputs now must not change the result.
    for (auto& t : g) t.fill_(100.f);
    ASSERT_TRUE(pending->finish(g).is_ok());
    EXPECT_TRUE(at::allclose(g[0], at::full({3, 5}, 1.f)));
    EXPECT_TRUE(at::allclose(g[1], at::full({7}, 2.f)));
    EXPECT_TRUE(at::allclose(g[2], at::full({40}, 1.f)));
  });
}

TEST(Reducer, BroadcastTensorsAndAverageTensors) {
  testing::run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    std::vector<at::Tensor> ts{at::full({2, 2}, static_cast<float>(rank + 1)),
                               at::full({3}, static_cast<float>(10 * rank))};
    ASSERT_TRUE(broadcast_tensors(*comm, ts, 1).is_ok());
    EXPECT_TRUE(at::equal(ts[0], at::full({2, 2}, 2.f)));
    EXPECT_TRUE(at::equal(ts[1], at::full({3}, 10.f)));
    std::vector<at::Tensor> avg{at::full({4}, static_cast<float>(rank))};
    ASSERT_TRUE(average_tensors(*comm, avg, 1 << 20).is_ok());
    EXPECT_TRUE(at::allclose(avg[0], at::full({4}, 0.5f)));
  });
}

}  // namespace
}  // namespace tern
