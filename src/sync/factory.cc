#include <algorithm>

#include "sync/strategy.h"

namespace tern {

Status load_named_state(const NamedState& given, const NamedState& live,
                        const std::vector<std::string>& optional) {
  std::map<std::string, const at::Tensor*> by_name;
  for (const auto& [name, t] : given) by_name[name] = &t;
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : live) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (std::find(optional.begin(), optional.end(), name) != optional.end()) continue;
      return failed_precondition("no sync state '" + name +
                                 "' (written with another sync.outer or sync.fragments?)");
    }
    if (it->second->sizes() != t.sizes()) {
      return failed_precondition("sync state '" + name + "' is " + c10::str(it->second->sizes()) +
                                 ", this job's " + c10::str(t.sizes()));
    }
    at::Tensor dst = t;
    dst.copy_(*it->second);
  }
  return Status::ok();
}

NamedState without_auto_plan(const NamedState& strategy_state) {
  NamedState out;
  for (const auto& [name, t] : strategy_state) {
    if (name != kAutoPlanState) out.emplace_back(name, t);
  }
  return out;
}

Result<std::unique_ptr<SyncStrategy>> make_sync_strategy(StrategyContext ctx) {
  const SyncSpec& s = ctx.spec.sync;
  const int64_t bucket = static_cast<int64_t>(s.bucket_mb * (1 << 20));
  if (s.strategy == StrategyKind::kSsgd) {
    return std::unique_ptr<SyncStrategy>(std::make_unique<SsgdStrategy>(ctx.comm, ctx.reducer));
  }
  if (s.strategy == StrategyKind::kDssgd) {
    if (ctx.reducer != nullptr && ctx.reducer->owns_momentum() && s.delay > 0) {
      // DGC's averaged output already carries momentum, DSSGD's fresh local term does not:
      // mixing them would apply momentum to only part of the update.
      return invalid_argument(
          "compress.method dgc applies momentum inside the compressor and cannot be "
          "combined with sync.strategy dssgd (delay > 0) yet; use fp16, int8, int4, topk or "
          "powersgd");
    }
    return std::unique_ptr<SyncStrategy>(
        std::make_unique<DssgdStrategy>(ctx.comm, ctx.reducer, s.delay, s.correction, bucket));
  }
  if (s.strategy == StrategyKind::kTsu || s.strategy == StrategyKind::kDts) {
    if (ctx.reducer != nullptr && ctx.reducer->owns_momentum()) {
      // DGC's momentum correction is defined on gradients; these strategies send parameter deltas.
      return invalid_argument(
          "compress.method dgc applies momentum to gradients, but sync.strategy " +
          name_of(s.strategy) +
          " sends parameter deltas; use fp16, int8, int4, topk or powersgd with it");
    }
    PeriodicOptions o;
    o.kind = s.strategy;
    o.period = s.period;
    o.delay = s.strategy == StrategyKind::kTsu ? 0 : s.delay;
    o.average_momentum = s.average_momentum;
    o.bucket_bytes = bucket;
    o.outer = s.outer;
    o.fragments = s.fragments;
    o.delay_auto = s.delay_auto && s.strategy == StrategyKind::kDts;
    o.period_auto = s.period_auto;
    o.auto_wait_share = s.auto_wait_share;
    o.auto_trials = s.auto_trials;
    // The deltas cross the wire through the job's reducer: compressed (with error feedback) when
    // compress.method is set, dense otherwise; every further fragment gets a reducer of its own.
    return std::unique_ptr<SyncStrategy>(std::make_unique<PeriodicAveragingStrategy>(
        ctx.comm, std::move(o), ctx.momentum_buffers, ctx.reducer, ctx.make_reducer));
  }
  if (s.strategy == StrategyKind::kHierarchical) {
    if (!ctx.intra_comm) {
      return invalid_argument(
          "sync.strategy hierarchical needs the ranks' regions: run with a cluster file "
          "(tern run --cluster FILE, or a coordinator started with one)");
    }
    return std::unique_ptr<SyncStrategy>(std::make_unique<HierarchicalStrategy>(
        ctx.intra_comm, ctx.inter_comm, s.inter_period, s.inter_delay, bucket, s.outer));
  }
  return invalid_argument("unknown sync.strategy '" + name_of(s.strategy) + "'");
}

}  // namespace tern
