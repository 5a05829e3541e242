#include "sync/strategy.h"

namespace tern {

Result<std::unique_ptr<SyncStrategy>> make_sync_strategy(StrategyContext ctx) {
  const SyncSpec& s = ctx.spec.sync;
  const int64_t bucket = static_cast<int64_t>(s.bucket_mb * (1 << 20));
  if (s.strategy == "ssgd") {
    return std::unique_ptr<SyncStrategy>(std::make_unique<SsgdStrategy>(ctx.comm, ctx.reducer));
  }
  if (s.strategy == "dssgd") {
    return std::unique_ptr<SyncStrategy>(
        std::make_unique<DssgdStrategy>(ctx.comm, ctx.reducer, s.delay, s.correction, bucket));
  }
  if (s.strategy == "tsu" || s.strategy == "dts") {
    if (ctx.spec.compress.method != "none") {
      return invalid_argument("sync.strategy " + s.strategy + " averages parameters, not gradients; "
                              "compress.method must be none with it");
    }
    int64_t delay = s.strategy == "tsu" ? 0 : s.delay;
    return std::unique_ptr<SyncStrategy>(std::make_unique<PeriodicAveragingStrategy>(
        ctx.comm, s.strategy, s.period, delay, s.average_momentum, ctx.momentum_buffers, bucket));
  }
  if (s.strategy == "hierarchical") {
    if (!ctx.intra_comm) {
      return invalid_argument("sync.strategy hierarchical needs the ranks' regions: run with a cluster file "
                              "(tern run --cluster FILE, or a coordinator started with one)");
    }
    return std::unique_ptr<SyncStrategy>(std::make_unique<HierarchicalStrategy>(
        ctx.intra_comm, ctx.inter_comm, s.inter_period, s.inter_delay, bucket));
  }
  return invalid_argument("unknown sync.strategy '" + s.strategy + "'");
}

}  // namespace tern
