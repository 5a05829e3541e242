#include "common/trainer_codec.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <set>

namespace tern {
namespace {

using json = nlohmann::json;

// Header keys: never part of a body's metrics or free-form fields.
bool is_header_key(const std::string& k) {
  return k == "event" || k == "job" || k == "rank" || k == "generation" || k == "time";
}

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// A finite number, else nullopt (null, missing, another type, NaN).
std::optional<double> read_number(const json& v) {
  if (!v.is_number()) return std::nullopt;
  double d = v.get<double>();
  return std::isfinite(d) ? std::optional<double>(d) : std::nullopt;
}

std::optional<int64_t> read_integer(const json& v) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return INT64_MAX;
    return v.get<int64_t>();
  }
  auto d = read_number(v);
  if (!d) return std::nullopt;
  if (*d >= 9.2e18) return INT64_MAX;
  if (*d <= -9.2e18) return INT64_MIN;
  return static_cast<int64_t>(*d);
}

// Writes a body's fields into a JSON object.
class Writer {
 public:
  explicit Writer(json* out) : out_(out) {}
  void operator()(const char* k, int64_t v) { (*out_)[k] = v; }
  void operator()(const char* k, double v) { (*out_)[k] = number_or_null(v); }
  void operator()(const char* k, bool v) { (*out_)[k] = v; }
  void operator()(const char* k, const std::string& v) { (*out_)[k] = v; }
  void operator()(const char* k, const std::optional<double>& v) {
    if (v) (*out_)[k] = number_or_null(*v);
  }
  void operator()(const char* k, const std::optional<int64_t>& v) {
    if (v) (*out_)[k] = *v;
  }
  void operator()(const char* k, const std::vector<int64_t>& v) { (*out_)[k] = v; }
  void operator()(const char* k, const std::vector<std::string>& v) { (*out_)[k] = v; }
  void operator()(const char* k, const std::vector<std::vector<int64_t>>& v) { (*out_)[k] = v; }
  void operator()(const char* k, const json& v) { (*out_)[k] = v; }
  // The open-ended part, at the top level: never over a typed field or the header.
  void rest(const MetricMap& m) {
    for (const auto& [k, v] : m) {
      if (!out_->contains(k) && !is_header_key(k)) (*out_)[k] = number_or_null(v);
    }
  }
  void rest(const json& fields) {
    if (!fields.is_object()) return;
    for (const auto& [k, v] : fields.items()) {
      if (!out_->contains(k) && !is_header_key(k)) (*out_)[k] = v;
    }
  }

 private:
  json* out_;
};

// Reads a body's fields from a JSON object, leniently (see the header). Records the keys it
// read, so that rest() collects the others.
class Reader {
 public:
  explicit Reader(const json& in) : in_(in) {}
  void operator()(const char* k, int64_t& v) {
    if (auto x = field(k)) v = read_integer(*x).value_or(v);
  }
  void operator()(const char* k, double& v) {
    if (auto x = field(k)) v = read_number(*x).value_or(v);
  }
  void operator()(const char* k, bool& v) {
    if (auto x = field(k); x && x->is_boolean()) v = x->get<bool>();
  }
  void operator()(const char* k, std::string& v) {
    if (auto x = field(k); x && x->is_string()) v = x->get<std::string>();
  }
  void operator()(const char* k, std::optional<double>& v) {
    if (auto x = field(k)) v = read_number(*x);
  }
  void operator()(const char* k, std::optional<int64_t>& v) {
    if (auto x = field(k)) v = read_integer(*x);
  }
  void operator()(const char* k, std::vector<int64_t>& v) {
    if (auto x = field(k); x && x->is_array()) v = integers(*x);
  }
  void operator()(const char* k, std::vector<std::string>& v) {
    auto x = field(k);
    if (!x || !x->is_array()) return;
    v.clear();
    for (const auto& e : *x) {
      if (e.is_string()) v.push_back(e.get<std::string>());
    }
  }
  void operator()(const char* k, std::vector<std::vector<int64_t>>& v) {
    auto x = field(k);
    if (!x || !x->is_array()) return;
    v.clear();
    for (const auto& e : *x) {
      if (e.is_array()) v.push_back(integers(e));
    }
  }
  void operator()(const char* k, json& v) {
    if (auto x = field(k)) v = *x;
  }
  void rest(MetricMap& m) {
    for (const auto& [k, v] : in_.items()) {
      if (is_header_key(k) || known_.count(k)) continue;
      if (auto d = read_number(v)) m[k] = *d;
    }
  }
  void rest(json& fields) {
    fields = json::object();
    for (const auto& [k, v] : in_.items()) {
      if (!is_header_key(k) && !known_.count(k)) fields[k] = v;
    }
  }

 private:
  const json* field(const char* k) {
    known_.insert(k);
    auto it = in_.find(k);
    return it == in_.end() ? nullptr : &*it;
  }
  static std::vector<int64_t> integers(const json& a) {
    std::vector<int64_t> out;
    for (const auto& e : a) {
      if (auto i = read_integer(e)) out.push_back(*i);
    }
    return out;
  }
  const json& in_;
  std::set<std::string> known_;
};

// The fields of each kind: one list serves both directions (V is a Writer or a Reader).
template <class V>
void fields(StartedEvent& e, V& v) {
  v("world", e.world);
  v("pid", e.pid);
  v("total_steps", e.total_steps);
}
template <class V>
void fields(ProgressEvent& e, V& v) {
  v("step", e.step);
  v("total_steps", e.total_steps);
  v("epoch", e.epoch);
  v("loss", e.loss);
  v("samples_per_s", e.samples_per_s);
  v("bytes_sent", e.bytes_sent);
  v("compute_s", e.compute_s);
  v("wait_s", e.wait_s);
  v("world", e.world);
  v.rest(e.metrics);
}
template <class V>
void fields(EvalEvent& e, V& v) {
  v("step", e.step);
  v("test_accuracy", e.test_accuracy);
  v("test_loss", e.test_loss);
  v.rest(e.metrics);
}
template <class V>
void fields(CheckpointEvent& e, V& v) {
  v("step", e.step);
  v("snapshot_s", e.snapshot_s);
  v("drain_s", e.drain_s);
  v("checkpoint_s", e.checkpoint_s);
}
template <class V>
void fields(CheckpointFailedEvent& e, V& v) {
  v("step", e.step);
  v("message", e.message);
}
template <class V>
void fields(CheckpointCommittedEvent& e, V& v) {
  v("step", e.step);
  v("write_s", e.write_s);
  v("bytes", e.bytes);
  v("checkpoints", e.checkpoints);
  v("checkpoint_s", e.checkpoint_s);
}
template <class V>
void fields(CheckpointPlanEvent& e, V& v) {
  v("step", e.step);
  v("plan", e.plan);
}
template <class V>
void fields(RestoreFields& e, V& v) {
  v("step", e.step);
  v("dir", e.dir);
  v("skipped", e.skipped);
  v("at_step", e.at_step);
  v("written_world", e.written_world);
  v("world", e.world);
  v("dropped", e.dropped);
}
template <class V>
void fields(ResumedEvent& e, V& v) {
  fields(static_cast<RestoreFields&>(e), v);
}
template <class V>
void fields(RolledBackEvent& e, V& v) {
  fields(static_cast<RestoreFields&>(e), v);
}
template <class V>
void fields(PartialRestoreEvent& e, V& v) {
  v("step", e.step);
  v("from_step", e.from_step);
  v("tensors", e.tensors);
  v.rest(e.state);
}
template <class V>
void fields(FinishedEvent& e, V& v) {
  v("summary", e.summary);
}
template <class V>
void fields(ErrorEvent& e, V& v) {
  v("message", e.message);
  v("code", e.code);
  v("step", e.step);
}
template <class V>
void fields(SkippedEvent& e, V& v) {
  v("step", e.step);
  v("ranks", e.ranks);
  v("skipped_steps", e.skipped_steps);
  v("message", e.message);
}
template <class V>
void fields(PeerLostEvent& e, V& v) {
  v("step", e.step);
  v("message", e.message);
}
template <class V>
void fields(RegroupedEvent& e, V& v) {
  v("step", e.step);
  v("world", e.world);
  v("recovery_s", e.recovery_s);
  v("recoveries", e.recoveries);
  v("rollback", e.rollback);
  v("steps_rolled_back", e.steps_rolled_back);
}
template <class V>
void fields(ReadyEvent& e, V& v) {
  v("setup_s", e.setup_s);
}
template <class V>
void fields(ReplicaMismatchEvent& e, V& v) {
  v("step", e.step);
  v("when", e.when);
  v("groups", e.groups);
  v("hashes", e.hashes);
  v("action", e.action);
  v("source", e.source);
  v("mismatches", e.mismatches);
  v("message", e.message);
}
template <class V>
void fields(UnknownEvent& e, V& v) {
  v.rest(e.fields);
}

// The wire name of each kind (the variant's order).
constexpr const char* kKinds[] = {"started",         "progress",          "eval",
                                  "checkpoint",      "checkpoint_failed", "checkpoint_committed",
                                  "checkpoint_plan", "resumed",           "rolled_back",
                                  "partial_restore", "finished",          "error",
                                  "skipped",         "peer_lost",         "regrouped",
                                  "ready",           "replica_mismatch"};
static_assert(std::size(kKinds) + 1 == std::variant_size_v<TrainerEventBody>,
              "a name for every known event kind (UnknownEvent last)");

// Default-constructs the body whose kind is `kind` (index I onwards).
template <size_t I = 0>
TrainerEventBody body_of_kind(const std::string& kind) {
  if constexpr (I + 1 == std::variant_size_v<TrainerEventBody>) {
    return UnknownEvent{kind, json::object()};
  } else {
    if (kind == kKinds[I]) return TrainerEventBody(std::in_place_index<I>);
    return body_of_kind<I + 1>(kind);
  }
}

// Deeper lines are refused before parsing: copying or dumping a JSON value recurses.
constexpr int kMaxDepth = 64;

bool nests_deeper_than(std::string_view line, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

Result<json> parse_object(std::string_view line, const char* what) {
  if (nests_deeper_than(line, kMaxDepth)) {
    return invalid_argument(std::string(what) + " line nests deeper than " +
                            std::to_string(kMaxDepth) + " levels");
  }
  json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument(std::string(what) + " line is not JSON");
  if (!j.is_object()) return invalid_argument(std::string(what) + " line is not a JSON object");
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

std::string event_kind(const TrainerEventBody& body) {
  if (const auto* u = std::get_if<UnknownEvent>(&body)) return u->kind;
  return kKinds[body.index()];
}

json to_json(const TrainerEventBody& body) {
  json out = json::object();
  out["event"] = event_kind(body);
  Writer w(&out);
  // The field lists take non-const bodies (one list for both directions); a Writer only reads.
  std::visit([&](const auto& e) { fields(const_cast<std::decay_t<decltype(e)>&>(e), w); }, body);
  return out;
}

std::string encode_event_object(const EventHeader& h, json object) {
  if (!object.is_object()) object = json::object();
  object["job"] = h.job;
  object["rank"] = h.rank;
  object["generation"] = h.generation;
  object["time"] = number_or_null(h.time);
  return dump(object);
}

std::string encode(const TrainerEvent& event) {
  return encode_event_object(event.header, to_json(event.body));
}

Result<TrainerEvent> decode_event(std::string_view line) {
  auto parsed = parse_object(line, "event");
  if (!parsed.is_ok()) return parsed.status();
  const json& j = *parsed;
  auto kind = j.find("event");
  if (kind == j.end() || !kind->is_string())
    return invalid_argument("event line has no string \"event\" field");
  TrainerEvent out{EventHeader{}, body_of_kind(kind->get<std::string>())};
  Reader r(j);
  r("job", out.header.job);
  int64_t rank = 0;
  r("rank", rank);
  out.header.rank = static_cast<int>(std::clamp<int64_t>(rank, INT32_MIN, INT32_MAX));
  r("generation", out.header.generation);
  r("time", out.header.time);
  std::visit([&](auto& e) { fields(e, r); }, out.body);
  if (auto* u = std::get_if<UnknownEvent>(&out.body)) u->fields = j;  // all of it, as it came
  return out;
}

// --- commands --------------------------------------------------------------------------------

std::string encode(const TrainerCommand& command) {
  json j;
  if (const auto* r = std::get_if<RegroupCommand>(&command)) {
    j = {{"cmd", "regroup"},
         {"generation", r->generation},
         {"world", r->world},
         {"master", r->master},
         {"rollback", r->rollback}};
    if (!r->members.empty()) j["members"] = r->members;
  } else {
    j = {{"cmd", "stop"}};
  }
  return dump(j);
}

namespace {

Result<int64_t> required_integer(const json& j, const char* key, int64_t min, int64_t max) {
  auto it = j.find(key);
  if (it == j.end())
    return invalid_argument(std::string("regroup command: \"") + key + "\" is missing");
  auto v = read_integer(*it);
  if (!v || !it->is_number_integer() || *v < min || *v > max) {
    return invalid_argument(std::string("regroup command: \"") + key +
                            "\" must be an integer in [" + std::to_string(min) + ", " +
                            std::to_string(max) + "], got " + dump(*it));
  }
  return *v;
}

Result<TrainerCommand> decode_regroup(const json& j) {
  RegroupCommand r;
  TERN_ASSIGN_OR_RETURN(r.generation, required_integer(j, "generation", 0, INT64_MAX));
  TERN_ASSIGN_OR_RETURN(int64_t world, required_integer(j, "world", 1, INT32_MAX));
  r.world = static_cast<int>(world);
  auto master = j.find("master");
  if (master == j.end() || !master->is_string() || master->get<std::string>().empty()) {
    return invalid_argument("regroup command: \"master\" must be a non-empty string HOST:PORT");
  }
  r.master = master->get<std::string>();
  if (auto rb = j.find("rollback"); rb != j.end()) {
    if (!rb->is_boolean())
      return invalid_argument("regroup command: \"rollback\" must be true or false, got " +
                              dump(*rb));
    r.rollback = rb->get<bool>();
  }
  if (auto m = j.find("members"); m != j.end()) {
    if (!m->is_array())
      return invalid_argument("regroup command: \"members\" must be an array of ranks");
    for (const auto& e : *m) {
      auto rank = read_integer(e);
      if (!rank || !e.is_number_integer() || *rank < 0 || *rank > INT32_MAX) {
        return invalid_argument("regroup command: \"members\" holds " + dump(e) + ", not a rank");
      }
      r.members.push_back(static_cast<int>(*rank));
    }
    if (!r.members.empty() && static_cast<int64_t>(r.members.size()) != world) {
      return invalid_argument("regroup command: " + std::to_string(r.members.size()) +
                              " \"members\" for \"world\" " + std::to_string(world));
    }
  }
  return TrainerCommand(std::move(r));
}

}  // namespace

Result<TrainerCommand> decode_command(std::string_view line) {
  auto parsed = parse_object(line, "command");
  if (!parsed.is_ok()) return parsed.status();
  const json& j = *parsed;
  auto cmd = j.find("cmd");
  if (cmd == j.end() || !cmd->is_string())
    return invalid_argument("command line has no string \"cmd\" field");
  const std::string name = cmd->get<std::string>();
  if (name == "stop") return TrainerCommand(StopCommand{});
  if (name == "regroup") return decode_regroup(j);
  return Status(StatusCode::kUnimplemented, "unknown command \"" + name + "\"");
}

// --- command line ----------------------------------------------------------------------------

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t at = 0;
  for (;;) {
    size_t comma = s.find(',', at);
    out.push_back(s.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) return out;
    at = comma + 1;
  }
}

Result<int64_t> flag_integer(const std::string& flag, const std::string& text, int64_t min,
                             int64_t max) {
  size_t used = 0;
  long long v = 0;
  bool ok = !text.empty();
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    ok = false;
  }
  if (!ok || used != text.size() || v < min || v > max) {
    return invalid_argument(flag + " must be an integer in [" + std::to_string(min) + ", " +
                            std::to_string(max) + "], got '" + text + "'");
  }
  return static_cast<int64_t>(v);
}

// Applies one flag's value to `a`.
Status apply_flag(const std::string& flag, const std::string& value, TrainerArgs* a) {
  if (flag == "--spec") {
    a->spec_file = value;
  } else if (flag == "--rank") {
    TERN_ASSIGN_OR_RETURN(int64_t v, flag_integer(flag, value, INT32_MIN, INT32_MAX));
    a->rank = static_cast<int>(v);
  } else if (flag == "--world") {
    TERN_ASSIGN_OR_RETURN(int64_t v, flag_integer(flag, value, INT32_MIN, INT32_MAX));
    a->world = static_cast<int>(v);
  } else if (flag == "--master") {
    a->master = value;
  } else if (flag == "--generation") {
    TERN_ASSIGN_OR_RETURN(a->generation, flag_integer(flag, value, INT64_MIN, INT64_MAX));
  } else if (flag == "--job") {
    a->job_id = value;
  } else if (flag == "--work-dir") {
    a->work_dir = value;
  } else if (flag == "--cluster") {
    a->cluster_file = value;
  } else if (flag == "--regions") {
    a->regions = split(value);
  } else if (flag == "--bind") {
    a->bind_host = value;
  } else if (flag == "--members") {
    a->members.clear();
    for (const auto& m : split(value)) {
      TERN_ASSIGN_OR_RETURN(int64_t v, flag_integer(flag, m, INT32_MIN, INT32_MAX));
      a->members.push_back(static_cast<int>(v));
    }
  } else {
    return invalid_argument("unknown flag " + flag);
  }
  return Status::ok();
}

}  // namespace

std::vector<std::string> to_argv(const std::string& program, const TrainerArgs& a) {
  std::vector<std::string> argv = {program,
                                   "--spec",
                                   a.spec_file,
                                   "--rank",
                                   std::to_string(a.rank),
                                   "--world",
                                   std::to_string(a.world),
                                   "--master",
                                   a.master,
                                   "--generation",
                                   std::to_string(a.generation),
                                   "--job",
                                   a.job_id,
                                   "--work-dir",
                                   a.work_dir,
                                   "--bind",
                                   a.bind_host};
  if (!a.cluster_file.empty()) argv.insert(argv.end(), {"--cluster", a.cluster_file});
  if (!a.regions.empty()) argv.insert(argv.end(), {"--regions", join(a.regions)});
  if (!a.members.empty()) {
    std::vector<std::string> m;
    for (int r : a.members) m.push_back(std::to_string(r));
    argv.insert(argv.end(), {"--members", join(m)});
  }
  if (a.standby) argv.push_back("--standby");
  return argv;
}

Result<TrainerArgs> parse_trainer_args(const std::vector<std::string>& argv) {
  TrainerArgs a;
  std::set<std::string> seen;
  for (size_t i = 1; i < argv.size(); ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") return not_found("help");
    if (flag == "--standby") {
      a.standby = true;
      continue;
    }
    std::string value;
    if (auto eq = flag.find('='); eq != std::string::npos && flag.rfind("--", 0) == 0) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      return invalid_argument(flag.rfind("--", 0) == 0 ? flag + " needs a value"
                                                       : "unexpected argument '" + flag + "'");
    }
    TERN_RETURN_IF_ERROR(apply_flag(flag, value, &a));
    seen.insert(flag);
  }
  for (const char* required : {"--spec", "--rank", "--world", "--master"}) {
    if (!seen.count(required)) return invalid_argument(std::string(required) + " is required");
  }
  return a;
}

std::string trainer_usage() {
  return "tern-trainer: one rank of a tern training job (src/common/trainer_protocol.h)\n"
         "  --spec FILE           effective job spec (YAML), required\n"
         "  --rank R              this process's job rank, required\n"
         "  --world N             number of ranks, required\n"
         "  --master HOST:PORT    the rendezvous store (hosted by group rank 0), required\n"
         "  --generation G        process-group generation (default 0)\n"
         "  --job ID              job id for events and logs (default local)\n"
         "  --work-dir DIR        checkpoints and scratch files (default .)\n"
         "  --cluster FILE        cluster config (regions, network model)\n"
         "  --regions r0,r1,...   region of each rank\n"
         "  --bind HOST           address Gloo binds to (default 127.0.0.1)\n"
         "  --members r0,r1,...   elastic jobs: the ranks of the current group (default: all)\n"
         "  --standby             elastic jobs: load, report ready, join when a regroup names it\n";
}

}  // namespace tern
