// Replica integrity (sync.verify_every, sync.on_mismatch; issue 22): every K steps and right
// after every regroup, the ranks compare a 64-bit hash of the state that should be bit-identical
// on every rank, and a rank whose state differs (a flipped bit in memory, a faulty device, a
// broken broadcast) is named instead of silently training a different model.
//
// What is compared (ReplicaSources::collect):
//   at a step (kStep)         what the strategy keeps identical after every step
//                             (SyncStrategy::replica_view): the parameters and the optimizer's
//                             state under ssgd / dssgd d = 0, the outer model and its momentum
//                             of tsu / dts / hierarchical with an outer optimizer, the automatic
//                             plan. A strategy that keeps nothing identical between syncs (dssgd
//                             d > 0, plain periodic averaging, straggler modes) is verified only
//                             after regroups (logged once).
//   after a regroup / join    everything the group re-synced: the parameters, the workload's
//                             buffers, the strategy's replicated state and sync point, and the
//                             optimizer's state when it was broadcast too (recovery.mode
//                             partial) or is replicated anyway (ssgd).
// Never per-rank state: error-feedback memories, DGC velocities, embedding shards.
//
// The hash, written in a few lines in the style of xxHash64: each 64-bit little-endian word w of
// each tensor's name, dtype, shape and raw bytes (on the CPU, contiguous), in order, is mixed
// in as h = rotl(h ^ w * P2, 31) * P1, and the result goes through xxHash64's avalanche. Every
// step is a bijection of the running hash (and of w), so two states that differ in one word
// (any single flipped bit) always hash differently; other differences collide with probability
// about 2^-64. (FNV's multiply alone only carries differences upwards: flips of the top bit of
// two different words would hash alike.) A second hash of names, dtypes and shapes alone tells
// a different layout (which a broadcast cannot repair) from different values. Both travel in
// one all-reduce of a 2 x world int64 tensor, each rank writing its own slots.
//
// A mismatch: a `replica_mismatch` event (step, when, the ranks of each group of equal hashes,
// largest first, the action) and an error log line; then sync.on_mismatch fail returns
// DATA_LOSS naming the ranks and the step (the trainer exits kTrainerReplicaMismatch), and
// majority broadcasts the state of the lowest rank of the largest group to every rank, in place,
// when that group is a strict majority of the ranks and every rank has its layout (else it fails
// the same way), then verifies again. Counted in stats(): verifies, verify_s (wall seconds
// spent, hashing and exchanges), mismatches, repairs.
//
// Collective: every rank calls verify() at the same points with the same point kind. The loop's
// thread only.
#pragma once

#include <ATen/ATen.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "common/status.h"
#include "sync/strategy.h"
#include "trainer/loop/events.h"
#include "trainer/loop/optimizer.h"

namespace tern {

constexpr uint64_t kHashSeed = 0x27D4EB2F165667C5ull;

// The running hash `h` with the 64-bit little-endian words of `n` bytes mixed in (a short tail
// zero-padded, then the byte count), without the final avalanche.
uint64_t hash_bytes(const void* data, size_t n, uint64_t h = kHashSeed);

// The hash of `state` (names, dtypes, shapes and bytes, in order); an undefined tensor hashes as
// its name alone. `layout_only`: names, dtypes and shapes without the bytes.
uint64_t hash_named_tensors(const NamedState& state, bool layout_only = false);

// Ranks grouped by equal hash: the largest group first (equal sizes: the one holding the lowest
// rank first), ranks ascending in each.
std::vector<std::vector<int>> group_ranks_by_hash(const std::vector<uint64_t>& hashes);

// "0, 2, 3 | 1" for {{0, 2, 3}, {1}}.
std::string groups_text(const std::vector<std::vector<int>>& groups);

// Every rank's (values, layout) hash pair, rank order: one all-reduce of a 2 x world int64 tensor
// on `device` in which each rank fills its own column. Collective.
Result<std::vector<std::pair<uint64_t, uint64_t>>> exchange_hashes(Communicator& comm,
                                                                   uint64_t values, uint64_t layout,
                                                                   torch::Device device);

// Where a verify happens; after a regroup more state is identical than after a step.
enum class VerifyPoint { kStep, kRegroup, kJoin };
const char* verify_point_name(VerifyPoint p);

// The loop's state a verify reads (and a majority repair writes). Pointers stay the loop's.
struct ReplicaSources {
  SyncStrategy* strategy = nullptr;
  std::vector<at::Tensor>* params = nullptr;
  const std::vector<std::string>* param_names = nullptr;
  Optimizer* optimizer = nullptr;
  NamedState buffers;  // the workload's buffers (live tensors)
  // After a regroup: whether the optimizer's state is the same on every rank (broadcast by the
  // state sync, or replicated by the strategy). Ignored at steps (the strategy's view says).
  bool optimizer_synced = false;
};

struct ReplicaCheckOptions {
  int64_t every = 0;                           // sync.verify_every (0: never)
  OnMismatch on_mismatch = OnMismatch::kFail;  // sync.on_mismatch
  int rank = 0;
  torch::Device device = torch::kCPU;  // where the collectives' tensors live
};

struct ReplicaCheckStats {
  int64_t verifies = 0;    // comparisons made (a repair's confirmation counts too)
  double verify_s = 0;     // wall seconds in verify(): collecting, hashing, exchanging, repairing
  int64_t mismatches = 0;  // verifies that found differing replicas
  int64_t repairs = 0;     // majority repairs
};

class ReplicaChecker {
 public:
  ReplicaChecker(ReplicaCheckOptions options, EventSink* sink);

  bool enabled() const { return options_.every > 0; }
  // A verify is due after step `step` (0-based): every `every` steps.
  bool due(int64_t step) const { return enabled() && (step + 1) % options_.every == 0; }

  // Collects what is identical at `point` (see the file comment), compares it across `comm`'s
  // ranks and acts on a mismatch. `step`: the step just done (kStep) or the step the group
  // trains on next (after a regroup). OK when disabled or when the replicas match (or were
  // repaired); DATA_LOSS naming the ranks and the step otherwise; a failed collective as it came.
  Status verify(Communicator& comm, int64_t step, VerifyPoint point, const ReplicaSources& sources);

  const ReplicaCheckStats& stats() const { return stats_; }
  // True when verify() failed on a mismatch (the trainer exits kTrainerReplicaMismatch).
  bool failed() const { return failed_; }

 private:
  Status compare(Communicator& comm, int64_t step, VerifyPoint point, NamedState& state,
                 const std::function<Status()>& after_repair, bool confirming);

  ReplicaCheckOptions options_;
  EventSink* sink_;
  ReplicaCheckStats stats_;
  bool failed_ = false;
  bool warned_empty_ = false;
};

// The tensor debug.corrupt flips a bit of: the first parameter when the strategy keeps the
// parameters identical, else the first tensor of its replicated sync point, else (nothing of the
// parameters is replicated between syncs) the first parameter. Undefined when there is none.
at::Tensor corruption_target(SyncStrategy& strategy, std::vector<at::Tensor>& params);

// The bit debug.corrupt flips in an element of `dtype`: the highest mantissa bit of a floating
// type (the value changes by up to half of itself, so the next updates cannot round the
// difference away, as they may a lowest bit), the lowest bit of an integer type.
int corrupt_bit(at::ScalarType dtype);
// Flips bit corrupt_bit(t.dtype()) of the first element of `t` (any layout, any device) in place.
void flip_one_bit(at::Tensor& t);

}  // namespace tern
