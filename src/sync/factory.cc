#include "sync/strategy.h"

namespace tern {

Result<std::unique_ptr<SyncStrategy>> make_sync_strategy(StrategyContext ctx) {
  const std::string& s = ctx.spec.sync.strategy;
  if (s == "ssgd") {
    return std::unique_ptr<SyncStrategy>(std::make_unique<SsgdStrategy>(ctx.comm, std::move(ctx.reducer)));
  }
  return failed_precondition("sync.strategy '" + s + "' is not implemented in this build");
}

}  // namespace tern
