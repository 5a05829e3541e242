#include "recovery/row_selection.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace tern {
namespace {

// Checks that `rows` is a 1-D integer tensor of indices in [0, n).
Status check_rows(const at::Tensor& rows, int64_t n, const std::string& what) {
  if (!rows.defined() || rows.dim() != 1 || !at::isIntegralType(rows.scalar_type(), false)) {
    return invalid_argument(what + ": rows must be a 1-D integer tensor");
  }
  if (rows.numel() == 0) return Status::ok();
  int64_t lo = rows.min().item<int64_t>(), hi = rows.max().item<int64_t>();
  if (lo < 0 || hi >= n) {
    return invalid_argument(what + ": row index " + std::to_string(lo < 0 ? lo : hi) +
                            " outside [0, " + std::to_string(n) + ")");
  }
  return Status::ok();
}

}  // namespace

EmbeddingAccessTracker::EmbeddingAccessTracker(int64_t rows)
    : counts_(at::zeros({std::max<int64_t>(rows, 0)}, at::kLong)),
      touched_(at::zeros({std::max<int64_t>(rows, 0)}, at::kBool)) {}

Status EmbeddingAccessTracker::record(const at::Tensor& indices) {
  if (!indices.defined() || !at::isIntegralType(indices.scalar_type(), false)) {
    return invalid_argument("embedding access tracker: indices must be an integer tensor");
  }
  at::Tensor idx = indices.reshape({-1}).to(at::kCPU, at::kLong);
  if (idx.numel() == 0) return Status::ok();
  int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
  if (lo < 0 || hi >= rows()) {
    return Status(StatusCode::kOutOfRange,
                  "embedding access tracker: index " + std::to_string(lo < 0 ? lo : hi) +
                      " outside the table's " + std::to_string(rows()) + " rows");
  }
  counts_.index_put_({idx}, at::ones({idx.numel()}, at::kLong), /*accumulate=*/true);
  touched_.index_fill_(0, idx, true);
  return Status::ok();
}

at::Tensor EmbeddingAccessTracker::updated_rows() const { return touched_.nonzero().reshape({-1}); }

void EmbeddingAccessTracker::clear_updated() { touched_.zero_(); }

void EmbeddingAccessTracker::reset_counts() { counts_.zero_(); }

at::Tensor select_rows_mfu(const at::Tensor& counts, int64_t k) {
  int64_t n = counts.numel();
  k = std::clamp<int64_t>(k, 0, n);
  if (k == 0) return at::empty({0}, at::kLong);
  // Stable descending sort: equal counts keep index order, so ties go to the lower index.
  auto sorted = at::sort(counts.reshape({-1}).to(at::kCPU), /*stable=*/true, /*dim=*/0,
                         /*descending=*/true);
  at::Tensor top = std::get<1>(sorted).slice(0, 0, k);
  return std::get<0>(at::sort(top)).to(at::kLong);
}

at::Tensor select_rows_ssu(const at::Tensor& updated_rows, double fraction, std::mt19937_64& rng) {
  at::Tensor rows = updated_rows.reshape({-1}).to(at::kCPU, at::kLong).contiguous();
  int64_t n = rows.numel();
  fraction = std::clamp(fraction, 0.0, 1.0);
  int64_t k = std::clamp<int64_t>(std::llround(fraction * static_cast<double>(n)), 0, n);
  std::vector<int64_t> v(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + n);
  // Partial Fisher-Yates: the first k entries become a uniform sample without replacement.
  for (int64_t i = 0; i < k; ++i) {
    std::uniform_int_distribution<int64_t> pick(i, n - 1);
    std::swap(v[i], v[pick(rng)]);
  }
  v.resize(k);
  std::sort(v.begin(), v.end());
  return at::tensor(v, at::kLong).reshape({k});
}

Status append_rows(const std::string& prefix, const at::Tensor& table, const at::Tensor& rows,
                   NamedTensors* out) {
  if (!table.defined() || table.dim() != 2) {
    return invalid_argument("rows of '" + prefix + "': table must be 2-D [rows, dim]");
  }
  TERN_RETURN_IF_ERROR(check_rows(rows, table.size(0), "rows of '" + prefix + "'"));
  at::Tensor idx = rows.to(at::kCPU, at::kLong).contiguous();
  at::Tensor values =
      table.detach().index_select(0, idx.to(table.device())).to(at::kCPU).contiguous();
  out->emplace_back(prefix + "/rows", idx.clone());
  out->emplace_back(prefix + "/values", values);
  return Status::ok();
}

Status restore_rows(at::Tensor& table, const at::Tensor& rows, const at::Tensor& values) {
  if (!table.defined() || table.dim() != 2)
    return invalid_argument("restore rows: table must be 2-D");
  TERN_RETURN_IF_ERROR(check_rows(rows, table.size(0), "restore rows"));
  if (!values.defined() || values.dim() != 2 || values.size(0) != rows.numel() ||
      values.size(1) != table.size(1) || values.scalar_type() != table.scalar_type()) {
    return invalid_argument("restore rows: values must be [" + std::to_string(rows.numel()) + ", " +
                            std::to_string(table.size(1)) + "] of the table's dtype");
  }
  at::NoGradGuard no_grad;
  table.index_copy_(0, rows.to(table.device(), at::kLong), values.to(table.device()));
  return Status::ok();
}

Status restore_rows_from(const Checkpoint& checkpoint, const std::string& prefix,
                         at::Tensor& table) {
  const at::Tensor* rows = checkpoint.find(prefix + "/rows");
  const at::Tensor* values = checkpoint.find(prefix + "/values");
  if (rows == nullptr || values == nullptr) {
    return not_found("checkpoint of step " + std::to_string(checkpoint.meta.step) +
                     " has no saved rows for '" + prefix + "'");
  }
  return restore_rows(table, *rows, *values).with_context("'" + prefix + "'");
}

}  // namespace tern
