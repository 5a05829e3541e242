// tern-loadgen: a control-plane load test. Registers N simulated worker daemons that heartbeat
// at a fixed interval (as real daemons do) from a pool of client threads, submits M jobs from
// the same threads, and reports heartbeat RPC latency percentiles and the registration and
// submission times. It speaks the public WorkerService/Coordinator
// API through the same client wrappers the daemon uses. Prints one JSON object.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "rpc/client.h"

namespace {

using Clock = std::chrono::steady_clock;

struct SimWorker {
  std::string id;
  uint64_t session = 0;
  Clock::time_point due;
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  std::string address = "127.0.0.1:7070";
  int workers = 100, jobs = 10, threads = 8;
  double duration_s = 10, interval_ms = 1000;
  CLI::App app{"tern-loadgen: simulated workers heartbeating against a coordinator"};
  app.add_option("--coordinator", address);
  app.add_option("--workers", workers);
  app.add_option("--jobs", jobs);
  app.add_option("--threads", threads);
  app.add_option("--duration", duration_s, "seconds of steady heartbeating measured");
  app.add_option("--interval-ms", interval_ms, "heartbeat interval of each simulated worker");
  CLI11_PARSE(app, argc, argv);

  tern::RpcClientOptions opts;
  opts.deadline = std::chrono::milliseconds(10000);
  opts.retries = 0;
  std::vector<std::unique_ptr<tern::WorkerServiceClient>> clients;
  for (int t = 0; t < threads; ++t)
    clients.push_back(std::make_unique<tern::WorkerServiceClient>(address, opts));

  // Register, spread over the threads.
  std::vector<SimWorker> sims(static_cast<size_t>(workers));
  std::atomic<int> reg_errors{0};
  auto reg_start = Clock::now();
  {
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        for (int i = t; i < workers; i += threads) {
          tern::v1::RegisterWorkerRequest r;
          r.set_name("sim-" + std::to_string(i));
          r.set_host("127.0.0.1");
          r.set_region("region-" + std::to_string(i % 4));
          r.set_slots(1);
          auto rep = clients[static_cast<size_t>(t)]->register_worker(r);
          if (!rep.is_ok()) {
            ++reg_errors;
            continue;
          }
          sims[static_cast<size_t>(i)].id = rep->worker_id();
          sims[static_cast<size_t>(i)].session = rep->session();
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  double reg_s = std::chrono::duration<double>(Clock::now() - reg_start).count();

  // Submit, spread over the threads (each submit is one journal record, acknowledged once on
  // disk: concurrent submits measure the journal's group commit).
  std::atomic<int> submitted{0};
  auto submit_start = Clock::now();
  {
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        tern::CoordinatorClient coordinator(address, opts);
        for (int j = t; j < jobs; j += threads) {
          tern::v1::SubmitJobRequest r;
          r.set_spec_yaml(
              "name: load-" + std::to_string(j) +
              "\nworkers: 1\ndata: {source: synthetic, train_size: 64, test_size: 16}\n");
          r.set_source_name("loadgen");
          submitted += coordinator.submit_job(r).is_ok();
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  double submit_s = std::chrono::duration<double>(Clock::now() - submit_start).count();

  // Heartbeat: each thread owns every threads-th worker; staggered first heartbeats.
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::atomic<int64_t> errors{0}, late{0};
  auto start = Clock::now();
  auto stop_at = start + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(duration_s));
  auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(interval_ms));
  for (size_t i = 0; i < sims.size(); ++i)
    sims[i].due = start + interval * static_cast<long>(i) / workers;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<double> mine;
      while (Clock::now() < stop_at) {
        Clock::time_point next = stop_at;
        for (size_t i = static_cast<size_t>(t); i < sims.size();
             i += static_cast<size_t>(threads)) {
          SimWorker& w = sims[i];
          if (w.id.empty()) continue;
          auto now = Clock::now();
          if (w.due <= now) {
            if (now - w.due > interval) ++late;  // this client could not keep up
            tern::v1::HeartbeatRequest r;
            r.set_worker_id(w.id);
            r.set_session(w.session);
            auto t0 = Clock::now();
            auto rep = clients[static_cast<size_t>(t)]->heartbeat(r);
            mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            if (!rep.is_ok()) ++errors;
            w.due += interval;
          }
          next = std::min(next, w.due);
        }
        std::this_thread::sleep_until(std::min(next, stop_at));
      }
      std::lock_guard<std::mutex> l(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : ts) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> v = latencies_ms;
  nlohmann::json out = {
      {"workers", workers},
      {"registered", workers - reg_errors.load()},
      {"register_s", reg_s},
      {"jobs_submitted", submitted.load()},
      {"submit_s", submit_s},
      {"heartbeats", latencies_ms.size()},
      {"heartbeats_per_s", static_cast<double>(latencies_ms.size()) / elapsed},
      {"target_per_s", workers * 1000.0 / interval_ms},
      {"errors", errors.load()},
      {"late", late.load()},
      {"p50_ms", percentile(v, 0.50)},
      {"p99_ms", percentile(v, 0.99)},
      {"max_ms", v.empty() ? 0.0 : *std::max_element(v.begin(), v.end())},
  };
  std::cout << out.dump() << std::endl;
  return errors.load() == 0 && reg_errors.load() == 0 ? 0 : 1;
}
