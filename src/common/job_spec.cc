#include "common/job_spec.h"

#include <cctype>
#include <cmath>
#include <limits>
#include <sstream>

#include "common/workload_traits.h"
#include "common/yaml_reader.h"

namespace tern {
namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();
constexpr double kMaxDouble = std::numeric_limits<double>::max();

// A spec enum from its YAML word; an unknown word is an error naming the key and the words.
template <class E>
void get_spec_enum(YamlMap& m, const std::string& key, E* out) {
  std::string word = name_of(*out);
  const auto& words = SpecEnum<E>::kWords;
  m.get_enum(key, &word, std::vector<const char*>(std::begin(words), std::end(words)));
  parse_spec_enum(word, out);
}

// A list of spec enum words (model.metrics).
template <class E>
void get_spec_enum_list(YamlMap& m, const std::string& key, std::vector<E>* out) {
  std::vector<std::string> words;
  m.get_list(key, &words);
  if (!m.has(key)) return;
  out->clear();
  std::string all;
  for (const char* w : SpecEnum<E>::kWords) all += (all.empty() ? "" : ", ") + std::string(w);
  for (const std::string& w : words) {
    E value{};
    if (parse_spec_enum(w, &value)) {
      out->push_back(value);
    } else {
      m.error(key, "unknown '" + w + "' (" + all + ")");
    }
  }
}

void parse_model(YamlMap m, ModelSpec* out) {
  get_spec_enum(m, "type", &out->type);
  m.get("path", &out->path);
  get_spec_enum(m, "loss", &out->loss);
  get_spec_enum_list(m, "metrics", &out->metrics);
  m.get("embedding_dim", &out->embedding_dim, 1, 4096);
  m.get_list("bottom_mlp", &out->bottom_mlp, 1, 1 << 16);
  m.get_list("top_mlp", &out->top_mlp, 1, 1 << 16);
  get_spec_enum(m, "sharding", &out->sharding);
  m.finish();
}

void parse_data(YamlMap m, DataSpec* out) {
  get_spec_enum(m, "source", &out->source);
  m.get("path", &out->path);
  m.get("test_path", &out->test_path);
  m.get("inputs", &out->inputs);
  m.get("targets", &out->targets);
  get_spec_enum(m, "token_dtype", &out->token_dtype);
  m.get("vocab_size", &out->vocab_size, 1, int64_t{1} << 32);
  m.get("block_size", &out->block_size, 1, int64_t{1} << 20);
  m.get("test_fraction", &out->test_fraction, 0.0, 0.9);
  m.get("normalize", &out->normalize);
  m.get("train_size", &out->train_size, 1, kMaxInt);
  m.get("test_size", &out->test_size, 1, kMaxInt);
  m.get("seed", &out->seed, 0, kMaxInt);
  m.get("num_tables", &out->num_tables, 1, 1024);
  m.get("table_size", &out->table_size, 1, 1LL << 32);
  m.get("zipf_alpha", &out->zipf_alpha, 0.0, 10.0);
  m.get_list("table_sizes", &out->table_sizes, 1, 4294967296.0);
  m.get("holdout_every", &out->holdout_every, 0, kMaxInt);
  get_spec_enum(m, "malformed", &out->malformed);
  m.get("max_malformed", &out->max_malformed, 0, kMaxInt);
  m.get("max_malformed_fraction", &out->max_malformed_fraction, 0.0, 1.0);
  m.finish();
}

void parse_train(YamlMap m, TrainSpec* out) {
  m.get("epochs", &out->epochs, 1, 100000);
  m.get("steps", &out->steps, 0, kMaxInt);
  m.get("batch_size", &out->batch_size, 1, 1 << 20);
  m.get("lr", &out->lr, 0.0, 100.0);
  get_spec_enum(m, "lr_schedule", &out->lr_schedule);
  m.get("warmup_steps", &out->warmup_steps, 0, kMaxInt);
  m.get("lr_min", &out->lr_min, 0.0, 100.0);
  m.get_list("lr_decay_at", &out->lr_decay_at, 0.0, 1.0);
  m.get("lr_gamma", &out->lr_gamma, 0.0, 1.0);
  get_spec_enum(m, "optimizer", &out->optimizer);
  m.get("momentum", &out->momentum, 0.0, 0.9999);
  m.get("nesterov", &out->nesterov);
  m.get("weight_decay", &out->weight_decay, 0.0, 1.0);
  // (A sentinel outside the getter's range tells "reported by the getter" from "read".)
  if (m.has("betas")) {
    std::vector<double> betas = {2.0};
    m.get_list("betas", &betas, 0.0, 1.0);
    bool ok = betas.size() == 2;
    for (double b : betas) ok = ok && b >= 0 && b < 1;  // (false for NaN too)
    if (ok) {
      out->betas = betas;
    } else if (betas != std::vector<double>{2.0}) {
      std::ostringstream got;
      for (size_t i = 0; i < betas.size(); ++i) got << (i ? ", " : "") << betas[i];
      m.error("betas",
              "must be two numbers [beta1, beta2], each in [0, 1), got [" + got.str() + "]");
    }
  }
  if (m.has("eps")) {
    double eps = std::numeric_limits<double>::quiet_NaN();  // the getter reads finite numbers only
    m.get("eps", &eps, -kMaxDouble, 1.0);
    if (eps > 0) {
      out->eps = eps;
    } else if (!std::isnan(eps)) {
      std::ostringstream got;
      got << eps;
      m.error("eps", "must be > 0 (AdamW divides by sqrt(v) + eps), got " + got.str());
    }
  }
  if (out->optimizer == OptimizerKind::kAdamw && out->nesterov) {
    // (train.momentum is left alone: every SGD template sets it, and adamw does not read it.)
    m.error("nesterov",
            "is SGD's Nesterov momentum; train.optimizer adamw has none: remove it or use "
            "train.optimizer sgd");
  }
  m.get("seed", &out->seed, 0, kMaxInt);
  m.get("eval_every", &out->eval_every, 0, kMaxInt);
  m.get("log_every", &out->log_every, 1, kMaxInt);
  m.get("threads", &out->threads, 1, kMaxTrainThreads);
  get_spec_enum(m, "on_nonfinite", &out->on_nonfinite);
  if (m.has("dp")) {
    out->dp.enabled = true;
    YamlMap dp = m.child("dp");
    // (Sentinels outside the getters' ranges tell "reported by the getter" from "read".)
    double clip = -1, sigma = -1, delta = -1;
    dp.get("clip", &clip, 0.0, 1e9);
    dp.get("noise_multiplier", &sigma, 0.0, 1e6);
    dp.get("delta", &delta, 0.0, 1.0);
    if (dp.has("clip")) {
      if (clip > 0)
        out->dp.clip = clip;
      else if (clip == 0)
        dp.error("clip", "must be > 0 (the L2 norm each sample's gradient is clipped to), got 0");
    }
    if (dp.has("noise_multiplier")) {
      if (sigma > 0)
        out->dp.noise_multiplier = sigma;
      else if (sigma == 0)
        dp.error("noise_multiplier",
                 "must be > 0 (without noise there is no privacy guarantee: remove train.dp "
                 "instead), got 0");
    }
    if (dp.has("delta")) {
      if (delta > 0 && delta < 1)
        out->dp.delta = delta;
      else if (delta == 0 || delta == 1)
        dp.error("delta", "must be in (0, 1), got " + std::to_string(delta));
    }
    get_spec_enum(dp, "embedding_noise", &out->dp.embedding_noise);
    get_spec_enum(dp, "per_sample", &out->dp.per_sample);
    dp.finish();
  }
  m.finish();
}

void parse_sync(YamlMap m, SyncSpec* out) {
  get_spec_enum(m, "strategy", &out->strategy);
  m.get_or_auto("delay", &out->delay, &out->delay_auto, 0, 10000);
  m.get_or_auto("period", &out->period, &out->period_auto, 1, 100000);
  m.get("auto_wait_share", &out->auto_wait_share, 0.001, 1.0);
  m.get("auto_trials", &out->auto_trials);
  m.get("fragments", &out->fragments, 1, 1024);
  YamlMap outer = m.child("outer");
  if (outer.valid()) {
    outer.get("lr", &out->outer.lr, 1e-6, 100.0);
    outer.get("momentum", &out->outer.momentum, 0.0, 0.9999);
    outer.get("nesterov", &out->outer.nesterov);
    outer.finish();
  }
  m.get("correction", &out->correction);
  m.get("average_momentum", &out->average_momentum);
  m.get("inter_delay", &out->inter_delay, 0, 10000);
  m.get("inter_period", &out->inter_period, 1, 100000);
  m.get("bucket_mb", &out->bucket_mb, 0.001, 4096.0);
  m.get("timeout_s", &out->timeout_s, 0.1, 86400.0);
  m.get("verify_every", &out->verify_every, 0, kMaxInt);
  get_spec_enum(m, "on_mismatch", &out->on_mismatch);
  m.finish();
}

void parse_compress(YamlMap m, CompressSpec* out) {
  get_spec_enum(m, "method", &out->method);
  // Each sparsifier's own default density: DGC's (in CompressSpec) reaches 0.1 % through its
  // warm-up; topk has neither warm-up nor momentum correction and sends 2 %.
  if (out->method == CompressMethod::kTopk) out->density = kTopkDefaultDensity;
  m.get("density", &out->density, 1e-6, 1.0);
  m.get_list("warmup_densities", &out->warmup_densities, 1e-6, 1.0);
  m.get("warmup_epochs", &out->warmup_epochs, 0, 100000);
  m.get("sample_ratio", &out->sample_ratio, 1e-6, 1.0);
  m.get("clip_norm", &out->clip_norm, 0.0, kMaxDouble);
  m.get("min_numel", &out->min_numel, 0, kMaxInt);
  m.get("warmup_steps", &out->warmup_steps, 0, kMaxInt);
  m.get("momentum_masking", &out->momentum_masking);
  m.get("value_bits", &out->value_bits, 4, 32);
  m.get("chunk_size", &out->chunk_size, 0, 65536);
  if (out->chunk_size == 1)
    m.error("chunk_size", "must be 0 (one global top-k) or in [2, 65536], got 1");
  m.get("ef_decay", &out->ef_decay, 0.0, 1.0);
  m.get("block_size", &out->block_size, 2, int64_t{1} << 20);
  if (out->block_size % 2 != 0) {
    m.error("block_size",
            "must be even (two 4-bit values per byte), got " + std::to_string(out->block_size));
  }
  get_spec_enum(m, "slicing", &out->slicing);
  // slicing matrix: slice_size caps a matrix's shorter side (its covariance is that squared).
  if (out->slicing == SliceLayout::kMatrix) out->slice_size = kMatrixSliceSizeDefault;
  m.get("slice_size", &out->slice_size, 2, 4096);
  m.get("basis_size", &out->basis_size, 1, 4096);
  m.get("refresh_every", &out->refresh_every, 0, kMaxInt);
  m.get("rank", &out->rank, 1, 1024);
  m.get("start_iter", &out->start_iter, 0, kMaxInt);
  m.get("min_compression_rate", &out->min_compression_rate, 1.0, 1e9);
  m.get("error_feedback", &out->error_feedback);
  // GradiVeQ: error feedback by default only with each step's own basis (refresh_every 0, the
  // default); with a periodic basis the memory outside it grows between refreshes and the CNN
  // diverged (docs/algorithms.md §4.5), so a periodic basis runs without it unless asked.
  if (out->method == CompressMethod::kGradiveq && !m.has("error_feedback"))
    out->error_feedback = out->refresh_every == 0;
  m.finish();
}

void validate_compress(const CompressSpec& c, YamlMap& root) {
  const int64_t bits = c.value_bits;
  const bool chunked = c.method == CompressMethod::kTopk && c.chunk_size > 0;
  if (bits != 16 && bits != 32 && !((bits == 8 || bits == 4) && chunked)) {
    root.error("compress", "value_bits must be 16 or 32" +
                               std::string(chunked ? " (or 8 or 4)"
                                                   : "; 8 and 4 need method topk with chunk_size") +
                               ", got " + std::to_string(bits));
  }
  if (c.chunk_size > 0 && c.method != CompressMethod::kTopk) {
    root.error("compress",
               "chunk_size applies to method topk only, got method " + name_of(c.method));
  }
  if (c.ef_decay != 1.0 &&
      !(c.method == CompressMethod::kTopk || c.method == CompressMethod::kInt4 ||
        c.method == CompressMethod::kGradiveq)) {
    root.error("compress", "ef_decay applies to methods topk, int4 and gradiveq only, got method " +
                               name_of(c.method));
  }
  if (c.method == CompressMethod::kGradiveq) {
    if (c.basis_size >= c.slice_size) {
      root.error("compress", "basis_size must be < slice_size (" + std::to_string(c.slice_size) +
                                 ") for method gradiveq, got " + std::to_string(c.basis_size));
    }
    if (c.start_iter < 1) {
      root.error("compress",
                 "start_iter must be >= 1 for method gradiveq (its first basis comes from a dense "
                 "step), got " +
                     std::to_string(c.start_iter));
    }
  }
  if (c.ef_decay != 1.0 && !c.error_feedback) {
    root.error("compress", "ef_decay needs error_feedback: true");
  }
  if (c.ef_decay <= 0.0)
    root.error("compress", "ef_decay must be in (0, 1], got " + std::to_string(c.ef_decay));
}

void parse_straggler(YamlMap m, StragglerSpec* out) {
  get_spec_enum(m, "mode", &out->mode);
  m.get("s", &out->s, 0, 1024);
  m.get("backup", &out->backup, 0, 1024);
  m.get("ewma", &out->ewma, 0.0, 1.0);
  m.get("report_every", &out->report_every, 1, kMaxInt);
  m.finish();
}

void parse_recovery(YamlMap m, RecoverySpec* out) {
  get_spec_enum(m, "mode", &out->mode);
  m.get("checkpoint_every", &out->checkpoint_every, 0, kMaxInt);
  m.get("dir", &out->dir);
  m.get("keep", &out->keep, 1, 1000);
  m.get("min_workers", &out->min_workers, 0, 1 << 20);
  m.get("keep_global_batch", &out->keep_global_batch);
  m.get("max_recoveries", &out->max_recoveries, 0, 1000000);
  get_spec_enum(m, "policy", &out->policy);
  m.get("pls_target", &out->pls_target, 0.0, 1.0);
  get_spec_enum(m, "interval", &out->interval);
  m.get("mtbf_s", &out->mtbf_s, 1e-3, 1e12);
  m.get("row_fraction", &out->row_fraction, 0.0, 1.0);
  m.get("full_every", &out->full_every, 1, 1000000);
  m.get("resume_from", &out->resume_from);
  m.get("resume_step", &out->resume_step, 0, kMaxInt);
  if (out->resume_step > 0 && out->resume_from.empty()) {
    m.error("resume_step", "needs recovery.resume_from (the directory to resume from)");
  }
  m.finish();
}

void parse_debug(YamlMap m, DebugSpec* out) {
  m.get_list("slowdown", &out->slowdown, 1.0, 1000.0);
  m.get("transient_prob", &out->transient_prob, 0.0, 1.0);
  m.get("transient_ms", &out->transient_ms, 0.0, 600000.0);
  m.get("fail_rank", &out->fail_rank, -1, 1 << 20);
  m.get("fail_step", &out->fail_step, -1, kMaxInt);
  if (m.has("kill")) {
    YamlMap k = m.child("kill");
    k.get("rank", &out->kill_rank, 0, 1 << 20);
    k.get("at_step", &out->kill_step, 0, kMaxInt);
    k.finish();
  }
  if (m.has("corrupt")) {
    YamlMap c = m.child("corrupt");
    c.require("rank");
    c.require("at_step");
    c.get("rank", &out->corrupt_rank, 0, 1 << 20);
    c.get("at_step", &out->corrupt_step, 0, kMaxInt);
    c.finish();
  }
  m.finish();
}

// DLRM shapes: the bottom MLP ends in the embedding dimension (its output joins the
// interaction), the top MLP in one logit, one size per table, and every rank owns a table.
void cross_validate_dlrm(const JobSpec& s, YamlMap& root) {
  const ModelSpec& m = s.model;
  if (!m.bottom_mlp.empty() && static_cast<int64_t>(m.bottom_mlp.back()) != m.embedding_dim) {
    root.error("model", "bottom_mlp must end in embedding_dim (" + std::to_string(m.embedding_dim) +
                            "), got " + std::to_string(static_cast<int64_t>(m.bottom_mlp.back())));
  }
  if (!m.top_mlp.empty() && m.top_mlp.back() != 1) {
    root.error("model", "top_mlp must end in 1 (one logit), got " +
                            std::to_string(static_cast<int64_t>(m.top_mlp.back())));
  }
  const DataSpec& d = s.data;
  if (!d.table_sizes.empty() && static_cast<int64_t>(d.table_sizes.size()) != d.num_tables) {
    root.error("data", "table_sizes has " + std::to_string(d.table_sizes.size()) +
                           " entries but num_tables is " + std::to_string(d.num_tables));
  }
  for (double v : d.table_sizes) {
    if (v != static_cast<double>(static_cast<int64_t>(v))) {
      root.error("data", "table_sizes must be whole numbers, got " + std::to_string(v));
      break;
    }
  }
  if (d.source == DataSource::kCriteo) {
    const int64_t tables =
        d.table_sizes.empty() ? d.num_tables : static_cast<int64_t>(d.table_sizes.size());
    if (tables != 26) {
      root.error(
          "data",
          "num_tables (or the entries of table_sizes) must be 26 for source criteo (one table per "
          "categorical field C1..C26), got " +
              std::to_string(tables));
    }
    if (d.path.empty() || d.path == DataSpec().path) {
      root.error("data", "path must name the Criteo TSV (plain or gzip) for source criteo");
    }
  }
  if (s.workers > d.num_tables) {
    root.error("data", "num_tables (" + std::to_string(d.num_tables) + ") must be >= workers (" +
                           std::to_string(s.workers) + "): every rank owns at least one table");
  }
}

// A user's model and data: the files named, the metrics the loss allows, the token layout.
void cross_validate_torchscript(const JobSpec& s, YamlMap& root) {
  const ModelSpec& m = s.model;
  if (m.path.empty())
    root.error("model",
               "model.path must name the TorchScript file (torch.jit.save) for type torchscript");
  for (EvalMetric metric : m.metrics) {
    const std::string word = name_of(metric);
    if (m.loss == LossKind::kReturned &&
        (metric == EvalMetric::kAccuracy || metric == EvalMetric::kAuc)) {
      root.error("model", "metrics: " + word +
                              " needs the model's outputs, but loss returned makes forward "
                              "return only the loss; use loss or perplexity");
    } else if (metric == EvalMetric::kAuc && m.loss != LossKind::kBceWithLogits) {
      root.error("model", "metrics: auc scores binary logits: it needs loss bce_with_logits, got " +
                              name_of(m.loss));
    } else if (metric == EvalMetric::kAccuracy && m.loss == LossKind::kMse) {
      root.error(
          "model",
          "metrics: accuracy needs class scores (cross_entropy or bce_with_logits), got loss mse");
    }
  }
  const DataSpec& d = s.data;
  if (d.source != DataSource::kTensors && d.source != DataSource::kTokens) return;
  if (d.path.empty() || d.path == DataSpec().path) {
    root.error("data",
               "path must name the " +
                   std::string(d.source == DataSource::kTokens ? "token file"
                                                               : "safetensors file or directory") +
                   " for source " + name_of(d.source));
  }
  if (d.source == DataSource::kTensors && d.test_path.empty()) {
    root.error("data",
               "test_path must name the test safetensors file or directory for source tensors");
  }
  if (d.source == DataSource::kTokens) {
    if (d.vocab_size == 0)
      root.error("data", "vocab_size is required for source tokens (every id must be below it)");
    const int64_t max_id = d.token_dtype == TokenDtype::kUint16 ? (1 << 16) : (int64_t{1} << 32);
    if (d.vocab_size > max_id) {
      root.error("data", "vocab_size " + std::to_string(d.vocab_size) +
                             " does not fit token_dtype " + name_of(d.token_dtype));
    }
    if (d.test_path.empty() && d.test_fraction <= 0) {
      root.error(
          "data",
          "test_fraction must be > 0 without a test_path (the held-out tail is the test split)");
    }
  }
}

// The sync fields that depend on the strategy.
void validate_sync(const SyncSpec& y, YamlMap& root) {
  const bool periodic = y.strategy == StrategyKind::kTsu || y.strategy == StrategyKind::kDts;
  const bool sparse = periodic || y.strategy == StrategyKind::kHierarchical;
  if (!y.outer.identity() && !sparse) {
    root.error("sync",
               "outer (lr " + std::to_string(y.outer.lr) + ", momentum " +
                   std::to_string(y.outer.momentum) +
                   ") applies to pseudo-gradients of tsu, dts and hierarchical; sync.strategy " +
                   name_of(y.strategy) + " averages gradients every step");
  }
  if (y.outer.nesterov && y.outer.momentum == 0)
    root.error("sync", "outer.nesterov needs outer.momentum > 0");
  if (y.fragments > 1 && !periodic) {
    root.error("sync", "fragments (streaming sync) needs sync.strategy tsu or dts, got " +
                           name_of(y.strategy));
  }
  if (y.delay_auto && y.strategy != StrategyKind::kDts) {
    root.error("sync", "delay: auto needs sync.strategy dts (the delay of a periodic sync), got " +
                           name_of(y.strategy));
  }
  if (y.period_auto && !periodic) {
    root.error("sync", "period: auto needs sync.strategy tsu or dts, got " + name_of(y.strategy));
  }
  if (!y.period_auto && y.fragments > y.period && periodic) {
    root.error("sync", "fragments (" + std::to_string(y.fragments) + ") must be <= period (" +
                           std::to_string(y.period) +
                           "): each fragment syncs at its own step of the period");
  }
  // With an outer optimizer each sync is applied relative to the outer model of the previous one,
  // so a sync must land before the next one starts.
  const bool fixed_dt = !y.delay_auto && !y.period_auto;
  if (!y.outer.identity() && fixed_dt && y.strategy == StrategyKind::kDts && y.delay >= y.period) {
    root.error("sync", "delay (" + std::to_string(y.delay) + ") must be < period (" +
                           std::to_string(y.period) +
                           ") with an outer optimizer (one outer step in flight per fragment)");
  }
  if (!y.outer.identity() && y.strategy == StrategyKind::kHierarchical &&
      y.inter_delay >= y.inter_period) {
    root.error("sync", "inter_delay (" + std::to_string(y.inter_delay) +
                           ") must be < inter_period (" + std::to_string(y.inter_period) +
                           ") with an outer optimizer");
  }
}

// Checks that span fields or sections.
// train.dp: the combinations whose privacy accounting would be wrong are refused, with why.
void cross_validate_dp(const JobSpec& s, YamlMap& root) {
  const ModelType model = s.model.type;
  if (model != ModelType::kMlp && model != ModelType::kCnn && model != ModelType::kDlrm) {
    root.error(
        "train",
        "dp needs per-sample gradients, built for model.type mlp, cnn and dlrm; model.type " +
            name_of(model) + " has none yet");
  }
  if (s.sync.strategy != StrategyKind::kSsgd && s.sync.strategy != StrategyKind::kDssgd) {
    root.error(
        "train",
        "dp adds its noise once to each step's global gradient sum (each rank a 1/N share of the "
        "variance), which sync.strategy " +
            name_of(s.sync.strategy) +
            " never forms: its local steps would release gradients with 1/N of the noise; use ssgd "
            "or "
            "dssgd");
  }
  if (s.compress.method != CompressMethod::kNone) {
    root.error("train",
               "dp with compress.method " + name_of(s.compress.method) +
                   " is refused: each rank's message carries only 1/N of the noise variance, and a "
                   "compressor (with its error-feedback memory) releases a function of each rank's "
                   "message "
                   "rather than of the noisy sum, so the accounting would not hold; use "
                   "compress.method none");
  }
  if (s.train.dp.per_sample == PerSampleGrad::kVectorized && model == ModelType::kCnn) {
    root.error(
        "train",
        "dp.per_sample vectorized needs a model of linear layers (mlp, dlrm); model.type cnn takes "
        "auto or microbatch");
  }
  if (s.train.dp.per_sample == PerSampleGrad::kMicrobatch && model == ModelType::kDlrm) {
    root.error("train",
               "dp.per_sample microbatch: model.type dlrm computes its per-sample gradients "
               "vectorised only "
               "(its lookups are collective); use auto or vectorized");
  }
  if (!workload_traits(s).random_access) {
    root.error(
        "train",
        "dp accounts each step as a random sample of the training set (q = batch / samples), but "
        "data.source " +
            name_of(s.data.source) +
            " is read as a stream in file order, which no sampling argument covers; use a "
            "random-access "
            "source (synthetic_ctr, fashion_mnist, synthetic)");
  }
  if (s.straggler.mode != StragglerMode::kNone) {
    root.error(
        "train",
        "dp with straggler.mode " + name_of(s.straggler.mode) +
            " is refused: dropped or re-weighted contributions change each sample's weight (its "
            "sensitivity is no longer train.dp.clip / batch) and the noise the sum carries; use "
            "straggler.mode none");
  }
}

// straggler.*: the tolerated stragglers fit the group; the modes replace SSGD's dense all-reduce.
void cross_validate_straggler(const JobSpec& s, YamlMap& root) {
  if (s.straggler.mode == StragglerMode::kGradientCoding ||
      s.straggler.mode == StragglerMode::kCodedProportional ||
      s.straggler.mode == StragglerMode::kRandomCode) {
    if (s.straggler.s >= s.workers) {
      root.error("straggler", "s must be < workers (" + std::to_string(s.workers) + "), got " +
                                  std::to_string(s.straggler.s));
    }
  }
  if (s.straggler.mode == StragglerMode::kBackup && s.straggler.backup >= s.workers) {
    root.error("straggler", "backup must be < workers");
  }
  if (s.straggler.mode != StragglerMode::kNone && s.sync.strategy != StrategyKind::kSsgd) {
    root.error("straggler", "straggler mode " + name_of(s.straggler.mode) +
                                " replaces the synchronous all-reduce: it needs "
                                "sync.strategy ssgd, got " +
                                name_of(s.sync.strategy));
  }
  if (s.straggler.mode != StragglerMode::kNone && s.compress.method != CompressMethod::kNone) {
    root.error("straggler", "straggler mode " + name_of(s.straggler.mode) +
                                " exchanges dense gradients: it cannot be combined "
                                "with compress.method " +
                                name_of(s.compress.method));
  }
}

// compress.*: the method's own fields, then what it cannot be combined with.
void cross_validate_compress(const JobSpec& s, YamlMap& root) {
  validate_compress(s.compress, root);
  if (s.compress.method == CompressMethod::kDgc &&
      (s.sync.strategy == StrategyKind::kTsu || s.sync.strategy == StrategyKind::kDts)) {
    root.error("compress",
               "method dgc applies momentum to gradients, but sync.strategy " +
                   name_of(s.sync.strategy) +
                   " sends parameter deltas; use topk, int4, fp16, int8 or powersgd with it");
  }
  if (s.compress.method != CompressMethod::kNone &&
      s.sync.strategy == StrategyKind::kHierarchical) {
    root.error("compress",
               "method " + name_of(s.compress.method) +
                   " is not supported with sync.strategy hierarchical yet (its region leaders "
                   "exchange dense deltas); use ssgd, dssgd, tsu or dts");
  }
  if (s.compress.method == CompressMethod::kDgc && s.sync.strategy == StrategyKind::kDssgd &&
      s.sync.delay > 0) {
    root.error("compress",
               "method dgc applies momentum inside the compressor and cannot be combined with "
               "sync.strategy dssgd (delay > 0) yet; use topk, int4, fp16, int8 or powersgd");
  }
}

// recovery.min_workers > 0 (elastic groups): the survivors share the lost ranks' samples (any
// rank's part must be computable anywhere) and keep their own state (no rollback, no shards).
void cross_validate_elastic(const JobSpec& s, YamlMap& root) {
  const WorkloadTraits t = workload_traits(s);
  std::string why;
  if (s.recovery.mode != RecoveryMode::kPartial)
    why = "recovery.mode partial (survivors keep their state)";
  else if (s.straggler.mode != StragglerMode::kNone)
    why = "straggler.mode none (straggler plans assume a fixed group)";
  else if (s.sync.strategy == StrategyKind::kHierarchical)
    why = "a flat sync.strategy (hierarchical groups follow the regions)";
  else if (!t.random_access || t.sharded_state || t.collective_step)
    why = "a data-parallel workload with random access to its samples (model.type " +
          name_of(s.model.type) + ", data.source " + name_of(s.data.source) + " is not one yet)";
  else if (!s.recovery.keep_global_batch)
    why = "keep_global_batch: true (a smaller global batch is not supported yet)";
  if (!why.empty()) root.error("recovery", "min_workers > 0 (elastic) needs " + why);
}

void cross_validate(const JobSpec& s, YamlMap& root) {
  if (s.debug.slowdown.size() > static_cast<size_t>(s.workers)) {
    root.error("debug", "slowdown has " + std::to_string(s.debug.slowdown.size()) +
                            " entries but the job has " + std::to_string(s.workers) + " workers");
  }
  cross_validate_straggler(s, root);
  cross_validate_compress(s, root);
  validate_sync(s.sync, root);
  if (s.train.nesterov && s.train.momentum == 0 && s.train.optimizer == OptimizerKind::kSgd) {
    root.error("train", "nesterov needs momentum > 0");
  }
  if (s.train.optimizer == OptimizerKind::kAdamw && s.compress.method == CompressMethod::kDgc) {
    root.error(
        "compress",
        "method dgc applies SGD momentum inside the compressor (momentum correction): it "
        "cannot be combined with train.optimizer adamw; use topk, int4, fp16, int8 or powersgd");
  }
  if (s.train.nesterov && s.compress.method == CompressMethod::kDgc) {
    root.error(
        "train",
        "nesterov is not supported with compress.method dgc (DGC applies plain momentum itself)");
  }
  if (s.train.lr_schedule == LrScheduleKind::kCosine && s.train.lr_min > s.train.lr) {
    root.error("train", "lr_min (" + std::to_string(s.train.lr_min) + ") must be <= lr (" +
                            std::to_string(s.train.lr) + ")");
  }
  if (s.recovery.min_workers > s.workers) {
    root.error("recovery", "min_workers must be <= workers");
  }
  if (s.recovery.min_workers > 0) cross_validate_elastic(s, root);
  if (s.train.dp.enabled) cross_validate_dp(s, root);
  if (s.debug.kill_rank >= s.workers) root.error("debug", "kill.rank must be < workers");
  if (s.debug.corrupt_rank >= s.workers) {
    root.error("debug", "corrupt.rank (" + std::to_string(s.debug.corrupt_rank) +
                            ") must be < workers (" + std::to_string(s.workers) + ")");
  }
  if (s.debug.fail_rank >= s.workers) {
    root.error("debug", "fail_rank must be < workers");
  }
  const bool ctr =
      s.data.source == DataSource::kCriteo || s.data.source == DataSource::kSyntheticCtr;
  const bool user_data =
      s.data.source == DataSource::kTensors || s.data.source == DataSource::kTokens;
  const bool fits = s.model.type == ModelType::kDlrm          ? ctr
                    : s.model.type == ModelType::kTorchscript ? !ctr
                                                              : !ctr && !user_data;
  if (!fits) {
    root.error("model",
               "model.type " + name_of(s.model.type) + " does not fit data.source " +
                   name_of(s.data.source) +
                   " (dlrm needs criteo or synthetic_ctr; mlp/cnn need fashion_mnist or synthetic; "
                   "torchscript takes tensors, tokens, fashion_mnist or synthetic)");
  }
  if (s.model.type == ModelType::kTorchscript) cross_validate_torchscript(s, root);
  if (s.model.type == ModelType::kDlrm) cross_validate_dlrm(s, root);
  // What the workload (model + data) cannot do: one table, common/workload_traits.h.
  for (const WorkloadRefusal& r : workload_refusals(s)) root.error(r.field, r.reason);
}

}  // namespace

namespace {

// Validates a parsed document. `name` is used in messages (a file path or "<submit>").
Result<LoadedJobSpec> parse_job_spec(YAML::Node root, const std::string& name) {
  ErrorList errors(name);
  YamlMap m(root, "", &errors);
  LoadedJobSpec out;
  JobSpec& s = out.spec;
  m.require("name");
  m.get("name", &s.name);
  if (m.has("name") && !root["name"].IsNull()) {  // a null is reported by get()
    bool ok = !s.name.empty() && s.name.size() <= 63;
    for (char c : s.name) {
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
    }
    if (!ok) m.error("name", "must be 1-63 characters of [A-Za-z0-9._-], got '" + s.name + "'");
  }
  m.get("workers", &s.workers, 1, 4096);
  get_spec_enum(m, "device", &s.device);
  get_spec_enum(m, "placement", &s.placement);
  m.get_enum("log_level", &s.log_level, {"trace", "debug", "info", "warn", "error"});
  parse_model(m.child("model"), &s.model);
  parse_data(m.child("data"), &s.data);
  // DLRM's MLPs default to plain SGD (its reference recipe); a spec may still set a momentum.
  if (s.model.type == ModelType::kDlrm) s.train.momentum = 0.0;
  parse_train(m.child("train"), &s.train);
  parse_sync(m.child("sync"), &s.sync);
  parse_compress(m.child("compress"), &s.compress);
  parse_straggler(m.child("straggler"), &s.straggler);
  parse_recovery(m.child("recovery"), &s.recovery);
  parse_debug(m.child("debug"), &s.debug);
  m.finish();
  if (errors.empty()) cross_validate(s, m);
  TERN_RETURN_IF_ERROR(errors.to_status());
  YAML::Emitter emitter;
  emitter << root;
  out.yaml = emitter.c_str();
  out.yaml += "\n";
  return out;
}

}  // namespace

Result<LoadedJobSpec> load_job_spec_text(const std::string& text, const std::string& name,
                                         const std::vector<std::string>& overrides) {
  TERN_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_text(text, name));
  TERN_RETURN_IF_ERROR(apply_overrides(&root, overrides, name));
  return parse_job_spec(root, name);
}

Result<LoadedJobSpec> load_job_spec_file(const std::string& path,
                                         const std::vector<std::string>& overrides) {
  TERN_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_file(path));
  TERN_RETURN_IF_ERROR(apply_overrides(&root, overrides, path));
  return parse_job_spec(root, path);
}

}  // namespace tern
