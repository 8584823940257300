// eventfd(2), non-blocking, with Linux's readiness and wake-ups (fs/eventfd.c).
//
// Readiness: IN when the counter is > 0, OUT while it is < 0xfffffffffffffffe (a write of 1 would not block), ERR at
// 0xffffffffffffffff (unreachable through write). A successful write wakes with IN (even a write of 0); a successful
// read wakes with OUT.
#pragma once

#include <cstdint>

#include "epollcr/file.h"
#include "epollcr/mutex.h"
#include "epollcr/state.h"

namespace epollcr {

class EventFd final : public File {
 public:
  static constexpr std::uint64_t kMaxCounter = 0xfffffffffffffffeULL;

  EventFd(std::uint64_t initial, bool semaphore) : count_(initial), semaphore_(semaphore) {}
  static std::shared_ptr<EventFd> Create(std::uint64_t initial = 0, bool semaphore = false) {
    return MakeFile<EventFd>(initial, semaphore);
  }

  EventMask Readiness(EventMask mask) override;
  std::string_view TypeName() const override { return "eventfd"; }
  Builtin builtin() const override { return Builtin::kEventFd; }
  // Reads the counter (8 bytes, host order): EINVAL if the buffer is shorter, EAGAIN when it is 0.
  Result<std::size_t> Read(std::span<std::byte> buffer) override;
  // Adds an 8-byte value: EINVAL unless exactly 8 bytes, or 0xffffffffffffffff, EAGAIN if the counter would pass kMaxCounter.
  Result<std::size_t> Write(std::span<const std::byte> buffer) override;

  // Typed forms of Read and Write.
  Result<std::uint64_t> ReadValue();
  std::error_code WriteValue(std::uint64_t value);

  std::uint64_t Value() const;
  bool semaphore() const { return semaphore_; }

  // Checkpoint policy (state.h). Preconditions: mu_ or op_mu_ is held (every change of the counter holds both, so a
  // consistent cut, which holds every file's MutationLock, reads it without mu_), or the file is not shared yet
  // (load): not analysed, as the analysis can tell neither the second nor the third.
  template <typename V>
  void VisitState(V& v) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    v.Field("count", count_, kSave);
    v.Field("semaphore", semaphore_, kSave);
    v.Field("mu", mu_, kNoSave);
  }
  Mutex& state_mutex() const EPOLLCR_RETURN_CAPABILITY(mu_) { return mu_; }
  Mutex* MutationLock() const override { return &op_mu_; }

 private:
  // Held across a read or write and its wake-up (file.h MutationLock; LOCKING 2 and 8, event_poll_internal.h).
  mutable Mutex op_mu_ EPOLLCR_ACQUIRED_BEFORE(mu_);
  mutable Mutex mu_;
  // Written with mu_ held, through std::atomic_ref; Readiness reads it without mu_ (also through std::atomic_ref).
  std::uint64_t count_ EPOLLCR_GUARDED_BY(mu_);
  bool semaphore_;  // Immutable once shared.
};

}  // namespace epollcr
