// Test helper: runs one function per rank on `world` threads, each rank with a real Gloo
// communicator over a shared in-memory c10d::HashStore. Failures inside a rank's function
// are reported by GoogleTest as usual (EXPECT_* is thread-safe).
#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <vector>

#include "comm/process_group.h"

namespace tern::testing {

inline void run_ranks(int world, const std::function<void(int, std::shared_ptr<Communicator>)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  static int next_group = 0;
  auto root = c10::make_intrusive<c10d::HashStore>();
  auto store = c10::make_intrusive<c10d::PrefixStore>("g" + std::to_string(next_group++), root);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions o;
      o.timeout = timeout;
      auto comm = make_communicator(store, r, world, o);
      if (!comm.is_ok()) {
        ADD_FAILURE() << comm.status().to_string();
        return;
      }
      fn(r, *comm);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace tern::testing
