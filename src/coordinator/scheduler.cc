#include "coordinator/scheduler.h"

#include <algorithm>
#include <map>

namespace tern {
namespace {

// Takes `count` slots from the workers `idx` (indices into offers), one per worker in turn.
std::vector<size_t> round_robin(const std::vector<size_t>& idx,
                                const std::vector<SlotOffer>& offers, int count) {
  std::vector<int> left;
  for (size_t i : idx) left.push_back(offers[i].free_slots);
  std::vector<size_t> out;
  while (static_cast<int>(out.size()) < count) {
    bool took = false;
    for (size_t k = 0; k < idx.size() && static_cast<int>(out.size()) < count; ++k) {
      if (left[k] > 0) {
        --left[k];
        out.push_back(idx[k]);
        took = true;
      }
    }
    if (!took) break;
  }
  return out;
}

// Rank order: by region name, then worker id (stable for equal workers).
void order_ranks(std::vector<size_t>* ranks, const std::vector<SlotOffer>& offers) {
  std::stable_sort(ranks->begin(), ranks->end(), [&](size_t a, size_t b) {
    if (offers[a].region != offers[b].region) return offers[a].region < offers[b].region;
    return offers[a].worker_id < offers[b].worker_id;
  });
}

}  // namespace

Result<std::vector<size_t>> place_gang(int world, PlacementPolicy placement,
                                       const std::vector<SlotOffer>& offers) {
  if (world <= 0) return invalid_argument("world size must be >= 1, got " + std::to_string(world));
  // Workers with free slots, grouped by region; each group sorted by worker id.
  std::map<std::string, std::vector<size_t>> by_region;
  int total_free = 0;
  for (size_t i = 0; i < offers.size(); ++i) {
    if (offers[i].free_slots <= 0) continue;
    by_region[offers[i].region].push_back(i);
    total_free += offers[i].free_slots;
  }
  for (auto& [region, idx] : by_region) {
    std::sort(idx.begin(), idx.end(),
              [&](size_t a, size_t b) { return offers[a].worker_id < offers[b].worker_id; });
  }
  auto region_free = [&](const std::vector<size_t>& idx) {
    int n = 0;
    for (size_t i : idx) n += offers[i].free_slots;
    return n;
  };
  std::vector<size_t> ranks;
  if (placement == PlacementPolicy::kPack) {
    const std::string* best = nullptr;
    int best_free = 0;
    for (const auto& [region, idx] : by_region) {
      int f = region_free(idx);
      if (f >= world && (!best || f < best_free)) {
        best = &region;
        best_free = f;
      }
    }
    if (!best) {
      return failed_precondition("waiting for " + std::to_string(world) +
                                 " free slots in one region (placement: pack)");
    }
    ranks = round_robin(by_region[*best], offers, world);
  } else {
    if (total_free < world) {
      return failed_precondition("waiting for " + std::to_string(world) + " free slots (" +
                                 std::to_string(total_free) + " free now)");
    }
    if (placement == PlacementPolicy::kSpread) {
      // Water-filling: each rank goes to the region with the fewest ranks so far that still
      // has room (ties: region name).
      std::map<std::string, int> assigned, room;
      for (const auto& [region, idx] : by_region) room[region] = region_free(idx);
      for (int r = 0; r < world; ++r) {
        const std::string* pick = nullptr;
        for (const auto& [region, free] : room) {
          if (assigned[region] >= free) continue;
          if (!pick || assigned[region] < assigned[*pick]) pick = &region;
        }
        ++assigned[*pick];
      }
      for (const auto& [region, n] : assigned) {
        auto part = round_robin(by_region[region], offers, n);
        ranks.insert(ranks.end(), part.begin(), part.end());
      }
    } else {
      std::vector<size_t> all;
      for (const auto& [region, idx] : by_region) all.insert(all.end(), idx.begin(), idx.end());
      ranks = round_robin(all, offers, world);
    }
  }
  order_ranks(&ranks, offers);
  return ranks;
}

}  // namespace tern
