// CTR (click-through-rate) data for the DLRM: a streaming reader for the Criteo Kaggle TSV
// format and a synthetic generator with Zipf-distributed categories and a planted signal.
//
// Both produce tern::Batch with x = float32 [B, 13] dense features, sparse = int64 [B, T]
// row ids already hashed into each table's size, y = float32 [B] click labels (0 or 1).
// Each rank reads only its own interleaved share. Not thread-safe: one reader per thread.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/workloads/data.h"
#include "trainer/workloads/dlrm/criteo_format.h"

namespace tern {

constexpr int64_t kCtrDenseFeatures = kCriteoIntFields;
constexpr int64_t kCriteoTables = kCriteoCatFields;

// Table sizes from a job spec: data.table_sizes, or num_tables x table_size.
std::vector<int64_t> ctr_table_sizes(const DataSpec& spec);

// Row of category value `value` in table `table` of `size` rows (a 64-bit mix, then modulo).
int64_t hash_category(uint64_t value, int64_t table, int64_t size);

// A pass over this rank's share of a CTR data set, batch by batch.
class CtrStream {
 public:
  virtual ~CtrStream() = default;
  // Up to `max_rows` samples; a batch of size 0 at the end of the pass.
  virtual Result<Batch> next(int64_t max_rows) = 0;
  // Back to the start (the next epoch).
  virtual Status rewind() = 0;
  // Samples of this rank's share returned since the last rewind (the data position a
  // checkpoint saves; skip_to() restores it).
  virtual int64_t position() const = 0;
  virtual Status skip_to(int64_t position) = 0;
};

// --- Criteo Kaggle TSV -----------------------------------------------------------------------

enum class CtrSplit { kAll, kTrain, kTest };

struct CriteoOptions {
  std::string path;                  // TSV, plain or gzip (zlib reads both)
  std::vector<int64_t> table_sizes;  // 26 entries
  int rank = 0;
  int world = 1;
  // Every holdout_every-th line (1-based line numbers divisible by it) is the test split;
  // the rest is the train split. 0: no hold-out (kTrain = kAll, kTest is empty).
  int64_t holdout_every = 0;
  CtrSplit split = CtrSplit::kAll;
  // Malformed lines of this reader's share (criteo_format.h lists the defects) are skipped and
  // counted, or refused (DATA_LOSS naming file:line) as the policy says. The whole-file rules
  // (no valid line at all, too large a malformed fraction) are scan_criteo's: a rank's share
  // of a small file may hold no valid line while the file does.
  MalformedOptions malformed;
  int64_t chunk_bytes = 1 << 20;  // read size: the file is streamed, never loaded whole
};

// The malformed-line policy of data.malformed, data.max_malformed, data.max_malformed_fraction.
MalformedOptions criteo_malformed_options(const DataSpec& spec);

// Streams a Criteo TSV (criteo_format.h: the format, CRLF, a missing final newline, the
// defects of a malformed line). Integers go through log(1 + max(x, 0)) (missing = 0: the DLRM
// reference's transform, negative counts clamp to 0); categories are hex values hashed into
// their table (missing = kCriteoMissingCategory, hashed like any other value). Lines of the
// chosen split are dealt round-robin to ranks: the split's k-th line (well-formed or not) goes
// to rank k % world, so shares never depend on what a line holds.
class CriteoReader : public CtrStream {
 public:
  static Result<std::unique_ptr<CriteoReader>> open(CriteoOptions options);
  ~CriteoReader() override;

  Result<Batch> next(int64_t max_rows) override;
  Status rewind() override;
  int64_t position() const override { return position_; }
  Status skip_to(int64_t position) override;

  // Malformed lines of this rank's share skipped in this pass, by defect, and the first few
  // messages ("train.tsv:12: ...").
  int64_t bad_lines() const { return tally_.count(); }
  int64_t bad_lines(CriteoDefect defect) const { return tally_.count(defect); }
  const std::vector<std::string>& bad_line_messages() const { return tally_.messages(); }

 private:
  explicit CriteoReader(CriteoOptions options)
      : options_(std::move(options)), tally_(options_.path, options_.malformed) {}
  bool in_my_share(int64_t line_number);

  CriteoOptions options_;
  std::unique_ptr<CriteoFile> file_;
  int64_t split_lines_ = 0;  // lines of the chosen split seen
  int64_t position_ = 0;     // samples returned to the caller
  MalformedTally tally_;     // this pass
};

// --- Synthetic CTR ---------------------------------------------------------------------------

struct SyntheticCtrOptions {
  std::vector<int64_t> table_sizes = std::vector<int64_t>(kCriteoTables, 1000);
  double zipf_alpha = 1.1;  // P(rank k) ~ k^-alpha; 0 = uniform
  int64_t train_size = 1 << 16;
  int64_t test_size = 1 << 14;
  uint64_t seed = 1234;
  // The planted logistic model: logit = dense_scale * w.x / sqrt(13)
  //   + category_scale * sum over the first signal_tables tables of u_t[row_t] + bias,
  // with w, u ~ N(0, 1) drawn from the seed.
  int64_t signal_tables = 4;
  double dense_scale = 1.5;
  double category_scale = 1.0;
  double bias = -0.5;
};

// Rank k (1..n) of a Zipf distribution by rejection-inversion (Hörmann & Derflinger 1996):
// O(1) memory, so tables of any size.
class ZipfSampler {
 public:
  ZipfSampler(int64_t n, double alpha);
  // `u1`, `u2` uniform in [0, 1); returns false when the draw is rejected (try again).
  bool sample(double u1, int64_t* k) const;
  int64_t n() const { return n_; }

 private:
  double h(double x) const;
  double h_integral(double x) const;
  double h_integral_inverse(double x) const;
  int64_t n_;
  double alpha_, h_integral_x1_, h_integral_n_, s_;
};

// Every sample is a pure function of (seed, split, index), so any rank can produce any
// sample: random access for the trainer's sampler, and a stream over a rank's share. Rows are
// Zipf ranks minus one (row 0 is the hottest). Dense features ~ N(0, 1); label ~
// Bernoulli(sigmoid(planted logit)).
class SyntheticCtr : public TrainingData {
 public:
  explicit SyntheticCtr(SyntheticCtrOptions options);
  int64_t train_size() const override { return options_.train_size; }
  int64_t test_size() const override { return options_.test_size; }
  Batch train_batch(const std::vector<int64_t>& indices) override;
  Batch test_batch(int64_t begin, int64_t end) override;

  Batch batch(CtrSplit split, const std::vector<int64_t>& indices) const;
  // The planted logit of sample `index` (for tests: the Bayes-optimal score).
  double planted_logit(CtrSplit split, int64_t index) const;
  const SyntheticCtrOptions& options() const { return options_; }

 private:
  void sample(CtrSplit split, int64_t index, float* dense, int64_t* sparse, float* label,
              double* logit) const;
  SyntheticCtrOptions options_;
  std::vector<ZipfSampler> zipf_;
  std::vector<double> dense_w_;
};

// A rank's interleaved share of one split of a SyntheticCtr (indices rank, rank + world, ...).
class SyntheticCtrStream : public CtrStream {
 public:
  SyntheticCtrStream(std::shared_ptr<const SyntheticCtr> data, CtrSplit split, int rank, int world);
  Result<Batch> next(int64_t max_rows) override;
  Status rewind() override;
  int64_t position() const override { return position_; }
  Status skip_to(int64_t position) override;

 private:
  std::shared_ptr<const SyntheticCtr> data_;
  CtrSplit split_;
  int rank_, world_;
  int64_t position_ = 0;
  int64_t share_;  // samples in this rank's share
};

// The SyntheticCtr of data.source synthetic_ctr.
SyntheticCtrOptions synthetic_ctr_options(const DataSpec& spec);

// A stream for data.source criteo | synthetic_ctr of `spec`, this rank's share of `split`.
Result<std::unique_ptr<CtrStream>> make_ctr_stream(const DataSpec& spec, CtrSplit split, int rank,
                                                   int world);

}  // namespace tern
