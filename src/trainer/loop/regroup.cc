#include "trainer/loop/regroup.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "common/trainer_codec.h"
#include "common/trainer_protocol.h"
#include "trainer/loop/replica_check.h"

namespace tern {

bool is_peer_failure(const Status& failure) {
  const StatusCode c = failure.code();
  return c == StatusCode::kUnavailable || c == StatusCode::kDeadlineExceeded ||
         c == StatusCode::kAborted || c == StatusCode::kInternal;
}

int RegroupRequest::group_rank(int job_rank) const {
  if (members.empty()) return job_rank < world ? job_rank : -1;
  auto it = std::find(members.begin(), members.end(), job_rank);
  return it == members.end() ? -1 : static_cast<int>(it - members.begin());
}

Result<RegroupRequest> regroup_after_failure(const RegroupHooks& hooks, const JobSpec& spec,
                                             int rank, int world, int64_t step,
                                             const Status& failure, EventSink* sink,
                                             const RegroupTargets& targets) {
  const bool elastic =
      spec.recovery.mode == RecoveryMode::kPartial || spec.recovery.mode == RecoveryMode::kFull;
  if (!elastic || !hooks.wait || !hooks.connect || !is_peer_failure(failure)) return failure;
  spdlog::warn("step {}: lost a peer ({}); waiting for the coordinator to regroup", step,
               failure.to_string());
  sink->emit(to_json(PeerLostEvent{step, failure.to_string()}));
  auto wait = std::chrono::milliseconds(
      static_cast<int64_t>(std::max(120.0, 4 * spec.sync.timeout_s) * 1000));
  // A group can be lost while it forms (another rank dies, a standby joins): the coordinator
  // then sends a newer regroup, which abandons this connect (comm/abandon.h), and the rank
  // follows it. Bounded: a coordinator that keeps changing its mind fails the trainer.
  constexpr int kMaxAttempts = 16;
  RegroupRequest req;
  CommStack stack;
  for (int attempt = 1;; ++attempt) {
    auto waited = hooks.wait(wait);
    if (!waited.is_ok()) return waited.status().with_context("after " + failure.to_string());
    req = std::move(waited).value();
    if (req.members.empty() && req.world != world) {
      return failed_precondition("regroup to world " + std::to_string(req.world) + " from " +
                                 std::to_string(world) + " without a member list");
    }
    if (req.group_rank(rank) < 0) {
      return failed_precondition("regroup to generation " + std::to_string(req.generation) +
                                 " does not name rank " + std::to_string(rank));
    }
    spdlog::info("regrouping at generation {} (master {}, {} of {} ranks)", req.generation,
                 req.master, req.world, world);
    auto connected = hooks.connect(req);
    if (connected.is_ok()) {
      stack = std::move(connected).value();
      break;
    }
    if (attempt == kMaxAttempts)
      return connected.status().with_context("regroup at generation " +
                                             std::to_string(req.generation));
    spdlog::warn("generation {} did not form ({}); waiting for the next regroup", req.generation,
                 connected.status().to_string());
  }
  targets.retired->push_back(targets.world->replace_inner(stack.world));
  if (targets.intra && stack.intra)
    targets.retired->push_back(targets.intra->replace_inner(stack.intra));
  if (targets.inter && stack.inter)
    targets.retired->push_back(targets.inter->replace_inner(stack.inter));
  return req;
}

void release_retired(std::vector<std::shared_ptr<Communicator>>* retired) {
  if (retired == nullptr || retired->empty()) return;
  std::thread([comms = std::move(*retired)]() mutable {
    const auto t0 = std::chrono::steady_clock::now();
    const size_t n = comms.size();
    comms.clear();
    spdlog::debug("released {} retired communicator(s) in {:.2f} s", n,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }).detach();
  retired->clear();
}

void inject_faults(const DebugSpec& debug, int rank, int64_t generation, int64_t step) {
  if (generation > 1) return;
  if (debug.fail_rank == rank && debug.fail_step == step) {
    spdlog::error("debug.fail_step reached: rank {} exits now (fault injection)", rank);
    std::fflush(stdout);
    std::_Exit(kInjectedFailureExit);
  }
  if (debug.kill_rank == rank && debug.kill_step == step) {
    spdlog::error("debug.kill reached: rank {} sends itself SIGKILL at step {} (fault injection)",
                  rank, step);
    spdlog::default_logger()->flush();
    ::kill(::getpid(), SIGKILL);
  }
}

void inject_corruption(const DebugSpec& debug, int rank, int64_t generation, int64_t step,
                       const std::function<at::Tensor()>& target) {
  if (generation > 1 || debug.corrupt_rank != rank || debug.corrupt_step != step) return;
  at::Tensor t = target();
  if (!t.defined() || t.numel() == 0) {
    spdlog::warn("debug.corrupt reached: rank {} has no replicated parameter to corrupt at step {}",
                 rank, step);
    return;
  }
  flip_one_bit(t);
  spdlog::warn(
      "debug.corrupt reached: rank {} flipped bit {} of the first element of a {} tensor of its "
      "replicated parameters at step {} (fault injection)",
      rank, corrupt_bit(t.scalar_type()), c10::str(t.sizes()), step);
}

}  // namespace tern
