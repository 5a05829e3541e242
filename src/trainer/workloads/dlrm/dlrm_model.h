// DLRM with embedding tables sharded across ranks (model parallel) and replicated MLPs (data
// parallel), after Naumov et al. 2019 ("Deep Learning Recommendation Model").
//
// Model: bottom MLP over the 13 dense features -> d (ReLU after every layer); one embedding
// table per categorical feature (d columns); the pairwise dot products of the 1 + T vectors
// (bottom output and T looked-up rows, strict upper triangle) concatenated with the bottom
// output; top MLP (ReLU between layers) -> one logit; loss BCE-with-logits, mean over the
// global batch.
//
// Sharding: table t lives only on its owner rank (round_robin: t % N; balanced: largest
// first, each to the rank with the fewest rows so far). A step exchanges, all-to-all:
//   1. the batch sizes (all_gather of one int64 per rank; batches are padded to the largest
//      and padded rows masked out of loss, gradients and access counts, so every all-to-all
//      has fixed, non-empty splits: Gloo hangs on empty buffers),
//   2. row ids: rank j sends owner r the ids of r's tables for its rows,
//   3. rows: owners look up and send the vectors back,
//   4. after backward, the gradients w.r.t. those vectors go back to the owners, which apply
//      sparse SGD (only the touched rows: W[rows] -= lr_emb * sum of their gradients).
// All-to-all rather than all_gather: each rank receives only the ids and rows it needs
// (B * T ids and B * T * d floats per step, independent of N), where an all_gather would send
// every rank all N * B * T ids and make owners return rows nobody asked them for.
// MLP gradients are averaged with a GradientReducer (DenseReducer by default).
//
// Contract: every rank calls step() (or forward_backward() then apply_embedding_update() or
// drop_step()), predict() and evaluate() the same number of times in the same order (they are
// collectives); the batch sizes may differ between ranks (0 included).
// One thread (the trainer loop). Deterministic: every parameter is initialised from
// (seed, table) / (seed, layer), so a 1-rank run equals a non-sharded model step for step,
// and N-rank runs equal it to fp rounding.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/loop/metrics.h"  // exact_auc
#include "trainer/workloads/data.h"
#include "trainer/workloads/dlrm/ctr_data.h"

namespace tern {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// How the owner of an embedding table adds its rows' DP noise (train.dp.embedding_noise; the
// third value is for tests): every row at every step, or deferred until a row is read (LazyDP)
// as one draw of the summed variance, or as the very draws eager made (lazy_exact).
enum class DpEmbeddingNoise { kEager, kLazy, kLazyExact };

struct DlrmOptions {
  std::vector<int64_t> table_sizes = std::vector<int64_t>(kCriteoTables, 1000);
  int64_t dense_features = kCtrDenseFeatures;
  int64_t embedding_dim = 16;
  std::vector<int64_t> bottom_mlp = {64, 16};  // layer widths; the last must be embedding_dim
  std::vector<int64_t> top_mlp = {64, 1};      // layer widths; the last must be 1
  EmbeddingSharding sharding = EmbeddingSharding::kRoundRobin;
  double lr = 0.1;           // plain SGD on the MLPs
  double embedding_lr = -1;  // sparse SGD on the rows; < 0: same as lr
  uint64_t seed = 1;
  int64_t bucket_bytes = 25 << 20;  // DenseReducer buckets for the MLP gradients
  // Every step, the ranks agree (one all-reduce of a flag per rank) whether each one's loss
  // and gradients are finite; when one is not, nobody updates anything (nonfinite_ranks).
  // from_spec turns it on (train.on_nonfinite decides what the loop does then).
  bool check_finite = false;
  // train.dp (privacy/dp_sgd.h): every sample's gradient (MLPs and its looked-up rows together)
  // clipped to dp_clip, Gaussian noise of std dp_noise_multiplier * dp_clip on the global sum.
  // The MLPs' noise is the caller's (the training loop adds each rank's share; step() adds it
  // itself); the owner of a table adds its rows' noise: dp_embedding_noise
  //   eager:      every row of every table at every step (one N(0, 1) draw per row and step
  //               from the stream (seed, step, table));
  //   lazy:       LazyDP: a row's noise is owed from the step it was last noised and applied,
  //               as ONE draw with the summed variance of the owed steps, when the row is next
  //               read (any lookup), and for every row at flush_noise() (checkpoints, the end):
  //                 eager:  W_{j+1}[r] = W_j[r] - lr_j (G_j[r] + sigma C z_j[r]) / B_j, every r, j
  //                 lazy:   at a read of r at step s, owed since a = noised_until[r]:
  //                         W[r] -= sqrt(sum_{j=a}^{s-1} (lr_j sigma C / B_j)^2) * z,  z ~ N(0, I)
  //               equal in distribution (plain SGD on the rows: no momentum, no weight decay,
  //               which is what the rows get; the schedule's lr_j is in the variances);
  //   lazy_exact: the bookkeeping of lazy, but a row's owed noise is the sum of the very draws
  //               eager would have added (the same stream, the same coefficients): the same
  //               parameters as eager to float rounding, which the tests check. O(table) per
  //               owed step: for tests.
  bool dp = false;
  double dp_clip = 1.0;
  double dp_noise_multiplier = 1.0;
  DpEmbeddingNoise dp_embedding_noise = DpEmbeddingNoise::kLazy;
  // The bytes this rank's embedding tables may take; 0: what the machine has available
  // (MemAvailable, the cgroup limit, RLIMIT_AS). create() refuses tables that do not fit.
  int64_t memory_limit_bytes = 0;

  // model.*, data.table_sizes / num_tables x table_size, train.lr / seed, sync.bucket_mb.
  static Result<DlrmOptions> from_spec(const JobSpec& spec);
  Status validate() const;
};

// owner[t] = the rank holding table t. Deterministic; every rank owns at least one table
// (an error when tables < world).
Result<std::vector<int>> shard_tables(const std::vector<int64_t>& table_sizes, int world,
                                      EmbeddingSharding policy);

struct DlrmStepStats {
  double loss = 0;             // mean BCE over this rank's rows (0 when it had none)
  int64_t samples = 0;         // this rank's rows
  int64_t global_samples = 0;  // all ranks' rows in this step
  // check_finite: the ranks whose loss or gradients were not finite (the same list on every
  // rank). Non-empty: the step updated nothing anywhere.
  std::vector<int> nonfinite_ranks;
  bool finite = true;  // this rank's loss and gradients (forward_backward)
};

// Bytes of memory this process can still use: MemAvailable, bounded by its cgroup's
// memory.max and RLIMIT_AS when those are set. 0 when unknown.
int64_t available_memory_bytes();

struct DlrmMetrics {
  double logloss = 0;   // mean BCE over every rank's samples
  double auc = 0.5;     // exact, over every rank's samples
  double accuracy = 0;  // logit > 0 predicts a click
  int64_t samples = 0;
};

// The sharded DLRM of one rank: its embedding tables, the replicated MLPs and the
// collectives that connect them. step() is the model's own plain-SSGD step (tests, the
// reference); the training loop (workloads/dlrm/dlrm_workload.h) drives the parts instead.
class DlrmModel {
 public:
  // `comm` is borrowed and must outlive the trainer; `reducer` (optional, borrowed) averages
  // the MLP gradients, a DenseReducer over `comm` by default.
  static Result<std::unique_ptr<DlrmModel>> create(const DlrmOptions& options, Communicator& comm,
                                                   GradientReducer* reducer = nullptr);
  ~DlrmModel();

  // One SGD step on this rank's batch (x [b,13] float, sparse [b,T] int64 rows, y [b] float):
  // forward_backward() (embedding rows updated on their owners), then the MLP gradients
  // averaged by the reducer and applied. Collective.
  Result<DlrmStepStats> step(const Batch& batch);

  // The parts of step() for the training loop, which runs its own sync strategy on the MLPs:
  // forward_backward() looks up the rows (all-to-all) and runs backward; dense_grads() then
  // holds this rank's MLP gradients scaled so that their average over ranks is the
  // global-batch gradient; apply_embedding_update() sends the row gradients to their owners
  // (all-to-all), which apply sparse SGD, and drop_step() forgets them instead (a rank's step
  // was not finite). Every rank calls one of the two after each forward_backward().
  // `weights` (optional, [b] double): per-sample loss weights as the straggler plans give them
  // (the loss is sum(w_i * l_i), the reducer then averages); none: the mean over the global
  // batch. stats.finite is this rank's own check (no agreement).
  Result<DlrmStepStats> forward_backward(const Batch& batch,
                                         const std::vector<double>& weights = {});
  std::vector<at::Tensor> dense_grads() const;
  Status apply_embedding_update();
  void drop_step();
  // params -= lr * grads (one per dense_parameters() entry).
  void apply_dense(const std::vector<at::Tensor>& grads);
  void set_lr(double lr, double embedding_lr = -1);
  // The training step the next forward_backward() is (the noise stream's and LazyDP's step
  // index; otherwise counted from 0 by the updates).
  void set_step(int64_t step);

  // --- LazyDP (options.dp with dp_embedding_noise lazy / lazy_exact) ----------------------
  // Applies every owned row's owed noise: afterwards each table is what eager DP-SGD would
  // hold. Local (no collective). Returns the rows noised. No-op otherwise.
  int64_t flush_noise();
  // Per owned table: the step each row is noised until (int64 [rows]: the row holds the noise
  // of every step before it). Undefined tensor unless lazy.
  at::Tensor noised_until(int64_t table) const;
  // After this rank's shard was rebuilt from checkpoints at `step`: every row counts as noised
  // until `step` (saves are flushed; steps whose updates were lost with a shard take their
  // noise with them) and the owed-variance record restarts there.
  void reset_noise_bookkeeping(int64_t step);
  // Rows noised eagerly or flushed lazily so far (for the summary and the benchmark).
  int64_t noised_rows() const;

  // Logits [b] for this rank's batch (no updates, no access counting). Collective.
  Result<at::Tensor> predict(const Batch& batch);
  // Runs `stream` to its end on every rank (ranks with less data keep joining with empty
  // batches), then reduces: logloss and accuracy by all_reduce of sums, AUC exactly by
  // all_gather of every (score, label) pair. Collective; does not rewind the stream.
  Result<DlrmMetrics> evaluate(CtrStream& stream, int64_t batch_size);

  // --- state, for checkpoints and partial recovery --------------------------------------
  int rank() const;
  int world() const;
  const std::vector<int>& owners() const { return owners_; }
  std::vector<int64_t> owned_tables() const { return owned_; }
  // The live weight [rows, d] of an owned table (not a copy: clone before writing it out
  // asynchronously). Undefined tensor when this rank does not own `table`.
  at::Tensor table(int64_t table) const;
  // Training lookups per row of an owned table (int64 [rows]), for CPR-MFU.
  at::Tensor access_counts(int64_t table) const;
  // Row ids (int64, ascending) of an owned table updated since the last mark_updates(), for
  // CPR-SSU; mark_updates() starts a new interval (call it when a checkpoint is taken).
  at::Tensor updated_rows(int64_t table) const;
  void mark_updates();

  // This rank's sharded state: "embedding.<t>.weight" and "embedding.<t>.access_count" for
  // every owned table t. Live tensors (clone to snapshot).
  NamedTensors sharded_state() const;
  // Restores owned tables from `state` (names as above; every owned weight must be present
  // with its shape; access counts optional). Entries of tables this rank does not own are
  // errors, so a wrong shard is never loaded silently.
  Status load_sharded_state(const NamedTensors& state);
  // Overwrites rows `rows` (int64 [k]) of an owned table with `values` [k, d] (a partial,
  // MFU/SSU checkpoint).
  Status load_rows(int64_t table, const at::Tensor& rows, const at::Tensor& values);

  // Replicated state: the MLP parameters, "bottom.<i>.weight|bias", "top.<i>.weight|bias".
  NamedTensors replicated_state() const;
  Status load_replicated_state(const NamedTensors& state);
  std::vector<at::Tensor> dense_parameters() const;
  // Copies the MLPs from `root` to every rank (a newcomer after a regroup). Collective.
  Status broadcast_replicated(int root);

 private:
  struct Impl;
  explicit DlrmModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::vector<int> owners_;
  std::vector<int64_t> owned_;
};

}  // namespace tern
