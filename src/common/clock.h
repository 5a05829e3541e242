// Clock: the time source for anything that measures leases, timeouts or timestamps, so tests
// can drive time by hand (ManualClock) instead of sleeping. Implementations are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace tern {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds on a monotonic clock (leases, deadlines). Only differences are meaningful.
  virtual int64_t monotonic_ms() const = 0;
  // Wall-clock time, unix seconds (timestamps shown to users and journaled).
  virtual double unix_seconds() const = 0;
};

// The real clocks of this machine.
class SystemClock : public Clock {
 public:
  int64_t monotonic_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  double unix_seconds() const override {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// A clock that moves only when told to (tests). Both readings advance together.
class ManualClock : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'000'000, double start_unix = 1.7e9)
      : ms_(start_ms), unix_ms_offset_(static_cast<int64_t>(start_unix * 1000) - start_ms) {}
  int64_t monotonic_ms() const override { return ms_.load(); }
  double unix_seconds() const override {
    return static_cast<double>(ms_.load() + unix_ms_offset_) / 1000.0;
  }
  void advance_ms(int64_t ms) { ms_.fetch_add(ms); }

 private:
  std::atomic<int64_t> ms_;
  int64_t unix_ms_offset_;
};

// Seconds elapsed on the steady clock since `t` (durations measured by the process itself;
// what a test must control goes through a Clock instead).
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace tern
