#include "trainer/loop/nonfinite.h"

#include <cmath>
#include <sstream>

namespace tern {

bool all_finite(const std::vector<at::Tensor>& tensors) {
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0 || !at::isFloatingType(t.scalar_type())) continue;
    if (!at::isfinite(t).all().item<bool>()) return false;
  }
  return true;
}

Result<std::vector<int>> agree_nonfinite(Communicator& comm, bool mine_finite) {
  const int world = comm.size();
  std::vector<int> bad;
  if (world <= 1) {
    if (!mine_finite) bad.push_back(comm.rank());
    return bad;
  }
  std::vector<at::Tensor> flags{at::zeros({world}, at::kFloat)};
  if (!mine_finite) flags[0][comm.rank()] = 1.0f;
  TERN_RETURN_IF_ERROR(all_reduce_sync(comm, flags).with_context("agreeing on a non-finite step"));
  at::Tensor host = flags[0].cpu();
  auto a = host.accessor<float, 1>();
  for (int r = 0; r < world; ++r) {
    if (a[r] != 0.0f) bad.push_back(r);
  }
  return bad;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

std::string loss_text(double loss) {
  if (std::isnan(loss)) return "nan";
  if (std::isinf(loss)) return loss > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os << loss;
  return os.str();
}

}  // namespace tern
