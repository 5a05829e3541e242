#include "coordinator/journal_records.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "common/json_fields.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The finite numbers of the object at `key` (others dropped: null, text, NaN).
std::map<std::string, double> number_map(const json& j, const char* key) {
  std::map<std::string, double> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return out;
  for (auto m = it->begin(); m != it->end(); ++m) {
    if (m.value().is_number() && std::isfinite(m.value().get<double>()))
      out[m.key()] = m.value().get<double>();
  }
  return out;
}

json rank_to_json(const RankInfo& r) {
  json j{{"rank", r.rank},
         {"worker", r.worker_id},
         {"region", r.region},
         {"host", r.host},
         {"state", static_cast<int>(r.state)},
         {"step", r.step},
         {"total_steps", r.total_steps},
         {"epoch", r.epoch},
         {"loss", r.loss},
         {"samples_per_s", r.samples_per_s},
         {"bytes_sent", r.bytes_sent},
         {"metrics", r.metrics},
         {"exit_code", r.exit_code},
         {"exited", r.exited},
         {"error", r.error},
         {"updated_at", r.updated_at},
         {"generation", r.generation}};
  if (r.test_accuracy) j["test_accuracy"] = *r.test_accuracy;
  if (!r.lost.empty()) j["lost"] = r.lost;
  if (!r.lost_from.empty()) j["lost_from"] = r.lost_from;
  if (r.log_base != 0) j["log_base"] = r.log_base;
  if (r.start_generation != 0) j["start_generation"] = r.start_generation;
  if (!r.member) j["member"] = false;
  if (r.ready) j["ready"] = true;
  return j;
}

RankInfo rank_from_json(const json& j) {
  RankInfo r;
  r.rank = j.value("rank", 0);
  r.worker_id = j.value("worker", "");
  r.region = j.value("region", "");
  r.host = j.value("host", "");
  r.state = static_cast<RankState>(j.value("state", 0));
  r.step = j.value("step", int64_t{0});
  r.total_steps = j.value("total_steps", int64_t{0});
  // Numbers written by an older coordinator may be null (a NaN it took from a worker).
  r.epoch = json_number(j, "epoch");
  r.loss = json_number(j, "loss");
  r.samples_per_s = json_number(j, "samples_per_s");
  r.bytes_sent = json_number(j, "bytes_sent");
  r.metrics = number_map(j, "metrics");
  r.exit_code = j.value("exit_code", 0);
  r.exited = j.value("exited", false);
  r.error = j.value("error", "");
  r.updated_at = json_number(j, "updated_at");
  r.generation = j.value("generation", int64_t{-1});  // -1: a journal from before regroups
  r.lost = j.value("lost", "");
  r.lost_from = j.value("lost_from", "");
  r.log_base = j.value("log_base", int64_t{0});
  r.start_generation = j.value("start_generation", int64_t{0});
  r.member = j.value("member", true);
  r.ready = j.value("ready", false);
  if (j.contains("test_accuracy") && j["test_accuracy"].is_number())
    r.test_accuracy = json_number(j, "test_accuracy");
  return r;
}

// A spec word the job record stores (placement, recovery_mode); an unknown word throws, so the
// record is reported as unreadable rather than loaded with a default.
template <class E>
E spec_word(const json& j, const char* key, E fallback) {
  if (!j.contains(key)) return fallback;
  const std::string word = j.at(key).get<std::string>();
  E value = fallback;
  if (!parse_spec_enum(word, &value)) {
    throw std::out_of_range(std::string("field '") + key + "' has unknown value '" +
                            printable(word) + "'");
  }
  return value;
}

Job decode_job(const json& j) {
  Job job;
  job.id = j.at("id").get<std::string>();
  job.seq = j.value("seq", int64_t{0});
  job.name = j.value("name", "");
  job.spec_yaml = j.value("spec", "");
  job.world = j.value("world", 1);
  job.placement = spec_word(j, "placement", PlacementPolicy::kAny);
  job.state = static_cast<JobState>(j.value("state", 0));
  job.reason = j.value("reason", "");
  job.generation = j.value("generation", int64_t{0});
  job.master_addr = j.value("master", "");
  job.recovery_mode = spec_word(j, "recovery_mode", RecoveryMode::kNone);
  job.max_recoveries = j.value("max_recoveries", int64_t{0});
  job.recoveries = j.value("recoveries", int64_t{0});
  job.threads = j.value("threads", int64_t{1});
  job.min_workers = j.value("min_workers", int64_t{0});
  job.measured_groups = j.value("measured_groups", false);
  if (auto t = j.find("timelines"); t != j.end() && t->is_array()) {
    for (const auto& one : *t) {
      if (one.is_object()) job.timelines.push_back(number_map(json{{"m", one}}, "m"));
    }
  }
  for (const auto& r : j.value("ranks", json::array())) {
    job.ranks.push_back(rank_from_json(r));
    if (job.ranks.back().generation < 0) job.ranks.back().generation = job.generation;
  }
  job.summary = number_map(j, "summary");
  job.created_at = j.value("created_at", 0.0);
  job.started_at = j.value("started_at", 0.0);
  job.finished_at = j.value("finished_at", 0.0);
  if (j.contains("test_accuracy") && j["test_accuracy"].is_number())
    job.test_accuracy = json_number(j, "test_accuracy");
  // Checkpoint fields (issue 22; absent in older journals). A wrong type throws (the record is
  // then reported, never dropped); values no coordinator writes are refused the same way.
  const auto integer_field = [&](const char* key) -> int64_t {
    auto it = j.find(key);
    if (it == j.end()) return -1;
    if (!it->is_number_integer()) throw std::out_of_range(std::string(key) + " is not an integer");
    return it->get<int64_t>();
  };
  job.checkpoint_dir = j.value("checkpoint_dir", std::string());
  job.checkpoint_step = integer_field("checkpoint_step");
  job.resumed_job = j.value("resumed_job", std::string());
  job.resumed_step = integer_field("resumed_step");
  if (job.checkpoint_step < -1 || job.resumed_step < -1) {
    throw std::out_of_range("job " + job.id + ": a checkpoint step below -1 (" +
                            std::to_string(std::min(job.checkpoint_step, job.resumed_step)) + ")");
  }
  if (!job.checkpoint_dir.empty() && !fs::path(job.checkpoint_dir).is_absolute()) {
    throw std::out_of_range("job " + job.id + ": checkpoint_dir '" +
                            job.checkpoint_dir.substr(0, 80) + "' is not absolute");
  }
  return job;
}

Worker decode_worker(const json& j) {
  Worker w;
  w.id = j.at("id").get<std::string>();
  w.host = j.value("host", "");
  w.region = j.value("region", "");
  w.slots = j.value("slots", 1);
  w.cores = j.value("cores", 0);
  w.session = j.value("session", uint64_t{0});
  w.state = static_cast<WorkerState>(j.value("state", 0));
  w.registered_at = j.value("registered_at", 0.0);
  return w;
}

}  // namespace

std::string encode_job_record(const Job& job) {
  json ranks = json::array();
  for (const auto& r : job.ranks) ranks.push_back(rank_to_json(r));
  json j{{"type", "job"},
         {"id", job.id},
         {"seq", job.seq},
         {"name", job.name},
         {"spec", job.spec_yaml},
         {"world", job.world},
         {"placement", name_of(job.placement)},
         {"state", static_cast<int>(job.state)},
         {"reason", job.reason},
         {"generation", job.generation},
         {"master", job.master_addr},
         {"recovery_mode", name_of(job.recovery_mode)},
         {"max_recoveries", job.max_recoveries},
         {"recoveries", job.recoveries},
         {"threads", job.threads},
         {"min_workers", job.min_workers},
         {"measured_groups", job.measured_groups},
         {"timelines", job.timelines},
         {"ranks", ranks},
         {"summary", job.summary},
         {"created_at", job.created_at},
         {"started_at", job.started_at},
         {"finished_at", job.finished_at}};
  if (job.test_accuracy) j["test_accuracy"] = *job.test_accuracy;
  if (!job.checkpoint_dir.empty()) j["checkpoint_dir"] = job.checkpoint_dir;
  if (job.checkpoint_step >= 0) j["checkpoint_step"] = job.checkpoint_step;
  if (!job.resumed_job.empty()) {
    j["resumed_job"] = job.resumed_job;
    j["resumed_step"] = job.resumed_step;
  }
  return j.dump();
}

std::string encode_worker_record(const Worker& w) {
  return json{{"type", "worker"},
              {"id", w.id},
              {"host", w.host},
              {"region", w.region},
              {"slots", w.slots},
              {"cores", w.cores},
              {"session", w.session},
              {"state", static_cast<int>(w.state)},
              {"registered_at", w.registered_at}}
      .dump();
}

std::string printable(const std::string& payload) {
  std::string out;
  for (char c : payload.substr(0, 80)) out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
  if (payload.size() > 80) out += "...";
  return out;
}

Status decode_journal_record(const std::string& payload, std::optional<Job>* job,
                             std::optional<Worker>* worker) {
  json j = json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string() ||
      !j.contains("type") || !j["type"].is_string()) {
    return data_loss("a record with a valid checksum is not a journal entry (" +
                     std::to_string(payload.size()) + " bytes: '" + printable(payload) + "')");
  }
  const std::string type = j["type"].get<std::string>();
  try {
    if (type == "job") {
      *job = decode_job(j);
    } else if (type == "worker") {
      *worker = decode_worker(j);
    } else {
      return data_loss("unknown record type '" + printable(type) + "'");
    }
  } catch (const json::exception& e) {
    return data_loss("a " + type + " record that cannot be read (" + e.what() + ")");
  } catch (const std::out_of_range& e) {
    return data_loss("a " + type + " record that cannot be read (" + e.what() + ")");
  }
  return Status::ok();
}

std::vector<std::string> compacted_journal_records(const std::map<std::string, Job>& jobs,
                                                   const std::map<std::string, Worker>& workers) {
  std::vector<std::string> records;
  for (const auto& [id, w] : workers) records.push_back(encode_worker_record(w));
  std::vector<const Job*> by_seq;
  for (const auto& [id, j] : jobs) by_seq.push_back(&j);
  std::sort(by_seq.begin(), by_seq.end(),
            [](const Job* a, const Job* b) { return a->seq < b->seq; });
  for (const Job* j : by_seq) records.push_back(encode_job_record(*j));
  return records;
}

}  // namespace tern
