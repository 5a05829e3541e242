#include "trainer/loop/metrics.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace tern {

double exact_auc(const at::Tensor& scores, const at::Tensor& labels) {
  at::Tensor s = scores.to(at::kDouble).contiguous().view({-1});
  at::Tensor l = labels.to(at::kDouble).contiguous().view({-1});
  const int64_t n = s.numel();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const double* sp = s.data_ptr<double>();
  const double* lp = l.data_ptr<double>();
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return sp[a] < sp[b]; });
  double pos = 0, rank_sum = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && sp[order[j]] == sp[order[i]]) ++j;
    double avg_rank = 0.5 * static_cast<double>(i + 1 + j);  // ranks i+1 .. j
    for (int64_t k = i; k < j; ++k) {
      if (lp[order[k]] > 0.5) {
        pos += 1;
        rank_sum += avg_rank;
      }
    }
    i = j;
  }
  double neg = static_cast<double>(n) - pos;
  if (pos == 0 || neg == 0) return 0.5;
  return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

Result<double> global_auc(Communicator& comm, const at::Tensor& scores, const at::Tensor& labels) {
  at::Tensor s = scores.to(at::kDouble).cpu().contiguous().view({-1});
  at::Tensor l = labels.to(at::kDouble).cpu().contiguous().view({-1});
  if (comm.size() == 1) return exact_auc(s, l);
  const int64_t n = s.numel();
  std::vector<at::Tensor> counts(static_cast<size_t>(comm.size()));
  for (auto& c : counts) c = at::empty({1}, at::kLong);
  at::Tensor count = at::full({1}, n, at::kLong);
  TERN_RETURN_IF_ERROR(all_gather_sync(comm, counts, count).with_context("AUC counts"));
  int64_t most = 0;
  for (auto& c : counts) most = std::max(most, c.item<int64_t>());
  if (most == 0) return 0.5;
  at::Tensor padded = at::zeros({most, 2}, at::kDouble);
  if (n > 0) padded.narrow(0, 0, n).copy_(at::stack({s, l}, 1));
  std::vector<at::Tensor> gathered(static_cast<size_t>(comm.size()));
  for (auto& g : gathered) g = at::empty({most, 2}, at::kDouble);
  TERN_RETURN_IF_ERROR(all_gather_sync(comm, gathered, padded).with_context("AUC scores"));
  std::vector<at::Tensor> parts;
  for (size_t r = 0; r < gathered.size(); ++r)
    parts.push_back(gathered[r].narrow(0, 0, counts[r].item<int64_t>()));
  at::Tensor all = at::cat(parts);
  return exact_auc(all.select(1, 0), all.select(1, 1));
}

}  // namespace tern
