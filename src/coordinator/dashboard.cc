#include "coordinator/dashboard.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace tern {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kCookie = "tern_session";
constexpr int64_t kDefaultLogBytes = 16 << 10;
constexpr int64_t kMaxLogBytes = 1 << 20;
constexpr uintmax_t kMaxAssetBytes = 4 << 20;
constexpr size_t kMaxJobIdBytes = 128;

const char* const kJobStates[] = {"PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"};

// Numbers the core keeps are finite; anything else would print as null.
double num(double v) { return std::isfinite(v) ? v : 0.0; }

std::string dump(const json& j) {
  // Text from trainers and specs may hold bytes that are not UTF-8: replaced, never thrown.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

int http_status_of(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

HttpReply json_reply(int status, const json& body) {
  HttpReply r;
  r.status = status;
  r.content_type = "application/json";
  r.body = dump(body);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

HttpReply error_reply(int status, const std::string& code, const std::string& message) {
  return json_reply(status, json{{"error", message}, {"code", code}});
}

HttpReply error_reply(const Status& s) {
  return error_reply(http_status_of(s.code()), status_code_name(s.code()), s.message());
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding ('+' is a space); a broken escape stays as is.
std::string url_decode(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// "a=1&b=2&a=3" -> {a: [1, 3], b: [2]}
std::map<std::string, std::vector<std::string>> parse_form(const std::string& text) {
  std::map<std::string, std::vector<std::string>> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('&', start);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(start, end - start);
    if (!part.empty()) {
      const size_t eq = part.find('=');
      out[url_decode(part.substr(0, eq))].push_back(
          eq == std::string::npos ? "" : url_decode(part.substr(eq + 1)));
    }
    start = end + 1;
  }
  return out;
}

std::string header(const HttpRequest& r, const std::string& lower_name) {
  auto it = r.headers.find(lower_name);
  return it == r.headers.end() ? "" : it->second;
}

std::string cookie(const HttpRequest& r, const std::string& name) {
  const std::string all = header(r, "cookie");
  size_t start = 0;
  while (start < all.size()) {
    size_t end = all.find(';', start);
    if (end == std::string::npos) end = all.size();
    std::string part = all.substr(start, end - start);
    part.erase(0, part.find_first_not_of(' '));
    if (part.compare(0, name.size() + 1, name + "=") == 0) return part.substr(name.size() + 1);
    start = end + 1;
  }
  return "";
}

// A whole non-negative decimal integer below `max`; false otherwise.
bool parse_count(const std::string& s, int64_t max, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

Result<std::string> random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n <= 0) return unavailable("getrandom failed: cannot make a session id");
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

json rank_json(const RankInfo& r) {
  json metrics = json::object();
  for (const auto& [k, v] : r.metrics) metrics[k] = num(v);
  json j{{"rank", r.rank},
         {"member", r.member},
         {"worker_id", r.worker_id},
         {"region", r.region},
         {"host", r.host},
         {"state", rank_state_name(r.state)},
         {"step", r.step},
         {"total_steps", r.total_steps},
         {"epoch", num(r.epoch)},
         {"loss", num(r.loss)},
         {"samples_per_s", num(r.samples_per_s)},
         {"bytes_sent", num(r.bytes_sent)},
         {"metrics", std::move(metrics)},
         {"exit_code", r.exit_code},
         {"error", r.error},
         {"generation", r.generation},
         {"updated_at", num(r.updated_at)}};
  if (r.test_accuracy) j["test_accuracy"] = num(*r.test_accuracy);
  return j;
}

json timelines_json(const Job& job) {
  json out = json::array();
  for (const auto& t : job.timelines) {
    auto at = [&](const char* k) {
      auto it = t.find(k);
      return it == t.end() ? 0.0 : num(it->second);
    };
    out.push_back({{"generation", static_cast<int64_t>(at("generation"))},
                   {"world", static_cast<int64_t>(at("world"))},
                   {"grow", at("grow") != 0},
                   {"lost", at("lost")},
                   {"decided", at("decided")},
                   {"training_again", at("training_again")}});
  }
  return out;
}

// The fields of v1::JobStatus (service.cc to_proto), states by name, times in unix seconds.
json job_json(const Job& job, double now) {
  json ranks = json::array();
  for (const RankInfo& r : job.ranks) ranks.push_back(rank_json(r));
  json summary = json::object();
  for (const auto& [k, v] : job.summary) summary[k] = num(v);
  json j{{"job_id", job.id},
         {"name", job.name},
         {"state", job_state_name(job.state)},
         {"reason", job.reason},
         {"generation", job.generation},
         {"recoveries", job.recoveries},
         {"checkpoint_dir", job.checkpoint_dir},
         {"resumed_job", job.resumed_job},
         {"world_size", job.world},
         {"placement", name_of(job.placement)},
         {"master_addr", job.master_addr},
         {"members", job.members()},
         {"timelines", timelines_json(job)},
         {"ranks", std::move(ranks)},
         {"step", job.step()},
         {"total_steps", job.total_steps()},
         {"loss", num(job.loss())},
         {"samples_per_s", job.state == JobState::kRunning ? num(job.samples_per_s()) : 0.0},
         {"eta_s", num(job.eta_s(now))},
         {"summary", std::move(summary)},
         {"created_at", num(job.created_at)},
         {"started_at", num(job.started_at)},
         {"finished_at", num(job.finished_at)}};
  if (job.checkpoint_step >= 0) j["checkpoint_step"] = job.checkpoint_step;
  if (job.resumed_step >= 0) j["resumed_step"] = job.resumed_step;
  if (job.test_accuracy) j["test_accuracy"] = num(*job.test_accuracy);
  return j;
}

json worker_json(const Worker& w, const std::vector<TaskKey>& tasks, double now) {
  json t = json::array();
  for (const TaskKey& k : tasks)
    t.push_back({{"job_id", k.job_id}, {"rank", k.rank}, {"generation", k.generation}});
  json j{{"worker_id", w.id},
         {"host", w.host},
         {"region", w.region},
         {"slots", w.slots},
         {"used_slots", static_cast<int64_t>(tasks.size())},
         {"cores", w.cores},
         {"state", w.state == WorkerState::kReady ? "READY" : "LOST"},
         {"last_heartbeat", num(w.last_heartbeat)},
         {"registered_at", num(w.registered_at)},
         {"tasks", std::move(t)}};
  if (w.last_heartbeat > 0) j["heartbeat_age_s"] = num(std::max(0.0, now - w.last_heartbeat));
  return j;
}

json series_json(const DownsampledSeries& s, std::initializer_list<const char*> fields,
                 int values) {
  json names = json::array({"t", "step"});
  for (const char* f : fields) names.push_back(f);
  json points = json::array();
  for (const SeriesPoint& p : s.points()) {
    json row = json::array({num(p.t), p.step});
    for (int i = 0; i < values; ++i) row.push_back(num(p.values[i]));
    points.push_back(std::move(row));
  }
  return json{{"fields", std::move(names)}, {"stride", s.stride()}, {"points", std::move(points)}};
}

std::string content_type_of(const std::string& name) {
  auto ends = [&](const char* ext) {
    const std::string e(ext);
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  return "";
}

void page_headers(HttpReply* r) {
  r->headers.emplace_back("Cache-Control", "no-cache");
  r->headers.emplace_back("X-Content-Type-Options", "nosniff");
  r->headers.emplace_back("X-Frame-Options", "DENY");
  r->headers.emplace_back("Content-Security-Policy",
                          "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                          "img-src 'self' data:; frame-ancestors 'none'");
}

HttpReply redirect(const std::string& location) {
  HttpReply r;
  r.status = 303;
  r.body = "see " + location + "\n";
  r.headers.emplace_back("Location", location);
  return r;
}

// A local path to return to after the login (never another site: "//x" and "/\x" are).
std::string safe_next(const std::string& next) {
  if (next.size() < 1 || next.size() > 512 || next[0] != '/' ||
      (next.size() > 1 && (next[1] == '/' || next[1] == '\\')))
    return "/jobs";
  for (unsigned char c : next) {
    if (c < 0x20 || c == 0x7f) return "/jobs";
  }
  return next;
}

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Dashboard::Dashboard(const DashboardOptions& options, CoordinatorCore* core,
                     const JobSeriesStore* series, Clock* clock)
    : options_(options),
      core_(core),
      series_(series),
      clock_(clock),
      limiter_(options.rate_per_s, options.rate_burst) {
  load_assets();
}

std::string Dashboard::default_web_root() {
  if (const char* env = std::getenv("TERN_WEB_ROOT"); env && *env) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return (exe.parent_path().parent_path() / "share" / "tern" / "web").lexically_normal().string();
}

void Dashboard::load_assets() {
  if (options_.web_root.empty()) return;
  std::error_code ec;
  std::vector<std::pair<std::string, fs::path>> files;
  for (const auto& e : fs::directory_iterator(options_.web_root, ec))
    if (e.is_regular_file()) files.emplace_back(e.path().filename().string(), e.path());
  for (const auto& e : fs::directory_iterator(fs::path(options_.web_root) / "static", ec))
    if (e.is_regular_file()) files.emplace_back("static/" + e.path().filename().string(), e.path());
  for (const auto& [name, path] : files) {
    std::error_code size_ec;
    if (content_type_of(name).empty() || fs::file_size(path, size_ec) > kMaxAssetBytes || size_ec)
      continue;
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    assets_[name] = text.str();
  }
  for (const char* required : {"jobs.html", "job.html", "cluster.html", "login.html"}) {
    if (!assets_.count(required)) {
      spdlog::warn(
          "dashboard: {} has no {}: pages are off (the API still answers); run "
          "scripts/setup.sh (npm ci in web/, then the build copies the pages)",
          options_.web_root, required);
      assets_.clear();
      return;
    }
  }
}

HttpReply Dashboard::asset(const std::string& name) const {
  auto it = assets_.find(name);
  if (it == assets_.end()) return error_reply(404, "NOT_FOUND", "no such file");
  HttpReply r;
  r.content_type = content_type_of(name);
  r.body = it->second;
  page_headers(&r);
  return r;
}

HttpReply Dashboard::page(const std::string& file, int status, const std::string& error) const {
  if (assets_.empty()) {
    HttpReply r;
    r.status = 503;
    r.body = "the dashboard's pages were not found in '" + options_.web_root +
             "' (set $TERN_WEB_ROOT or run scripts/setup.sh); the API under /api/v1/ answers\n";
    return r;
  }
  HttpReply r = asset(file);
  r.status = status;
  if (!error.empty()) {
    // The login page's error slot; the text is ours, but escape it all the same.
    std::string escaped;
    for (char c : error) {
      if (c == '<')
        escaped += "&lt;";
      else if (c == '>')
        escaped += "&gt;";
      else if (c == '&')
        escaped += "&amp;";
      else
        escaped += c;
    }
    const std::string slot = "<!--error-->";
    if (auto at = r.body.find(slot); at != std::string::npos)
      r.body.replace(at, slot.size(), "<p class=\"error\" id=\"error\">" + escaped + "</p>");
  }
  return r;
}

bool Dashboard::authenticate(const HttpRequest& request, bool is_page, Principal* who,
                             HttpReply* refusal) {
  if (!options_.auth || !options_.auth->enabled()) {
    *who = Principal{"", Role::kAdmin};
    return true;
  }
  const std::string authorization = header(request, "authorization");
  const ApiToken* token = nullptr;
  bool found = false;
  if (!authorization.empty()) {
    token = options_.auth->find(authorization);
    if (token) {
      *who = Principal{token->user, token->role};
      found = true;
    }
  } else if (const std::string id = cookie(request, kCookie); !id.empty()) {
    const double now = clock_->unix_seconds();
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(id);
    if (it != sessions_.end() && it->second.expires > now) {
      *who = it->second.who;
      found = true;
    } else if (it != sessions_.end()) {
      sessions_.erase(it);
    }
  }
  if (!found) {
    if (is_page) {
      std::string next = request.path;
      if (!request.query.empty()) next += "?" + request.query;
      *refusal = redirect("/login?next=" + url_encode(safe_next(next)));
    } else {
      *refusal = error_reply(401, "UNAUTHENTICATED",
                             authorization.empty()
                                 ? "this cluster has auth.tokens: send \"Authorization: Bearer "
                                   "<token>\" (a user or admin token) or log in at /login"
                                 : "unknown token");
      refusal->headers.emplace_back("WWW-Authenticate", "Bearer");
    }
    return false;
  }
  if (who->role == Role::kWorker) {
    *refusal = error_reply(403, "PERMISSION_DENIED",
                           "token of '" + who->user +
                               "' has role worker: it may call only the worker API; the dashboard "
                               "needs a user or admin token");
    return false;
  }
  return true;
}

HttpReply Dashboard::login(const HttpRequest& request) {
  const bool tokens = options_.auth && options_.auth->enabled();
  if (request.method == "GET" || request.method == "HEAD") {
    return tokens ? page("login.html") : redirect("/jobs");  // nothing to log in to
  }
  if (request.method != "POST") return error_reply(405, "UNIMPLEMENTED", "GET or POST /login");
  auto form = parse_form(request.body);
  const std::string token = form.count("token") ? form["token"].front() : "";
  const std::string next = safe_next(form.count("next") ? form["next"].front() : "/jobs");
  if (!tokens) return redirect(next);
  const ApiToken* t = token.empty() ? nullptr : options_.auth->find("Bearer " + token);
  if (!t) {
    spdlog::info("dashboard: a login from {} with an unknown token refused", request.remote_addr);
    return page("login.html", 401, "unknown token");
  }
  if (t->role == Role::kWorker) {
    return page("login.html", 403,
                "that is a worker token; the dashboard needs a user or admin token");
  }
  auto id = random_hex(16);
  if (!id.is_ok()) return error_reply(id.status());
  const double now = clock_->unix_seconds();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      it = it->second.expires <= now ? sessions_.erase(it) : std::next(it);
    }
    while (sessions_.size() >= options_.max_sessions && !sessions_.empty()) {
      auto oldest = std::min_element(sessions_.begin(), sessions_.end(), [](auto& a, auto& b) {
        return a.second.created < b.second.created;
      });
      sessions_.erase(oldest);
    }
    sessions_[*id] = Session{Principal{t->user, t->role},
                             now + static_cast<double>(options_.session_ttl.count()), now};
  }
  spdlog::info("dashboard: {} logged in from {}", t->user, request.remote_addr);
  HttpReply r = redirect(next);
  r.headers.emplace_back("Set-Cookie", std::string(kCookie) + "=" + *id +
                                           "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
                                           std::to_string(options_.session_ttl.count()));
  return r;
}

HttpReply Dashboard::logout(const HttpRequest& request) {
  if (request.method != "POST") return error_reply(405, "UNIMPLEMENTED", "POST /logout");
  const std::string id = cookie(request, kCookie);
  if (!id.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    sessions_.erase(id);
  }
  HttpReply r = redirect("/login");
  r.headers.emplace_back("Set-Cookie",
                         std::string(kCookie) + "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
  return r;
}

HttpReply Dashboard::handle(const HttpRequest& request) {
  try {
    const std::string& path = request.path;
    if (path == "/") return redirect("/jobs");
    if (path == "/favicon.ico")
      return HttpReply(204, "text/plain", "");  // none: not a 404 per page
    if (path == "/login") {
      // Failed logins cost a call of the peer's bucket like API calls: no guessing at speed.
      if (request.method == "POST" &&
          !limiter_.allow("login:" + request.remote_addr, steady_seconds()))
        return error_reply(429, "RESOURCE_EXHAUSTED", "too many logins; wait a second");
      return login(request);
    }
    if (path == "/logout") return logout(request);
    if (path.compare(0, 8, "/static/") == 0) {
      if (request.method != "GET" && request.method != "HEAD")
        return error_reply(405, "UNIMPLEMENTED", "only GET");
      return asset(path.substr(1));
    }
    static const std::map<std::string, std::string> kPages = {
        {"/jobs", "jobs.html"}, {"/job", "job.html"}, {"/cluster", "cluster.html"}};
    const bool is_api = path.compare(0, 8, "/api/v1/") == 0 || path == "/api/v1";
    auto p = kPages.find(path);
    if (!is_api && p == kPages.end()) return error_reply(404, "NOT_FOUND", "no such page");
    Principal who;
    HttpReply refusal;
    if (!authenticate(request, !is_api, &who, &refusal)) return refusal;
    if (!is_api) {
      if (request.method != "GET" && request.method != "HEAD")
        return error_reply(405, "UNIMPLEMENTED", "only GET");
      return page(p->second);
    }
    const std::string client =
        who.user.empty() ? "peer:" + request.remote_addr : "user:" + who.user;
    if (!limiter_.allow(client, steady_seconds())) {
      return error_reply(429, "RESOURCE_EXHAUSTED",
                         "more than " + std::to_string(static_cast<int>(limiter_.per_s())) +
                             " API calls per second; poll less often");
    }
    return api(request, who);
  } catch (const std::exception& e) {
    spdlog::error("dashboard: {} {}: {}", request.method, request.path.substr(0, 200), e.what());
    return error_reply(500, "INTERNAL", "internal error");
  }
}

// GET /api/v1/cluster and /api/v1/workers.
HttpReply Dashboard::api_cluster(const std::string& rest, const Principal& who, double now) {
  json workers = json::array();
  int64_t slots = 0, used = 0, ready = 0;
  for (const Worker& w : core_->list_workers()) {
    const auto tasks = core_->assigned_tasks(w.id);
    workers.push_back(worker_json(w, tasks, now));
    if (w.state == WorkerState::kReady) {
      ++ready;
      slots += w.slots;
    }
    used += static_cast<int64_t>(tasks.size());
  }
  if (rest == "workers") return json_reply(200, json{{"workers", std::move(workers)}});
  json states = json::object();
  for (const char* s : kJobStates) states[s] = 0;
  for (const Job& j : core_->list_jobs())
    states[job_state_name(j.state)] = states[job_state_name(j.state)].get<int64_t>() + 1;
  return json_reply(200, json{{"name", options_.cluster_name},
                              {"now", now},
                              {"user", who.user},
                              {"workers", std::move(workers)},
                              {"ready_workers", ready},
                              {"slots", slots},
                              {"used_slots", used},
                              {"jobs", std::move(states)}});
}

// GET /api/v1/jobs?state=S[,S]&limit=N.
HttpReply Dashboard::api_jobs(std::map<std::string, std::vector<std::string>>& query, double now) {
  auto one = [&](const std::string& key) -> std::string {
    auto it = query.find(key);
    return it == query.end() || it->second.empty() ? "" : it->second.back();
  };
  std::set<std::string> wanted;
  for (const std::string& v : query["state"]) {
    size_t start = 0;
    while (start <= v.size()) {
      size_t end = v.find(',', start);
      if (end == std::string::npos) end = v.size();
      std::string s = v.substr(start, end - start);
      std::transform(s.begin(), s.end(), s.begin(),
                     [](unsigned char c) { return std::toupper(c); });
      if (!s.empty()) {
        if (std::find_if(std::begin(kJobStates), std::end(kJobStates),
                         [&](const char* k) { return s == k; }) == std::end(kJobStates)) {
          return error_reply(400, "INVALID_ARGUMENT",
                             "query parameter state: '" + s.substr(0, 64) +
                                 "' is not one of PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED");
        }
        wanted.insert(s);
      }
      start = end + 1;
    }
  }
  int64_t limit = 0;
  if (const std::string l = one("limit"); !l.empty() && !parse_count(l, 1000000, &limit)) {
    return error_reply(400, "INVALID_ARGUMENT",
                       "query parameter limit: want a whole number in [0, 1000000], got '" +
                           l.substr(0, 64) + "'");
  }
  std::vector<const Job*> selected;
  const std::vector<Job> jobs = core_->list_jobs();
  for (const Job& j : jobs)
    if (wanted.empty() || wanted.count(job_state_name(j.state))) selected.push_back(&j);
  size_t first = 0;
  if (limit > 0 && selected.size() > static_cast<size_t>(limit))
    first = selected.size() - static_cast<size_t>(limit);
  json out = json::array();
  for (size_t i = first; i < selected.size(); ++i) out.push_back(job_json(*selected[i], now));
  return json_reply(200, json{{"jobs", std::move(out)}, {"now", now}});
}

// POST /api/v1/jobs/ID/cancel.
HttpReply Dashboard::api_cancel(const HttpRequest& request, const Principal& who,
                                const std::string& id, double now) {
  if (request.method != "POST") return error_reply(405, "UNIMPLEMENTED", "POST to cancel");
  if (header(request, "x-tern-request") != "1") {
    return error_reply(403, "PERMISSION_DENIED",
                       "cancel needs the header \"X-Tern-Request: 1\" (a cross-site form "
                       "cannot send it)");
  }
  // The same roles as gRPC's CancelJob (user or admin; authenticate() refused workers).
  auto job =
      core_->cancel_job(id, who.user.empty() ? "cancelled from the dashboard"
                                             : "cancelled from the dashboard by " + who.user);
  if (!job.is_ok()) return error_reply(job.status());
  spdlog::info("dashboard: job {} cancelled by {}", id,
               who.user.empty() ? request.remote_addr : who.user);
  return json_reply(200, json{{"job", job_json(*job, now)}});
}

// GET /api/v1/jobs/ID/series.
HttpReply Dashboard::api_series(const Job& job, double now) {
  JobSeries s(4);
  const bool have = series_ && series_->get(job.id, &s);
  return json_reply(
      200,
      json{{"job_id", job.id},
           {"state", job_state_name(job.state)},
           {"version", have ? s.version : 0},
           {"now", now},
           {"progress", series_json(s.progress, {"loss", "samples_per_s", "wait_pct", "epoch"}, 4)},
           {"eval", series_json(s.eval, {"test_accuracy", "test_loss"}, 2)}});
}

// GET /api/v1/jobs/ID/timeline.
HttpReply Dashboard::api_timeline(const Job& job) {
  json events = json::array();
  if (job.created_at > 0) events.push_back({{"t", num(job.created_at)}, {"kind", "submitted"}});
  if (job.started_at > 0)
    events.push_back({{"t", num(job.started_at)}, {"kind", "started"}, {"world", job.world}});
  for (const json& t : timelines_json(job)) {
    json e = t;
    e["kind"] = t["grow"].get<bool>() ? "grow" : (job.elastic() ? "shrink" : "regroup");
    const double lost = t["lost"].get<double>();
    e["t"] = lost > 0 ? lost : t["decided"].get<double>();
    const double again = t["training_again"].get<double>();
    if (again > 0) e["recovery_s"] = again - e["t"].get<double>();
    events.push_back(std::move(e));
  }
  JobSeries s(4);
  if (series_ && series_->get(job.id, &s)) {
    for (const JobTimelineEvent& ev : s.events) {
      json e{{"t", num(ev.t)}, {"kind", ev.kind}, {"generation", ev.generation}};
      if (ev.rank >= 0) e["rank"] = ev.rank;
      if (ev.kind == "checkpoint") e["step"] = ev.step;
      if (ev.kind == "exit" || ev.kind == "error") e["exit_code"] = ev.exit_code;
      if (!ev.message.empty()) e["message"] = ev.message;
      events.push_back(std::move(e));
    }
  }
  if (job.finished_at > 0) {
    events.push_back({{"t", num(job.finished_at)},
                      {"kind", "finished"},
                      {"state", job_state_name(job.state)},
                      {"message", job.reason.substr(0, 300)}});
  }
  std::stable_sort(events.begin(), events.end(), [](const json& a, const json& b) {
    return a["t"].get<double>() < b["t"].get<double>();
  });
  return json_reply(200, json{{"job_id", job.id}, {"events", std::move(events)}});
}

// GET /api/v1/jobs/ID/logs?rank=R&bytes=B.
HttpReply Dashboard::api_logs(const Job& job,
                              const std::function<std::string(const std::string&)>& one) {
  int64_t rank = 0, bytes = kDefaultLogBytes;
  const std::string r = one("rank"), b = one("bytes");
  if (!r.empty() && !parse_count(r, 1 << 20, &rank))
    return error_reply(400, "INVALID_ARGUMENT", "query parameter rank: want a whole number >= 0");
  if (!b.empty() && (!parse_count(b, kMaxLogBytes, &bytes) || bytes < 1)) {
    return error_reply(
        400, "INVALID_ARGUMENT",
        "query parameter bytes: want a whole number in [1, " + std::to_string(kMaxLogBytes) + "]");
  }
  // The log's size first (an offset past the end reads nothing), then its last `bytes`.
  auto end =
      core_->get_logs(job.id, static_cast<int>(rank), std::numeric_limits<int64_t>::max(), 1);
  if (!end.is_ok()) return error_reply(end.status());
  const int64_t offset = std::max<int64_t>(0, end->next_offset - bytes);
  auto slice = core_->get_logs(job.id, static_cast<int>(rank), offset, bytes);
  if (!slice.is_ok()) return error_reply(slice.status());
  return json_reply(200, json{{"job_id", job.id},
                              {"rank", rank},
                              {"offset", offset},
                              {"next_offset", slice->next_offset},
                              {"complete", slice->complete},
                              {"data", slice->data}});
}

HttpReply Dashboard::api(const HttpRequest& request, const Principal& who) {
  const std::string rest = request.path.size() > 8 ? request.path.substr(8) : "";
  auto query = parse_form(request.query);
  auto one = [&](const std::string& key) -> std::string {
    auto it = query.find(key);
    return it == query.end() || it->second.empty() ? "" : it->second.back();
  };
  const bool get = request.method == "GET" || request.method == "HEAD";
  const double now = clock_->unix_seconds();

  if (rest == "cluster" || rest == "workers") {
    if (!get) return error_reply(405, "UNIMPLEMENTED", "only GET");
    return api_cluster(rest, who, now);
  }

  if (rest == "jobs") {
    if (!get) return error_reply(405, "UNIMPLEMENTED", "only GET");
    return api_jobs(query, now);
  }

  if (rest.compare(0, 5, "jobs/") != 0) return error_reply(404, "NOT_FOUND", "no such API call");
  const std::string tail = rest.substr(5);
  const size_t slash = tail.find('/');
  const std::string id = tail.substr(0, slash);
  const std::string sub = slash == std::string::npos ? "" : tail.substr(slash + 1);
  if (id.empty() || id.size() > kMaxJobIdBytes)
    return error_reply(400, "INVALID_ARGUMENT", "a job id is 1 to 128 bytes");

  if (sub == "cancel") return api_cancel(request, who, id, now);
  if (!get) return error_reply(405, "UNIMPLEMENTED", "only GET");
  auto job = core_->get_job(id);
  if (!job.is_ok()) return error_reply(job.status());

  if (sub.empty()) {
    return json_reply(
        200, json{{"job", job_json(*job, now)}, {"spec_yaml", job->spec_yaml}, {"now", now}});
  }
  if (sub == "spec")
    return json_reply(200, json{{"job_id", job->id}, {"spec_yaml", job->spec_yaml}});
  if (sub == "series") return api_series(*job, now);
  if (sub == "timeline") return api_timeline(*job);
  if (sub == "logs") return api_logs(*job, one);
  return error_reply(404, "NOT_FOUND", "no such API call");
}

}  // namespace tern
