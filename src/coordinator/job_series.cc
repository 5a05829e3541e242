#include "coordinator/job_series.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/file_util.h"
#include "common/json_fields.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kFormatVersion = 1;
constexpr size_t kMaxMessage = 300;
constexpr uintmax_t kMaxFileBytes = 16 << 20;  // far above what max_points allows

double finite(double v) { return std::isfinite(v) ? v : 0.0; }

// Job ids come from the core ("j-N"), but a file name is built from them: keep to a safe set.
bool safe_id(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  }
  return true;
}

// The group's first member: the rank whose progress and evaluations speak for the job.
int speaker(const Job& job) {
  std::vector<int> m = job.members();
  return m.empty() ? 0 : m.front();
}

json series_json(const DownsampledSeries& s, int values) {
  json points = json::array();
  for (const SeriesPoint& p : s.points()) {
    json row = json::array({p.t, p.step});
    for (int i = 0; i < values; ++i) row.push_back(p.values[i]);
    points.push_back(std::move(row));
  }
  return json{{"stride", s.stride()},
              {"seen", s.seen()},
              {"provisional", s.provisional()},
              {"points", std::move(points)}};
}

// Reads what series_json wrote; false (and nothing restored) when anything is off.
bool restore_series(const json& j, int values, size_t max_points, DownsampledSeries* out) {
  if (!j.is_object() || !j.contains("points") || !j["points"].is_array()) return false;
  const int64_t stride = json_int(j, "stride", 0);
  const int64_t seen = json_int(j, "seen", -1);
  if (stride < 1 || stride > (int64_t{1} << 40) || (stride & (stride - 1)) != 0 || seen < 0)
    return false;
  const auto& rows = j["points"];
  if (rows.size() > max_points) return false;
  std::vector<SeriesPoint> points;
  for (const auto& row : rows) {
    if (!row.is_array() || row.size() != static_cast<size_t>(2 + values)) return false;
    for (const auto& v : row) {
      if (!v.is_number() || !std::isfinite(v.get<double>())) return false;
    }
    SeriesPoint p;
    p.t = row[0].get<double>();
    const double step = row[1].get<double>();
    if (std::abs(step) > 9e15) return false;
    p.step = static_cast<int64_t>(step);
    for (int i = 0; i < values; ++i) p.values[i] = row[2 + i].get<double>();
    points.push_back(p);
  }
  const bool provisional = j.value("provisional", false) && !points.empty();
  out->restore(std::move(points), stride, seen, provisional);
  return true;
}

}  // namespace

// ---------------------------------------------------------------- DownsampledSeries

void DownsampledSeries::add(const SeriesPoint& p) {
  ++seen_;
  if (provisional_) points_.pop_back();
  points_.push_back(p);
  provisional_ = seen_ % stride_ != 0;
  if (provisional_) return;
  if (points_.size() >= max_points_) {
    // Keep every other point, ending with the newest, and sample half as often from now on.
    std::vector<SeriesPoint> kept;
    kept.reserve(points_.size() / 2 + 1);
    for (size_t i = points_.size() % 2 == 0 ? 1 : 0; i < points_.size(); i += 2)
      kept.push_back(points_[i]);
    points_ = std::move(kept);
    stride_ *= 2;
  }
}

void DownsampledSeries::restore(std::vector<SeriesPoint> points, int64_t stride, int64_t seen,
                                bool provisional) {
  points_ = std::move(points);
  stride_ = stride;
  seen_ = seen;
  provisional_ = provisional;
}

// ---------------------------------------------------------------- JobSeriesStore

Result<std::unique_ptr<JobSeriesStore>> JobSeriesStore::open(const JobSeriesOptions& options) {
  std::unique_ptr<JobSeriesStore> s(new JobSeriesStore(options));
  if (!options.dir.empty()) {
    std::error_code ec;
    fs::create_directories(options.dir, ec);
    if (ec) return unavailable("cannot create " + options.dir + ": " + ec.message());
    TERN_RETURN_IF_ERROR(s->load());
  }
  JobSeriesStore* self = s.get();
  s->writer_ = std::thread([self] { self->writer_loop(); });
  return s;
}

JobSeriesStore::~JobSeriesStore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
  Status s = flush();
  if (!s.is_ok()) spdlog::warn("job series: {}", s.message());
}

void JobSeriesStore::on_event(const Job& job, const TaskEvent& e, double now) {
  const double t = std::isfinite(e.time) && e.time > 0 && e.time < 1e11 ? e.time : now;
  const int rank = e.task.rank;
  const bool speaks = rank == speaker(job);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(job.id);
  auto series = [&]() -> JobSeries& {
    if (it == series_.end()) it = series_.emplace(job.id, JobSeries(options_.max_points)).first;
    return it->second;
  };
  auto add_event = [&](JobTimelineEvent ev) {
    JobSeries& s = series();
    s.events.push_back(std::move(ev));
    if (s.events.size() > options_.max_events)
      s.events.erase(s.events.begin(), s.events.begin() + (s.events.size() - options_.max_events));
  };
  switch (e.kind) {
    case TaskEvent::Kind::kProgress: {
      if (!speaks) return;
      double wait_sum = 0;
      int waits = 0;
      for (const RankInfo& r : job.ranks) {
        if (!r.member) continue;
        auto w = r.metrics.find("wait_s");
        auto c = r.metrics.find("compute_s");
        if (w == r.metrics.end() || c == r.metrics.end() || w->second + c->second <= 0) continue;
        wait_sum += 100 * w->second / (w->second + c->second);
        ++waits;
      }
      SeriesPoint p;
      p.t = t;
      p.step = e.step;
      p.values[0] = finite(job.loss());
      p.values[1] = finite(job.samples_per_s());
      p.values[2] = waits > 0 ? finite(wait_sum / waits) : 0.0;
      p.values[3] = finite(e.epoch);
      series().progress.add(p);
      break;
    }
    case TaskEvent::Kind::kEval: {
      if (!speaks || !std::isfinite(e.test_accuracy)) return;
      SeriesPoint p;
      p.t = t;
      p.step = e.step;
      p.values[0] = e.test_accuracy;
      p.values[1] = finite(e.test_loss);
      series().eval.add(p);
      break;
    }
    case TaskEvent::Kind::kCheckpoint: {
      JobSeries& s = series();
      if (e.step <= s.last_checkpoint) return;  // every rank reports the same step
      s.last_checkpoint = e.step;
      add_event({t, "checkpoint", -1, e.step, e.task.generation, 0, ""});
      break;
    }
    case TaskEvent::Kind::kError:
      add_event(
          {t, "error", rank, 0, e.task.generation, e.exit_code, e.message.substr(0, kMaxMessage)});
      break;
    case TaskEvent::Kind::kExited:
      if (e.exit_code == 0) return;
      add_event({t, "exit", rank, 0, e.task.generation, e.exit_code, ""});
      break;
    default:
      return;
  }
  ++series().version;
  dirty_.insert(job.id);
}

bool JobSeriesStore::get(const std::string& job_id, JobSeries* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(job_id);
  if (it == series_.end()) return false;
  *out = it->second;
  return true;
}

void JobSeriesStore::writer_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, options_.flush_interval, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    Status s = flush();
    if (!s.is_ok()) spdlog::warn("job series: {}", s.message());
    lock.lock();
  }
}

Status JobSeriesStore::flush() {
  if (options_.dir.empty()) return Status::ok();
  std::lock_guard<std::mutex> writing(write_mu_);
  std::map<std::string, JobSeries> copies;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& id : dirty_) copies.emplace(id, series_.at(id));
    dirty_.clear();
  }
  Status first = Status::ok();
  for (const auto& [id, series] : copies) {
    Status s = write_one(id, series);
    if (!s.is_ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      dirty_.insert(id);  // try again at the next flush
      if (first.is_ok()) first = s;
    }
  }
  return first;
}

Status JobSeriesStore::write_one(const std::string& job_id, const JobSeries& s) const {
  if (!safe_id(job_id)) return invalid_argument("job id '" + job_id + "' is not a file name");
  json events = json::array();
  for (const JobTimelineEvent& e : s.events) {
    events.push_back({{"t", e.t},
                      {"kind", e.kind},
                      {"rank", e.rank},
                      {"step", e.step},
                      {"generation", e.generation},
                      {"exit_code", e.exit_code},
                      {"message", e.message}});
  }
  json doc{{"format", kFormatVersion},
           {"job_id", job_id},
           {"progress", series_json(s.progress, 4)},
           {"eval", series_json(s.eval, 2)},
           {"events", std::move(events)},
           {"last_checkpoint", s.last_checkpoint},
           {"version", s.version}};
  // Messages are arbitrary bytes from trainers: replace what is not UTF-8 rather than throw.
  const std::string text = doc.dump(-1, ' ', false, json::error_handler_t::replace);
  const std::string path = options_.dir + "/" + job_id + ".json";
  // The charts' history (not journaled; it starts over if lost): atomic for readers, no fsync.
  AtomicWriteOptions write;
  write.tmp_suffix = ".tmp";
  write.sync = false;
  Status st = atomic_write_file(path, text, write);
  return st.is_ok() ? st : unavailable(st.message());
}

Status JobSeriesStore::load() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    const fs::path path = entry.path();
    if (path.extension() != ".json") continue;
    const std::string id = path.stem().string();
    auto skip = [&](const std::string& why) {
      ++damaged_files_;
      spdlog::warn("job series: {}: {}; that job's charts start empty", path.string(), why);
    };
    std::error_code size_ec;
    const uintmax_t bytes = fs::file_size(path, size_ec);
    if (size_ec || bytes > kMaxFileBytes) {
      skip("unreadable or larger than 16 MiB");
      continue;
    }
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    json doc = json::parse(text.str(), nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      skip("not JSON");
      continue;
    }
    if (json_int(doc, "format", 0) != kFormatVersion || json_string(doc, "job_id") != id ||
        !safe_id(id)) {
      skip("not a series file of format " + std::to_string(kFormatVersion) + " for job " + id);
      continue;
    }
    JobSeries s(options_.max_points);
    if (!restore_series(doc.value("progress", json()), 4, options_.max_points, &s.progress) ||
        !restore_series(doc.value("eval", json()), 2, options_.max_points, &s.eval)) {
      skip("a damaged series");
      continue;
    }
    const json events = doc.value("events", json::array());
    if (!events.is_array()) {
      skip("damaged events");
      continue;
    }
    for (const auto& e : events) {
      JobTimelineEvent ev;
      ev.t = json_number(e, "t");
      ev.kind = json_string(e, "kind");
      ev.rank = static_cast<int>(json_int(e, "rank", -1));
      ev.step = json_int(e, "step");
      ev.generation = json_int(e, "generation");
      ev.exit_code = static_cast<int>(json_int(e, "exit_code"));
      ev.message = json_string(e, "message").substr(0, kMaxMessage);
      if (ev.kind == "checkpoint" || ev.kind == "exit" || ev.kind == "error")
        s.events.push_back(ev);
    }
    if (s.events.size() > options_.max_events)
      s.events.erase(s.events.begin(), s.events.end() - static_cast<long>(options_.max_events));
    s.last_checkpoint = json_int(doc, "last_checkpoint");
    s.version = static_cast<uint64_t>(std::max<int64_t>(0, json_int(doc, "version")));
    series_.emplace(id, std::move(s));
  }
  if (ec) return unavailable("cannot read " + options_.dir + ": " + ec.message());
  return Status::ok();
}

}  // namespace tern
