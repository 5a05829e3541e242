// One rank's embedding shard in checkpoints (CPR, docs/algorithms.md §5): what a save takes under
// recovery.policy, and rebuilding the shard from a chain of saves.
//
// A rank file of a DLRM checkpoint holds either the WHOLE shard ("embedding.<t>.weight" and
// ".access_count" of every owned table t; meta.extra["shard"] = "full") or ROWS of it
// ("embedding.<t>/rows", "/values", "/counts": row ids, their vectors and access counts;
// meta.extra["shard"] = "rows"):
//   - mfu: the row_fraction hottest rows of each table by access count (under Zipf a small hot
//     set takes most of the updates, so most of what a failure would lose);
//   - ssu: a uniform row_fraction sample of the rows updated since the previous save.
// Restoring takes, per table, the newest whole save at or before the target step, then the row
// saves after it in step order: every row comes back as of its latest save (rows never saved
// keep the seeded init); saves written by another number of ranks are re-sharded (any writer
// world). Free functions; the trainer-loop thread.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "recovery/checkpoint.h"
#include "recovery/checkpoint_store.h"
#include "trainer/loop/workload.h"  // ShardSave
#include "trainer/workloads/dlrm/dlrm_model.h"

namespace tern {

// Appends this rank's shard (kFull) or the rows `policy` (mfu | ssu) picks (kRows) to `out`,
// as copies, and starts a new update interval (DlrmModel::mark_updates). Returns the rows
// saved.
Result<int64_t> append_shard(DlrmModel& model, ShardSave kind, RowPolicy policy,
                             double row_fraction, std::mt19937_64& rng, NamedTensors* out);

struct ShardRestore {
  int64_t base_step = -1;    // whole-shard save the chain starts from (-1: the seeded init)
  int64_t newest_step = -1;  // last save applied
  int64_t row_saves = 0;     // row saves applied after the base
  int64_t rows = 0;          // rows written (whole tables count all their rows)
  // Training lookups (= updates) of this shard the restored state reflects: the sum of the
  // restored access counts.
  double captured_updates = 0;
  std::vector<std::string> files;  // rank files a table came from, oldest first
  // The number of ranks that wrote the re-sharded saves (0: written by this world).
  int64_t resharded_from_world = 0;
};

// Rebuilds `model`'s shard from the complete steps <= max_step of `store` (each rank file
// fully verified; a damaged one ends the chain at the save after it, with a warning), for any
// number of ranks that wrote them: a step written by model.world() ranks is read from this
// rank's own file; one written by another number of ranks (a job resumed on another cluster,
// a world that shrank) is re-sharded: every rank file of the step is read and the tables this
// rank owns now are taken from whichever file holds them. Each owned table comes back as of
// its newest whole save plus the row saves after it. NOT_FOUND when no step holds any table
// of this rank; FAILED_PRECONDITION when a re-sharded step holds none of some owned table or
// a table of another shape (another table layout), or a file is not a DLRM shard.
Result<ShardRestore> restore_shard(DlrmModel& model, const CheckpointStore& store,
                                   int64_t max_step);

}  // namespace tern
