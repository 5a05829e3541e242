// CoreLock: how CoordinatorCore takes its mutex, so that code which must not run under it can
// tell. Every lock of the core's mutex goes through a CoreLock; while one is alive on a thread,
// CoreLock::held() is true on that thread. Everything that does file I/O for the core (LogStore::
// flush, Journal's appends and rewrites, HighWaterMark::advance) calls forbid_held() and aborts
// when it is: a slow disk must never stall every gRPC thread waiting for the core.
//
// Not reentrant (neither is std::mutex). Cheap: one thread_local counter.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace tern {

class CoreLock {
 public:
  explicit CoreLock(std::mutex& mu) : lock_(mu) { ++depth_; }
  ~CoreLock() { --depth_; }
  CoreLock(const CoreLock&) = delete;
  CoreLock& operator=(const CoreLock&) = delete;

  // For condition_variable waits (which release and retake the mutex; the flag stays up, and
  // the waiting thread does nothing else meanwhile).
  std::unique_lock<std::mutex>& unique() { return lock_; }

  // Whether this thread holds a core's mutex now.
  static bool held() { return depth_ > 0; }

  // Aborts when this thread holds a core's mutex: `what` (file I/O) must never run under it. A
  // bug, not a condition to handle, so it fails loudly (on stderr, whatever spdlog's sink).
  static void forbid_held(const char* what) {
    if (!held()) return;
    std::fprintf(stderr, "%s called with the coordinator's mutex held\n", what);
    std::abort();
  }

 private:
  std::unique_lock<std::mutex> lock_;
  static inline thread_local int depth_ = 0;
};

}  // namespace tern
