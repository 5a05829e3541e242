#include "trainer/workloads/dlrm/dlrm_model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

#include "privacy/dp_sgd.h"
#include "trainer/loop/metrics.h"
#include "trainer/loop/nonfinite.h"

namespace tern {
namespace {

uint64_t seed_for(uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL);
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::vector<int64_t> to_widths(const std::vector<double>& v) {
  std::vector<int64_t> out;
  for (double x : v) out.push_back(static_cast<int64_t>(x));
  return out;
}

// One MLP as plain parameter tensors (weight [out, in], bias [out]).
struct DenseStack {
  std::vector<at::Tensor> weights, biases;

  // PyTorch's nn.Linear default init (uniform +-1/sqrt(fan_in)) from a seeded generator.
  void init(int64_t in, const std::vector<int64_t>& widths, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    for (int64_t out : widths) {
      double k = 1.0 / std::sqrt(static_cast<double>(in));
      weights.push_back(at::empty({out, in}, at::kFloat).uniform_(-k, k, gen).requires_grad_(true));
      biases.push_back(at::empty({out}, at::kFloat).uniform_(-k, k, gen).requires_grad_(true));
      in = out;
    }
  }
  // ReLU after every layer but (when last_linear) the last. `trace` (train.dp): every layer's
  // input and output (its gradient retained) for per-sample gradients.
  at::Tensor forward(at::Tensor x, bool last_linear,
                     std::vector<LinearTrace>* trace = nullptr) const {
    for (size_t i = 0; i < weights.size(); ++i) {
      at::Tensor in = x;
      x = torch::linear(x, weights[i], biases[i]);
      if (trace) {
        x.retain_grad();
        trace->push_back({in.detach(), x, weights[i], biases[i]});
      }
      if (!(last_linear && i + 1 == weights.size())) x = torch::relu(x);
    }
    return x;
  }
  void append_params(std::vector<at::Tensor>* out) const {
    for (size_t i = 0; i < weights.size(); ++i) {
      out->push_back(weights[i]);
      out->push_back(biases[i]);
    }
  }
  void append_named(const std::string& prefix, NamedTensors* out) const {
    for (size_t i = 0; i < weights.size(); ++i) {
      out->emplace_back(prefix + "." + std::to_string(i) + ".weight", weights[i]);
      out->emplace_back(prefix + "." + std::to_string(i) + ".bias", biases[i]);
    }
  }
};

Status wait(Communicator& comm, const WorkPtr& work, const char* what) {
  Status s = work->wait(comm.timeout());
  if (!s.is_ok()) return s.with_context(std::string("dlrm ") + what);
  return s;
}

// all_to_all that skips the collective in a world of one.
Status all_to_all(Communicator& comm, at::Tensor& out, at::Tensor& in,
                  const std::vector<int64_t>& out_splits, const std::vector<int64_t>& in_splits,
                  const char* what) {
  if (comm.size() == 1) {
    out.copy_(in);
    return Status::ok();
  }
  return wait(comm, comm.all_to_all(out, in, out_splits, in_splits), what);
}

std::string table_name(int64_t t) { return "embedding." + std::to_string(t); }

// The noise streams' `rank` slot (privacy/dp_gaussian): eager's per-step table draws and
// LazyDP's aggregated draws; the MLPs' streams use the job rank (>= 0).
constexpr int64_t kEagerNoiseStream = -1;
constexpr int64_t kLazyNoiseStream = -2;

}  // namespace

// --- options, sharding, AUC ------------------------------------------------------------------

Result<DlrmOptions> DlrmOptions::from_spec(const JobSpec& spec) {
  DlrmOptions o;
  o.table_sizes = ctr_table_sizes(spec.data);
  o.embedding_dim = spec.model.embedding_dim;
  o.bottom_mlp = to_widths(spec.model.bottom_mlp);
  o.top_mlp = to_widths(spec.model.top_mlp);
  o.sharding = spec.model.sharding;
  o.lr = spec.train.lr;
  o.seed = static_cast<uint64_t>(spec.train.seed);
  o.bucket_bytes = static_cast<int64_t>(spec.sync.bucket_mb * (1 << 20));
  o.check_finite = true;
  o.dp = spec.train.dp.enabled;
  o.dp_clip = spec.train.dp.clip;
  o.dp_noise_multiplier = spec.train.dp.noise_multiplier;
  o.dp_embedding_noise = spec.train.dp.embedding_noise == EmbeddingNoise::kEager
                             ? DpEmbeddingNoise::kEager
                             : DpEmbeddingNoise::kLazy;
  TERN_RETURN_IF_ERROR(o.validate());
  return o;
}

int64_t available_memory_bytes() {
  int64_t avail = 0;
  {
    std::ifstream in("/proc/meminfo");
    std::string key;
    int64_t kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit) {
      if (key == "MemAvailable:") {
        avail = kb * 1024;
        break;
      }
    }
  }
  auto bound = [&](int64_t limit) {
    if (limit > 0 && (avail == 0 || limit < avail)) avail = limit;
  };
  {
    std::ifstream in("/sys/fs/cgroup/memory.max");  // cgroup v2; "max" when unlimited
    std::string v;
    if (in >> v && v != "max") {
      int64_t limit = std::atoll(v.c_str());
      int64_t used = 0;
      std::ifstream cur("/sys/fs/cgroup/memory.current");
      cur >> used;
      bound(limit > used ? limit - used : 1);
    }
  }
  struct rlimit rl {};
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    bound(static_cast<int64_t>(rl.rlim_cur));
  }
  return avail;
}

Status DlrmOptions::validate() const {
  if (table_sizes.empty()) return invalid_argument("dlrm: no embedding tables (data.num_tables)");
  for (size_t t = 0; t < table_sizes.size(); ++t) {
    if (table_sizes[t] < 1) {
      return invalid_argument("dlrm: data.table_sizes[" + std::to_string(t) +
                              "] must be >= 1, got " + std::to_string(table_sizes[t]));
    }
  }
  if (embedding_dim < 1) return invalid_argument("dlrm: model.embedding_dim must be >= 1");
  if (bottom_mlp.empty() || bottom_mlp.back() != embedding_dim) {
    return invalid_argument("dlrm: model.bottom_mlp must end in embedding_dim (" +
                            std::to_string(embedding_dim) + ")");
  }
  if (top_mlp.empty() || top_mlp.back() != 1)
    return invalid_argument("dlrm: model.top_mlp must end in 1");
  if (dp && !(dp_clip > 0 && dp_noise_multiplier > 0))
    return invalid_argument("dlrm: dp needs clip > 0 and noise_multiplier > 0");
  return Status::ok();
}

Result<std::vector<int>> shard_tables(const std::vector<int64_t>& sizes, int world,
                                      EmbeddingSharding policy) {
  const int64_t tables = static_cast<int64_t>(sizes.size());
  if (tables < world) {
    return invalid_argument("dlrm: " + std::to_string(tables) +
                            " embedding tables cannot be sharded over " + std::to_string(world) +
                            " ranks (every rank owns at least one)");
  }
  std::vector<int> owner(tables);
  if (policy == EmbeddingSharding::kRoundRobin) {
    for (int64_t t = 0; t < tables; ++t) owner[t] = static_cast<int>(t % world);
    return owner;
  }
  // Largest first (ties by table id) to the rank with the fewest rows (ties by fewest tables,
  // then lowest rank); the first `world` tables go one per rank so nobody is left empty.
  std::vector<int64_t> order(tables);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return sizes[a] > sizes[b]; });
  std::vector<int64_t> rows(world, 0), count(world, 0);
  for (int64_t i = 0; i < tables; ++i) {
    int best = 0;
    for (int r = 1; r < world; ++r) {
      if (count[best] > 0 && (count[r] == 0 || rows[r] < rows[best] ||
                              (rows[r] == rows[best] && count[r] < count[best]))) {
        best = r;
      }
    }
    owner[order[i]] = best;
    rows[best] += sizes[order[i]];
    ++count[best];
  }
  return owner;
}

// --- the trainer -----------------------------------------------------------------------------

struct DlrmModel::Impl {
  DlrmOptions options;
  Communicator& comm;
  std::unique_ptr<GradientReducer> own_reducer;
  GradientReducer* reducer = nullptr;
  int rank = 0, world = 1;
  int64_t tables = 0, dim = 0;
  std::vector<int> owner;
  std::vector<std::vector<int64_t>> owned_by;  // per rank, ascending table ids
  at::Tensor owner_order;                      // table ids grouped by owner (concat of owned_by)
  at::Tensor table_order;                      // inverse permutation of owner_order
  std::vector<at::Tensor> owned_cols;          // per rank: its table ids as a tensor
  std::map<int64_t, int64_t> local;            // table id -> position in weights
  std::vector<at::Tensor> weights, counts, dirty;
  DenseStack bottom, top;
  at::Tensor tri;  // flat indices of the strict upper triangle of (1+T) x (1+T)
  int64_t step_count = 0;

  // train.dp. coef[j - noise_base]: the std of step j's noise on a row, lr_j * sigma * C / B_j
  // (0 for a step that updated nothing); cum[i] = sum of coef[< i]^2, so a row owed steps
  // [a, s) is owed a Gaussian of variance cum(s) - cum(a). noised_until[k] (lazy): per row of
  // owned table k, the first step whose noise it does not hold yet.
  std::vector<LinearTrace>* trace = nullptr;  // set around a traced forward
  std::vector<double> coef, cum{0.0};
  int64_t noise_base = 0;
  int64_t pending_reset = -2;  // >= -1: reset_noise_bookkeeping() waiting for set_step() (-1)
  std::vector<at::Tensor> noised_until;
  int64_t noised_rows = 0;
  int64_t flush_step = -1, flush_seq = 0;  // distinct LazyDP draws within one step

  bool lazy() const { return options.dp && options.dp_embedding_noise != DpEmbeddingNoise::kEager; }
  double emb_lr() const { return options.embedding_lr < 0 ? options.lr : options.embedding_lr; }
  void record_noise(int64_t step, double c) {
    if (step < noise_base) return;
    const size_t at = static_cast<size_t>(step - noise_base);
    if (at < coef.size()) {  // a step done again (after a regroup): its record is replaced
      coef.resize(at);
      cum.resize(at + 1);
    }
    while (coef.size() < at) {
      coef.push_back(0.0);
      cum.push_back(cum.back());
    }
    coef.push_back(c);
    cum.push_back(cum.back() + c * c);
  }
  double coef_at(int64_t j) const {
    const int64_t i = j - noise_base;
    return i >= 0 && i < static_cast<int64_t>(coef.size()) ? coef[static_cast<size_t>(i)] : 0.0;
  }
  // Applies rows' owed noise up to (not including) step s; `rows` unique ids of owned table k.
  void flush_rows(size_t k, at::Tensor rows, int64_t s);

  Impl(DlrmOptions o, Communicator& c) : options(std::move(o)), comm(c) {}

  // What one forward pass leaves for backward.
  struct Forward {
    std::vector<int64_t> sizes;  // rows per rank
    int64_t padded = 0;          // B: every rank's batch padded to the largest
    at::Tensor ids;              // owner side: [N, T_me, B] row ids this rank looked up
    at::Tensor emb;              // [B, T, d] leaf (requires grad when training)
    at::Tensor logits;           // [B]
  };

  std::unique_ptr<Forward> pending;  // forward_backward() -> apply_embedding_update() / drop_step()

  Result<Forward> forward(const Batch& batch, bool train);
  Status backward_embeddings(const Forward& f);
};

Result<DlrmModel::Impl::Forward> DlrmModel::Impl::forward(const Batch& batch, bool train) {
  Forward f;
  const int64_t b = batch.y.defined() ? batch.y.size(0) : 0;
  if (b > 0 &&
      (batch.x.dim() != 2 || batch.x.size(0) != b || batch.x.size(1) != options.dense_features ||
       batch.sparse.dim() != 2 || batch.sparse.size(0) != b || batch.sparse.size(1) != tables)) {
    return invalid_argument("dlrm: batch must have x [b, " +
                            std::to_string(options.dense_features) + "], sparse [b, " +
                            std::to_string(tables) + "], y [b]");
  }
  // 1. batch sizes.
  at::Tensor mine = at::full({1}, b, at::kLong);
  std::vector<at::Tensor> all(world);
  for (auto& t : all) t = at::empty({1}, at::kLong);
  if (world == 1) {
    all[0] = mine;
  } else {
    TERN_RETURN_IF_ERROR(wait(comm, comm.all_gather(all, mine), "batch sizes"));
  }
  for (auto& t : all) f.sizes.push_back(t.item<int64_t>());
  f.padded = *std::max_element(f.sizes.begin(), f.sizes.end());
  const int64_t B = f.padded;
  if (B == 0) return f;

  at::Tensor x = at::zeros({B, options.dense_features}, at::kFloat);
  at::Tensor ids = at::zeros({B, tables}, at::kLong);
  if (b > 0) {
    x.narrow(0, 0, b).copy_(batch.x);
    ids.narrow(0, 0, b).copy_(batch.sparse);
    // Range check here, where the bad batch is, not on the owner.
    for (int64_t t = 0; t < tables; ++t) {
      at::Tensor col = batch.sparse.select(1, t);
      int64_t lo = col.min().item<int64_t>(), hi = col.max().item<int64_t>();
      if (lo < 0 || hi >= options.table_sizes[t]) {
        return invalid_argument("dlrm: batch row id of table " + std::to_string(t) +
                                " outside [0, " + std::to_string(options.table_sizes[t]) +
                                "): " + std::to_string(lo < 0 ? lo : hi));
      }
    }
  }

  // 2. ids to owners: rank r gets [T_r, B] (its tables, table-major) from every rank.
  const int64_t t_me = static_cast<int64_t>(owned_by[rank].size());
  std::vector<at::Tensor> blocks;
  std::vector<int64_t> in_splits, out_splits;
  for (int r = 0; r < world; ++r) {
    blocks.push_back(ids.index_select(1, owned_cols[r]).t().reshape({-1}));
    in_splits.push_back(B * static_cast<int64_t>(owned_by[r].size()));
    out_splits.push_back(B * t_me);
  }
  at::Tensor send_ids = at::cat(blocks);
  f.ids = at::empty({world * B * t_me}, at::kLong);
  TERN_RETURN_IF_ERROR(all_to_all(comm, f.ids, send_ids, out_splits, in_splits, "row ids"));
  f.ids = f.ids.view({world, t_me, B});
  if (lazy()) {
    // LazyDP: the rows about to be read take their owed noise first.
    torch::NoGradGuard no_grad;
    for (int64_t k = 0; k < t_me; ++k) {
      flush_rows(static_cast<size_t>(k),
                 std::get<0>(at::_unique2(f.ids.select(1, k).reshape({-1}), true)), step_count);
    }
  }

  // 3. rows back: owner sends rank j [T_me, B, d].
  std::vector<at::Tensor> looked;
  for (int64_t k = 0; k < t_me; ++k) {
    looked.push_back(
        weights[k].index_select(0, f.ids.select(1, k).reshape({-1})).view({world, B, dim}));
  }
  at::Tensor send_rows = at::stack(looked, 1).reshape({world * t_me * B, dim});  // [N, T_me, B, d]
  at::Tensor recv_rows = at::empty({tables * B, dim}, at::kFloat);
  std::vector<int64_t> row_in, row_out;
  for (int r = 0; r < world; ++r) {
    row_in.push_back(t_me * B);
    row_out.push_back(static_cast<int64_t>(owned_by[r].size()) * B);
  }
  TERN_RETURN_IF_ERROR(all_to_all(comm, recv_rows, send_rows, row_out, row_in, "embedding rows"));
  // Owner order -> table order, then [B, T, d].
  at::Tensor emb =
      recv_rows.view({tables, B, dim}).index_select(0, table_order).permute({1, 0, 2}).contiguous();
  f.emb = emb.set_requires_grad(train);

  // Dense part.
  at::Tensor z = bottom.forward(x, /*last_linear=*/false, trace);  // [B, d]
  at::Tensor all_vec = torch::cat({z.unsqueeze(1), f.emb}, 1);     // [B, 1+T, d]
  at::Tensor dots = torch::bmm(all_vec, all_vec.transpose(1, 2)).view({B, -1});
  at::Tensor inter = dots.index_select(1, tri);  // [B, (1+T)T/2]
  f.logits = top.forward(torch::cat({z, inter}, 1), /*last_linear=*/true, trace).view({B});
  return f;
}

Status DlrmModel::Impl::backward_embeddings(const Forward& f) {
  const int64_t B = f.padded;
  const int64_t t_me = static_cast<int64_t>(owned_by[rank].size());
  // Gradients w.r.t. the looked-up rows, table order -> owner order: [T, B, d].
  at::Tensor grad = f.emb.grad().defined() ? f.emb.grad() : at::zeros_like(f.emb);
  at::Tensor g =
      grad.permute({1, 0, 2}).index_select(0, owner_order).contiguous().view({tables * B, dim});
  at::Tensor recv = at::empty({world * t_me * B, dim}, at::kFloat);
  std::vector<int64_t> in_splits, out_splits;
  for (int r = 0; r < world; ++r) {
    in_splits.push_back(static_cast<int64_t>(owned_by[r].size()) * B);
    out_splits.push_back(t_me * B);
  }
  TERN_RETURN_IF_ERROR(all_to_all(comm, recv, g, out_splits, in_splits, "embedding gradients"));
  recv = recv.view({world, t_me, B, dim});

  // Rows of padding (rank j's rows >= sizes[j]) are dropped.
  at::Tensor valid = at::arange(B, at::kLong).unsqueeze(0) <
                     at::tensor(f.sizes, at::kLong).unsqueeze(1);  // [N, B]
  at::Tensor flat_valid = valid.reshape({-1}).nonzero().view({-1});
  const double lr = options.embedding_lr < 0 ? options.lr : options.embedding_lr;
  for (int64_t k = 0; k < t_me; ++k) {
    at::Tensor rows = f.ids.select(1, k).reshape({-1}).index_select(0, flat_valid);  // [M]
    at::Tensor grads =
        recv.select(1, k).reshape({world * B, dim}).index_select(0, flat_valid);  // [M, d]
    // Sum the gradients of repeated rows in batch order (as dense embedding backward
    // does), then one update per touched row.
    at::Tensor uniq, inverse;
    std::tie(uniq, inverse, std::ignore) =
        at::_unique2(rows, /*sorted=*/true, /*return_inverse=*/true);
    at::Tensor summed = at::zeros({uniq.size(0), dim}, at::kFloat).index_add_(0, inverse, grads);
    at::Tensor updated = weights[k].index_select(0, uniq).sub_(summed, lr);
    weights[k].index_copy_(0, uniq, updated);
    counts[k].index_add_(0, rows, at::ones_like(rows));
    dirty[k].index_fill_(0, uniq, true);
  }
  if (options.dp) {
    // The step's noise on every row of the owned tables: lr * N(0, (sigma C)^2) / B. Eager adds
    // it now; LazyDP records what each row is owed.
    const int64_t global = std::accumulate(f.sizes.begin(), f.sizes.end(), int64_t{0});
    const double c = lr * options.dp_noise_multiplier * options.dp_clip /
                     static_cast<double>(std::max<int64_t>(global, 1));
    record_noise(step_count, c);
    if (!lazy()) {
      for (int64_t k = 0; k < t_me; ++k) {
        const int64_t t = owned_by[rank][static_cast<size_t>(k)];
        weights[k].add_(
            dp_gaussian(weights[k].sizes(), options.seed, step_count, kEagerNoiseStream, t), -c);
        noised_rows += weights[k].size(0);
      }
    }
  }
  return Status::ok();
}

void DlrmModel::Impl::flush_rows(size_t k, at::Tensor rows, int64_t s) {
  at::Tensor last = noised_until[k].index_select(0, rows);
  at::Tensor owed = last < s;
  rows = rows.masked_select(owed);
  if (rows.numel() == 0) return;
  last = last.masked_select(owed);
  const int64_t t = owned_by[rank][k];
  if (options.dp_embedding_noise == DpEmbeddingNoise::kLazyExact) {
    // The very draws eager added, step by step, on the owed rows only.
    const int64_t lo = std::max(last.min().item<int64_t>(), noise_base);
    for (int64_t j = lo; j < s; ++j) {
      const double c = coef_at(j);
      if (c == 0) continue;
      at::Tensor sel = rows.masked_select(last <= j);
      at::Tensor z = dp_gaussian(weights[k].sizes(), options.seed, j, kEagerNoiseStream, t)
                         .index_select(0, sel);
      weights[k].index_add_(0, sel, z, -c);
    }
  } else {
    // One draw per row with the owed variance cum(s) - cum(last): the sum of the owed steps'
    // independent Gaussians has exactly that distribution.
    const int64_t n = static_cast<int64_t>(cum.size());
    at::Tensor cumt = at::from_blob(cum.data(), {n}, at::kDouble);
    const double cum_s = cum[static_cast<size_t>(std::clamp<int64_t>(s - noise_base, 0, n - 1))];
    at::Tensor var = cum_s - cumt.index_select(0, (last - noise_base).clamp(0, n - 1));
    at::Tensor sd = var.clamp_min(0).sqrt().to(at::kFloat).unsqueeze(1);
    if (flush_step != s) flush_step = s, flush_seq = 0;
    const int64_t stream = t + tables * flush_seq++;
    at::Tensor z = dp_gaussian({rows.numel(), dim}, options.seed, s, kLazyNoiseStream, stream);
    weights[k].index_add_(0, rows, z * sd, -1.0);
  }
  noised_until[k].index_fill_(0, rows, s);
  noised_rows += rows.numel();
}

Result<std::unique_ptr<DlrmModel>> DlrmModel::create(const DlrmOptions& options, Communicator& comm,
                                                     GradientReducer* reducer) {
  TERN_RETURN_IF_ERROR(options.validate());
  auto impl = std::make_unique<Impl>(options, comm);
  Impl& m = *impl;
  m.rank = comm.rank();
  m.world = comm.size();
  m.tables = static_cast<int64_t>(options.table_sizes.size());
  m.dim = options.embedding_dim;
  TERN_ASSIGN_OR_RETURN(m.owner, shard_tables(options.table_sizes, m.world, options.sharding));
  m.owned_by.assign(m.world, {});
  for (int64_t t = 0; t < m.tables; ++t) m.owned_by[m.owner[t]].push_back(t);
  std::vector<int64_t> order;
  for (int r = 0; r < m.world; ++r) {
    order.insert(order.end(), m.owned_by[r].begin(), m.owned_by[r].end());
    m.owned_cols.push_back(at::tensor(m.owned_by[r], at::kLong));
  }
  m.owner_order = at::tensor(order, at::kLong);
  m.table_order = at::argsort(m.owner_order);

  // What this rank's tables take (weights, access counts, dirty bits), checked before any of
  // it is allocated: an allocation the kernel overcommits would be paid later, in the OOM
  // killer's SIGKILL, which looks like a lost machine instead of a model that does not fit.
  {
    int64_t rows = 0;
    for (int64_t t : m.owned_by[m.rank]) rows += options.table_sizes[t];
    const double need =
        static_cast<double>(rows) * static_cast<double>(m.dim * 4 + 8 + 1 + (m.lazy() ? 8 : 0));
    const int64_t have =
        options.memory_limit_bytes > 0 ? options.memory_limit_bytes : available_memory_bytes();
    if (have > 0 && need > static_cast<double>(have)) {
      std::ostringstream os;
      os.precision(3);
      os << "dlrm: rank " << m.rank << "'s embedding tables (" << m.owned_by[m.rank].size()
         << " tables, " << rows << " rows of dimension " << m.dim << ") need " << need / (1 << 30)
         << " GiB, but this machine has " << static_cast<double>(have) / (1 << 30)
         << " GiB available; shrink data.table_sizes / data.table_size or model.embedding_dim, or "
            "use more workers";
      return resource_exhausted(os.str());
    }
  }
  torch::NoGradGuard no_grad;
  try {
    for (int64_t t : m.owned_by[m.rank]) {
      // DLRM's init: uniform +-sqrt(1/rows), per table from (seed, table) wherever it lives.
      auto gen =
          at::detail::createCPUGenerator(seed_for(options.seed, 1000 + static_cast<uint64_t>(t)));
      double k = std::sqrt(1.0 / static_cast<double>(options.table_sizes[t]));
      m.local[t] = static_cast<int64_t>(m.weights.size());
      m.weights.push_back(
          at::empty({options.table_sizes[t], m.dim}, at::kFloat).uniform_(-k, k, gen));
      m.counts.push_back(at::zeros({options.table_sizes[t]}, at::kLong));
      m.dirty.push_back(at::zeros({options.table_sizes[t]}, at::kBool));
      if (m.lazy()) m.noised_until.push_back(at::zeros({options.table_sizes[t]}, at::kLong));
    }
  } catch (const std::bad_alloc&) {
    return resource_exhausted("dlrm: rank " + std::to_string(m.rank) +
                              ": out of memory allocating its embedding tables");
  } catch (const c10::Error& e) {
    return resource_exhausted(
        "dlrm: rank " + std::to_string(m.rank) +
        ": cannot allocate its embedding tables: " + e.what_without_backtrace());
  }
  m.bottom.init(options.dense_features, options.bottom_mlp, seed_for(options.seed, 1));
  const int64_t n = m.tables + 1;
  m.top.init(m.dim + n * (n - 1) / 2, options.top_mlp, seed_for(options.seed, 2));
  std::vector<int64_t> tri;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) tri.push_back(i * n + j);
  }
  m.tri = at::tensor(tri, at::kLong);
  if (reducer == nullptr) {
    m.own_reducer = std::make_unique<DenseReducer>(comm, options.bucket_bytes);
    reducer = m.own_reducer.get();
  }
  m.reducer = reducer;
  std::unique_ptr<DlrmModel> out(new DlrmModel(std::move(impl)));
  out->owners_ = out->impl_->owner;
  out->owned_ = out->impl_->owned_by[out->impl_->rank];
  return out;
}

DlrmModel::DlrmModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DlrmModel::~DlrmModel() = default;

int DlrmModel::rank() const { return impl_->rank; }
int DlrmModel::world() const { return impl_->world; }

Result<DlrmStepStats> DlrmModel::forward_backward(const Batch& batch,
                                                  const std::vector<double>& weights) {
  Impl& m = *impl_;
  m.pending.reset();
  for (auto& p : dense_parameters()) p.mutable_grad() = at::Tensor();
  if (m.options.dp && !weights.empty()) {
    return invalid_argument(
        "dlrm: train.dp takes no per-sample weights (straggler plans are refused with dp)");
  }
  std::vector<LinearTrace> trace;
  m.trace = m.options.dp ? &trace : nullptr;
  auto forwarded = m.forward(batch, /*train=*/true);
  m.trace = nullptr;
  if (!forwarded.is_ok()) return forwarded.status();
  Impl::Forward f = std::move(forwarded).value();
  DlrmStepStats stats;
  stats.samples = f.sizes.empty() ? 0 : f.sizes[m.rank];
  stats.global_samples = std::accumulate(f.sizes.begin(), f.sizes.end(), int64_t{0});
  if (stats.global_samples == 0) return stats;
  const int64_t b = stats.samples;
  if (!weights.empty() && static_cast<int64_t>(weights.size()) != b) {
    return invalid_argument("dlrm: " + std::to_string(weights.size()) +
                            " sample weights for a batch of " + std::to_string(b));
  }
  // This rank's share of the global loss. Padding (and an empty batch) contributes zero loss
  // and zero gradient. Unweighted: sum of its BCE / global batch. Weighted (w_i average to the
  // global mean after the reducer's mean over ranks): sum(w_i * l_i) / N, so that the row
  // gradients, which owners sum over ranks rather than average, get the same scale.
  at::Tensor logits = f.logits.narrow(0, 0, b);
  at::Tensor y =
      batch.y.defined() ? batch.y.narrow(0, 0, b).to(at::kFloat) : at::zeros({0}, at::kFloat);
  at::Tensor bce, loss;
  if (m.options.dp) {
    // Per-sample gradients (privacy/dp_sgd.h): one backward of the unweighted sum, each
    // sample's squared norm over the MLP layers and its looked-up rows, clip factors c_i, then
    // the MLP gradients and the row gradients rebuilt as sum_i c_i g_i / B (padding rows: 0).
    at::Tensor per =
        torch::binary_cross_entropy_with_logits(logits, y, {}, {}, at::Reduction::None);
    bce = per.sum();
    bce.backward();
    const int64_t B = f.padded;
    at::Tensor sq = at::zeros({B}, at::kDouble);
    at::Tensor lin = linear_per_sample_sq_norms(trace);
    if (lin.defined()) sq = sq + lin;
    if (f.emb.grad().defined()) sq = sq + f.emb.grad().to(at::kDouble).pow(2).sum({1, 2});
    at::Tensor u = clip_factors(sq, m.options.dp_clip) / static_cast<double>(stats.global_samples);
    write_linear_grads(trace, u);
    if (f.emb.grad().defined()) f.emb.mutable_grad().mul_(u.to(at::kFloat).view({B, 1, 1}));
  } else if (weights.empty()) {
    bce = torch::binary_cross_entropy_with_logits(logits, y, {}, {}, at::Reduction::Sum);
    loss = bce / static_cast<double>(stats.global_samples);
  } else {
    at::Tensor per =
        torch::binary_cross_entropy_with_logits(logits, y, {}, {}, at::Reduction::None);
    at::Tensor w = at::tensor(weights, at::kDouble).to(at::kFloat);
    bce = per.sum();
    loss = (per * w).sum() / static_cast<double>(m.world);
  }
  if (loss.defined()) loss.backward();
  stats.loss = b > 0 ? bce.item<double>() / static_cast<double>(b) : 0.0;
  std::vector<at::Tensor> grads;
  for (const auto& p : dense_parameters()) grads.push_back(p.grad());
  grads.push_back(f.emb.grad());
  stats.finite = std::isfinite(stats.loss) && all_finite(grads);
  m.pending = std::make_unique<Impl::Forward>(std::move(f));
  return stats;
}

Status DlrmModel::apply_embedding_update() {
  Impl& m = *impl_;
  if (!m.pending) return Status::ok();  // a step of no samples anywhere
  std::unique_ptr<Impl::Forward> f = std::move(m.pending);
  torch::NoGradGuard no_grad;
  TERN_RETURN_IF_ERROR(m.backward_embeddings(*f));
  ++m.step_count;
  return Status::ok();
}

void DlrmModel::drop_step() {
  impl_->pending.reset();
  for (auto& p : dense_parameters()) p.mutable_grad() = at::Tensor();
}

std::vector<at::Tensor> DlrmModel::dense_grads() const {
  // The backward pass gave the gradient of (this rank's loss sum / global batch): the
  // global gradient is their sum, so scale by N for reducers that average.
  std::vector<at::Tensor> out;
  for (const auto& p : dense_parameters()) {
    at::Tensor g = p.grad().defined() ? p.grad() : at::zeros_like(p);
    out.push_back(impl_->world == 1 ? g.clone() : g * static_cast<double>(impl_->world));
  }
  return out;
}

void DlrmModel::apply_dense(const std::vector<at::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  auto params = dense_parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].sub_(grads[i], impl_->options.lr);
}

void DlrmModel::set_step(int64_t step) {
  Impl& m = *impl_;
  m.step_count = step;
  if (m.pending_reset >= -1) {
    m.pending_reset = -2;
    reset_noise_bookkeeping(step);
  }
}

int64_t DlrmModel::flush_noise() {
  Impl& m = *impl_;
  if (!m.lazy()) return 0;
  torch::NoGradGuard no_grad;
  const int64_t before = m.noised_rows;
  for (size_t k = 0; k < m.weights.size(); ++k) {
    m.flush_rows(k, at::arange(m.weights[k].size(0), at::kLong), m.step_count);
  }
  // Every row is noised until now: the owed-variance record restarts here (as after a restore
  // from this point, so a resumed run sums the same numbers as one that went on).
  m.coef.clear();
  m.cum.assign(1, 0.0);
  m.noise_base = m.step_count;
  return m.noised_rows - before;
}

at::Tensor DlrmModel::noised_until(int64_t t) const {
  auto it = impl_->local.find(t);
  if (it == impl_->local.end() || !impl_->lazy()) return at::Tensor();
  return impl_->noised_until[static_cast<size_t>(it->second)];
}

void DlrmModel::reset_noise_bookkeeping(int64_t step) {
  Impl& m = *impl_;
  if (!m.options.dp) return;
  if (step < 0) {
    m.pending_reset = -1;  // at the next set_step()
    return;
  }
  for (auto& n : m.noised_until) n.fill_(step);
  m.coef.clear();
  m.cum.assign(1, 0.0);
  m.noise_base = step;
}

int64_t DlrmModel::noised_rows() const { return impl_->noised_rows; }

void DlrmModel::set_lr(double lr, double embedding_lr) {
  impl_->options.lr = lr;
  impl_->options.embedding_lr = embedding_lr;
}

Result<DlrmStepStats> DlrmModel::step(const Batch& batch) {
  TERN_ASSIGN_OR_RETURN(DlrmStepStats stats, forward_backward(batch));
  if (stats.global_samples == 0) return stats;
  if (impl_->options.check_finite) {
    // Before any row or weight changes: the group agrees, so every rank skips (or stops at)
    // the same step and no replica or shard takes a non-finite update.
    TERN_ASSIGN_OR_RETURN(stats.nonfinite_ranks, agree_nonfinite(impl_->comm, stats.finite));
    if (!stats.nonfinite_ranks.empty()) {
      drop_step();
      return stats;
    }
  }
  const int64_t step_index = impl_->step_count;
  TERN_RETURN_IF_ERROR(apply_embedding_update());
  std::vector<at::Tensor> grads = dense_grads();
  if (impl_->options.dp) {
    // Each rank's share of the MLPs' noise, as the training loop adds it.
    const double n = static_cast<double>(impl_->world);
    const double scale = impl_->options.dp_noise_multiplier * impl_->options.dp_clip /
                         std::sqrt(n) * n / static_cast<double>(stats.global_samples);
    for (size_t i = 0; i < grads.size(); ++i) {
      grads[i] = grads[i] + dp_gaussian(grads[i].sizes(), impl_->options.seed, step_index,
                                        impl_->rank, static_cast<int64_t>(i)) *
                                scale;
    }
  }
  auto pending = impl_->reducer->start(grads, impl_->step_count);
  TERN_RETURN_IF_ERROR(pending->finish(grads));
  apply_dense(grads);
  return stats;
}

Result<at::Tensor> DlrmModel::predict(const Batch& batch) {
  torch::NoGradGuard no_grad;
  TERN_ASSIGN_OR_RETURN(Impl::Forward f, impl_->forward(batch, /*train=*/false));
  int64_t b = f.sizes.empty() ? 0 : f.sizes[impl_->rank];
  if (b == 0) return at::empty({0}, at::kFloat);
  return f.logits.narrow(0, 0, b).clone();
}

Result<DlrmMetrics> DlrmModel::evaluate(CtrStream& stream, int64_t batch_size) {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> scores, labels;
  while (true) {
    TERN_ASSIGN_OR_RETURN(Batch batch, stream.next(batch_size));
    TERN_ASSIGN_OR_RETURN(Impl::Forward f, m.forward(batch, /*train=*/false));
    if (f.padded == 0) break;  // every rank is done
    int64_t b = f.sizes[m.rank];
    if (b > 0) {
      scores.push_back(f.logits.narrow(0, 0, b).to(at::kDouble));
      labels.push_back(batch.y.to(at::kDouble));
    }
  }
  at::Tensor s = scores.empty() ? at::empty({0}, at::kDouble) : at::cat(scores);
  at::Tensor l = labels.empty() ? at::empty({0}, at::kDouble) : at::cat(labels);
  const int64_t n = s.numel();

  DlrmMetrics out;
  // [BCE sum, correct, count] over all ranks.
  at::Tensor sums = at::zeros({3}, at::kDouble);
  if (n > 0) {
    sums[0] =
        torch::binary_cross_entropy_with_logits(s, l, {}, {}, at::Reduction::Sum).item<double>();
    sums[1] = ((s > 0).to(at::kDouble) == l).sum().item<double>();
    sums[2] = static_cast<double>(n);
  }
  std::vector<at::Tensor> reduce{sums};
  if (m.world > 1)
    TERN_RETURN_IF_ERROR(all_reduce_sync(m.comm, reduce).with_context("dlrm evaluate"));
  out.samples = static_cast<int64_t>(sums[2].item<double>());
  if (out.samples == 0) return out;
  out.logloss = sums[0].item<double>() / static_cast<double>(out.samples);
  out.accuracy = sums[1].item<double>() / static_cast<double>(out.samples);

  TERN_ASSIGN_OR_RETURN(out.auc, global_auc(m.comm, s, l));
  return out;
}

// --- state -----------------------------------------------------------------------------------

at::Tensor DlrmModel::table(int64_t t) const {
  auto it = impl_->local.find(t);
  return it == impl_->local.end() ? at::Tensor() : impl_->weights[it->second];
}

at::Tensor DlrmModel::access_counts(int64_t t) const {
  auto it = impl_->local.find(t);
  return it == impl_->local.end() ? at::Tensor() : impl_->counts[it->second];
}

at::Tensor DlrmModel::updated_rows(int64_t t) const {
  auto it = impl_->local.find(t);
  if (it == impl_->local.end()) return at::Tensor();
  return impl_->dirty[it->second].nonzero().view({-1});
}

void DlrmModel::mark_updates() {
  for (auto& d : impl_->dirty) d.zero_();
}

NamedTensors DlrmModel::sharded_state() const {
  NamedTensors out;
  for (int64_t t : owned_) {
    out.emplace_back(table_name(t) + ".weight", table(t));
    out.emplace_back(table_name(t) + ".access_count", access_counts(t));
  }
  return out;
}

Status DlrmModel::load_sharded_state(const NamedTensors& state) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  std::map<std::string, at::Tensor> mine;
  for (int64_t t : owned_) {
    mine[table_name(t) + ".weight"] = table(t);
    mine[table_name(t) + ".access_count"] = access_counts(t);
  }
  for (const auto& [name, value] : by_name) {
    if (mine.count(name) == 0) {
      return invalid_argument("dlrm state entry " + name + " does not belong to rank " +
                              std::to_string(rank()) + "'s shard");
    }
    if (!value.sizes().equals(mine[name].sizes())) {
      return invalid_argument("dlrm state entry " + name + " has shape " +
                              std::to_string(value.numel()) + " elements, expected " +
                              std::to_string(mine[name].numel()));
    }
  }
  for (int64_t t : owned_) {
    if (by_name.count(table_name(t) + ".weight") == 0) {
      return invalid_argument("dlrm state lacks " + table_name(t) + ".weight (rank " +
                              std::to_string(rank()) + " owns that table)");
    }
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, value] : by_name) mine[name].copy_(value);
  return Status::ok();
}

Status DlrmModel::load_rows(int64_t t, const at::Tensor& rows, const at::Tensor& values) {
  at::Tensor w = table(t);
  if (!w.defined()) {
    return invalid_argument("dlrm: rank " + std::to_string(rank()) + " does not own table " +
                            std::to_string(t));
  }
  if (rows.dim() != 1 || values.dim() != 2 || values.size(0) != rows.size(0) ||
      values.size(1) != w.size(1)) {
    return invalid_argument("dlrm: rows of " + table_name(t) + " must be [k] ids and [k, " +
                            std::to_string(w.size(1)) + "] values");
  }
  if (rows.numel() > 0 &&
      (rows.min().item<int64_t>() < 0 || rows.max().item<int64_t>() >= w.size(0))) {
    return invalid_argument("dlrm: row id outside " + table_name(t) + " (" +
                            std::to_string(w.size(0)) + " rows)");
  }
  torch::NoGradGuard no_grad;
  w.index_copy_(0, rows.to(at::kLong), values.to(at::kFloat));
  return Status::ok();
}

std::vector<at::Tensor> DlrmModel::dense_parameters() const {
  std::vector<at::Tensor> out;
  impl_->bottom.append_params(&out);
  impl_->top.append_params(&out);
  return out;
}

NamedTensors DlrmModel::replicated_state() const {
  NamedTensors out;
  impl_->bottom.append_named("bottom", &out);
  impl_->top.append_named("top", &out);
  return out;
}

Status DlrmModel::load_replicated_state(const NamedTensors& state) {
  NamedTensors mine = replicated_state();
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  for (const auto& [name, p] : mine) {
    auto it = by_name.find(name);
    if (it == by_name.end()) return invalid_argument("dlrm replicated state lacks " + name);
    if (!it->second.sizes().equals(p.sizes())) {
      return invalid_argument("dlrm replicated state entry " + name + " has the wrong shape");
    }
  }
  if (by_name.size() != mine.size())
    return invalid_argument("dlrm replicated state has unknown entries");
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : mine) p.copy_(by_name[name]);
  return Status::ok();
}

Status DlrmModel::broadcast_replicated(int root) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> params = dense_parameters();
  std::vector<at::Tensor> detached;
  for (auto& p : params) detached.push_back(p.detach());
  return broadcast_tensors(impl_->comm, detached, root);
}

}  // namespace tern
