// Evaluation metrics the workloads share: exact ROC AUC, over one rank's scores or over every
// rank's (all-gathered, so every rank gets the same value).
#pragma once

#include <ATen/ATen.h>

#include "comm/communicator.h"
#include "common/status.h"

namespace tern {

// Exact ROC AUC (Mann-Whitney U with average ranks for tied scores) by sorting. 0.5 when one
// class is absent (AUC is undefined there). `labels` > 0.5 are positives.
double exact_auc(const at::Tensor& scores, const at::Tensor& labels);

// The exact AUC of every rank's (score, label) pairs: all-gathered (padded to the largest
// count), the same value on every rank. Collective; a rank may have no pairs.
Result<double> global_auc(Communicator& comm, const at::Tensor& scores, const at::Tensor& labels);

}  // namespace tern
