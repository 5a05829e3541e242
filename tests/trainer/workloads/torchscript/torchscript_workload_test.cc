// The user's own TorchScript model in the one training loop (issue 20), ranks as threads over
// real Gloo groups. The modules are built in C++ (torch::jit::Module::define), so CI needs no
// Python torch: a TorchScript copy of the built-in MLP trains to the built-in MLP's parameters
// bit for bit, SSGD keeps 4 TorchScript replicas identical, a small language model on a token
// file learns its pattern, loss kinds and buffers work, and every bad input is refused with
// INVALID_ARGUMENT (the trainer's exit 2) naming the field and the file.
#include "trainer/workloads/torchscript/torchscript_workload.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/job_spec.h"
#include "testing/gloo_group.h"
#include "testing/trainer_runs.h"
#include "trainer/loop/training_loop.h"
#include "trainer/workloads/formats/safetensors.h"
#include "trainer/workloads/image/models.h"
#include "trainer/workloads/make_workload.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using testing::same_bits;

fs::path scratch(const std::string& name) {
  return testing::scratch_dir("tern_torchscript_test", name);
}

// The built-in MLP (784-512-256-10) as TorchScript with the built-in one's initial weights:
// torch.addmm is what nn::Linear runs for a 2-D input.
std::string export_mlp(const fs::path& dir, uint64_t seed) {
  torch::manual_seed(seed);
  Mlp reference;
  torch::jit::Module m("Mlp");
  for (const auto& p : reference.named_parameters()) {
    std::string name = p.key();
    std::replace(name.begin(), name.end(), '.', '_');
    m.register_parameter(name, p.value().detach().clone().requires_grad_(true),
                         /*is_buffer=*/false);
  }
  m.define(R"(
def forward(self, x):
    x = x.reshape([x.size(0), -1])
    x = torch.relu(torch.addmm(self.fc1_bias, x, self.fc1_weight.t()))
    x = torch.relu(torch.addmm(self.fc2_bias, x, self.fc2_weight.t()))
    return torch.addmm(self.fc3_bias, x, self.fc3_weight.t())
)");
  const std::string path = (dir / "mlp.pt").string();
  m.save(path);
  return path;
}

JobSpec spec_of(const std::string& text, std::vector<std::string> overrides = {}) {
  auto r = load_job_spec_text(text, "job.yaml", overrides);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? r->spec : JobSpec{};
}

struct RankRun {
  Status setup, run;
  nlohmann::json summary;
  std::vector<nlohmann::json> events;
  std::vector<at::Tensor> params;
};

std::vector<RankRun> run_job(const JobSpec& spec, int world) {
  std::vector<RankRun> out(static_cast<size_t>(world));
  testing::run_ranks(world, [&](int rank, std::shared_ptr<Communicator> comm) {
    MemorySink sink;
    TrainerOptions o;
    o.spec = spec;
    o.rank = rank;
    o.world = world;
    o.job_id = "torchscript-test";
    TrainingLoop loop(o, comm, &sink, make_workload(spec));
    RankRun& r = out[static_cast<size_t>(rank)];
    r.setup = loop.setup();
    if (r.setup.is_ok()) r.run = loop.run();
    r.summary = loop.summary();
    r.events = sink.events;
    for (auto& p : loop.parameters()) r.params.push_back(p.detach().clone());
  });
  return out;
}

void expect_ok(const std::vector<RankRun>& runs) {
  for (size_t r = 0; r < runs.size(); ++r) {
    ASSERT_TRUE(runs[r].setup.is_ok()) << "rank " << r << ": " << runs[r].setup.to_string();
    ASSERT_TRUE(runs[r].run.is_ok()) << "rank " << r << ": " << runs[r].run.to_string();
  }
}

const std::string kImages =
    "name: ts\nworkers: 1\ndata: {source: synthetic, train_size: 1024, test_size: 256}\n"
    "train: {steps: 100, batch_size: 16, lr: 0.05, momentum: 0.9, seed: 7, log_every: 50}\n";

TEST(TorchScript, ExportOfTheBuiltInMlpTrainsToTheBuiltInMlpsParameters) {
  const fs::path dir = scratch("mlp_equal");
  const std::string path = export_mlp(dir, 7);
  auto builtin = run_job(spec_of(kImages + "model: {type: mlp}\n"), 1);
  auto scripted = run_job(spec_of(kImages + "model: {type: torchscript, path: " + path + "}\n"), 1);
  expect_ok(builtin);
  expect_ok(scripted);
  ASSERT_EQ(builtin[0].params.size(), scripted[0].params.size());
  for (size_t i = 0; i < builtin[0].params.size(); ++i) {
    EXPECT_TRUE(same_bits(builtin[0].params[i], scripted[0].params[i]))
        << "parameter " << i << " max diff "
        << (builtin[0].params[i] - scripted[0].params[i]).abs().max().item<double>();
  }
  EXPECT_EQ(scripted[0].summary["steps"], 100);
  EXPECT_DOUBLE_EQ(scripted[0].summary["test_accuracy"].get<double>(),
                   builtin[0].summary["test_accuracy"].get<double>());
  EXPECT_EQ(scripted[0].summary["model"], "torchscript");
}

TEST(TorchScript, SsgdKeepsFourReplicasBitIdentical) {
  const fs::path dir = scratch("mlp_replicas");
  const std::string path = export_mlp(dir, 3);
  auto runs = run_job(spec_of(kImages + "model: {type: torchscript, path: " + path + "}\n",
                              {"workers=4", "train.steps=30"}),
                      4);
  expect_ok(runs);
  for (int r = 1; r < 4; ++r) {
    for (size_t i = 0; i < runs[0].params.size(); ++i) {
      EXPECT_TRUE(same_bits(runs[0].params[i], runs[static_cast<size_t>(r)].params[i]))
          << "rank " << r << " param " << i;
    }
  }
}

// A token file of a repeating pattern: a bigram model learns it (next = f(current)).
std::string write_tokens(const fs::path& file, const std::vector<uint32_t>& ids, bool wide) {
  std::ofstream out(file, std::ios::binary);
  for (uint32_t id : ids) {
    uint8_t b[4] = {uint8_t(id), uint8_t(id >> 8), uint8_t(id >> 16), uint8_t(id >> 24)};
    out.write(reinterpret_cast<const char*>(b), wide ? 4 : 2);
  }
  return file.string();
}

std::string export_bigram_lm(const fs::path& dir, int64_t vocab, int64_t dim) {
  torch::manual_seed(11);
  torch::jit::Module m("BigramLm");
  m.register_parameter("emb", (torch::randn({vocab, dim}) * 0.1).requires_grad_(true), false);
  m.register_parameter("head", (torch::randn({vocab, dim}) * 0.1).requires_grad_(true), false);
  m.define(R"(
def forward(self, x):
    h = torch.embedding(self.emb, x)
    return torch.matmul(h, self.head.t())
)");
  const std::string path = (dir / "lm.pt").string();
  m.save(path);
  return path;
}

std::string lm_spec(const std::string& model, const std::string& tokens, int64_t vocab) {
  return "name: lm\nworkers: 2\nmodel: {type: torchscript, path: " + model +
         ", metrics: [loss, perplexity, accuracy]}\n"
         "data: {source: tokens, path: " +
         tokens + ", vocab_size: " + std::to_string(vocab) +
         ", block_size: 16, test_fraction: 0.2}\n"
         "train: {steps: 60, batch_size: 8, lr: 0.5, momentum: 0.9, seed: 2, log_every: 20}\n";
}

TEST(TorchScript, LanguageModelOnATokenFileLearnsAndReportsPerplexity) {
  const fs::path dir = scratch("lm");
  std::vector<uint32_t> ids;
  for (int i = 0; i < 6000; ++i) ids.push_back(static_cast<uint32_t>((i * 7) % 13));
  const std::string tokens = write_tokens(dir / "tokens.u16", ids, false);
  auto runs = run_job(spec_of(lm_spec(export_bigram_lm(dir, 13, 16), tokens, 13)), 2);
  expect_ok(runs);
  const auto& s = runs[0].summary;
  // Chance is ln(13) = 2.56 nats per token; the pattern is deterministic.
  EXPECT_LT(s["test_loss"].get<double>(), 0.5) << s.dump();
  EXPECT_NEAR(s["test_perplexity"].get<double>(), std::exp(s["test_loss"].get<double>()), 1e-9);
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.9) << s.dump();
  // Every test window: (1200 held-out tokens - 1) / 16.
  EXPECT_EQ(s["test_samples"], 74);
  EXPECT_DOUBLE_EQ(runs[1].summary["test_loss"].get<double>(), s["test_loss"].get<double>());
}

TEST(TorchScript, ResumedTokenRunContinuesTheSameSampleSequence) {
  const fs::path dir = scratch("lm_resume");
  std::vector<uint32_t> ids;
  for (int i = 0; i < 6000; ++i) ids.push_back(static_cast<uint32_t>((i * 5 + i / 7) % 11));
  const std::string tokens = write_tokens(dir / "tokens.u32", ids, true);
  const std::string model = export_bigram_lm(dir, 11, 8);
  const std::string text = lm_spec(model, tokens, 11);
  const std::vector<std::string> wide = {"data.token_dtype=uint32", "train.steps=40"};
  auto through = run_job(spec_of(text, wide), 2);
  auto first_overrides = wide;
  first_overrides.insert(first_overrides.end(), {"train.steps=25", "recovery.checkpoint_every=10",
                                                 "recovery.dir=" + (dir / "ckpt").string()});
  expect_ok(run_job(spec_of(text, first_overrides), 2));
  auto resumed_overrides = wide;
  resumed_overrides.push_back("recovery.resume_from=" + (dir / "ckpt").string());
  auto resumed = run_job(spec_of(text, resumed_overrides), 2);
  expect_ok(through);
  expect_ok(resumed);
  EXPECT_EQ(resumed[0].summary["resumed_from_step"], 20);
  for (size_t r = 0; r < 2; ++r) {
    for (size_t i = 0; i < through[r].params.size(); ++i) {
      EXPECT_TRUE(same_bits(through[r].params[i], resumed[r].params[i]))
          << "rank " << r << " parameter " << i;
    }
  }
}

// data.source tensors (safetensors train and test files): a linear model under mse and under
// bce_with_logits (with accuracy and the exact AUC) learns its planted rule.
TEST(TorchScript, SafetensorsDataTrainsWithMseAndBceLosses) {
  const fs::path dir = scratch("tensors");
  torch::manual_seed(21);
  const at::Tensor w_true = torch::randn({4, 1});
  auto write_split = [&](const std::string& name, int64_t n, bool binary) {
    at::Tensor x = torch::randn({n, 4});
    at::Tensor y = torch::matmul(x, w_true);
    if (binary) y = (y > 0).to(torch::kFloat);
    const std::string path = (dir / name).string();
    EXPECT_TRUE(write_safetensors(path, {{"inputs", x}, {"targets", y}}).is_ok());
    return path;
  };
  torch::jit::Module m("Linear");
  m.register_parameter("w", torch::zeros({1, 4}).requires_grad_(true), false);
  m.register_parameter("b", torch::zeros({1}).requires_grad_(true), false);
  m.define(R"(
def forward(self, x):
    return torch.addmm(self.b, x, self.w.t())
)");
  const std::string model = (dir / "linear.pt").string();
  m.save(model);
  const std::string head =
      "name: t\nworkers: 2\ntrain: {steps: 120, batch_size: 16, lr: 0.1, momentum: 0.9, seed: 4}\n";
  auto mse = run_job(spec_of(head + "model: {type: torchscript, path: " + model +
                             ", loss: mse}\n"
                             "data: {source: tensors, path: " +
                             write_split("reg_train.safetensors", 1024, false) + ", test_path: " +
                             write_split("reg_test.safetensors", 256, false) + "}\n"),
                     2);
  expect_ok(mse);
  EXPECT_LT(mse[0].summary["test_loss"].get<double>(), 0.05) << mse[0].summary.dump();
  auto bce = run_job(spec_of(head + "model: {type: torchscript, path: " + model +
                             ", loss: bce_with_logits, metrics: [loss, accuracy, auc]}\n"
                             "data: {source: tensors, path: " +
                             write_split("cls_train.safetensors", 1024, true) + ", test_path: " +
                             write_split("cls_test.safetensors", 256, true) + "}\n"),
                     2);
  expect_ok(bce);
  EXPECT_GT(bce[0].summary["test_auc"].get<double>(), 0.95) << bce[0].summary.dump();
  EXPECT_GT(bce[0].summary["test_accuracy"].get<double>(), 0.85) << bce[0].summary.dump();
  EXPECT_DOUBLE_EQ(bce[1].summary["test_auc"].get<double>(),
                   bce[0].summary["test_auc"].get<double>());
}

// loss returned: forward(inputs, targets) returns the loss; a straggler plan's weights still
// apply (proportional mode).
TEST(TorchScript, ReturnedLossTrainsAndTakesStragglerWeights) {
  const fs::path dir = scratch("returned");
  torch::manual_seed(5);
  torch::jit::Module m("Returned");
  m.register_parameter("w", (torch::randn({10, 784}) * 0.01).requires_grad_(true), false);
  m.register_parameter("b", torch::zeros({10}).requires_grad_(true), false);
  m.define(R"(
def forward(self, x, y):
    logits = torch.addmm(self.b, x.reshape([x.size(0), -1]), self.w.t())
    return torch.nll_loss(torch.log_softmax(logits, 1), y)
)");
  const std::string path = (dir / "returned.pt").string();
  m.save(path);
  auto runs = run_job(
      spec_of(kImages + "model: {type: torchscript, path: " + path +
                  ", loss: returned, metrics: [loss, perplexity]}\n",
              {"workers=2", "train.steps=40", "train.lr=0.01", "straggler.mode=proportional",
               "straggler.report_every=5", "debug.slowdown=[1, 3]"}),
      2);
  expect_ok(runs);
  const auto& s = runs[0].summary;
  EXPECT_LT(s["test_loss"].get<double>(), std::log(10.0)) << s.dump();
  EXPECT_FALSE(s.contains("test_accuracy"));
  EXPECT_EQ(s["strategy"], "ssgd+proportional");
}

// Batch-norm statistics: averaged over ranks before evaluation and checkpoints, saved and
// restored with the parameters.
TEST(TorchScript, BuffersAreAveragedAcrossRanksAndCheckpointed) {
  const fs::path dir = scratch("buffers");
  torch::manual_seed(9);
  torch::jit::Module m("Bn");
  m.register_parameter("w", (torch::randn({10, 784}) * 0.01).requires_grad_(true), false);
  m.register_parameter("b", torch::zeros({10}).requires_grad_(true), false);
  m.register_buffer("running_mean", torch::zeros({784}));
  m.register_buffer("steps", torch::zeros({}, torch::kLong));
  m.register_attribute("training", c10::BoolType::get(), true);  // what nn.Module has in Python
  m.define(R"(
def forward(self, x):
    x = x.reshape([x.size(0), -1])
    if self.training:
        self.running_mean.mul_(0.9).add_(x.mean(0), alpha=0.1)
        self.steps.add_(1)
    return torch.addmm(self.b, x - self.running_mean, self.w.t())
)");
  const std::string path = (dir / "bn.pt").string();
  m.save(path);
  auto runs = run_job(spec_of(kImages + "model: {type: torchscript, path: " + path + "}\n",
                              {"workers=2", "train.steps=12", "recovery.checkpoint_every=6",
                               "recovery.dir=" + (dir / "ckpt").string()}),
                      2);
  expect_ok(runs);
  // Both ranks evaluated with the same (averaged) statistics: the same metrics.
  EXPECT_DOUBLE_EQ(runs[0].summary["test_loss"].get<double>(),
                   runs[1].summary["test_loss"].get<double>());
  auto loaded = load_latest_checkpoint(CheckpointStore((dir / "ckpt").string()), LoadOptions{});
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  const at::Tensor* mean = loaded->replicated->find("buffer/running_mean");
  ASSERT_NE(mean, nullptr);
  EXPECT_GT(mean->abs().sum().item<double>(), 0.0);
  EXPECT_NE(loaded->replicated->find("buffer/steps"), nullptr);
}

Status setup_error(const JobSpec& spec) {
  auto runs = run_job(spec, 1);
  return runs[0].setup;
}

void expect_refused(const Status& s, const std::vector<std::string>& needles) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  for (const auto& n : needles)
    EXPECT_NE(s.message().find(n), std::string::npos) << "'" << n << "' in " << s.message();
}

TEST(TorchScriptBadInput, MissingOrForeignModelFilesAreRefusedNamingTheField) {
  const fs::path dir = scratch("bad_model");
  const std::string missing = (dir / "nope.pt").string();
  expect_refused(
      setup_error(spec_of(kImages + "model: {type: torchscript, path: " + missing + "}\n")),
      {"model.path", missing});
  const std::string garbage = (dir / "garbage.pt").string();
  std::ofstream(garbage) << "this is not a zip archive";
  expect_refused(
      setup_error(spec_of(kImages + "model: {type: torchscript, path: " + garbage + "}\n")),
      {"model.path", garbage, "not a TorchScript archive"});
}

TEST(TorchScriptBadInput, AForwardThatFailsOrOutputsTheLossCannotTakeAreRefusedBeforeTraining) {
  const fs::path dir = scratch("bad_forward");
  auto save = [&](const std::string& name, at::Tensor w, const std::string& body) {
    torch::jit::Module m(name);
    m.register_parameter("w", w.requires_grad_(true), false);
    m.define(body);
    const std::string path = (dir / (name + ".pt")).string();
    m.save(path);
    return path;
  };
  // Wrong input width: the matmul fails on the first batch.
  const std::string shape = save("Shape", torch::zeros({10, 100}), R"(
def forward(self, x):
    return torch.matmul(x.reshape([x.size(0), -1]), self.w.t())
)");
  expect_refused(
      setup_error(spec_of(kImages + "model: {type: torchscript, path: " + shape + "}\n")),
      {"model.path", shape, "forward on a batch"});
  // Three classes for labels 0..9.
  const std::string classes = save("Classes", torch::zeros({3, 784}), R"(
def forward(self, x):
    return torch.matmul(x.reshape([x.size(0), -1]), self.w.t())
)");
  expect_refused(
      setup_error(spec_of(kImages + "model: {type: torchscript, path: " + classes + "}\n")),
      {"model.path", "cross_entropy", "not a class"});
  // One value per sample where cross_entropy needs class scores.
  const std::string flat = save("Flat", torch::zeros({784}), R"(
def forward(self, x):
    return torch.matmul(x.reshape([x.size(0), -1]), self.w)
)");
  expect_refused(setup_error(spec_of(kImages + "model: {type: torchscript, path: " + flat + "}\n")),
                 {"model.path", "cannot take outputs"});
  // loss returned, but forward returns the logits.
  const std::string not_scalar = save("NotScalar", torch::zeros({10, 784}), R"(
def forward(self, x, y):
    return torch.matmul(x.reshape([x.size(0), -1]), self.w.t())
)");
  expect_refused(setup_error(spec_of(kImages + "model: {type: torchscript, path: " + not_scalar +
                                     ", loss: returned, metrics: [loss]}\n")),
                 {"model.path", "scalar loss"});
}

TEST(TorchScriptBadInput, TokenIdsAtOrAboveTheVocabularyAndShortFilesAreRefused) {
  const fs::path dir = scratch("bad_tokens");
  const std::string model = export_bigram_lm(dir, 13, 4);
  std::vector<uint32_t> ids(500, 3);
  ids[321] = 13;
  const std::string tokens = write_tokens(dir / "t.u16", ids, false);
  expect_refused(setup_error(spec_of(lm_spec(model, tokens, 13), {"workers=1"})),
                 {"data.path", tokens, "token 321", "vocab_size 13"});
  const std::string small = write_tokens(dir / "small.u16", std::vector<uint32_t>(40, 1), false);
  expect_refused(
      setup_error(spec_of(lm_spec(model, small, 13), {"workers=1", "data.block_size=64"})),
      {"data.block_size 64", small});
  // An odd byte count is not a stream of 16-bit tokens.
  const std::string odd = (dir / "odd.u16").string();
  std::ofstream(odd, std::ios::binary) << std::string(1001, '\0');
  expect_refused(setup_error(spec_of(lm_spec(model, odd, 13), {"workers=1"})),
                 {"data.path", odd, "token_dtype"});
  const std::string absent = (dir / "absent.u16").string();
  // A missing data set is a data error (exit 3), named like the rest.
  Status missing = setup_error(spec_of(lm_spec(model, absent, 13), {"workers=1"}));
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.to_string();
  EXPECT_NE(missing.message().find(absent), std::string::npos) << missing.message();
}

TEST(TorchScriptSpec, FieldsAreValidatedWithTheirReasons) {
  auto bad = [](const std::string& text) {
    auto r = load_job_spec_text(text, "job.yaml");
    EXPECT_FALSE(r.is_ok()) << text;
    return r.is_ok() ? std::string() : r.status().message();
  };
  const std::string head = "name: x\nworkers: 1\n";
  EXPECT_NE(
      bad(head + "model: {type: torchscript}\ndata: {source: synthetic}\n").find("model.path"),
      std::string::npos);
  EXPECT_NE(
      bad(head + "model: {type: torchscript, path: m.pt, loss: returned, metrics: [accuracy]}\n"
                 "data: {source: synthetic}\n")
          .find("accuracy needs the model's outputs"),
      std::string::npos);
  EXPECT_NE(
      bad(head +
          "model: {type: torchscript, path: m.pt, metrics: [auc]}\ndata: {source: synthetic}\n")
          .find("bce_with_logits"),
      std::string::npos);
  EXPECT_NE(
      bad(head + "model: {type: torchscript, path: m.pt}\ndata: {source: tokens, path: t.u16}\n")
          .find("vocab_size is required"),
      std::string::npos);
  EXPECT_NE(
      bad(head +
          "model: {type: torchscript, path: m.pt}\ndata: {source: tensors, path: a.safetensors}\n")
          .find("test_path"),
      std::string::npos);
  EXPECT_NE(bad(head + "model: {type: mlp}\ndata: {source: tokens, path: t.u16, vocab_size: 5}\n")
                .find("does not fit"),
            std::string::npos);
  EXPECT_NE(bad(head + "model: {type: torchscript, path: m.pt}\ndata: {source: tokens, path: "
                       "t.u16, vocab_size: 70000}\n")
                .find("does not fit token_dtype"),
            std::string::npos);
}

}  // namespace
}  // namespace tern
