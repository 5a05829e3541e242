// common/trainer_codec.h: every event and command kind survives encode -> decode, malformed
// lines are errors (never crashes or exceptions), non-finite numbers are written as null and
// read as absent, new metrics flow through untouched, and the trainer's argv round-trips.
#include "common/trainer_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tern {
namespace {

using json = nlohmann::json;

EventHeader header() {
  EventHeader h;
  h.job = "j-7";
  h.rank = 3;
  h.generation = 5;
  h.time = 1700000000.25;
  return h;
}

// Encodes `body`, decodes the line, and checks the header and the kind came back.
template <class T>
T round_trip(const T& body) {
  const std::string line = encode(TrainerEvent{header(), body});
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  auto decoded = decode_event(line);
  EXPECT_TRUE(decoded.is_ok()) << decoded.status().to_string() << " " << line;
  if (!decoded.is_ok()) return T{};
  EXPECT_EQ(decoded->header.job, "j-7");
  EXPECT_EQ(decoded->header.rank, 3);
  EXPECT_EQ(decoded->header.generation, 5);
  EXPECT_DOUBLE_EQ(decoded->header.time, 1700000000.25);
  const T* out = std::get_if<T>(&decoded->body);
  EXPECT_NE(out, nullptr) << "kind " << event_kind(decoded->body) << " from " << line;
  return out ? *out : T{};
}

TEST(TrainerCodec, StartedProgressEvalRoundTrip) {
  StartedEvent s{4, 1234, 900};
  auto s2 = round_trip(s);
  EXPECT_EQ(s2.world, 4);
  EXPECT_EQ(s2.pid, 1234);
  EXPECT_EQ(s2.total_steps, 900);

  ProgressEvent p;
  p.step = 7;
  p.total_steps = 10;
  p.epoch = 0.7;
  p.loss = 0.25;
  p.samples_per_s = 300;
  p.bytes_sent = 1e6;
  p.compute_s = 1;
  p.wait_s = 0.5;
  p.world = 4;
  p.metrics = {{"staleness", 1.5}, {"a_metric_nobody_knows_yet", 42}};
  auto p2 = round_trip(p);
  EXPECT_EQ(p2.step, 7);
  EXPECT_EQ(p2.total_steps, 10);
  EXPECT_DOUBLE_EQ(p2.epoch, 0.7);
  EXPECT_DOUBLE_EQ(p2.loss, 0.25);
  EXPECT_DOUBLE_EQ(p2.samples_per_s, 300);
  EXPECT_DOUBLE_EQ(p2.bytes_sent, 1e6);
  EXPECT_DOUBLE_EQ(p2.compute_s, 1);
  EXPECT_DOUBLE_EQ(p2.wait_s, 0.5);
  EXPECT_EQ(p2.world, std::optional<int64_t>(4));
  EXPECT_EQ(p2.metrics, p.metrics);

  EvalEvent e;
  e.step = 9;
  e.test_accuracy = 0.77;
  e.test_loss = 0.5;
  e.metrics = {{"test_auc", 0.81}, {"test_perplexity", 12.5}, {"train_s", 3}};
  auto e2 = round_trip(e);
  EXPECT_EQ(e2.step, 9);
  EXPECT_EQ(e2.test_accuracy, std::optional<double>(0.77));
  EXPECT_EQ(e2.test_loss, std::optional<double>(0.5));
  EXPECT_EQ(e2.metrics, e.metrics);
}

TEST(TrainerCodec, CheckpointEventsRoundTrip) {
  auto c = round_trip(CheckpointEvent{40, 0.5, 0.25, 2});
  EXPECT_EQ(c.step, 40);
  EXPECT_DOUBLE_EQ(c.snapshot_s, 0.5);
  EXPECT_DOUBLE_EQ(c.drain_s, 0.25);
  EXPECT_DOUBLE_EQ(c.checkpoint_s, 2);
  auto f = round_trip(CheckpointFailedEvent{41, "disk full"});
  EXPECT_EQ(f.step, 41);
  EXPECT_EQ(f.message, "disk full");
  auto k = round_trip(CheckpointCommittedEvent{42, 1.5, 123456789012, 3, 2.5});
  EXPECT_EQ(k.step, 42);
  EXPECT_DOUBLE_EQ(k.write_s, 1.5);
  EXPECT_EQ(k.bytes, 123456789012);
  EXPECT_EQ(k.checkpoints, 3);
  EXPECT_DOUBLE_EQ(k.checkpoint_s, 2.5);
  CheckpointPlanEvent plan;
  plan.step = 5;
  plan.plan = {{"interval", "cpr"}, {"interval_steps", 17}, {"n_shards", 8}};
  auto plan2 = round_trip(plan);
  EXPECT_EQ(plan2.step, 5);
  EXPECT_EQ(plan2.plan, plan.plan);
}

TEST(TrainerCodec, RestoreEventsRoundTrip) {
  ResumedEvent r;
  r.step = 30;
  r.dir = "/ckpt";
  r.skipped = {"step 40: bad checksum"};
  auto r2 = round_trip(r);
  EXPECT_EQ(r2.step, 30);
  EXPECT_EQ(r2.dir, "/ckpt");
  EXPECT_EQ(r2.skipped, r.skipped);
  EXPECT_FALSE(r2.at_step || r2.written_world || r2.world) << "absent when not written";
  RolledBackEvent b;
  b.step = 30;
  b.at_step = 35;
  b.written_world = 4;
  b.world = 2;
  b.dropped = {"momentum", "error feedback"};
  auto b2 = round_trip(b);
  EXPECT_EQ(b2.at_step, std::optional<int64_t>(35));
  EXPECT_EQ(b2.written_world, std::optional<int64_t>(4));
  EXPECT_EQ(b2.world, std::optional<int64_t>(2));
  EXPECT_EQ(b2.dropped, b.dropped);
  PartialRestoreEvent p;
  p.step = 12;
  p.from_step = 10;
  p.tensors = 3;
  p.state = {{"embedding_rows", 1000}, {"source", "checkpoint"}};
  auto p2 = round_trip(p);
  EXPECT_EQ(p2.from_step, std::optional<int64_t>(10));
  EXPECT_EQ(p2.tensors, std::optional<int64_t>(3));
  EXPECT_EQ(p2.state, p.state) << "the workload's fields travel at the top level and come back";
}

TEST(TrainerCodec, LifecycleEventsRoundTrip) {
  FinishedEvent f;
  f.summary = {{"steps", 10}, {"test_accuracy", 0.8}, {"test_auc", 0.7}, {"note", "x"}};
  EXPECT_EQ(round_trip(f).summary, f.summary);
  auto e = round_trip(ErrorEvent{"boom", 4, 17});
  EXPECT_EQ(e.message, "boom");
  EXPECT_EQ(e.code, 4);
  EXPECT_EQ(e.step, std::optional<int64_t>(17));
  EXPECT_FALSE(round_trip(ErrorEvent{"no step", 2, std::nullopt}).step);
  auto s = round_trip(SkippedEvent{8, {0, 2}, 3, "non-finite"});
  EXPECT_EQ(s.step, 8);
  EXPECT_EQ(s.ranks, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(s.skipped_steps, 3);
  EXPECT_EQ(s.message, "non-finite");
  auto l = round_trip(PeerLostEvent{6, "peer 1 closed the connection"});
  EXPECT_EQ(l.step, 6);
  EXPECT_EQ(l.message, "peer 1 closed the connection");
  auto g = round_trip(RegroupedEvent{6, 3, 1.25, 2, true, 4});
  EXPECT_EQ(g.step, 6);
  EXPECT_EQ(g.world, 3);
  EXPECT_DOUBLE_EQ(g.recovery_s, 1.25);
  EXPECT_EQ(g.recoveries, 2);
  EXPECT_TRUE(g.rollback);
  EXPECT_EQ(g.steps_rolled_back, 4);
  EXPECT_DOUBLE_EQ(round_trip(ReadyEvent{2.5}).setup_s, 2.5);
  ReplicaMismatchEvent m;
  m.step = 100;
  m.when = "periodic";
  m.groups = {{0, 1}, {2}};
  m.hashes = {"ab", "cd"};
  m.action = "majority";
  m.source = 0;
  m.mismatches = 1;
  m.message = "rank 2 differs";
  auto m2 = round_trip(m);
  EXPECT_EQ(m2.groups, m.groups);
  EXPECT_EQ(m2.hashes, m.hashes);
  EXPECT_EQ(m2.when, "periodic");
  EXPECT_EQ(m2.action, "majority");
  EXPECT_EQ(m2.source, 0);
  EXPECT_EQ(m2.mismatches, 1);
  EXPECT_EQ(m2.message, "rank 2 differs");
}

TEST(TrainerCodec, UnknownKindsAreReportedAsSuch) {
  auto d = decode_event(R"({"event": "from_the_future", "x": [1], "rank": 2})");
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  const auto* u = std::get_if<UnknownEvent>(&d->body);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->kind, "from_the_future");
  EXPECT_EQ(event_kind(d->body), "from_the_future");
  EXPECT_EQ(u->fields["x"], json::array({1}));
  EXPECT_EQ(d->header.rank, 2);
}

TEST(TrainerCodec, NonFiniteNumbersAreWrittenAsNullAndReadAsAbsent) {
  ProgressEvent p;
  p.loss = std::nan("");
  p.metrics = {{"staleness", std::numeric_limits<double>::infinity()}, {"ok", 1}};
  const std::string line = encode(TrainerEvent{header(), p});
  EXPECT_NE(line.find("\"loss\":null"), std::string::npos) << line;
  EXPECT_NE(line.find("\"staleness\":null"), std::string::npos) << line;
  auto d = decode_event(line);
  ASSERT_TRUE(d.is_ok());
  const auto& p2 = std::get<ProgressEvent>(d->body);
  EXPECT_EQ(p2.loss, 0);
  EXPECT_EQ(p2.metrics, (MetricMap{{"ok", 1}})) << "a null metric is absent";
  EvalEvent e;
  e.test_accuracy = std::nan("");
  auto e2 = decode_event(encode(TrainerEvent{header(), e}));
  ASSERT_TRUE(e2.is_ok());
  EXPECT_FALSE(std::get<EvalEvent>(e2->body).test_accuracy);
}

TEST(TrainerCodec, MistypedFieldsReadAsAbsentAndIntegersClamp) {
  auto d = decode_event(
      R"({"event": "progress", "step": 1e300, "total_steps": "ten", "loss": null, "bytes_sent": [1],)"
      R"( "world": {"a": 1}, "rank": 1e40, "generation": -1e300, "time": "noon", "job": 7, "note": "text"})");
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  const auto& p = std::get<ProgressEvent>(d->body);
  EXPECT_EQ(p.step, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(p.total_steps, 0);
  EXPECT_EQ(p.bytes_sent, 0);
  EXPECT_FALSE(p.world);
  EXPECT_TRUE(p.metrics.empty()) << "text is not a metric";
  EXPECT_EQ(d->header.rank, std::numeric_limits<int>::max());
  EXPECT_EQ(d->header.generation, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(d->header.time, 0);
  EXPECT_EQ(d->header.job, "");
  auto f = decode_event(R"({"event": "finished", "summary": 3})");
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(std::get<FinishedEvent>(f->body).summary, json(3))
      << "kept as written; readers check the type";
}

TEST(TrainerCodec, MalformedEventLinesAreErrors) {
  for (const char* line :
       {"", "not json", "[1, 2]", "\"event\"", "{\"event\": 3}", "{\"no_event\": 1}",
        "{\"event\": \"progress\"", "{\"event\": \"progress\"} trailing", "\xff\xfe{"}) {
    auto d = decode_event(line);
    EXPECT_FALSE(d.is_ok()) << line;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << line;
  }
  std::string deep = "{\"event\": \"progress\", \"x\": " + std::string(100000, '[') +
                     std::string(100000, ']') + "}";
  auto d = decode_event(deep);
  EXPECT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find("deeper"), std::string::npos) << d.status().message();
}

TEST(TrainerCodec, CommandsRoundTrip) {
  auto stop = decode_command(encode(TrainerCommand(StopCommand{})));
  ASSERT_TRUE(stop.is_ok()) << stop.status().to_string();
  EXPECT_TRUE(std::holds_alternative<StopCommand>(*stop));
  RegroupCommand r{7, 3, "10.0.0.1:4000", true, {0, 2, 5}};
  const std::string line = encode(TrainerCommand(r));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto back = decode_command(line);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  const auto& r2 = std::get<RegroupCommand>(*back);
  EXPECT_EQ(r2.generation, 7);
  EXPECT_EQ(r2.world, 3);
  EXPECT_EQ(r2.master, "10.0.0.1:4000");
  EXPECT_TRUE(r2.rollback);
  EXPECT_EQ(r2.members, r.members);
  RegroupCommand plain{2, 2, "127.0.0.1:1", false, {}};
  auto plain2 = decode_command(encode(TrainerCommand(plain)));
  ASSERT_TRUE(plain2.is_ok());
  EXPECT_TRUE(std::get<RegroupCommand>(*plain2).members.empty());
  // The spelling the protocol documents (spaces, no rollback) reads the same.
  auto documented =
      decode_command(R"({"cmd": "regroup", "generation": 2, "world": 2, "master": "h:1"})");
  ASSERT_TRUE(documented.is_ok()) << documented.status().to_string();
  EXPECT_FALSE(std::get<RegroupCommand>(*documented).rollback);
}

TEST(TrainerCodec, MalformedCommandsAreErrorsNamingTheField) {
  struct Case {
    const char* line;
    StatusCode code;
    const char* names;
  };
  const Case cases[] = {
      {"", StatusCode::kInvalidArgument, "not JSON"},
      {"{\"cmd\": 1}", StatusCode::kInvalidArgument, "\"cmd\""},
      {"{\"cmd\": \"dance\"}", StatusCode::kUnimplemented, "dance"},
      {R"({"cmd": "regroup", "world": 2, "master": "h:1"})", StatusCode::kInvalidArgument,
       "\"generation\""},
      {R"({"cmd": "regroup", "generation": "2", "world": 2, "master": "h:1"})",
       StatusCode::kInvalidArgument, "\"generation\""},
      {R"({"cmd": "regroup", "generation": 2, "world": 0, "master": "h:1"})",
       StatusCode::kInvalidArgument, "\"world\""},
      {R"({"cmd": "regroup", "generation": 2, "world": 2.5, "master": "h:1"})",
       StatusCode::kInvalidArgument, "\"world\""},
      {R"({"cmd": "regroup", "generation": 2, "world": 2})", StatusCode::kInvalidArgument,
       "\"master\""},
      {R"({"cmd": "regroup", "generation": 2, "world": 2, "master": "h:1", "rollback": 1})",
       StatusCode::kInvalidArgument, "\"rollback\""},
      {R"({"cmd": "regroup", "generation": 2, "world": 2, "master": "h:1", "members": [0]})",
       StatusCode::kInvalidArgument, "\"members\""},
      {R"({"cmd": "regroup", "generation": 2, "world": 2, "master": "h:1", "members": [0, -1]})",
       StatusCode::kInvalidArgument, "\"members\""},
      {R"({"cmd": "regroup", "generation": 2, "world": 2, "master": "h:1", "members": "0,1"})",
       StatusCode::kInvalidArgument, "\"members\""},
  };
  for (const auto& c : cases) {
    auto d = decode_command(c.line);
    ASSERT_FALSE(d.is_ok()) << c.line;
    EXPECT_EQ(d.status().code(), c.code) << c.line << ": " << d.status().to_string();
    EXPECT_NE(d.status().message().find(c.names), std::string::npos)
        << c.line << ": " << d.status().message();
  }
}

TEST(TrainerCodec, ArgvRoundTrip) {
  TrainerArgs a;
  a.spec_file = "/jobs/x/spec.yaml";
  a.rank = 2;
  a.world = 5;
  a.master = "10.0.0.1:29500";
  a.generation = 3;
  a.job_id = "j-9";
  a.work_dir = "/work/j-9";
  a.cluster_file = "/jobs/x/cluster.yaml";
  a.regions = {"east", "east", "west", "west", "west"};
  a.bind_host = "10.0.0.2";
  a.members = {0, 2, 4};
  a.standby = true;
  auto argv = to_argv("/bin/tern-trainer", a);
  EXPECT_EQ(argv[0], "/bin/tern-trainer");
  auto b = parse_trainer_args(argv);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->spec_file, a.spec_file);
  EXPECT_EQ(b->rank, a.rank);
  EXPECT_EQ(b->world, a.world);
  EXPECT_EQ(b->master, a.master);
  EXPECT_EQ(b->generation, a.generation);
  EXPECT_EQ(b->job_id, a.job_id);
  EXPECT_EQ(b->work_dir, a.work_dir);
  EXPECT_EQ(b->cluster_file, a.cluster_file);
  EXPECT_EQ(b->regions, a.regions);
  EXPECT_EQ(b->bind_host, a.bind_host);
  EXPECT_EQ(b->members, a.members);
  EXPECT_TRUE(b->standby);
  // The minimal command line: defaults, and no optional flag written.
  TrainerArgs m;
  m.spec_file = "s.yaml";
  m.master = "127.0.0.1:1";
  auto margv = to_argv("t", m);
  for (const char* absent : {"--cluster", "--regions", "--members", "--standby"}) {
    EXPECT_EQ(std::find(margv.begin(), margv.end(), absent), margv.end()) << absent;
  }
  auto m2 = parse_trainer_args(margv);
  ASSERT_TRUE(m2.is_ok());
  EXPECT_EQ(m2->job_id, "local");
  EXPECT_EQ(m2->bind_host, "127.0.0.1");
  EXPECT_FALSE(m2->standby);
  auto eq = parse_trainer_args(
      {"t", "--spec=s.yaml", "--rank=1", "--world=2", "--master=h:1", "--members=0,1"});
  ASSERT_TRUE(eq.is_ok()) << eq.status().to_string();
  EXPECT_EQ(eq->members, (std::vector<int>{0, 1}));
}

TEST(TrainerCodec, BadArgvIsAnErrorNamingTheFlag) {
  const std::vector<std::string> base = {"t",       "--spec", "s",        "--rank", "0",
                                         "--world", "1",      "--master", "h:1"};
  auto with = [&](std::vector<std::string> extra) {
    auto v = base;
    v.insert(v.end(), extra.begin(), extra.end());
    return parse_trainer_args(v);
  };
  EXPECT_NE(with({"--rank", "one"}).status().message().find("--rank"), std::string::npos);
  EXPECT_NE(
      with({"--generation", "9999999999999999999999"}).status().message().find("--generation"),
      std::string::npos);
  EXPECT_NE(with({"--members", "0,,1"}).status().message().find("--members"), std::string::npos);
  EXPECT_NE(with({"--frobnicate", "1"}).status().message().find("--frobnicate"), std::string::npos);
  EXPECT_NE(with({"--job"}).status().message().find("--job needs a value"), std::string::npos);
  EXPECT_NE(parse_trainer_args({"t", "--spec", "s"}).status().message().find("--rank is required"),
            std::string::npos);
  EXPECT_EQ(with({"--help"}).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern
