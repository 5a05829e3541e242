// The dashboard's JSON API and auth without a browser (issue 23): what /api/v1/ answers next to
// what the gRPC status messages say for the same core, the jobs' time series (bounded,
// downsampled, kept across a restart), the timeline and log tail, and who may read and cancel.
#include "coordinator/dashboard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/service.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* kUserToken = "user-token-0123456789abcdef";
const char* kWorkerToken = "worker-token-0123456789abcdef";
const char* kAdminToken = "admin-token-0123456789abcdef";

std::string spec(const std::string& name, int workers, const std::string& extra = "") {
  return "name: " + name + "\nworkers: " + std::to_string(workers) +
         "\ndata: {source: synthetic, train_size: 512, test_size: 128}\n" + extra;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string header_of(const HttpReply& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return "";
}

class DashboardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_dash_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "web" / "static");
    for (const char* page : {"jobs.html", "job.html", "cluster.html"})
      std::ofstream(dir_ / "web" / page) << "<html>" << page << "</html>";
    std::ofstream(dir_ / "web" / "login.html") << "<form><!--error--></form>";
    std::ofstream(dir_ / "web" / "static" / "app.js") << "console.log(1)";
    std::ofstream(dir_ / "web" / "static" / "secret.key") << "not served";
    open();
  }
  void TearDown() override {
    dashboard_.reset();
    core_.reset();
    series_.reset();
    fs::remove_all(dir_);
  }
  void open(std::shared_ptr<const TokenAuthenticator> auth = nullptr) {
    dashboard_.reset();
    core_.reset();
    series_.reset();
    JobSeriesOptions so;
    so.dir = (dir_ / "state" / "series").string();
    so.max_points = 64;
    auto s = JobSeriesStore::open(so);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    series_ = std::move(s).value();
    CoordinatorOptions co;
    co.state_dir = (dir_ / "state").string();
    co.observer = series_.get();
    co.worker_rate_per_s = 1e6;  // the manual clock never refills a bucket
    co.worker_rate_burst = 1e6;
    auto c = CoordinatorCore::open(co, &clock_);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    core_ = std::move(c).value();
    DashboardOptions d;
    d.cluster_name = "test";
    d.web_root = (dir_ / "web").string();
    d.rate_per_s = 1000;
    d.rate_burst = 1000;
    d.session_ttl = std::chrono::seconds(600);
    if (auth) d.auth = auth;
    dashboard_ = std::make_unique<Dashboard>(d, core_.get(), series_.get(), &clock_);
  }
  static std::shared_ptr<const TokenAuthenticator> tokens() {
    return std::make_shared<TokenAuthenticator>(
        TokenAuthenticator::with_roles({{"alice", kUserToken, Role::kUser},
                                        {"daemons", kWorkerToken, Role::kWorker},
                                        {"root", kAdminToken, Role::kAdmin}}));
  }
  HttpReply call(const std::string& method, const std::string& target,
                 std::map<std::string, std::string> headers = {}, const std::string& body = "") {
    HttpRequest r;
    r.method = method;
    const size_t q = target.find('?');
    r.path = target.substr(0, q);
    r.query = q == std::string::npos ? "" : target.substr(q + 1);
    r.headers = std::move(headers);
    r.body = body;
    r.remote_addr = "127.0.0.1";
    return dashboard_->handle(r);
  }
  json get_json(const std::string& target, int want = 200,
                std::map<std::string, std::string> headers = {}) {
    HttpReply r = call("GET", target, std::move(headers));
    EXPECT_EQ(r.status, want) << target << ": " << r.body;
    EXPECT_EQ(r.content_type, "application/json") << target;
    json j = json::parse(r.body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.body;
    return j;
  }
  // A job of `world` ranks placed on `world` fresh workers and started: its task keys.
  std::vector<std::pair<RegistrationResult, TaskKey>> running_job(const std::string& name,
                                                                  int world,
                                                                  const std::string& extra = "") {
    auto job = core_->submit_job(spec(name, world, extra), {}, name + ".yaml");
    EXPECT_TRUE(job.is_ok()) << job.status().to_string();
    std::vector<std::pair<RegistrationResult, TaskKey>> out;
    for (int i = 0; i < world; ++i) {
      auto w = core_->register_worker(
          {name + "-w" + std::to_string(i), "127.0.0.1", "local", 1, {42000 + ports_++}, 0});
      EXPECT_TRUE(w.is_ok()) << w.status().to_string();
      out.push_back({*w, {}});
    }
    core_->tick();
    for (auto& [w, key] : out) {
      auto hb = core_->heartbeat(w.worker_id, w.session, {}, {43000 + ports_++});
      EXPECT_TRUE(hb.is_ok());
      for (const TaskCommand& c : hb->commands)
        if (c.kind == TaskCommand::Kind::kStart) key = c.task;
      TaskEvent started;
      started.kind = TaskEvent::Kind::kStarted;
      started.task = key;
      EXPECT_TRUE(core_->report_events(w.worker_id, w.session, {started}).is_ok());
    }
    return out;
  }
  Status report(const RegistrationResult& w, const TaskEvent& e) {
    return core_->report_events(w.worker_id, w.session, {e}).status();
  }
  static TaskEvent progress(const TaskKey& k, int64_t step, double loss, double wait_s = 0.25) {
    TaskEvent e;
    e.kind = TaskEvent::Kind::kProgress;
    e.task = k;
    e.step = step;
    e.total_steps = 1000;
    e.loss = loss;
    e.samples_per_s = 100 + step;
    e.compute_s = 0.75;
    e.wait_s = wait_s;
    e.time = 1.7e9 + static_cast<double>(step);
    e.metrics["staleness"] = 2;
    return e;
  }

  fs::path dir_;
  ManualClock clock_;
  std::unique_ptr<JobSeriesStore> series_;
  std::unique_ptr<CoordinatorCore> core_;
  std::unique_ptr<Dashboard> dashboard_;
  int ports_ = 0;
};

TEST_F(DashboardTest, JobsAndWorkersMirrorTheGrpcStatusMessages) {
  auto ranks = running_job("mirror", 2);
  const std::string id = ranks[0].second.job_id;
  ASSERT_TRUE(report(ranks[0].first, progress(ranks[0].second, 10, 2.0)).is_ok());
  ASSERT_TRUE(report(ranks[1].first, progress(ranks[1].second, 9, 3.0)).is_ok());
  ASSERT_TRUE(core_->submit_job(spec("waits", 4), {}, "w.yaml").is_ok());

  json list = get_json("/api/v1/jobs");
  ASSERT_EQ(list["jobs"].size(), 2u);
  const json& j = list["jobs"][0];
  v1::JobStatus proto;
  to_proto(*core_->get_job(id), clock_.unix_seconds(), &proto);
  EXPECT_EQ(j["job_id"], proto.job_id());
  EXPECT_EQ(j["state"], "RUNNING");
  EXPECT_EQ(v1::JobState_Name(proto.state()), "JOB_STATE_" + j["state"].get<std::string>());
  ASSERT_TRUE(j["step"].is_number_integer()) << j.dump();
  EXPECT_EQ(j["step"].get<int64_t>(), proto.step());
  EXPECT_EQ(j["total_steps"].get<int64_t>(), proto.total_steps());
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), proto.loss());
  EXPECT_DOUBLE_EQ(j["samples_per_s"].get<double>(), proto.samples_per_s());
  EXPECT_EQ(j["world_size"].get<int>(), proto.world_size());
  EXPECT_EQ(j["generation"].get<int64_t>(), proto.generation());
  EXPECT_DOUBLE_EQ(
      j["created_at"].get<double>(),
      static_cast<double>(proto.created_at().seconds()) + proto.created_at().nanos() * 1e-9);
  ASSERT_EQ(j["ranks"].size(), static_cast<size_t>(proto.ranks_size()));
  for (int r = 0; r < proto.ranks_size(); ++r) {
    const json& jr = j["ranks"][r];
    const v1::RankStatus& pr = proto.ranks(r);
    EXPECT_EQ(jr["worker_id"], pr.worker_id());
    EXPECT_EQ(jr["state"], "RUNNING");
    EXPECT_EQ(jr["step"].get<int64_t>(), pr.step());
    EXPECT_DOUBLE_EQ(jr["loss"].get<double>(), pr.loss());
    EXPECT_DOUBLE_EQ(jr["samples_per_s"].get<double>(), pr.samples_per_s());
    EXPECT_EQ(jr["metrics"].size(), static_cast<size_t>(pr.metrics_size()));
    for (const auto& [k, v] : pr.metrics())
      EXPECT_DOUBLE_EQ(jr["metrics"][k].get<double>(), v) << k;
    EXPECT_TRUE(jr["generation"].is_number_integer());
  }
  EXPECT_EQ(list["jobs"][1]["state"], "PENDING");

  // The state filter: names as the CLI prints them, any case, comma-separated or repeated.
  EXPECT_EQ(get_json("/api/v1/jobs?state=SUCCEEDED")["jobs"].size(), 0u);
  EXPECT_EQ(get_json("/api/v1/jobs?state=running")["jobs"].size(), 1u);
  EXPECT_EQ(get_json("/api/v1/jobs?state=RUNNING,PENDING")["jobs"].size(), 2u);
  EXPECT_EQ(get_json("/api/v1/jobs?state=RUNNING&state=PENDING")["jobs"].size(), 2u);
  EXPECT_EQ(get_json("/api/v1/jobs?limit=1")["jobs"][0]["name"], "waits");
  json bad = get_json("/api/v1/jobs?state=DONE", 400);
  EXPECT_TRUE(contains(bad["error"], "state")) << bad.dump();
  EXPECT_EQ(bad["code"], "INVALID_ARGUMENT");
  EXPECT_TRUE(contains(get_json("/api/v1/jobs?limit=-1", 400)["error"], "limit"));
  EXPECT_TRUE(contains(get_json("/api/v1/jobs?limit=1e3", 400)["error"], "limit"));

  json one = get_json("/api/v1/jobs/" + id);
  EXPECT_EQ(one["job"]["job_id"], id);
  EXPECT_TRUE(contains(one["spec_yaml"], "name: mirror")) << one.dump();
  EXPECT_EQ(get_json("/api/v1/jobs/" + id + "/spec")["spec_yaml"], one["spec_yaml"]);
  json missing = get_json("/api/v1/jobs/j-999", 404);
  EXPECT_EQ(missing["code"], "NOT_FOUND");
  get_json("/api/v1/jobs/" + id + "/nonsense", 404);
  get_json("/api/v1/nonsense", 404);

  json workers = get_json("/api/v1/workers")["workers"];
  ASSERT_EQ(workers.size(), 2u);
  for (const json& w : workers) {
    EXPECT_EQ(w["state"], "READY");
    EXPECT_EQ(w["used_slots"].get<int>(), 1);
    ASSERT_EQ(w["tasks"].size(), 1u);
    EXPECT_EQ(w["tasks"][0]["job_id"], id);
    EXPECT_TRUE(w["tasks"][0]["generation"].is_number_integer());
    EXPECT_GE(w["heartbeat_age_s"].get<double>(), 0.0);
  }
  json cluster = get_json("/api/v1/cluster");
  EXPECT_EQ(cluster["name"], "test");
  EXPECT_EQ(cluster["jobs"]["RUNNING"].get<int>(), 1);
  EXPECT_EQ(cluster["jobs"]["PENDING"].get<int>(), 1);
  EXPECT_EQ(cluster["jobs"]["SUCCEEDED"].get<int>(), 0);
  EXPECT_EQ(cluster["slots"].get<int>(), 2);
  EXPECT_EQ(cluster["used_slots"].get<int>(), 2);
}

TEST_F(DashboardTest, SeriesFollowTheFirstMemberAndTimelineHasCheckpointsAndExits) {
  auto ranks = running_job("series", 2);
  const std::string id = ranks[0].second.job_id;
  for (int step = 1; step <= 5; ++step) {
    ASSERT_TRUE(report(ranks[1].first, progress(ranks[1].second, step, 4.0, 0.75)).is_ok());
    ASSERT_TRUE(report(ranks[0].first, progress(ranks[0].second, step, 2.0, 0.25)).is_ok());
  }
  TaskEvent eval;
  eval.kind = TaskEvent::Kind::kEval;
  eval.task = ranks[0].second;
  eval.step = 5;
  eval.test_accuracy = 0.75;
  eval.test_loss = 0.5;
  ASSERT_TRUE(report(ranks[0].first, eval).is_ok());
  json s = get_json("/api/v1/jobs/" + id + "/series");
  const json& points = s["progress"]["points"];
  ASSERT_EQ(points.size(), 5u) << "one point per first-member progress event: " << s.dump();
  EXPECT_EQ(s["progress"]["fields"][2], "loss");
  // Job-wide at that moment: loss the mean over ranks, samples/s the sum, wait the mean share.
  EXPECT_EQ(points[4][1].get<int64_t>(), 5);
  EXPECT_DOUBLE_EQ(points[4][2].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(points[4][3].get<double>(), 2 * (100.0 + 5));
  EXPECT_DOUBLE_EQ(points[4][4].get<double>(), 37.5);  // (0.25 / 1.0 + 0.75 / 1.5) / 2
  EXPECT_DOUBLE_EQ(points[0][0].get<double>(), 1.7e9 + 1) << "the trainer's event time";
  ASSERT_EQ(s["eval"]["points"].size(), 1u);
  EXPECT_DOUBLE_EQ(s["eval"]["points"][0][2].get<double>(), 0.75);
  const uint64_t version = s["version"].get<uint64_t>();

  TaskEvent ckpt;
  ckpt.kind = TaskEvent::Kind::kCheckpoint;
  ckpt.step = 4;
  for (auto& [w, k] : ranks) {
    ckpt.task = k;
    ASSERT_TRUE(report(w, ckpt).is_ok());  // every rank reports it: one timeline entry
  }
  TaskEvent exit;
  exit.kind = TaskEvent::Kind::kExited;
  exit.task = ranks[1].second;
  exit.exit_code = 3;
  ASSERT_TRUE(report(ranks[1].first, exit).is_ok());
  json t = get_json("/api/v1/jobs/" + id + "/timeline");
  std::vector<std::string> kinds;
  for (const json& e : t["events"]) kinds.push_back(e["kind"]);
  EXPECT_EQ(kinds,
            (std::vector<std::string>{"submitted", "started", "checkpoint", "exit", "finished"}))
      << t.dump();
  EXPECT_GT(get_json("/api/v1/jobs/" + id + "/series")["version"].get<uint64_t>(), version);
  for (size_t i = 1; i < t["events"].size(); ++i)
    EXPECT_LE(t["events"][i - 1]["t"].get<double>(), t["events"][i]["t"].get<double>());
}

TEST_F(DashboardTest, SeriesStayBoundedEvenlySampledAndSurviveARestart) {
  DownsampledSeries s(64);
  for (int i = 1; i <= 10000; ++i) {
    SeriesPoint p;
    p.step = i;
    s.add(p);
    ASSERT_LE(s.points().size(), 64u);
    ASSERT_EQ(s.points().back().step, i) << "the newest event is always the last point";
  }
  EXPECT_GE(s.points().size(), 32u);
  // Evenly spaced apart from the provisional newest point.
  const auto& p = s.points();
  const int64_t gap = p[1].step - p[0].step;
  for (size_t i = 2; i + 1 < p.size(); ++i) EXPECT_EQ(p[i].step - p[i - 1].step, gap) << i;
  EXPECT_EQ(gap, s.stride());

  auto ranks = running_job("restart", 1);
  const std::string id = ranks[0].second.job_id;
  for (int step = 1; step <= 500; ++step)
    ASSERT_TRUE(report(ranks[0].first, progress(ranks[0].second, step, 1.0 / step)).is_ok());
  json before = get_json("/api/v1/jobs/" + id + "/series");
  ASSERT_LE(before["progress"]["points"].size(), 64u);
  EXPECT_EQ(before["progress"]["points"].back()[1].get<int64_t>(), 500);
  open();  // a coordinator restart: the store writes what changed, the new one reads it back
  json after = get_json("/api/v1/jobs/" + id + "/series");
  EXPECT_EQ(after["progress"], before["progress"]);
  EXPECT_EQ(after["version"], before["version"]);
  // ... and goes on from there.
  ASSERT_TRUE(report(ranks[0].first, progress(ranks[0].second, 501, 0.001)).is_ok());
  EXPECT_EQ(
      get_json("/api/v1/jobs/" + id + "/series")["progress"]["points"].back()[1].get<int64_t>(),
      501);

  // A damaged or foreign file is skipped (that job's charts start empty), never fatal.
  const fs::path series_dir = dir_ / "state" / "series";
  std::ofstream(series_dir / "j-77.json")
      << "{\"format\": 1, \"job_id\": \"j-77\", \"progress\": {\"points\": [[1]]}}";
  std::ofstream(series_dir / "j-78.json") << "\x01\x02 not json";
  std::ofstream(series_dir / "j-79.json") << "{\"format\": 1, \"job_id\": \"j-1\"}";
  series_.reset();  // flushes first: the files above stay as written
  JobSeriesOptions so;
  so.dir = series_dir.string();
  so.max_points = 64;
  auto reopened = JobSeriesStore::open(so);
  ASSERT_TRUE(reopened.is_ok());
  EXPECT_EQ((*reopened)->damaged_files(), 3);
  JobSeries kept(64);
  EXPECT_TRUE((*reopened)->get(id, &kept));
  EXPECT_FALSE((*reopened)->get("j-77", &kept));
  dashboard_.reset();
  core_.reset();
}

TEST_F(DashboardTest, LogTailIsTheLastBytesOfTheRanksLog) {
  auto ranks = running_job("logs", 1);
  const std::string id = ranks[0].second.job_id;
  TaskEvent log;
  log.kind = TaskEvent::Kind::kLog;
  log.task = ranks[0].second;
  log.log_offset = 0;
  log.log_data = "first line\nsecond line\n";
  ASSERT_TRUE(report(ranks[0].first, log).is_ok());
  json tail = get_json("/api/v1/jobs/" + id + "/logs?rank=0&bytes=12");
  EXPECT_EQ(tail["data"], "second line\n");
  EXPECT_EQ(tail["offset"].get<int64_t>(), 11);
  EXPECT_EQ(get_json("/api/v1/jobs/" + id + "/logs")["data"], log.log_data);
  EXPECT_EQ(get_json("/api/v1/jobs/" + id + "/logs?rank=1", 400)["code"], "INVALID_ARGUMENT");
  for (const char* q : {"rank=-1", "rank=x", "bytes=0", "bytes=99999999", "bytes=1.5"})
    get_json("/api/v1/jobs/" + id + "/logs?" + q, 400);
}

TEST_F(DashboardTest, WithTokensPagesAndApiNeedAUserOrAdminToken) {
  open(tokens());
  auto job = core_->submit_job(spec("secret", 1), {}, "s.yaml");
  ASSERT_TRUE(job.is_ok());
  const std::string id = job->id;
  for (const std::string& path :
       std::vector<std::string>{"/api/v1/jobs", "/api/v1/cluster", "/api/v1/workers",
                                "/api/v1/jobs/" + id, "/api/v1/jobs/" + id + "/series",
                                "/api/v1/jobs/" + id + "/logs", "/api/v1/jobs/j-404"}) {
    EXPECT_EQ(call("GET", path).status, 401) << path;
    EXPECT_EQ(call("GET", path, {{"authorization", "Bearer wrong-token-0123456789"}}).status, 401)
        << path;
    EXPECT_EQ(call("GET", path, {{"authorization", kUserToken}}).status, 401)
        << path << " (no Bearer)";
    EXPECT_EQ(call("GET", path, {{"authorization", std::string("Bearer ") + kWorkerToken}}).status,
              403)
        << path;
    EXPECT_EQ(
        call("GET", path, {{"cookie", "tern_session=0123456789abcdef0123456789abcdef"}}).status,
        401)
        << path;
  }
  EXPECT_EQ(
      call("GET", "/api/v1/jobs", {{"authorization", std::string("Bearer ") + kUserToken}}).status,
      200);
  EXPECT_EQ(
      call("GET", "/api/v1/jobs", {{"authorization", std::string("Bearer ") + kAdminToken}}).status,
      200);

  // Pages send the browser to the login form, and back afterwards.
  HttpReply page = call("GET", "/job", {}, "");
  EXPECT_EQ(page.status, 303);
  page = call("GET", "/job?id=" + id);
  EXPECT_EQ(header_of(page, "Location"), "/login?next=/job%3Fid%3D" + id);
  EXPECT_EQ(call("GET", "/login").status, 200);
  EXPECT_EQ(call("GET", "/static/app.js").status, 200) << "assets hold no data";
  EXPECT_EQ(call("GET", "/static/secret.key").status, 404) << "only pages, scripts and styles";
  EXPECT_EQ(call("GET", "/static/../cluster.html").status, 404);

  HttpReply wrong = call("POST", "/login", {}, "token=nope&next=%2Fjobs");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_TRUE(contains(wrong.body, "unknown token")) << wrong.body;
  EXPECT_TRUE(header_of(wrong, "Set-Cookie").empty());
  EXPECT_EQ(call("POST", "/login", {}, std::string("token=") + kWorkerToken).status, 403);
  HttpReply ok =
      call("POST", "/login", {}, std::string("token=") + kUserToken + "&next=%2Fjob%3Fid%3D" + id);
  ASSERT_EQ(ok.status, 303);
  EXPECT_EQ(header_of(ok, "Location"), "/job?id=" + id);
  const std::string set_cookie = header_of(ok, "Set-Cookie");
  EXPECT_TRUE(contains(set_cookie, "HttpOnly")) << set_cookie;
  EXPECT_TRUE(contains(set_cookie, "SameSite=Strict")) << set_cookie;
  const std::string session = set_cookie.substr(0, set_cookie.find(';'));
  EXPECT_EQ(session.size(), std::string("tern_session=").size() + 32) << "128 random bits";
  EXPECT_FALSE(contains(set_cookie, kUserToken)) << "the token itself is never in the cookie";
  EXPECT_EQ(call("GET", "/job", {{"cookie", "theme=dark; " + session}}).status, 200);
  EXPECT_EQ(call("GET", "/api/v1/jobs", {{"cookie", session}}).status, 200);
  // Never back to another site after the login.
  for (const char* next : {"%2F%2Fevil.example", "https://evil.example", "%2F%5Cevil.example"}) {
    HttpReply r = call("POST", "/login", {}, std::string("token=") + kUserToken + "&next=" + next);
    EXPECT_EQ(header_of(r, "Location"), "/jobs") << next;
  }

  // Cancel: the roles of `tern cancel`, and a header a cross-site form cannot send.
  const std::string cancel = "/api/v1/jobs/" + id + "/cancel";
  EXPECT_EQ(call("POST", cancel, {{"cookie", session}}).status, 403);
  EXPECT_EQ(
      call("POST", cancel,
           {{"authorization", std::string("Bearer ") + kWorkerToken}, {"x-tern-request", "1"}})
          .status,
      403);
  EXPECT_EQ(call("POST", cancel, {{"x-tern-request", "1"}}).status, 401);
  EXPECT_EQ(call("GET", cancel, {{"cookie", session}, {"x-tern-request", "1"}}).status, 405);
  EXPECT_EQ(core_->get_job(id)->state, JobState::kPending);
  HttpReply done = call("POST", cancel, {{"cookie", session}, {"x-tern-request", "1"}});
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(core_->get_job(id)->state, JobState::kCancelled);
  EXPECT_TRUE(contains(core_->get_job(id)->reason, "alice")) << core_->get_job(id)->reason;
  EXPECT_EQ(
      call("POST", "/api/v1/jobs/j-404/cancel", {{"cookie", session}, {"x-tern-request", "1"}})
          .status,
      404);

  // Sessions end: by logging out, or after session_ttl.
  HttpReply ok2 = call("POST", "/login", {}, std::string("token=") + kAdminToken);
  const std::string session2 =
      header_of(ok2, "Set-Cookie").substr(0, header_of(ok2, "Set-Cookie").find(';'));
  EXPECT_EQ(call("POST", "/logout", {{"cookie", session}}).status, 303);
  EXPECT_EQ(call("GET", "/api/v1/jobs", {{"cookie", session}}).status, 401);
  EXPECT_EQ(call("GET", "/api/v1/jobs", {{"cookie", session2}}).status, 200);
  clock_.advance_ms(601 * 1000);
  EXPECT_EQ(call("GET", "/api/v1/jobs", {{"cookie", session2}}).status, 401);
}

TEST_F(DashboardTest, WithoutTokensEverythingIsOpenAndPagesAreServed) {
  auto job = core_->submit_job(spec("open", 1), {}, "o.yaml");
  ASSERT_TRUE(job.is_ok());
  HttpReply jobs = call("GET", "/jobs");
  EXPECT_EQ(jobs.status, 200);
  EXPECT_EQ(jobs.body, "<html>jobs.html</html>");
  EXPECT_EQ(jobs.content_type, "text/html; charset=utf-8");
  EXPECT_FALSE(header_of(jobs, "Content-Security-Policy").empty());
  EXPECT_EQ(call("GET", "/").status, 303);
  EXPECT_EQ(header_of(call("GET", "/login"), "Location"), "/jobs") << "nothing to log in to";
  EXPECT_EQ(call("GET", "/nope").status, 404);
  EXPECT_EQ(call("DELETE", "/api/v1/jobs").status, 405);
  HttpReply cancel = call("POST", "/api/v1/jobs/" + job->id + "/cancel", {{"x-tern-request", "1"}});
  EXPECT_EQ(cancel.status, 200) << cancel.body;
  EXPECT_EQ(core_->get_job(job->id)->state, JobState::kCancelled);
}

TEST_F(DashboardTest, PagesMissingAnswer503AndTheApiStillWorks) {
  fs::remove(dir_ / "web" / "job.html");
  open();
  EXPECT_FALSE(dashboard_->has_pages());
  HttpReply r = call("GET", "/jobs");
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(contains(r.body, (dir_ / "web").string())) << r.body;
  EXPECT_EQ(call("GET", "/api/v1/jobs").status, 200);
}

// The whole coordinator: the series written under state_dir/series by one CoordinatorServer
// are served over HTTP by the next one on the same state directory.
TEST_F(DashboardTest, ACoordinatorRestartKeepsTheChartsHistory) {
  dashboard_.reset();
  core_.reset();
  series_.reset();
  auto port = find_free_port();
  ASSERT_TRUE(port.is_ok());
  CoordinatorServerOptions o;
  o.listen = "127.0.0.1:0";
  o.core.state_dir = (dir_ / "server").string();
  o.core.worker_rate_per_s = 1e6;
  o.core.worker_rate_burst = 1e6;
  o.metrics_port = *port;
  o.web_root = (dir_ / "web").string();
  SystemClock clock;
  std::string id;
  json before;
  {
    auto server = CoordinatorServer::start(o, &clock);
    ASSERT_TRUE(server.is_ok()) << server.status().to_string();
    CoordinatorCore* core = (*server)->core();
    auto job = core->submit_job(spec("restart", 1), {}, "r.yaml");
    ASSERT_TRUE(job.is_ok());
    id = job->id;
    auto w = core->register_worker({"w0", "127.0.0.1", "local", 1, {45000}, 0});
    ASSERT_TRUE(w.is_ok());
    core->tick();
    auto hb = core->heartbeat(w->worker_id, w->session, {}, {45001});
    ASSERT_TRUE(hb.is_ok());
    ASSERT_FALSE(hb->commands.empty());
    const TaskKey key = hb->commands[0].task;
    for (int step = 1; step <= 30; ++step)
      ASSERT_TRUE(
          core->report_events(w->worker_id, w->session, {progress(key, step, 3.0 / step)}).is_ok());
    auto r = http_get("127.0.0.1", *port, "/api/v1/jobs/" + id + "/series");
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    before = json::parse(r->body);
    ASSERT_EQ(before["progress"]["points"].size(), 30u);
  }  // shut down (what changed is written)
  auto server = CoordinatorServer::start(o, &clock);
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  auto r = http_get("127.0.0.1", *port, "/api/v1/jobs/" + id + "/series");
  ASSERT_TRUE(r.is_ok());
  json after = json::parse(r->body);
  EXPECT_EQ(after["progress"], before["progress"]);
  EXPECT_TRUE(fs::exists(dir_ / "server" / "series" / (id + ".json")));
}

// Without auth tokens the dashboard follows gRPC's rule: loopback only. On another interface
// its paths answer 403 (saying what to configure) while /healthz and /metrics stay.
TEST_F(DashboardTest, WithoutTokensTheDashboardIsOffBeyondLoopback) {
  auto port = find_free_port("0.0.0.0");
  ASSERT_TRUE(port.is_ok());
  CoordinatorServerOptions o;
  o.listen = "127.0.0.1:0";
  o.core.state_dir = (dir_ / "wide").string();
  o.metrics_port = *port;
  o.metrics_host = "0.0.0.0";
  o.web_root = (dir_ / "web").string();
  SystemClock clock;
  auto server = CoordinatorServer::start(o, &clock);
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  for (const char* path : {"/api/v1/jobs", "/jobs", "/login", "/static/app.js"}) {
    auto r = http_get("127.0.0.1", *port, path);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->status, 403) << path;
    EXPECT_TRUE(contains(r->body, "auth.tokens")) << r->body;
  }
  EXPECT_EQ(http_get("127.0.0.1", *port, "/healthz")->status, 200);
  EXPECT_EQ(http_get("127.0.0.1", *port, "/metrics")->status, 200);
  // With tokens the same interface serves it (to token holders).
  (*server)->shutdown();
  server->reset();
  o.security.auth = tokens();
  auto secured = CoordinatorServer::start(o, &clock);
  ASSERT_TRUE(secured.is_ok()) << secured.status().to_string();
  EXPECT_EQ(http_get("127.0.0.1", *port, "/api/v1/jobs")->status, 401);
  EXPECT_EQ(http_get("127.0.0.1", *port, "/api/v1/jobs", kUserToken)->status, 200);
}

// An elastic job loses a rank: the timeline shows the shrink, when it was decided and how long
// until the survivors trained again, as `tern status` does.
TEST_F(DashboardTest, TimelineShowsAShrinkAndItsRecoveryTime) {
  auto ranks = running_job("elastic", 3, "recovery: {mode: partial, min_workers: 2}\n");
  const std::string id = ranks[0].second.job_id;
  TaskEvent lost;
  lost.kind = TaskEvent::Kind::kExited;
  lost.task = ranks[2].second;
  lost.exit_code = -9;
  lost.time = 1.7e9 + 10.0;
  ASSERT_TRUE(report(ranks[2].first, lost).is_ok());
  ASSERT_EQ(core_->get_job(id)->generation, 2);
  TaskEvent again = progress(TaskKey{id, 0, 2}, 6, 1.0);
  again.metrics["regroup_generation"] = 2;
  again.time = 1.7e9 + 10.4;
  ASSERT_TRUE(report(ranks[0].first, again).is_ok());

  json job = get_json("/api/v1/jobs/" + id)["job"];
  EXPECT_EQ(job["members"], json::array({0, 1}));
  ASSERT_EQ(job["timelines"].size(), 1u);
  EXPECT_EQ(job["timelines"][0]["world"].get<int>(), 2);
  EXPECT_FALSE(job["timelines"][0]["grow"].get<bool>());
  json events = get_json("/api/v1/jobs/" + id + "/timeline")["events"];
  const json* shrink = nullptr;
  const json* exit = nullptr;
  for (const json& e : events) {
    if (e["kind"] == "shrink") shrink = &e;
    if (e["kind"] == "exit") exit = &e;
  }
  ASSERT_NE(shrink, nullptr) << events.dump();
  EXPECT_EQ((*shrink)["generation"].get<int64_t>(), 2);
  EXPECT_DOUBLE_EQ((*shrink)["t"].get<double>(), 1.7e9 + 10.0) << "at the loss";
  EXPECT_NEAR((*shrink)["recovery_s"].get<double>(), 0.4, 1e-6);
  ASSERT_NE(exit, nullptr) << events.dump();
  EXPECT_EQ((*exit)["rank"].get<int>(), 2);
  EXPECT_EQ((*exit)["exit_code"].get<int>(), -9);
  // The job's series goes on with the first member's progress at the new generation.
  json series = get_json("/api/v1/jobs/" + id + "/series");
  EXPECT_EQ(series["progress"]["points"].back()[1].get<int64_t>(), 6);
}

}  // namespace
}  // namespace tern
