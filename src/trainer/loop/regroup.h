// Elastic regroup, the transport half of the loop's recovery: after a step failed because a
// peer died, wait for the parent's regroup command (a new generation and master address),
// build that generation's communicators and point the loop's counting decorators at them.
// Re-syncing state afterwards is TrainingLoop::recover's (training_loop.h): the furthest rank's
// parameters, optimizer state and counters, then the lost rank's own state from its checkpoint.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/counting_communicator.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/loop/events.h"

namespace tern {

// The communicators of one generation (process/comm_stack.h builds them): the job-wide one,
// and for hierarchical sync the rank's region group plus, on region leaders, the leaders' group.
struct CommStack {
  std::shared_ptr<Communicator> world;
  std::shared_ptr<Communicator> intra;  // hierarchical only
  std::shared_ptr<Communicator> inter;  // hierarchical, region leaders only
};

// The parent's regroup command (trainer_protocol.h): the new generation's group.
struct RegroupRequest {
  int64_t generation = 0;
  int world = 0;
  std::string master;     // HOST:PORT; rank 0 of the new generation hosts the store there
  bool rollback = false;  // recovery.mode full: everybody reloads the last checkpoint
  // The group's job ranks in group order (elastic jobs); empty: all ranks, world == the job's.
  std::vector<int> members;
  // This rank's position in the group (-1: not a member, a standby that keeps waiting).
  int group_rank(int job_rank) const;
};

// How a trainer regroups: supplied by trainer_main (stdin commands, rendezvous, comm stack).
struct RegroupHooks {
  // Blocks until the parent sends a regroup command (DEADLINE_EXCEEDED after `timeout`).
  std::function<Result<RegroupRequest>(std::chrono::milliseconds timeout)> wait;
  // The new generation's communicators.
  std::function<Result<CommStack>(const RegroupRequest&)> connect;
};

// The communicators a loop regroups: `world` always, the hierarchical ones when non-null.
struct RegroupTargets {
  CountingCommunicator* world = nullptr;
  CountingCommunicator* intra = nullptr;
  CountingCommunicator* inter = nullptr;
  // Old generations go here: their threads may still be stuck on the dead peer, so they are
  // never torn down on the training thread (release_retired does it off that thread).
  std::vector<std::shared_ptr<Communicator>>* retired = nullptr;
};

// Tears down the old generations' communicators on a detached thread, once the new generation
// trains. A retired Gloo group keeps three threads and its sockets (its transport loop wakes
// every few milliseconds): kept for the life of the trainer, every regroup left the machine a
// little busier (bench/goodput.sh measured the step rate falling from one generation to the
// next). Its destructor waits for a collective still stuck on a peer (at most sync.timeout_s),
// which is why it runs off the training thread; the process may exit before it finishes.
void release_retired(std::vector<std::shared_ptr<Communicator>>* retired);

// True for the failures a lost peer causes (a collective closed, timed out or aborted).
bool is_peer_failure(const Status& failure);

// With recovery.mode partial | full and hooks set, after a peer failure at `step`: emits
// peer_lost, waits for the regroup command (minutes: a replacement may need to start),
// connects and swaps the communicators in `targets`. Returns `failure` itself when the loop
// cannot regroup (mode none, no hooks, not a peer failure), and FAILED_PRECONDITION for a
// group that does not name this rank or (without members) another world size.
Result<RegroupRequest> regroup_after_failure(const RegroupHooks& hooks, const JobSpec& spec,
                                             int rank, int world, int64_t step,
                                             const Status& failure, EventSink* sink,
                                             const RegroupTargets& targets);

// Fault injection at the top of a step (debug.fail_rank/fail_step: exit with
// kInjectedFailureExit; debug.kill: SIGKILL to itself). Only at the first generation, so a
// replacement started for the same rank does not fail again. Does not return when it fires.
void inject_faults(const DebugSpec& debug, int rank, int64_t generation, int64_t step);

// debug.corrupt: at the top of step debug.corrupt.at_step this rank flips one bit
// (replica_check.h's corrupt_bit: a float's highest mantissa bit) of the first element of
// `target()` (replica_check.h's corruption_target: the first replicated parameter), logged. Only at
// the first generation, like inject_faults. `target` is only called when it fires.
void inject_corruption(const DebugSpec& debug, int rank, int64_t generation, int64_t step,
                       const std::function<at::Tensor()>& target);

}  // namespace tern
