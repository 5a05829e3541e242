// Streaming fragments (Streaming DiLoCo): the model's parameters cut into F fragments of about
// equal size that sync at staggered steps, so each sync carries about 1/F of the model and the
// peak bytes per sync drop about F-fold.
//
// A fragment is a list of pieces; a piece is a block of whole rows (dim 0) of one parameter, so
// a piece of a matrix is still a matrix (PowerSGD compresses it as such) and a view of the
// parameter (no copy). 0-dim parameters are one piece. Cut points follow the parameters'
// order: fragment f holds the rows whose first element lies in [f*N/F, (f+1)*N/F) of the N
// elements, so fragments differ by at most one row plus rounding. Every element of every
// parameter is in exactly one fragment.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "common/status.h"

namespace tern {

struct FragmentPiece {
  size_t param = 0;   // index into the parameter list
  int64_t row0 = 0;   // first row (dim 0)
  int64_t rows = 0;   // rows in the piece (1 for a 0-dim parameter)
  int64_t numel = 0;  // elements in the piece
};

using Fragment = std::vector<FragmentPiece>;

// Splits `params` into `count` non-empty fragments; INVALID_ARGUMENT (naming sync.fragments) when
// the parameters have fewer row blocks than `count`.
Result<std::vector<Fragment>> split_fragments(const std::vector<at::Tensor>& params, int64_t count);

// The piece as a view of its parameter (writes go to the parameter).
at::Tensor piece_view(const std::vector<at::Tensor>& params, const FragmentPiece& piece);
// Views of every piece of `fragment`, in order.
std::vector<at::Tensor> fragment_views(const std::vector<at::Tensor>& params,
                                       const Fragment& fragment);
int64_t fragment_numel(const Fragment& fragment);

}  // namespace tern
