// JobSpec: the validated description of one training job, shared by the trainer, `tern run`
// and the coordinator (which validates at SubmitJob with the same code). Loaded from YAML;
// every field is checked and unknown keys are errors. Plain data, freely copyable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/spec_enums.h"
#include "common/status.h"

namespace tern {

struct ModelSpec {
  ModelType type = ModelType::kMlp;  // mlp | cnn | dlrm | torchscript
  // torchscript: the user's module (torch.jit.save). Its forward(inputs) returns outputs the
  // loss takes; with loss `returned`, forward(inputs, targets) returns the scalar loss.
  std::string path;
  LossKind loss = LossKind::kCrossEntropy;  // cross_entropy | mse | bce_with_logits | returned
  // Evaluation metrics (test_<name> in eval events and the summary): accuracy, loss,
  // perplexity, auc. Empty: loss, plus accuracy for cross_entropy.
  std::vector<EvalMetric> metrics;
  // DLRM (issue 7): table sizes come from the data section.
  int64_t embedding_dim = 16;
  std::vector<double> bottom_mlp = {64, 16};
  std::vector<double> top_mlp = {64, 1};
  // DLRM: how embedding tables are assigned to ranks. round_robin: table t on rank t % N;
  // balanced: largest tables first, each to the rank with the fewest rows so far.
  EmbeddingSharding sharding = EmbeddingSharding::kRoundRobin;  // round_robin | balanced
};

struct DataSpec {
  // fashion_mnist | synthetic | criteo | synthetic_ctr | tensors | tokens
  DataSource source = DataSource::kFashionMnist;
  // fashion_mnist: the directory; criteo: the TSV; tensors: the training safetensors file or a
  // directory of shards; tokens: the training token file.
  std::string path = "/usr/share/datasets/fashion-mnist";
  // tensors: the test file or directory (required); tokens: the test token file (empty: the
  // last test_fraction of `path` is held out).
  std::string test_path;
  // tensors: the names of the input and target tensors in every file.
  std::string inputs = "inputs";
  std::string targets = "targets";
  // tokens: a flat little-endian stream of token ids; samples are block_size windows at
  // offsets drawn from data.seed, the targets the next tokens; every id must be < vocab_size.
  TokenDtype token_dtype = TokenDtype::kUint16;  // uint16 | uint32
  int64_t vocab_size = 0;                        // required for tokens
  int64_t block_size = 128;
  double test_fraction = 0.1;
  bool normalize = true;  // (x - 0.2860) / 0.3530 for Fashion-MNIST
  // synthetic / synthetic_ctr sizes
  int64_t train_size = 4096;
  int64_t test_size = 1024;
  int64_t seed = 1234;
  // CTR data (criteo / synthetic_ctr)
  int64_t num_tables = 26;
  int64_t table_size = 1000;
  double zipf_alpha = 1.1;
  // Per-table sizes (hash buckets); empty = num_tables tables of table_size rows each.
  std::vector<double> table_sizes;
  // criteo: every holdout_every-th line of `path` is held out for evaluation (0 = none).
  int64_t holdout_every = 10;
  // criteo: what a malformed line (trainer/workloads/dlrm/criteo_format.h: overlong, NUL byte,
  // not 40 fields, label not 0/1, bad integer, bad hex category) does. skip (the default):
  // counted (malformed_lines in the summary, the first few logged with file:line) and left out,
  // but more than max_malformed of them, or more than max_malformed_fraction of the file's
  // lines, or no valid line at all, is a data error naming the file and a line. fail: the first
  // one is a data error naming the file and line; the bounds are not used (left alone, so
  // --set data.malformed=fail works on any template). Read for data.source criteo only.
  OnMalformed malformed = OnMalformed::kSkip;  // skip | fail
  int64_t max_malformed = 1000;
  double max_malformed_fraction = 1.0;  // 1: no bound on the share
};

// train.dp (issue 25): differentially private training, DP-SGD (privacy/dp_sgd.h): every
// sample's gradient (embedding rows included) clipped to L2 norm `clip`, Gaussian noise of
// standard deviation noise_multiplier * clip added once to the global sum per step, and epsilon
// at `delta` from an RDP accountant (privacy/rdp_accountant.h) with the sampling rate
// q = global batch / training samples. Allowed with sync.strategy ssgd and dssgd only, no
// compress.method and no straggler.mode (each would change what one sample can contribute or
// what the noise covers: see validation's messages), model.type mlp, cnn or dlrm.
struct DpSpec {
  bool enabled = false;  // the section is present
  double clip = 1.0;
  double noise_multiplier = 1.0;
  double delta = 1e-5;
  // DLRM's embedding tables: eager adds every row's noise at every step; lazy (LazyDP) defers
  // the noise of rows a step did not read until they are next read (privacy/lazy_noise.h).
  EmbeddingNoise embedding_noise = EmbeddingNoise::kLazy;  // lazy | eager
  // mlp, cnn: per-sample gradients vectorised (mlp only: its linear layers) or by micro-batches
  // of one sample (every image model).
  PerSampleGrad per_sample =
      PerSampleGrad::kAuto;  // auto (vectorised where possible) | vectorized | microbatch
};

struct TrainSpec {
  int64_t epochs = 1;       // used when steps == 0
  int64_t steps = 0;        // total optimizer steps; 0 = run `epochs` epochs
  int64_t batch_size = 64;  // per worker
  double lr = 0.05;
  // The rate of each step (common/lr_schedule.h): a linear warm-up over warmup_steps, then
  // constant, cosine (down to lr_min at the last step) or step (times lr_gamma at each
  // fraction of the run in lr_decay_at).
  LrScheduleKind lr_schedule = LrScheduleKind::kConstant;  // constant | cosine | step
  int64_t warmup_steps = 0;
  double lr_min = 0.0;
  std::vector<double> lr_decay_at = {0.5, 0.75};
  double lr_gamma = 0.1;
  // The optimizer of the replicated (dense) parameters (trainer/loop/optimizer.h): sgd
  // (torch::optim::SGD: momentum, nesterov, L2 weight_decay added to the gradient) or adamw
  // (torch::optim::AdamW: betas, eps, decoupled weight_decay, p *= 1 - lr * weight_decay).
  // DLRM's embedding rows keep their own sparse SGD at the scheduled lr with either.
  OptimizerKind optimizer = OptimizerKind::kSgd;  // sgd | adamw
  // SGD only (adamw ignores momentum, which every template sets, and refuses nesterov: true).
  double momentum = 0.9;      // the default for model.type dlrm is 0 (plain SGD on its MLPs)
  bool nesterov = false;      // Nesterov momentum (as torch::optim::SGD)
  double weight_decay = 0.0;  // sgd: L2 on the gradient; adamw: decoupled decay
  // AdamW only: the moments' decay rates [beta1, beta2], each in [0, 1), and the denominator's
  // eps (> 0).
  std::vector<double> betas = {0.9, 0.999};
  double eps = 1e-8;
  int64_t seed = 1;
  int64_t eval_every = 0;  // steps between evaluations; 0 = only at the end
  int64_t log_every = 20;  // steps between progress events
  // Intra-op threads per rank, at most kMaxTrainThreads; a worker with fewer cores than this
  // is never given the job (the scheduler fails it when no worker has enough cores).
  int64_t threads = 1;
  // A step whose loss or gradients are not finite: fail stops the job there (the trainer
  // exits kTrainerNonFinite naming the step); skip_step leaves that step's update out on every
  // rank alike (the ranks agree with one small all-reduce per step) and counts it in
  // skipped_steps.
  OnNonFinite on_nonfinite = OnNonFinite::kFail;  // fail | skip_step
  DpSpec dp;
};

// train.threads above this is refused by validation whatever the machine.
constexpr int64_t kMaxTrainThreads = 128;

// The outer optimizer of the temporally sparse strategies (tsu, dts, hierarchical; DiLoCo): at
// each sync the pseudo-gradient Delta = theta_last - mean(theta_local) is applied to theta_last
// by SGD with momentum mu (Nesterov optional): m = mu*m + Delta; u = Delta + mu*m (Nesterov) or m;
// theta_last -= lr*u. lr 1, momentum 0 is plain parameter averaging (the default).
struct OuterSpec {
  double lr = 1.0;
  double momentum = 0.0;
  bool nesterov = false;
  bool identity() const { return lr == 1.0 && momentum == 0.0; }
};

struct SyncSpec {
  StrategyKind strategy = StrategyKind::kSsgd;  // ssgd | dssgd | tsu | dts | hierarchical
  int64_t delay = 0;                            // d, steps (dssgd, dts)
  int64_t period = 1;                           // T, steps (tsu, dts)
  // `delay: auto` / `period: auto` (dts, tsu): the strategy measures step and collective time
  // over its first syncs and picks them so the expected wait stays under auto_wait_share of
  // compute (sync/auto_plan.h); with auto_trials an automatic delay is then tried against
  // shorter ones, one period each, and the smallest as fast as the fastest is kept.
  bool delay_auto = false;
  bool period_auto = false;
  double auto_wait_share = 0.05;
  bool auto_trials = true;
  OuterSpec outer;
  // tsu, dts: the parameters split into this many fragments that sync at staggered steps
  // (Streaming DiLoCo), each with its own in-flight reduction.
  int64_t fragments = 1;
  bool correction = true;         // false = uncorrected stale gradients (ablation)
  bool average_momentum = false;  // tsu: also average momentum buffers at sync points
  int64_t inter_delay = 0;        // hierarchical: d between regions
  int64_t inter_period = 1;       // hierarchical: T between regions
  double bucket_mb = 25.0;        // gradient bucket size for allreduce
  double timeout_s = 60.0;        // every collective waits at most this long
  // Replica integrity (trainer/loop/replica_check.h): every verify_every steps (0 = off) and
  // right after every regroup, the ranks compare a 64-bit hash of the state that is
  // bit-identical on every rank (SyncStrategy::replica_view). on_mismatch: fail stops the job
  // naming the ranks and the step; majority gives every rank the state of a rank in the
  // largest group of equal hashes (a strict majority of the ranks, else it fails too).
  int64_t verify_every = 0;
  OnMismatch on_mismatch = OnMismatch::kFail;  // fail | majority
};

struct CompressSpec {
  CompressMethod method =
      CompressMethod::kNone;  // none | dgc | powersgd | fp16 | int8 | int4 | topk | gradiveq
  // DGC and topk: the fraction of values sent. 0.001 is DGC's default; a parsed spec with
  // method topk and no density gets kTopkDefaultDensity instead.
  double density = 0.001;
  std::vector<double> warmup_densities = {0.25, 0.0625, 0.015625, 0.00390625};
  int64_t warmup_epochs = 4;  // warm-up schedule spread over this many epochs
  double sample_ratio = 0.01;
  double clip_norm = 0.0;        // 0 = no clipping
  int64_t min_numel = 1024;      // smaller (or 1-D) tensors go dense
  int64_t warmup_steps = 0;      // > 0: the warm-up schedule spans these steps (not epochs)
  bool momentum_masking = true;  // zero momentum where values were sent
  int64_t value_bits = 32;       // 32 | 16: precision of the values DGC and topk send (16
                                 // keeps the rounding error in the error-feedback memory);
                                 // topk with chunk_size also 8 | 4 (one scale per chunk)
  // topk: 0 = one global top-k; C in [2, 65536] = top-k of every chunk of C values (chunks never
  // span tensors; offsets travel in 1 byte for C <= 256, else 2)
  int64_t chunk_size = 0;
  // int4, topk and gradiveq: x = g + ef_decay * e (1 = classic error feedback; SparseLoCo uses
  // 0.95)
  double ef_decay = 1.0;
  // int4: values per fp32 scale (>= 2, even); blocks never span two tensors
  int64_t block_size = 64;
  // GradiVeQ (compress/gradiveq.h): the gradient is cut into slices of slice_size values, each
  // sent as its basis_size coefficients in a PCA basis shared by all ranks; the basis is
  // recomputed every refresh_every compressed steps from the ranks' summed slice covariance
  // (0, the default: every step from its own, one extra d x d all-reduce round per step).
  // slicing shaped: slices follow each tensor's structure (a conv's kernels, a linear layer's
  // input channel maps or rows; gradiveq.h), one basis per slice size; flat: consecutive values
  // of the flattened gradient, one basis; matrix: each weight's gradient as a matrix (out x the
  // rest) cut along its shorter side when that side is <= slice_size (the basis is then the
  // gradient's leading singular subspace), its own basis; other tensors as shaped.
  SliceLayout slicing = SliceLayout::kShaped;
  int64_t slice_size = 64;
  int64_t basis_size = 8;
  int64_t refresh_every = 0;
  // PowerSGD (and GradiVeQ: dense all-reduce before start_iter; GradiVeQ needs >= 1)
  int64_t rank = 2;
  int64_t start_iter = 10;
  double min_compression_rate = 2.0;
  bool error_feedback = true;  // PowerSGD, fp16, int8, int4, topk, gradiveq
};

// compress.slice_size when slicing is matrix and the spec does not set it.
constexpr int64_t kMatrixSliceSizeDefault = 1024;

// compress.density when method is topk and the spec does not set it.
constexpr double kTopkDefaultDensity = 0.02;

struct StragglerSpec {
  // random_code: gradient coding with fresh random coefficients every step (straggler/
  // gradient_code.h: make_random), decoded from any n - s contributions with high probability.
  StragglerMode mode = StragglerMode::kNone;  // none | gradient_coding | proportional |
                                              // coded_proportional | backup | random_code
  int64_t s = 1;                              // stragglers tolerated (gradient coding, random_code)
  int64_t backup = 1;                         // b, backup workers
  double ewma = 0.3;                          // speed estimate smoothing
  int64_t report_every = 1;
};

struct RecoverySpec {
  RecoveryMode mode = RecoveryMode::kNone;  // none | full | partial
  int64_t checkpoint_every = 0;             // steps; 0 = no periodic checkpoints
  std::string dir = "";                     // default: <work dir>/checkpoints
  int64_t keep = 3;                         // retention
  // Elastic (> 0, mode partial): when a rank is lost the survivors continue at once at a
  // smaller world, not below min_workers; a replacement starts as a standby and the job grows
  // back when it is ready. 0: fixed size (the survivors wait for the replacement).
  int64_t min_workers = 0;
  // Elastic: the global batch stays the job's (the survivors take the lost ranks' samples:
  // larger per-rank batches). false (the same per-rank batch, a smaller global one) is not
  // supported yet and is refused.
  bool keep_global_batch = true;
  // mode partial | full: regroups the coordinator attempts after a lost rank before it fails
  // the job (0 = fail at the first loss, like mode none).
  int64_t max_recoveries = 3;
  RowPolicy policy = RowPolicy::kFull;  // full | mfu | ssu (CPR row selection)
  double pls_target = 0.01;
  // DLRM checkpoint interval: fixed (checkpoint_every steps), cpr (2·N·pls_target/λ samples,
  // docs/algorithms.md §5) or young_daly (sqrt(2·C/λ) seconds), planned after a few measured
  // steps from the assumed failure rate 1/mtbf_s and the measured throughput and checkpoint cost.
  IntervalPolicy interval = IntervalPolicy::kFixed;  // fixed | cpr | young_daly
  double mtbf_s = 3600;  // assumed job-wide mean time between failures, seconds
  // policy mfu | ssu: the rows a partial save takes (hottest / a sample of the updated ones),
  // as a fraction of each embedding table, and every full_every-th save takes whole shards.
  double row_fraction = 0.1;
  int64_t full_every = 4;
  std::string resume_from = "";
  // With resume_from: resume from the newest complete step at or before this one (0: the
  // newest). `tern submit --resume` sets it to the step the coordinator journaled as committed.
  int64_t resume_step = 0;
};

struct DebugSpec {
  // Straggler injection: slowdown[r] multiplies rank r's compute time (1 = normal).
  std::vector<double> slowdown;
  double transient_prob = 0.0;  // per step, per rank
  double transient_ms = 0.0;    // mean extra delay of a transient
  int64_t fail_rank = -1;       // fault injection: this rank exits at fail_step
  int64_t fail_step = -1;
  // debug.kill: {rank, at_step}: this rank sends itself SIGKILL at that step (a real kill -9:
  // no exit code, no flush, sockets torn down by the kernel).
  int64_t kill_rank = -1;
  int64_t kill_step = -1;
  // debug.corrupt: {rank, at_step}: at the top of that step (first generation only) this rank
  // flips one bit (a float's highest mantissa bit) of the first element of its first replicated
  // parameter: the live
  // parameter when the strategy keeps the parameters identical on every rank, else the
  // strategy's replicated copy of it (the outer model of tsu/dts/hierarchical with an outer
  // optimizer). sync.verify_every is what catches it.
  int64_t corrupt_rank = -1;
  int64_t corrupt_step = -1;
};

struct JobSpec {
  std::string name;
  int64_t workers = 1;
  DeviceKind device = DeviceKind::kCpu;               // cpu | cuda | auto
  PlacementPolicy placement = PlacementPolicy::kAny;  // any | spread | pack
  std::string log_level = "info";
  ModelSpec model;
  DataSpec data;
  TrainSpec train;
  SyncSpec sync;
  CompressSpec compress;
  StragglerSpec straggler;
  RecoverySpec recovery;
  DebugSpec debug;
};

// A validated spec plus the effective YAML document (overrides applied), which is what gets
// stored by the coordinator and handed to trainers.
struct LoadedJobSpec {
  JobSpec spec;
  std::string yaml;
};

// Loads text / a file, applies "a.b=c" overrides, validates.
Result<LoadedJobSpec> load_job_spec_text(const std::string& text, const std::string& name,
                                         const std::vector<std::string>& overrides = {});
Result<LoadedJobSpec> load_job_spec_file(const std::string& path,
                                         const std::vector<std::string>& overrides = {});

}  // namespace tern
