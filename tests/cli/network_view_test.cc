// `tern workers --network` (issue 24): the matrix from a ListWorkersReply, its text and JSON.
#include "cli/network_view.h"

#include <gtest/gtest.h>

#include <sstream>

namespace tern {
namespace {

v1::ListWorkersReply reply_with(const std::vector<std::string>& ids) {
  v1::ListWorkersReply r;
  for (const auto& id : ids) {
    auto* w = r.add_workers();
    w->set_worker_id(id);
    w->set_state(v1::WORKER_STATE_READY);
  }
  return r;
}

void add_link(v1::ListWorkersReply* r, const std::string& from, const std::string& to, double rtt,
              double bw, bool emulated = false) {
  auto* l = r->add_links();
  l->set_from(from);
  l->set_to(to);
  l->set_rtt_ms(rtt);
  l->set_bandwidth_mbps(bw);
  l->set_emulated(emulated);
}

TEST(NetworkViewTest, IncompleteMatrixShowsQuestionMarksAndNoRing) {
  auto r = reply_with({"b", "a", "c"});
  auto* lost = r.add_workers();
  lost->set_worker_id("z");
  lost->set_state(v1::WORKER_STATE_LOST);
  add_link(&r, "a", "b", 10, 1000);
  add_link(&r, "a", "z", 1, 1000);  // a LOST worker is left out
  NetworkView v = network_view(r, 1 << 20);
  EXPECT_EQ(v.workers, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_FALSE(v.complete);
  EXPECT_DOUBLE_EQ(v.rtt_ms[1][0], 10) << "b -> a from a's measurement";
  EXPECT_LT(v.rtt_ms[0][2], 0);
  std::ostringstream out;
  print_network(out, v);
  EXPECT_NE(out.str().find("10.0 ms / 1000 Mb/s"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("?"), std::string::npos);
  EXPECT_NE(out.str().find("not every link is measured yet"), std::string::npos);
  nlohmann::json j = network_json(v);
  EXPECT_TRUE(j["rtt_ms"][0][2].is_null());
  EXPECT_TRUE(j["ring_order"].is_null());
  EXPECT_EQ(j["complete"], false);
}

TEST(NetworkViewTest, CompleteMatrixGivesTheRingAndItsGain) {
  // a, c close; b, d close; far across: the id order a b c d crosses four times.
  auto r = reply_with({"a", "b", "c", "d"});
  const std::vector<std::string> ids = {"a", "b", "c", "d"};
  for (const auto& x : ids)
    for (const auto& y : ids)
      if (x < y)
        add_link(&r, x, y, ((x == "a" && y == "c") || (x == "b" && y == "d")) ? 2 : 200, 1000,
                 true);
  NetworkView v = network_view(r, 1 << 20);
  ASSERT_TRUE(v.complete);
  EXPECT_TRUE(v.emulated);
  EXPECT_LT(v.measured.total, v.plain.total);
  std::ostringstream out;
  print_network(out, v);
  EXPECT_NE(out.str().find("ring order: a -> "), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("emulated WAN"), std::string::npos);
  nlohmann::json j = network_json(v);
  ASSERT_EQ(j["ring_order"].size(), 4u);
  EXPECT_LT(j["ring_ms"]["ring"].get<double>(), j["ring_ms"]["plain"].get<double>());
  // Neighbours in the ring: every far pair is crossed at most twice.
  int far = 0;
  for (size_t k = 0; k < 4; ++k) {
    std::string x = j["ring_order"][k], y = j["ring_order"][(k + 1) % 4];
    const bool close = (x == "a" && y == "c") || (x == "c" && y == "a") || (x == "b" && y == "d") ||
                       (x == "d" && y == "b");
    far += !close;
  }
  EXPECT_EQ(far, 2);
}

TEST(NetworkViewTest, NoWorkers) {
  NetworkView v = network_view(v1::ListWorkersReply(), 1 << 20);
  std::ostringstream out;
  print_network(out, v);
  EXPECT_EQ(out.str(), "no workers registered\n");
  EXPECT_TRUE(network_json(v)["workers"].empty());
}

}  // namespace
}  // namespace tern
