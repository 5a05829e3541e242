#include "trainer/workloads/dlrm/ctr_data.h"

#include <algorithm>
#include <cmath>

#include "common/splitmix.h"

namespace tern {
namespace {

uint64_t mix(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b)); }
uint64_t mix(uint64_t a, uint64_t b, uint64_t c) { return mix(mix(a, b), c); }

// A small counter-based generator: the sample's key plus a draw counter.
class Rng {
 public:
  explicit Rng(uint64_t key) : key_(key) {}
  uint64_t next() { return mix(key_, counter_++); }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {
    double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log1p(-u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

double normal_from_key(uint64_t key) { return Rng(key).normal(); }

double helper1(double x) {
  return std::abs(x) > 1e-8 ? std::log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}
double helper2(double x) {
  return std::abs(x) > 1e-8 ? std::expm1(x) / x
                            : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

uint64_t split_id(CtrSplit split) { return split == CtrSplit::kTest ? 2 : 1; }

}  // namespace

std::vector<int64_t> ctr_table_sizes(const DataSpec& spec) {
  std::vector<int64_t> sizes;
  if (!spec.table_sizes.empty()) {
    for (double v : spec.table_sizes) sizes.push_back(static_cast<int64_t>(v));
  } else {
    sizes.assign(spec.num_tables, spec.table_size);
  }
  return sizes;
}

int64_t hash_category(uint64_t value, int64_t table, int64_t size) {
  return static_cast<int64_t>(mix(value, static_cast<uint64_t>(table) + 0x51ED27ULL) %
                              static_cast<uint64_t>(size));
}

// --- Criteo ----------------------------------------------------------------------------------

MalformedOptions criteo_malformed_options(const DataSpec& spec) {
  MalformedOptions o;
  o.policy = spec.malformed == OnMalformed::kFail ? MalformedPolicy::kFail : MalformedPolicy::kSkip;
  o.max_count = spec.max_malformed;
  o.max_fraction = spec.max_malformed_fraction;
  return o;
}

Result<std::unique_ptr<CriteoReader>> CriteoReader::open(CriteoOptions options) {
  if (options.table_sizes.size() != static_cast<size_t>(kCriteoTables)) {
    return invalid_argument("criteo reader for " + options.path + ": needs " +
                            std::to_string(kCriteoTables) + " table sizes, got " +
                            std::to_string(options.table_sizes.size()));
  }
  for (int64_t size : options.table_sizes) {
    if (size < 1) {
      return invalid_argument("criteo reader for " + options.path + ": a table of " +
                              std::to_string(size) + " rows");
    }
  }
  if (options.world < 1 || options.rank < 0 || options.rank >= options.world) {
    return invalid_argument("criteo reader for " + options.path + ": bad rank " +
                            std::to_string(options.rank) + " of " + std::to_string(options.world));
  }
  if (options.chunk_bytes < 1) options.chunk_bytes = 1 << 20;
  std::unique_ptr<CriteoReader> reader(new CriteoReader(std::move(options)));
  TERN_RETURN_IF_ERROR(reader->rewind());
  return reader;
}

CriteoReader::~CriteoReader() = default;

Status CriteoReader::rewind() {
  file_.reset();
  TERN_ASSIGN_OR_RETURN(file_,
                        CriteoFile::open(options_.path, static_cast<size_t>(options_.chunk_bytes)));
  split_lines_ = position_ = 0;
  tally_.reset();
  return Status::ok();
}

Status CriteoReader::skip_to(int64_t position) {
  TERN_RETURN_IF_ERROR(rewind());
  while (position_ < position) {
    TERN_ASSIGN_OR_RETURN(Batch b, next(std::min<int64_t>(position - position_, 4096)));
    if (b.size() == 0) {
      return Status(StatusCode::kOutOfRange, options_.path + ": position " +
                                                 std::to_string(position) +
                                                 " is past the end of this rank's share (" +
                                                 std::to_string(position_) + ")");
    }
  }
  return Status::ok();
}

bool CriteoReader::in_my_share(int64_t line_number) {
  bool test = options_.holdout_every > 0 && line_number % options_.holdout_every == 0;
  bool member = options_.split == CtrSplit::kAll || (options_.split == CtrSplit::kTest) == test;
  if (!member) return false;
  return split_lines_++ % options_.world == options_.rank;
}

Result<Batch> CriteoReader::next(int64_t max_rows) {
  const int64_t tables = kCriteoTables;
  max_rows = std::max<int64_t>(max_rows, 0);
  at::Tensor x = at::zeros({max_rows, kCtrDenseFeatures}, at::kFloat);
  at::Tensor sparse = at::zeros({max_rows, tables}, at::kLong);
  at::Tensor y = at::zeros({max_rows}, at::kFloat);
  float* xp = x.data_ptr<float>();
  int64_t* sp = sparse.data_ptr<int64_t>();
  float* yp = y.data_ptr<float>();
  int64_t rows = 0;
  CriteoLineSplitter::Line line;
  CriteoRow row;
  while (rows < max_rows) {
    TERN_ASSIGN_OR_RETURN(bool got, file_->next(&line));
    if (!got) break;
    if (!in_my_share(line.number)) continue;
    CriteoLineResult r = parse_criteo_line(line, &row);
    if (!r.ok()) {
      TERN_RETURN_IF_ERROR(tally_.record(line.number, r));
      continue;
    }
    float* dense = xp + rows * kCtrDenseFeatures;
    for (int i = 0; i < kCriteoIntFields; ++i)
      dense[i] = criteo_dense_value(row.ints[i], row.int_present[i]);
    int64_t* cats = sp + rows * tables;
    for (int t = 0; t < kCriteoCatFields; ++t)
      cats[t] = hash_category(row.cats[t], t, options_.table_sizes[t]);
    yp[rows] = row.label ? 1.0f : 0.0f;
    ++rows;
  }
  position_ += rows;
  return Batch{x.narrow(0, 0, rows), sparse.narrow(0, 0, rows), y.narrow(0, 0, rows)};
}

// --- Zipf ------------------------------------------------------------------------------------

ZipfSampler::ZipfSampler(int64_t n, double alpha) : n_(n), alpha_(alpha) {
  h_integral_x1_ = h_integral(1.5) - 1.0;
  h_integral_n_ = h_integral(static_cast<double>(n) + 0.5);
  s_ = 2.0 - h_integral_inverse(h_integral(2.5) - h(2.0));
}

double ZipfSampler::h(double x) const { return std::exp(-alpha_ * std::log(x)); }

double ZipfSampler::h_integral(double x) const {
  double lx = std::log(x);
  return helper2((1.0 - alpha_) * lx) * lx;
}

double ZipfSampler::h_integral_inverse(double x) const {
  double t = x * (1.0 - alpha_);
  if (t < -1.0) t = -1.0;
  return std::exp(helper1(t) * x);
}

bool ZipfSampler::sample(double u1, int64_t* k) const {
  double u = h_integral_n_ + u1 * (h_integral_x1_ - h_integral_n_);
  double x = h_integral_inverse(u);
  int64_t kk = static_cast<int64_t>(x + 0.5);
  if (kk < 1) kk = 1;
  if (kk > n_) kk = n_;
  if (kk - x <= s_ || u >= h_integral(kk + 0.5) - h(static_cast<double>(kk))) {
    *k = kk;
    return true;
  }
  return false;
}

// --- Synthetic -------------------------------------------------------------------------------

SyntheticCtr::SyntheticCtr(SyntheticCtrOptions options) : options_(std::move(options)) {
  for (int64_t n : options_.table_sizes) zipf_.emplace_back(n, options_.zipf_alpha);
  Rng rng(mix(options_.seed, 0xD15EULL));
  for (int64_t i = 0; i < kCtrDenseFeatures; ++i) dense_w_.push_back(rng.normal());
}

void SyntheticCtr::sample(CtrSplit split, int64_t index, float* dense, int64_t* sparse,
                          float* label, double* logit) const {
  Rng rng(mix(options_.seed, split_id(split), static_cast<uint64_t>(index)));
  double z = 0;
  for (int64_t i = 0; i < kCtrDenseFeatures; ++i) {
    double v = rng.normal();
    dense[i] = static_cast<float>(v);
    z += dense_w_[i] * v;
  }
  z *= options_.dense_scale / std::sqrt(static_cast<double>(kCtrDenseFeatures));
  double cat = 0;
  const int64_t tables = static_cast<int64_t>(zipf_.size());
  for (int64_t t = 0; t < tables; ++t) {
    int64_t k = 1;
    while (!zipf_[t].sample(rng.uniform(), &k)) {
    }
    sparse[t] = k - 1;
    if (t < options_.signal_tables) {
      cat += normal_from_key(
          mix(options_.seed, 0xCA7ULL + static_cast<uint64_t>(t), static_cast<uint64_t>(k - 1)));
    }
  }
  int64_t signal = std::min(options_.signal_tables, tables);
  if (signal > 0) z += options_.category_scale * cat / std::sqrt(static_cast<double>(signal));
  z += options_.bias;
  *logit = z;
  double p = 1.0 / (1.0 + std::exp(-z));
  *label = rng.uniform() < p ? 1.0f : 0.0f;
}

Batch SyntheticCtr::batch(CtrSplit split, const std::vector<int64_t>& indices) const {
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t tables = static_cast<int64_t>(zipf_.size());
  at::Tensor x = at::empty({n, kCtrDenseFeatures}, at::kFloat);
  at::Tensor sparse = at::empty({n, tables}, at::kLong);
  at::Tensor y = at::empty({n}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) {
    double logit;
    sample(split, indices[i], x.data_ptr<float>() + i * kCtrDenseFeatures,
           sparse.data_ptr<int64_t>() + i * tables, y.data_ptr<float>() + i, &logit);
  }
  return Batch{x, sparse, y};
}

double SyntheticCtr::planted_logit(CtrSplit split, int64_t index) const {
  std::vector<float> dense(kCtrDenseFeatures);
  std::vector<int64_t> sparse(zipf_.size());
  float label;
  double logit;
  sample(split, index, dense.data(), sparse.data(), &label, &logit);
  return logit;
}

Batch SyntheticCtr::train_batch(const std::vector<int64_t>& indices) {
  return batch(CtrSplit::kTrain, indices);
}

Batch SyntheticCtr::test_batch(int64_t begin, int64_t end) {
  std::vector<int64_t> idx;
  for (int64_t i = begin; i < end; ++i) idx.push_back(i);
  return batch(CtrSplit::kTest, idx);
}

SyntheticCtrStream::SyntheticCtrStream(std::shared_ptr<const SyntheticCtr> data, CtrSplit split,
                                       int rank, int world)
    : data_(std::move(data)), split_(split), rank_(rank), world_(world) {
  int64_t total = split_ == CtrSplit::kTest ? data_->test_size() : data_->train_size();
  share_ = total > rank_ ? (total - rank_ + world_ - 1) / world_ : 0;
}

Result<Batch> SyntheticCtrStream::next(int64_t max_rows) {
  std::vector<int64_t> idx;
  for (; position_ < share_ && static_cast<int64_t>(idx.size()) < max_rows; ++position_) {
    idx.push_back(rank_ + position_ * world_);
  }
  return data_->batch(split_, idx);
}

Status SyntheticCtrStream::rewind() {
  position_ = 0;
  return Status::ok();
}

Status SyntheticCtrStream::skip_to(int64_t position) {
  if (position < 0 || position > share_) {
    return Status(StatusCode::kOutOfRange, "synthetic CTR position " + std::to_string(position) +
                                               " outside [0, " + std::to_string(share_) + "]");
  }
  position_ = position;
  return Status::ok();
}

SyntheticCtrOptions synthetic_ctr_options(const DataSpec& spec) {
  SyntheticCtrOptions o;
  o.table_sizes = ctr_table_sizes(spec);
  o.zipf_alpha = spec.zipf_alpha;
  o.train_size = spec.train_size;
  o.test_size = spec.test_size;
  o.seed = static_cast<uint64_t>(spec.seed);
  return o;
}

Result<std::unique_ptr<CtrStream>> make_ctr_stream(const DataSpec& spec, CtrSplit split, int rank,
                                                   int world) {
  std::vector<int64_t> sizes = ctr_table_sizes(spec);
  if (spec.source == DataSource::kCriteo) {
    CriteoOptions o;
    o.path = spec.path;
    o.table_sizes = sizes;
    o.rank = rank;
    o.world = world;
    o.holdout_every = spec.holdout_every;
    o.split = split;
    o.malformed = criteo_malformed_options(spec);
    o.malformed.log = false;  // scan_criteo logged the file's malformed lines once
    TERN_ASSIGN_OR_RETURN(auto reader, CriteoReader::open(o));
    return std::unique_ptr<CtrStream>(std::move(reader));
  }
  if (spec.source == DataSource::kSyntheticCtr) {
    auto data = std::make_shared<const SyntheticCtr>(synthetic_ctr_options(spec));
    return std::unique_ptr<CtrStream>(new SyntheticCtrStream(data, split, rank, world));
  }
  return invalid_argument("data.source " + name_of(spec.source) +
                          " is not CTR data (criteo | synthetic_ctr)");
}

}  // namespace tern
