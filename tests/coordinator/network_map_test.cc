// Network profiling in the coordinator (issue 24): NetworkMap's checks and lookups, the
// ReportNetwork path of CoordinatorCore (peers, the emulated model, forgetting) and placement
// in measured ring order.
#include "coordinator/network_map.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "coordinator/coordinator_core.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

auto known_abc = [](const std::string& id) { return id == "a" || id == "b" || id == "c"; };

TEST(NetworkMapTest, StoresAndLooksUpBothDirections) {
  NetworkMap m;
  ASSERT_TRUE(
      m.report("a", {{"b", 10, 1000, false}, {"c", 40, 100, true}}, known_abc, 100).is_ok());
  auto ab = m.link("a", "b", 100);
  ASSERT_TRUE(ab.has_value());
  EXPECT_DOUBLE_EQ(ab->rtt_ms, 10);
  // b never reported: b -> a falls back to a's measurement.
  auto ba = m.link("b", "a", 100);
  ASSERT_TRUE(ba.has_value());
  EXPECT_DOUBLE_EQ(ba->rtt_ms, 10);
  EXPECT_TRUE(m.link("c", "a", 100)->emulated);
  EXPECT_FALSE(m.link("b", "c", 100).has_value());
  // b's own measurement wins for b -> a.
  ASSERT_TRUE(m.report("b", {{"a", 12, 900, false}}, known_abc, 101).is_ok());
  EXPECT_DOUBLE_EQ(m.link("b", "a", 101)->rtt_ms, 12);
  EXPECT_DOUBLE_EQ(m.link("a", "b", 101)->rtt_ms, 10);
}

TEST(NetworkMapTest, RefusesBrokenReportsWholeAndNamesTheField) {
  NetworkMap m;
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  struct Case {
    std::vector<LinkMeasurement> links;
    std::string want;
  };
  std::vector<Case> cases = {
      {{{"b", 1, 10, false}, {"zz", 1, 10, false}}, "links[1].peer: unknown worker 'zz'"},
      {{{"a", 1, 10, false}}, "links[0].peer is the reporting worker itself"},
      {{{"b", 1, 10, false}, {"b", 2, 10, false}}, "reported twice"},
      {{{"b", -1, 10, false}}, "links[0].rtt_ms"},
      {{{"b", nan, 10, false}}, "links[0].rtt_ms"},
      {{{"b", 600001, 10, false}}, "links[0].rtt_ms"},
      {{{"b", 1, 0, false}}, "links[0].bandwidth_mbps"},
      {{{"b", 1, inf, false}}, "links[0].bandwidth_mbps"},
      {{{"b", 1, -3, false}}, "links[0].bandwidth_mbps"},
  };
  for (const Case& c : cases) {
    Status s = m.report("a", c.links, known_abc, 1);
    ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << c.want;
    EXPECT_NE(s.message().find(c.want), std::string::npos) << s.message();
  }
  EXPECT_TRUE(m.all().empty()) << "nothing of a refused report is stored";
  NetworkMapOptions small;
  small.max_links_per_report = 1;
  NetworkMap limited(small);
  EXPECT_EQ(limited.report("a", {{"b", 1, 1, false}, {"c", 1, 1, false}}, known_abc, 1).code(),
            StatusCode::kInvalidArgument);
}

TEST(NetworkMapTest, OldMeasurementsAndForgottenWorkersAreNotUsed) {
  NetworkMapOptions o;
  o.max_age_s = 60;
  NetworkMap m(o);
  ASSERT_TRUE(
      m.report("a", {{"b", 10, 1000, false}, {"c", 10, 1000, false}}, known_abc, 0).is_ok());
  EXPECT_TRUE(m.link("a", "b", 60).has_value());
  EXPECT_FALSE(m.link("a", "b", 61).has_value());
  m.forget("b");
  EXPECT_FALSE(m.link("a", "b", 1).has_value());
  EXPECT_TRUE(m.link("a", "c", 1).has_value());
  m.forget("a");
  EXPECT_TRUE(m.all().empty());
}

TEST(NetworkMapTest, CostMatrixAndRingPermutation) {
  NetworkMapOptions o;
  o.ring_bytes = 1e6;
  NetworkMap m(o);
  ASSERT_TRUE(
      m.report("a", {{"b", 100, 1000, false}, {"c", 2, 1000, false}}, known_abc, 0).is_ok());
  // b - c unmeasured: no matrix, and ranks keep their order.
  EXPECT_FALSE(m.cost_matrix({"a", "b", "c"}, 0).has_value());
  EXPECT_EQ(ring_permutation({"a", "b", "c"}, m, 0), (std::vector<size_t>{0, 1, 2}));
  ASSERT_TRUE(m.report("b", {{"c", 100, 1000, false}}, known_abc, 0).is_ok());
  auto c = m.cost_matrix({"a", "a", "b"}, 0);
  ASSERT_TRUE(c.has_value());
  EXPECT_DOUBLE_EQ((*c)[0][1], 0) << "two ranks on one worker";
  EXPECT_DOUBLE_EQ((*c)[0][2], link_seconds(50, 1000, 1e6));
  // Ranks on a, b, a, b: the ring a, a, b, b crosses the slow link twice instead of four times.
  auto p = ring_permutation({"a", "b", "a", "b"}, m, 0);
  std::vector<std::string> ordered;
  for (size_t k : p) ordered.push_back(std::vector<std::string>{"a", "b", "a", "b"}[k]);
  int crossings = 0;
  for (size_t k = 0; k < ordered.size(); ++k)
    crossings += ordered[k] != ordered[(k + 1) % ordered.size()];
  EXPECT_EQ(crossings, 2);
  EXPECT_EQ(std::set<size_t>(p.begin(), p.end()).size(), 4u);
}

std::string spec(const std::string& name, int workers) {
  return "name: " + name + "\nworkers: " + std::to_string(workers) +
         "\ndata: {source: synthetic, train_size: 512, test_size: 128}\n";
}

class NetworkCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_net_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    options_.state_dir = dir_.string();
    options_.lease_ms = 1000;
    options_.heartbeat_ms = 100;
  }
  void open() {
    auto c = CoordinatorCore::open(options_, &clock_);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    core_ = std::move(c).value();
  }
  void TearDown() override {
    core_.reset();
    fs::remove_all(dir_);
  }
  RegistrationResult add(const std::string& name, const std::string& region = "local") {
    auto r = core_->register_worker({name, "127.0.0.1", region, 1, {40000 + next_port_++}, 0});
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return *r;
  }
  fs::path dir_;
  ManualClock clock_;
  CoordinatorOptions options_;
  std::unique_ptr<CoordinatorCore> core_;
  int next_port_ = 0;
};

TEST_F(NetworkCoreTest, PeersAreTheReadyWorkersWithAProbeEndpointAndCarryTheModel) {
  options_.has_network_model = true;
  options_.network.emulate = true;
  options_.network.intra_region = {0.1, 0, 10000};
  options_.network.inter_region_default = {210, 2, 1000};
  options_.network.links[{"ohio", "oregon"}] = {70, 2, 500};
  options_.probe_interval_ms = 1234;
  open();
  auto a = add("a", "ohio"), b = add("b", "oregon"), c = add("c", "ohio"), d = add("d", "tokyo");
  auto r = core_->report_network("a", a.session, 7001, {});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->peers.empty()) << "nobody else has a probe endpoint yet";
  EXPECT_EQ(r->probe_interval_ms, 1234);
  ASSERT_TRUE(core_->report_network("c", c.session, 7003, {}).is_ok());
  ASSERT_TRUE(core_->report_network("d", d.session, 7004, {}).is_ok());
  r = core_->report_network("b", b.session, 7002, {});
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->peers.size(), 3u);
  EXPECT_EQ(r->peers[0].worker_id, "a");
  EXPECT_EQ(r->peers[0].probe_port, 7001);
  EXPECT_TRUE(r->peers[0].emulated);
  EXPECT_DOUBLE_EQ(r->peers[0].model.latency_ms, 70);  // oregon - ohio
  EXPECT_DOUBLE_EQ(r->peers[0].model.bandwidth_mbps, 500);
  EXPECT_DOUBLE_EQ(r->peers[2].model.latency_ms, 210);  // oregon - tokyo: the default
  // A's peers: c is in its own region.
  r = core_->report_network("a", a.session, 7001, {});
  ASSERT_TRUE(r.is_ok());
  for (const auto& p : r->peers) {
    if (p.worker_id == "c") {
      EXPECT_DOUBLE_EQ(p.model.latency_ms, 0.1);
    }
  }
}

TEST_F(NetworkCoreTest, NoModelWithoutAnEmulatingClusterFile) {
  open();
  auto a = add("a"), b = add("b");
  ASSERT_TRUE(core_->report_network("a", a.session, 7001, {}).is_ok());
  auto r = core_->report_network("b", b.session, 7002, {});
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->peers.size(), 1u);
  EXPECT_FALSE(r->peers[0].emulated);
}

TEST_F(NetworkCoreTest, RefusalsAndForgetting) {
  open();
  auto a = add("a"), b = add("b");
  EXPECT_EQ(core_->report_network("a", a.session + 1, 7001, {}).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(core_->report_network("zz", 1, 7001, {}).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(core_->report_network("a", a.session, 70000, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->report_network("a", a.session, 7001, {{"b", 1, 0, false}}).status().code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(core_->report_network("a", a.session, 7001, {{"b", 1, 100, false}}).is_ok());
  ASSERT_EQ(core_->network_links().size(), 1u);
  EXPECT_EQ(core_->network_links()[0].first, std::make_pair(std::string("a"), std::string("b")));
  // b's lease runs out: its links go.
  clock_.advance_ms(600);
  ASSERT_TRUE(core_->heartbeat("a", a.session, {}, {}).is_ok());
  clock_.advance_ms(600);
  core_->tick();
  EXPECT_TRUE(core_->network_links().empty());
  // A LOST peer cannot be reported on.
  EXPECT_EQ(core_->report_network("a", a.session, 7001, {{"b", 1, 100, false}}).status().code(),
            StatusCode::kInvalidArgument);
  (void)b;
}

// Four workers whose ids alternate between two far-apart sites: the plain order (by id)
// crosses the slow link at every hop, the measured order twice.
TEST_F(NetworkCoreTest, PlacementOrdersRanksByTheMeasuredRing) {
  open();
  std::map<std::string, RegistrationResult> w;
  for (const char* id : {"a", "b", "c", "d"}) w[id] = add(id);
  auto site = [](const std::string& id) { return id == "a" || id == "c" ? 0 : 1; };
  auto report_all = [&]() {
    for (const auto& [id, reg] : w) {
      std::vector<LinkMeasurement> links;
      for (const auto& [peer, unused] : w) {
        if (peer == id) continue;
        links.push_back({peer, site(id) == site(peer) ? 1.0 : 150.0, 1000, false});
      }
      ASSERT_TRUE(core_->report_network(id, reg.session, 7000, links).is_ok());
    }
  };
  auto crossings = [&](const Job& j) {
    int n = 0;
    for (size_t k = 0; k < j.ranks.size(); ++k)
      n += site(j.ranks[k].worker_id) != site(j.ranks[(k + 1) % j.ranks.size()].worker_id);
    return n;
  };
  // Without measurements: the plain order.
  auto plain = core_->submit_job(spec("plain", 4), {}, "plain.yaml");
  ASSERT_TRUE(plain.is_ok()) << plain.status().to_string();
  auto pj = core_->get_job(plain->id);
  ASSERT_EQ(pj->ranks.size(), 4u);
  EXPECT_EQ(pj->ranks[0].worker_id, "a");
  EXPECT_EQ(pj->ranks[1].worker_id, "b");
  EXPECT_EQ(crossings(*pj), 4);
  ASSERT_TRUE(core_->cancel_job(plain->id, "test").is_ok());
  for (const auto& [id, reg] : w)
    ASSERT_TRUE(core_->heartbeat(id, reg.session, {}, {41000}).is_ok());
  report_all();
  auto measured = core_->submit_job(spec("measured", 4), {}, "measured.yaml");
  ASSERT_TRUE(measured.is_ok());
  auto mj = core_->get_job(measured->id);
  ASSERT_EQ(mj->state, JobState::kRunning) << mj->reason;
  EXPECT_EQ(crossings(*mj), 2);
  std::set<std::string> used;
  for (const auto& r : mj->ranks) used.insert(r.worker_id);
  EXPECT_EQ(used.size(), 4u);
  // The master (rank 0's worker) is the measured order's first worker.
  EXPECT_NE(mj->master_addr.find("127.0.0.1:"), std::string::npos);

  // Turned off: the plain order even with a complete matrix.
  core_.reset();
  options_.network_aware_order = false;
  fs::remove_all(dir_);
  open();
  w.clear();
  for (const char* id : {"a", "b", "c", "d"}) w[id] = add(id);
  report_all();
  auto off = core_->submit_job(spec("off", 4), {}, "off.yaml");
  ASSERT_TRUE(off.is_ok());
  EXPECT_EQ(crossings(*core_->get_job(off->id)), 4);
}

// No cluster file names regions and every daemon said "local": the ranks' regions become the
// measured clusters (what hierarchical sync groups by), journaled with the job.
TEST_F(NetworkCoreTest, MeasuredClustersBecomeRegionsWhenNoneAreNamed) {
  open();
  std::map<std::string, RegistrationResult> w;
  for (const char* id : {"a", "b", "c", "d"}) w[id] = add(id);
  auto site = [](const std::string& id) { return id == "a" || id == "c" ? 0 : 1; };
  auto report_all = [&](double near_ms, double far_ms) {
    for (const auto& [id, reg] : w) {
      std::vector<LinkMeasurement> links;
      for (const auto& [peer, unused] : w) {
        if (peer != id)
          links.push_back({peer, site(id) == site(peer) ? near_ms : far_ms, 1000, false});
      }
      ASSERT_TRUE(core_->report_network(id, reg.session, 7000, links).is_ok());
    }
  };
  // One LAN with noise that looks like a 4x gap: no split.
  report_all(0.05, 0.4);
  auto lan = core_->submit_job(spec("lan", 4), {}, "lan.yaml");
  ASSERT_TRUE(lan.is_ok());
  Job lj = *core_->get_job(lan->id);
  EXPECT_FALSE(lj.measured_groups);
  for (const auto& r : lj.ranks) EXPECT_EQ(r.region, "local");
  ASSERT_TRUE(core_->cancel_job(lan->id, "test").is_ok());
  for (const auto& [id, reg] : w)
    ASSERT_TRUE(core_->heartbeat(id, reg.session, {}, {41000}).is_ok());

  report_all(1, 150);
  auto wan = core_->submit_job(spec("wan", 4), {}, "wan.yaml");
  ASSERT_TRUE(wan.is_ok()) << wan.status().to_string();
  Job j = *core_->get_job(wan->id);
  ASSERT_EQ(j.state, JobState::kRunning) << j.reason;
  EXPECT_TRUE(j.measured_groups);
  std::map<std::string, std::string> region_of;
  for (const auto& r : j.ranks) region_of[r.worker_id] = r.region;
  EXPECT_EQ(region_of["a"], region_of["c"]);
  EXPECT_EQ(region_of["b"], region_of["d"]);
  EXPECT_NE(region_of["a"], region_of["b"]);
  EXPECT_EQ(region_of["a"].rfind("local.m", 0), 0u) << region_of["a"];
  // The StartTask regions are the groups.
  auto hb = core_->heartbeat("a", w["a"].session, {}, {});
  ASSERT_TRUE(hb.is_ok());
  std::set<std::string> sent;
  for (const TaskCommand& c : hb->commands) {
    if (c.kind == TaskCommand::Kind::kStart && c.task.job_id == wan->id)
      sent.insert(c.rank_regions.begin(), c.rank_regions.end());
  }
  EXPECT_EQ(sent.size(), 2u);
  // The journal keeps them: a restarted coordinator hands out the same regions.
  core_.reset();
  open();
  Job again = *core_->get_job(wan->id);
  EXPECT_TRUE(again.measured_groups);
  for (size_t k = 0; k < j.ranks.size(); ++k) EXPECT_EQ(again.ranks[k].region, j.ranks[k].region);
}

// A cluster file that names regions: they stay, whatever the measurements say.
TEST_F(NetworkCoreTest, NamedRegionsAreNeverReplacedByMeasuredOnes) {
  options_.regions = {"local"};
  open();
  std::map<std::string, RegistrationResult> w;
  for (const char* id : {"a", "b"}) w[id] = add(id);
  ASSERT_TRUE(core_->report_network("a", w["a"].session, 7000, {{"b", 300, 1000, false}}).is_ok());
  auto job = core_->submit_job(spec("named", 2), {}, "named.yaml");
  ASSERT_TRUE(job.is_ok());
  Job j = *core_->get_job(job->id);
  EXPECT_FALSE(j.measured_groups);
  for (const auto& r : j.ranks) EXPECT_EQ(r.region, "local");
}

}  // namespace
}  // namespace tern
