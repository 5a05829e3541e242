#include "comm/abandon.h"

#include <atomic>
#include <mutex>

namespace tern {
namespace {

std::atomic<uint64_t> g_epoch{0};
std::mutex g_mu;
std::string g_reason;  // guarded by g_mu

}  // namespace

uint64_t collective_epoch() { return g_epoch.load(std::memory_order_acquire); }

void abandon_collectives(const std::string& why) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_reason = why;
  g_epoch.fetch_add(1, std::memory_order_acq_rel);
}

std::string abandoned_reason(uint64_t epoch) {
  if (collective_epoch() == epoch) return "";
  std::lock_guard<std::mutex> lock(g_mu);
  return g_reason.empty() ? "abandoned" : g_reason;
}

}  // namespace tern
