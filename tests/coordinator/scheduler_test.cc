// Gang placement: any / spread / pack, and the reasons a job waits.
#include "coordinator/scheduler.h"

#include <gtest/gtest.h>

#include <map>

namespace tern {
namespace {

std::vector<std::string> workers_of(const std::vector<size_t>& ranks,
                                    const std::vector<SlotOffer>& offers) {
  std::vector<std::string> out;
  for (size_t i : ranks) out.push_back(offers[i].worker_id);
  return out;
}

std::map<std::string, int> per_region(const std::vector<size_t>& ranks,
                                      const std::vector<SlotOffer>& offers) {
  std::map<std::string, int> out;
  for (size_t i : ranks) ++out[offers[i].region];
  return out;
}

TEST(Scheduler, AnySpreadsOverWorkersBeforeDoublingUp) {
  std::vector<SlotOffer> offers = {{"w-b", "r", 2}, {"w-a", "r", 2}, {"w-c", "r", 0}};
  auto p = place_gang(3, PlacementPolicy::kAny, offers);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(workers_of(*p, offers), (std::vector<std::string>{"w-a", "w-a", "w-b"}));
}

TEST(Scheduler, WaitsWhenTooFewSlots) {
  std::vector<SlotOffer> offers = {{"w-1", "r", 1}, {"w-2", "r", 1}};
  auto p = place_gang(3, PlacementPolicy::kAny, offers);
  EXPECT_EQ(p.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(p.status().message().find("3 free slots (2 free now)"), std::string::npos)
      << p.status().message();
}

TEST(Scheduler, SpreadBalancesRegionsAndKeepsRegionsContiguous) {
  std::vector<SlotOffer> offers = {
      {"o1", "ohio", 4}, {"p1", "paris", 1}, {"p2", "paris", 1}, {"t1", "tokyo", 4}};
  auto p = place_gang(6, PlacementPolicy::kSpread, offers);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(per_region(*p, offers),
            (std::map<std::string, int>{{"ohio", 2}, {"paris", 2}, {"tokyo", 2}}));
  std::vector<std::string> regions;
  for (size_t i : *p) regions.push_back(offers[i].region);
  EXPECT_EQ(regions,
            (std::vector<std::string>{"ohio", "ohio", "paris", "paris", "tokyo", "tokyo"}));
}

TEST(Scheduler, SpreadFillsOtherRegionsWhenOneIsFull) {
  std::vector<SlotOffer> offers = {{"o1", "ohio", 1}, {"t1", "tokyo", 5}};
  auto p = place_gang(4, PlacementPolicy::kSpread, offers);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(per_region(*p, offers), (std::map<std::string, int>{{"ohio", 1}, {"tokyo", 3}}));
}

TEST(Scheduler, PackUsesOneRegionTheTightestThatFits) {
  std::vector<SlotOffer> offers = {{"o1", "ohio", 3},
                                   {"o2", "ohio", 3},
                                   {"p1", "paris", 2},
                                   {"p2", "paris", 1},
                                   {"t1", "tokyo", 1}};
  auto p = place_gang(3, PlacementPolicy::kPack, offers);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(per_region(*p, offers), (std::map<std::string, int>{{"paris", 3}}));
}

TEST(Scheduler, PackWaitsWhenNoRegionFitsAlone) {
  std::vector<SlotOffer> offers = {{"o1", "ohio", 2}, {"p1", "paris", 2}};
  auto p = place_gang(3, PlacementPolicy::kPack, offers);
  EXPECT_EQ(p.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(p.status().message().find("one region"), std::string::npos);
  EXPECT_TRUE(place_gang(3, PlacementPolicy::kAny, offers).is_ok());
}

TEST(Scheduler, RejectsUnknownPlacementAndEmptyGang) {
  std::vector<SlotOffer> offers = {{"o1", "ohio", 2}};
  EXPECT_EQ(place_gang(0, PlacementPolicy::kAny, offers).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern
