// Checkpoint-interval math for partial recovery (CPR, Maeng et al. MLSys 2021;
// docs/algorithms.md §5) and the Young/Daly interval of full recovery. Pure functions, Torch-free.
//
// Units, stated once because the two formulas use different ones:
//  - CPR works in SAMPLES. λ_s = expected failures per training sample processed (job-wide;
//    = failures per second / samples per second). τ_s = checkpoint interval in samples.
//    PLS (portion of lost samples) is a fraction in [0, 1].
//        expected PLS ≈ λ_s · (τ_s / 2) / N_shards        τ_s = 2 · N_shards · PLS_target / λ_s
//  - Young/Daly works in SECONDS. C = checkpoint cost (s of training time), λ_t = failures
//    per second (1 / MTBF):  τ_t = sqrt(2 · C / λ_t).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace tern {

// 2 · N · PLS / λ_s, in samples. Requires n_shards >= 1, pls_target > 0, λ_s > 0.
double cpr_interval_samples(int64_t n_shards, double pls_target, double failures_per_sample);
// λ_s · τ_s / (2 · N): the expected PLS of checkpointing every `interval_samples`.
double expected_pls(double interval_samples, int64_t n_shards, double failures_per_sample);
// sqrt(2 · C / λ_t), in seconds.
double young_daly_interval_s(double checkpoint_cost_s, double failures_per_second);
// Expected fraction of training time lost by full recovery at interval τ_t (seconds):
// C / τ_t (checkpoint cost) + λ_t · (τ_t / 2 + restart_s) (rolled-back work + restart).
double full_recovery_overhead(double interval_s, double checkpoint_cost_s,
                              double failures_per_second, double restart_s = 0);

struct CheckpointPlanInputs {
  int64_t n_shards = 1;          // nodes holding distinct shards of the sharded state
  double pls_target = 0.01;      // recovery.pls_target
  double mtbf_s = 0;             // job-wide mean time between failures, seconds
  double checkpoint_cost_s = 0;  // measured (or estimated) cost of one checkpoint
  double samples_per_s = 0;      // job-wide training throughput
  int64_t samples_per_step = 1;  // job-wide samples per step (batch × world)
};

struct CheckpointPlan {
  double failures_per_second = 0;
  double failures_per_sample = 0;
  double cpr_interval_samples = 0;
  int64_t cpr_interval_steps = 0;  // floor, at least 1: keeps PLS <= target
  double cpr_expected_pls = 0;     // at cpr_interval_steps
  double young_daly_interval_s = 0;
  int64_t young_daly_interval_steps = 0;  // rounded, at least 1
  std::string summary;                    // one log line with the formulas and the numbers
};

// INVALID_ARGUMENT naming the field when an input is out of range.
Result<CheckpointPlan> plan_checkpoint_interval(const CheckpointPlanInputs& in);

}  // namespace tern
