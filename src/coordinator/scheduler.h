// Gang placement: choose a worker for every rank of a job at once, or none at all.
//
// Pure functions over a snapshot of free slots; the FIFO queue and its head-of-line rule
// live in CoordinatorCore. Placements (JobSpec::placement):
//   any    - all free slots, one rank per worker in turn (spreads CPU load over machines)
//   spread - ranks spread as evenly as possible over the regions that have free slots
//   pack   - all ranks in one region: the one with the fewest free slots that still fits
// Ranks come out grouped by region (regions by name, workers by id), so ranks of a region
// are contiguous: what hierarchical synchronisation wants.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/spec_enums.h"
#include "common/status.h"

namespace tern {

struct SlotOffer {
  std::string worker_id;
  std::string region;
  int free_slots = 0;
};

// Returns, per rank, an index into `offers`; FAILED_PRECONDITION (with the reason a user
// should see) when the job does not fit now.
Result<std::vector<size_t>> place_gang(int world, PlacementPolicy placement,
                                       const std::vector<SlotOffer>& offers);

}  // namespace tern
