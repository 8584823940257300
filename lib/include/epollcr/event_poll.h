// EventPoll: an event poll with the semantics of Linux epoll(7), in userspace (gVisor: vfs.EpollInstance).
//
// Model (fs/eventpoll.c, gVisor pkg/sentry/vfs/epoll.go): a map of entries keyed by FileIdentifier {file, fd}, and
// three intrusive lists that every entry is on exactly one of:
//   ready    - may have events; always re-checked with Readiness() before reporting. Ordered: entries are appended
//              when a wake-up finds them off the list; a reported level-triggered entry goes to the back, entries
//              not examined because `max` was reached stay in front (round-robin: epoll_wait(2) NOTES).
//   waiting  - nothing is pending until the file's wake-up calls the entry back.
//   disabled - a one-shot entry after delivery; its mask holds only flag bits until UpdateEntry re-arms it.
//
// Locks: the engine's lock order, every lock with what it guards, is the LOCKING block of
// lib/src/event_poll_internal.h.
//
// Thread-safe: every method may run concurrently with every other and with any file's Notify.
#pragma once

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <system_error>
#include <vector>

#include "epollcr/events.h"
#include "epollcr/file.h"
#include "epollcr/result.h"

namespace epollcr {

// Registration flags (the EP_PRIVATE_BITS of an epoll_event.events word).
enum class EntryFlags : std::uint32_t {
  kNone = 0,
  kOneShot = 1u << 0,        // EPOLLONESHOT
  kEdgeTriggered = 1u << 1,  // EPOLLET
  kExclusive = 1u << 2,      // EPOLLEXCLUSIVE (ADD only)
  kWakeup = 1u << 3,         // EPOLLWAKEUP (accepted and kept; no effect on delivery)
};
constexpr EntryFlags operator|(EntryFlags a, EntryFlags b) {
  return static_cast<EntryFlags>(static_cast<std::uint32_t>(a) | static_cast<std::uint32_t>(b));
}
constexpr EntryFlags operator&(EntryFlags a, EntryFlags b) {
  return static_cast<EntryFlags>(static_cast<std::uint32_t>(a) & static_cast<std::uint32_t>(b));
}
constexpr bool Any(EntryFlags f) { return static_cast<std::uint32_t>(f) != 0; }

// Converting between a Linux epoll_event.events word and (flags, mask).
EntryFlags FlagsFromLinux(std::uint32_t events);
EventMask MaskFromLinux(std::uint32_t events);
std::uint32_t ToLinux(EntryFlags flags, EventMask mask);

// The key of an entry: not the fd alone (it can be reused), not the file alone (a file may be registered under
// several fds). The file is borrowed for the call; the caller holds a reference.
struct FileIdentifier {
  File* file = nullptr;
  int fd = -1;
};

// Which list an entry is on.
enum class EntryList : std::uint8_t { kReady, kWaiting, kDisabled };

// A copy of one entry, for inspection and tests.
struct EntryInfo {
  File* file = nullptr;
  int fd = -1;
  std::uint32_t events = 0;  // Linux form: mask (with ERR|HUP unless disabled) | flag bits
  std::uint64_t data = 0;
  EntryList list = EntryList::kWaiting;
};

// The lowest number the library gives the fds it makes for itself: each poll's kernel epoll, its bell, its private
// duplicates. 0 (the default) takes the lowest free number, as any open does. An interposer sets it high, so that a
// program's own fds get the numbers the kernel would give them. Best effort: where no number at or above the floor
// can be had, the fd stays where it was made.
void SetInternalFdFloor(int floor);

// The library's own epoll and io_uring_setup system calls carry this in the upper half of their first argument, an
// int or u32 whose upper half the kernel drops. Under `epollcr run` a seccomp filter traps those system calls
// without it: a program's raw ones (docs/interposer.md, "Raw system calls").
inline constexpr std::uint64_t kOwnSyscallTag = std::uint64_t{0x45504352} << 32;  // "EPCR"
// `arg` (an fd, flags or a count) tagged as the library's.
inline long OwnSyscallArg(long arg) {
  return static_cast<long>(kOwnSyscallTag | static_cast<std::uint32_t>(arg));
}

class EventPoll final : public File {
 public:
  // NewEventPoll: the only way to make one (it must be shared-owned to be watched and to be released).
  static std::shared_ptr<EventPoll> Create();
  ~EventPoll() override;

  // EPOLL_CTL_ADD. `mask` holds event bits only (EINVAL if it has flag bits; unknown event bits are accepted, as
  // Linux does); ERR|HUP are always added. Errors: EBADF (null or released file), EINVAL (the poll itself, a file
  // not made by MakeFile, a bad EPOLLEXCLUSIVE combination), EPERM (file cannot be polled), EEXIST, ELOOP (a cycle
  // or more than kMaxNests links), EINVAL (too many wake-up paths: fs/eventpoll.c path_limits).
  std::error_code AddEntry(FileIdentifier id, EntryFlags flags, EventMask mask, std::uint64_t data);
  // EPOLL_CTL_MOD: replaces flags, mask and data and re-checks readiness (re-arms one-shot and edge-triggered
  // entries). Errors: EBADF, EINVAL (kExclusive in flags, or the entry was added with kExclusive), EPERM, ENOENT.
  std::error_code UpdateEntry(FileIdentifier id, EntryFlags flags, EventMask mask, std::uint64_t data);
  // EPOLL_CTL_DEL. Errors: EBADF, EINVAL (the poll itself), EPERM, ENOENT. Never generates an event.
  std::error_code RemoveEntry(FileIdentifier id);

  // Harvests up to `max` events without blocking (the scan of epoll_wait). EINVAL if max <= 0 or max > kMaxEvents,
  // EFAULT if events is null. Returns how many were written to events[0 .. n).
  Result<int> ReadEvents(Event* events, int max);
  Result<int> ReadEvents(std::span<Event> events) { return ReadEvents(events.data(), SpanMax(events)); }
  // epoll_wait: like ReadEvents, but when nothing is ready waits up to timeout_ms (0 polls, negative blocks until an
  // event). Returns 0 on timeout, EINTR when a signal handler ran in the waiting thread while it waited (with or
  // without SA_RESTART: epoll_wait is never restarted, signal(7)). The wait sleeps in the kernel (epoll_pwait2 on a
  // kernel epoll the poll makes at its first blocking Wait: two fds, so EMFILE or ENFILE if there are none left).
  Result<int> Wait(Event* events, int max, int timeout_ms);
  Result<int> Wait(std::span<Event> events, int timeout_ms) { return Wait(events.data(), SpanMax(events), timeout_ms); }
  // epoll_pwait: Wait with the thread's signal mask replaced by *mask for the time of the wait (null: unchanged), as
  // one atomic step: a signal blocked outside and unblocked by `mask` that is pending, or arrives during the wait,
  // is delivered during it (EINTR); when events are returned instead, it stays pending.
  Result<int> PWait(Event* events, int max, int timeout_ms, const sigset_t* mask);
  // epoll_pwait2: PWait with a timeout in nanoseconds (null: block until an event; {0, 0}: poll). EINVAL, before
  // any other check, for a negative field or tv_nsec of a second or more.
  Result<int> PWait2(Event* events, int max, const timespec* timeout, const sigset_t* mask);
  // epoll_pwait2's rule for its timeout (poll_select_set_timeout): null or a timespec with no negative field and
  // tv_nsec below a second.
  static bool ValidTimeout(const timespec* timeout) {
    return timeout == nullptr || (timeout->tv_sec >= 0 && timeout->tv_nsec >= 0 && timeout->tv_nsec < 1'000'000'000);
  }

  // The poll as a file: IN|RDNORM (masked) when at least one entry is really ready. Stale entries in front of the
  // first ready one are moved off the ready list (__ep_eventpoll_poll).
  EventMask Readiness(EventMask mask) override;
  std::string_view TypeName() const override { return "eventpoll"; }
  Builtin builtin() const override { return Builtin::kEventPoll; }
  EventPoll* AsEventPoll() override { return this; }
  int KernelFd() override;

  // The poll as a file descriptor, for other event loops (sd_event_get_fd's convention): poll(2), select(2) and a
  // kernel epoll (level- or edge-triggered) see it readable exactly when the poll has an event to report, with the
  // wake-ups a nested epoll gives its watchers. It is the poll's own kernel epoll (docs/engine.md, "Kernel entries"):
  // the same number for the poll's life, closed with it. Only poll, select or watch it: do not read, write, close,
  // epoll_wait or epoll_ctl it. A restored poll has a new one (call Fd() again). EMFILE/ENFILE if the fds for it
  // cannot be made.
  Result<int> Fd();

  // Removes every entry (what closing the last reference to the poll does). The poll stays usable.
  void Release();
  // Unregisters every entry's waiter from its file's queue without removing the entries (gVisor: done before save so
  // no waiter is saved twice). Until RegisterEpollWaiters() the poll receives no wake-ups.
  void UnregisterEpollWaiters();
  // Registers every entry's waiter again and re-checks readiness of waiting entries (what after_load does).
  void RegisterEpollWaiters();

  // A kernel entry's registration in the poll's kernel epoll (docs/engine.md, "Kernel entries"): the fd number it is
  // registered under and the key its records carry.
  struct KernelRegistration {
    int fd = -1;
    std::uint64_t key = 0;
  };
  // The registration of entry `id`, or nullopt if it is not a registered kernel entry.
  std::optional<KernelRegistration> KernelRegistrationOf(FileIdentifier id) const;
  // Whether the kernel epoll still holds `registration`. It lives with the open file description, not the fd: it
  // outlives the closing of its fd while a dup, or a forked child's copy, keeps the description open (epoll(7)).
  // One kcmp(KCMP_EPOLL_TFD) when no registration is left under that fd number; /proc/self/fdinfo otherwise.
  bool KernelHolds(KernelRegistration registration) const;
  // Whether the kernel epoll holds a registration made under fd number `fd` of the open file description that `fd`
  // names now (kcmp(KCMP_EPOLL_TFD) over the registrations under that number): the same description, not merely the
  // same inode, as a dup of a closed registered fd brought back at its number is.
  bool KernelHoldsFileAt(int fd) const;

  // The keys (KernelRegistration::key) of the kernel entries on the kernel epoll's ready list, front first: what
  // `epollcr ps` shows of an interposed program's ready list. The kernel has no call that reads the list without
  // taking it, so this takes it (epoll_wait) and puts it back (EPOLL_CTL_MOD of each registration, in order: 2 to 3
  // system calls per ready entry). Visible, rarely: a blocked Wait of another thread may wake, the poll's fd is
  // readable again for its watchers (an edge-triggered watcher gets an edge), and a wake-up that lands while the list
  // is put back is placed before the entries put back after it. ENOTSUP (nothing taken) if an entry is exclusive
  // or a detached host file's, which EPOLL_CTL_MOD cannot put back.
  Result<std::vector<std::uint64_t>> KernelReadyKeys();

  // Inspection.
  std::vector<EntryInfo> Entries() const;     // in key order (file address, then fd) - stable within a process
  std::vector<EntryInfo> ReadyList() const;   // in ready-list order
  std::size_t EntryCount() const;
  int BlockedWaiters() const;  // threads blocked in Wait right now

  // The engine's state, for lib/ internals (nesting checks, release, the state model). Incomplete outside lib/.
  struct Impl;
  Impl* impl() const { return impl_; }

 private:
  struct PrivateTag {};

 public:
  explicit EventPoll(PrivateTag);  // use Create()

 private:
  static int SpanMax(std::span<Event> s) {
    return s.size() > static_cast<std::size_t>(kMaxEvents) ? kMaxEvents : static_cast<int>(s.size());
  }

  struct WaitLimit;
  Result<int> WaitUntil(Event* events, int max, const WaitLimit& limit, const sigset_t* mask);

  // The engine's state lives inside the poll, so a poll is one heap block with its reference counts (MakeFile), not
  // two: a restore makes a poll per record, and a world of many small polls spent a tenth of its checkpoints in malloc
  // and free. event_poll.cc checks that Impl fits.
  static constexpr std::size_t kImplBytes = 512;
  alignas(std::max_align_t) std::byte impl_storage_[kImplBytes];
  Impl* const impl_;  // in impl_storage_
};

}  // namespace epollcr
