// The coordinator's gRPC services over a real in-process server on a free port, driven with
// the same client wrappers the CLI and the worker daemon use.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <thread>

#include "coordinator/coordinator_server.h"
#include "rpc/client.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_service_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    CoordinatorServerOptions o;
    o.listen = "127.0.0.1:0";
    o.core.state_dir = dir_.string();
    o.core.cluster_yaml = "name: test\n";
    auto s = CoordinatorServer::start(o, &clock_);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
    client_ = std::make_unique<CoordinatorClient>(server_->address());
    workers_ = std::make_unique<WorkerServiceClient>(server_->address());
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  v1::SubmitJobReply submit(int workers, const std::string& name = "svc") {
    v1::SubmitJobRequest req;
    req.set_spec_yaml("name: " + name + "\nworkers: " + std::to_string(workers) +
                      "\ndata: {source: synthetic, train_size: 256, test_size: 64}\n");
    req.set_source_name(name + ".yaml");
    auto r = client_->submit_job(req);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : v1::SubmitJobReply{};
  }
  v1::RegisterWorkerReply register_worker(const std::string& name, const std::string& region) {
    v1::RegisterWorkerRequest req;
    req.set_name(name);
    req.set_host("127.0.0.1");
    req.set_region(region);
    req.set_slots(1);
    req.add_spare_ports(45000);
    auto r = workers_->register_worker(req);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return *r;
  }

  fs::path dir_;
  ManualClock clock_;
  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<CoordinatorClient> client_;
  std::unique_ptr<WorkerServiceClient> workers_;
};

TEST_F(ServiceTest, InvalidSpecIsInvalidArgumentWithTheField) {
  v1::SubmitJobRequest req;
  req.set_spec_yaml("name: x\nworkers: 0\n");
  req.set_source_name("jobs/x.yaml");
  auto r = client_->submit_job(req);
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("workers"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("jobs/x.yaml"), std::string::npos) << r.status().message();
}

// Issue #18 item 1 over gRPC: the override that crashed the coordinator is INVALID_ARGUMENT and
// the server keeps answering.
TEST_F(ServiceTest, CyclicAliasOverrideIsInvalidArgumentAndTheServerLives) {
  v1::SubmitJobRequest req;
  req.set_spec_yaml("name: cyc\nworkers: 1\ndata: {source: synthetic, train_size: 256}\n");
  req.add_overrides("x=&a [*a]");
  req.set_source_name("cyc.yaml");
  auto r = client_->submit_job(req);
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  EXPECT_NE(r.status().message().find("cyclic alias"), std::string::npos) << r.status().message();
  submit(1, "after");
  auto jobs = client_->list_jobs(v1::ListJobsRequest{});
  ASSERT_TRUE(jobs.is_ok()) << jobs.status().to_string();
  EXPECT_EQ(jobs->jobs_size(), 1);
}

TEST_F(ServiceTest, UnknownJobIsNotFound) {
  EXPECT_EQ(client_->get_job("j-404").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client_->cancel_job("j-404").status().code(), StatusCode::kNotFound);
  auto w = client_->watch_job("j-404", [](const v1::JobStatus&) { return true; });
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
}

TEST_F(ServiceTest, WorkerFlowAndWatchOverGrpc) {
  auto w0 = register_worker("east-0", "east");
  auto w1 = register_worker("west-0", "west");
  EXPECT_EQ(w0.worker_id(), "east-0");
  auto sub = submit(2);
  ASSERT_EQ(sub.job().state(), v1::JOB_STATE_RUNNING);
  const std::string id = sub.job_id();

  std::vector<v1::JobState> seen;  // the watcher's until it is joined
  v1::JobStatus final_status;
  // The events below wait for the watch's first message: on a loaded machine the watcher may
  // otherwise connect only after the job ended and never see it RUNNING.
  std::promise<void> first_message;
  std::thread watcher([&] {
    auto last = client_->watch_job(
        id,
        [&](const v1::JobStatus& j) {
          if (seen.empty()) first_message.set_value();
          if (seen.empty() || seen.back() != j.state()) seen.push_back(j.state());
          return true;
        },
        10);
    if (seen.empty()) first_message.set_value();
    ASSERT_TRUE(last.is_ok()) << last.status().to_string();
    final_status = *last;
  });
  ASSERT_EQ(first_message.get_future().wait_for(std::chrono::seconds(30)),
            std::future_status::ready);

  v1::HeartbeatRequest hb;
  hb.set_worker_id(w0.worker_id());
  hb.set_session(w0.session());
  auto reply = workers_->heartbeat(hb);
  ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
  ASSERT_EQ(reply->commands_size(), 1);
  const v1::StartTask& start = reply->commands(0).start();
  EXPECT_EQ(start.task().job_id(), id);
  EXPECT_EQ(start.task().rank(), 0);
  EXPECT_EQ(start.world_size(), 2);
  EXPECT_EQ(start.master_addr(), "127.0.0.1:45000");
  EXPECT_EQ(start.cluster_yaml(), "name: test\n");
  EXPECT_EQ(std::vector<std::string>(start.rank_regions().begin(), start.rank_regions().end()),
            (std::vector<std::string>{"east", "west"}));

  auto send = [&](const v1::RegisterWorkerReply& w, int rank, auto fill) {
    v1::ReportEventsRequest req;
    req.set_worker_id(w.worker_id());
    req.set_session(w.session());
    v1::TaskEvent* e = req.add_events();
    e->mutable_task()->set_job_id(id);
    e->mutable_task()->set_rank(rank);
    e->mutable_task()->set_generation(1);
    fill(e);
    auto r = workers_->report_events(req);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->accepted(), 1);
  };
  for (int rank = 0; rank < 2; ++rank) {
    auto& w = rank == 0 ? w0 : w1;
    send(w, rank, [](v1::TaskEvent* e) {
      auto* p = e->mutable_progress();
      p->set_step(3);
      p->set_total_steps(8);
      p->set_loss(0.5);
      p->set_samples_per_s(200);
      (*p->mutable_metrics())["compression_ratio"] = 100;
    });
    send(w, rank, [rank](v1::TaskEvent* e) {
      e->mutable_log()->set_offset(0);
      e->mutable_log()->set_data("log of rank " + std::to_string(rank) + "\n");
    });
  }
  auto status = client_->get_job(id);
  ASSERT_TRUE(status.is_ok());
  EXPECT_EQ(status->job().step(), 3);
  EXPECT_DOUBLE_EQ(status->job().samples_per_s(), 400);
  EXPECT_DOUBLE_EQ(status->job().ranks(1).metrics().at("compression_ratio"), 100);
  EXPECT_NE(status->spec_yaml().find("train_size: 256"), std::string::npos);

  send(w0, 0, [](v1::TaskEvent* e) {
    (*e->mutable_finished()->mutable_summary())["test_accuracy"] = 0.91;
  });
  send(w0, 0, [](v1::TaskEvent* e) { e->mutable_exited()->set_exit_code(0); });
  send(w1, 1, [](v1::TaskEvent* e) { e->mutable_exited()->set_exit_code(0); });
  watcher.join();
  EXPECT_EQ(final_status.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_DOUBLE_EQ(final_status.test_accuracy(), 0.91);
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(seen.back(), v1::JOB_STATE_SUCCEEDED);

  v1::GetLogsRequest logs;
  logs.set_job_id(id);
  logs.set_rank(1);
  auto l = client_->get_logs(logs);
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ(l->data(), "log of rank 1\n");
  EXPECT_TRUE(l->complete());

  auto list = client_->list_workers();
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ(list->workers_size(), 2);
  EXPECT_EQ(list->workers(0).state(), v1::WORKER_STATE_READY);
  EXPECT_EQ(list->workers(1).region(), "west");
}

TEST_F(ServiceTest, ListAndCancel) {
  auto a = submit(1, "first");
  auto b = submit(1, "second");
  auto c = client_->cancel_job(a.job_id(), "changed my mind");
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->job().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(c->job().reason(), "changed my mind");
  auto all = client_->list_jobs();
  ASSERT_TRUE(all.is_ok());
  ASSERT_EQ(all->jobs_size(), 2);
  EXPECT_EQ(all->jobs(0).name(), "first");
  v1::ListJobsRequest pending;
  pending.add_states(v1::JOB_STATE_PENDING);
  auto p = client_->list_jobs(pending);
  ASSERT_EQ(p->jobs_size(), 1);
  EXPECT_EQ(p->jobs(0).job_id(), b.job_id());
  EXPECT_EQ(client_->cancel_job(a.job_id()).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(ServiceTest, StaleSessionIsFailedPrecondition) {
  auto w = register_worker("w", "r");
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w");
  hb.set_session(w.session() + 100);
  EXPECT_EQ(workers_->heartbeat(hb).status().code(), StatusCode::kFailedPrecondition);
  hb.set_worker_id("nobody");
  EXPECT_EQ(workers_->heartbeat(hb).status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tern
