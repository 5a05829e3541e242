#include "sync/fragments.h"

#include <string>

namespace tern {

Result<std::vector<Fragment>> split_fragments(const std::vector<at::Tensor>& params,
                                              int64_t count) {
  if (count < 1)
    return invalid_argument("sync.fragments must be >= 1, got " + std::to_string(count));
  int64_t total = 0;
  for (const auto& p : params) total += p.numel();
  std::vector<Fragment> out(static_cast<size_t>(count));
  int64_t cum = 0;  // elements before the current row
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const int64_t rows = p.dim() == 0 ? 1 : p.size(0);
    const int64_t row_numel = rows == 0 ? 0 : p.numel() / rows;
    for (int64_t r = 0; r < rows;) {
      // The fragment of this row's first element; extend the piece while rows stay in it.
      const int64_t f = total == 0 ? 0 : std::min<int64_t>(count - 1, cum * count / total);
      int64_t end = r + 1;
      while (end < rows &&
             std::min<int64_t>(count - 1, (cum + (end - r) * row_numel) * count / total) == f)
        ++end;
      FragmentPiece piece{i, r, end - r, (end - r) * row_numel};
      if (p.dim() == 0) piece.numel = 1;
      out[static_cast<size_t>(f)].push_back(piece);
      cum += piece.numel;
      r = end;
    }
  }
  for (int64_t f = 0; f < count; ++f) {
    if (out[static_cast<size_t>(f)].empty()) {
      return invalid_argument(
          "sync.fragments " + std::to_string(count) + ": the model's " + std::to_string(total) +
          " parameter elements in " + std::to_string(params.size()) +
          " tensors cannot be cut into that many non-empty row blocks (fragment " +
          std::to_string(f) + " is empty); use fewer fragments");
    }
  }
  return out;
}

at::Tensor piece_view(const std::vector<at::Tensor>& params, const FragmentPiece& piece) {
  at::Tensor p = params[piece.param].detach();
  if (p.dim() == 0) return p;
  if (piece.row0 == 0 && piece.rows == p.size(0)) return p;
  return p.narrow(0, piece.row0, piece.rows);
}

std::vector<at::Tensor> fragment_views(const std::vector<at::Tensor>& params,
                                       const Fragment& fragment) {
  std::vector<at::Tensor> out;
  out.reserve(fragment.size());
  for (const auto& piece : fragment) out.push_back(piece_view(params, piece));
  return out;
}

int64_t fragment_numel(const Fragment& fragment) {
  int64_t n = 0;
  for (const auto& p : fragment) n += p.numel;
  return n;
}

}  // namespace tern
