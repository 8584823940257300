// The file model: anything an EventPoll can watch.
//
// Files are shared-owned (std::shared_ptr) and created with MakeFile<T>(...). An EventPoll entry does not own its
// file: when the last reference to a file goes away, the file first removes itself from every EventPoll watching it
// (Linux: eventpoll_release() in __fput(), before the file's own release; gVisor: FileDescription.DecRef), then its
// destructor runs. A file that was not made by MakeFile cannot be added to an EventPoll (EINVAL).
//
// Rule for file implementations: never call Notify() while holding the file's own state lock. EventPoll::ReadEvents
// calls Readiness() with the poll's lists lock held, and a callback from Notify() takes that same lists lock (the
// engine's lock order: LOCKING, lib/src/event_poll_internal.h).
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>

#include "epollcr/events.h"
#include "epollcr/mutex.h"
#include "epollcr/result.h"
#include "epollcr/waiter_queue.h"

namespace epollcr {

class EventPoll;

namespace file_internal {
template <typename T>
struct ReleasingAllocator;
}  // namespace file_internal

class File : public std::enable_shared_from_this<File> {
 public:
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  virtual ~File() { live_files_.fetch_sub(1, std::memory_order_relaxed); }

  // How many File objects exist in this process: tests prove with it that a failed load or a release leaves none.
  static long LiveFiles() { return live_files_.load(std::memory_order_relaxed); }

  // The events of `mask` that are ready now. Must not block or notify.
  virtual EventMask Readiness(EventMask mask) = 0;
  // Whether epoll can watch this file (false for regular files and directories: epoll_ctl gives EPERM).
  virtual bool Epollable() const { return true; }
  // A short name of the file's type: "pipe-read", "eventfd", "eventpoll", ...
  virtual std::string_view TypeName() const = 0;
  // This file as an EventPoll, or null (cheaper than a dynamic_cast on hot paths: ADD, load).
  virtual EventPoll* AsEventPoll() { return nullptr; }
  // Which of epollcr's own file types this is; kNone for every other File (an embedder's). The save path tests types
  // with it: a failed dynamic_cast can cost a string comparison per base class.
  enum class Builtin : std::uint8_t { kNone, kEventPoll, kEventFd, kPipeRead, kPipeWrite, kUnixStream, kHost };
  virtual Builtin builtin() const { return Builtin::kNone; }
  // A kernel file whose readiness and wake-ups are this file's, or -1: a host file's fd; a poll's own kernel epoll once
  // it has kernel entries. An EventPoll registers such a file in its kernel epoll rather than waiting on the file's
  // queue, so the kernel does its wake-ups exactly (docs/engine.md, "Kernel entries").
  virtual int KernelFd() { return -1; }

  // I/O, non-blocking. The defaults are Linux's answers for a file without these operations.
  virtual Result<std::size_t> Read(std::span<std::byte> buffer);         // EINVAL
  virtual Result<std::size_t> Write(std::span<const std::byte> buffer);  // EINVAL
  virtual std::error_code Shutdown(int how);                             // ENOTSOCK

  void EventRegister(WaiterEntry* entry) { queue_.EventRegister(entry); }
  void EventUnregister(WaiterEntry* entry) { queue_.EventUnregister(entry); }
  const WaiterQueue& queue() const { return queue_; }

  // True once MakeFile has taken ownership; only such files can be watched by an EventPoll.
  bool managed() const { return managed_; }

  // The lock held across each state change of this file *and* the wake-up it sends, or null. A snapshot holds every
  // file's mutation lock, so no change is caught between updating the file and notifying its waiters (a torn cut:
  // state.h). Files sharing state (a pipe's two ends) return the same lock.
  virtual Mutex* MutationLock() const { return nullptr; }

 protected:
  File() { live_files_.fetch_add(1, std::memory_order_relaxed); }
  // Wakes this file's waiters with `mask` (kAllEvents for a wake-up without a key).
  // Preconditions: the file's own state lock is not held.
  void Notify(EventMask mask) { queue_.Notify(mask); }
  // Tells the EventPolls that watch this file that its readiness may have dropped (a read that emptied it, a write
  // that filled it): a poll whose fd is watched from outside (EventPoll::Fd) then checks whether it still has an
  // event to report, so that fd stops being readable when the poll has none. Free while no poll of the process is
  // watched so. A file that never calls it still works; an outside watcher of such a poll's Fd() may then see it
  // readable until the poll's next Wait or Readiness. Preconditions: the file's own state lock is not held.
  void ReadinessMayHaveDropped();

 private:
  template <typename T, typename... Args>
  friend std::shared_ptr<T> MakeFile(Args&&... args);
  template <typename T>
  friend struct file_internal::ReleasingAllocator;
  // Removes every EventPoll entry that watches this file. Runs when the last reference is dropped.
  void ReleaseFromPolls();

  inline static std::atomic<long> live_files_{0};
  WaiterQueue queue_;
  bool managed_ = false;  // Written once by MakeFile before the file is shared.
};

namespace file_internal {
// MakeFile's allocator. std::allocate_shared puts a file and its reference counts in one heap block (a shared_ptr
// with a deleter takes two), and destroys the file through destroy(), which removes it from every EventPoll first.
template <typename T>
struct ReleasingAllocator {
  using value_type = T;
  ReleasingAllocator() = default;
  template <typename U>
  ReleasingAllocator(const ReleasingAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>().deallocate(p, n); }
  template <typename U>
  void destroy(U* file) {
    static_cast<File*>(file)->ReleaseFromPolls();
    file->~U();
  }
  template <typename U>
  bool operator==(const ReleasingAllocator<U>&) const noexcept {
    return true;
  }
};
}  // namespace file_internal

// Creates a file owned by a std::shared_ptr that removes it from every EventPoll before destroying it.
template <typename T, typename... Args>
std::shared_ptr<T> MakeFile(Args&&... args) {
  std::shared_ptr<T> file = std::allocate_shared<T>(file_internal::ReleasingAllocator<T>(), std::forward<Args>(args)...);
  static_cast<File*>(file.get())->managed_ = true;
  return file;
}

}  // namespace epollcr
