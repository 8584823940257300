// The library's mutex, scoped lock and condition variable, with clang's thread-safety annotations
// (clang.llvm.org/docs/ThreadSafetyAnalysis.html). libstdc++'s std::mutex carries none, so a field guarded by one
// cannot be checked; guarded by an epollcr::Mutex it is, when clang builds with -Wthread-safety (scripts/test). The
// macros expand to nothing on other compilers. The engine's lock order is the LOCKING block of
// lib/src/event_poll_internal.h.
//
// Embedders may use these types for their own files (File::MutationLock returns a Mutex*).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define EPOLLCR_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define EPOLLCR_THREAD_ANNOTATION(x)
#endif

#define EPOLLCR_CAPABILITY(x) EPOLLCR_THREAD_ANNOTATION(capability(x))
#define EPOLLCR_SCOPED_CAPABILITY EPOLLCR_THREAD_ANNOTATION(scoped_lockable)
#define EPOLLCR_GUARDED_BY(x) EPOLLCR_THREAD_ANNOTATION(guarded_by(x))
#define EPOLLCR_PT_GUARDED_BY(x) EPOLLCR_THREAD_ANNOTATION(pt_guarded_by(x))
#define EPOLLCR_ACQUIRED_BEFORE(...) EPOLLCR_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define EPOLLCR_ACQUIRED_AFTER(...) EPOLLCR_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define EPOLLCR_REQUIRES(...) EPOLLCR_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EPOLLCR_EXCLUDES(...) EPOLLCR_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define EPOLLCR_ACQUIRE(...) EPOLLCR_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define EPOLLCR_RELEASE(...) EPOLLCR_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define EPOLLCR_TRY_ACQUIRE(...) EPOLLCR_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EPOLLCR_ASSERT_CAPABILITY(x) EPOLLCR_THREAD_ANNOTATION(assert_capability(x))
#define EPOLLCR_RETURN_CAPABILITY(x) EPOLLCR_THREAD_ANNOTATION(lock_returned(x))
// For a function whose locking the analysis cannot follow; each use says why in a comment.
#define EPOLLCR_NO_THREAD_SAFETY_ANALYSIS EPOLLCR_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace epollcr {

// A std::mutex the analysis knows. lock/unlock/try_lock are the standard Lockable names, so std::unique_lock and
// std::scoped_lock take it too (though the analysis sees only MutexLock and the annotated methods).
class EPOLLCR_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() EPOLLCR_ACQUIRE() { mu_.lock(); }
  void unlock() EPOLLCR_RELEASE() { mu_.unlock(); }
  bool try_lock() EPOLLCR_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis the mutex is held where it cannot see it taken (a caller's conditional lock); checks nothing.
  void AssertHeld() const EPOLLCR_ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// std::lock_guard for a Mutex, which may also be released and taken again before its scope ends.
class EPOLLCR_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) EPOLLCR_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ~MutexLock() EPOLLCR_RELEASE() {
    if (held_) mu_.unlock();
  }

  void Unlock() EPOLLCR_RELEASE() {
    mu_.unlock();
    held_ = false;
  }
  void Lock() EPOLLCR_ACQUIRE() {
    mu_.lock();
    held_ = true;
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

// A std::condition_variable that waits with a Mutex held (held again when the wait returns, as for the analysis it
// never stopped being).
class CondVar {
 public:
  void Wait(Mutex& mu) EPOLLCR_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  template <typename Clock, typename Duration>
  std::cv_status WaitUntil(Mutex& mu, const std::chrono::time_point<Clock, Duration>& deadline) EPOLLCR_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    const std::cv_status status = cv_.wait_until(lock, deadline);
    lock.release();
    return status;
  }
  void NotifyOne() noexcept { cv_.notify_one(); }
  void NotifyAll() noexcept { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace epollcr
