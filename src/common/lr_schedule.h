// The learning rate of each optimizer step: a linear warm-up, then constant, cosine or step
// decay over the run (train.lr_schedule). Pure arithmetic on the job spec, so the trainer, the
// DLRM loop and the plain-loop baseline compute the same rate for the same step, and a rank
// that resumes or joins mid-run needs no saved scheduler state.
#pragma once

#include <cstdint>

#include "common/job_spec.h"

namespace tern {

// The rate for optimizer step `step` (0-based) of a run of `total_steps` steps.
//   warm-up (step < warmup_steps): lr * (step + 1) / warmup_steps
//   constant: lr
//   cosine:   lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2, p = (step - warmup) / (total -
//   warmup) step:     lr * lr_gamma ^ (how many lr_decay_at fractions f have step >= f *
//   total_steps)
double scheduled_lr(const TrainSpec& train, int64_t step, int64_t total_steps);

}  // namespace tern
