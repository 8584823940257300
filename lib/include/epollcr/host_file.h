// A real file descriptor of this process (socket, pipe, eventfd, terminal, ...) as an epollcr File, so an EventPoll
// can watch operating-system files next to in-memory ones: epollcr is then a working event loop for real sockets.
//
// Readiness comes from the kernel (poll(2) with a zero timeout). Wake-ups come from one internal notifier shared by
// every HostFile of the process (gVisor's fdnotifier): a thread that watches all host fds with the kernel's epoll in
// edge-triggered mode and notifies each file's waiter queue with the events the kernel reported. The notifier starts
// with the first HostFile and stops (thread joined, its fds closed) with the last.
//
// Wake-ups are asynchronous: data that arrives on a socket reaches the EventPoll when the notifier thread has passed
// the kernel's event on, a few microseconds later, so a Wait with timeout 0 right after a peer's write may not see
// it yet (a Wait with a timeout does). Readiness itself is always the kernel's at the time of the check.
//
// A HostFile owns its fd: it closes it when the last reference goes, unless ReleaseFd() gave it back first. Do not
// close the fd behind its back. Callbacks run by a wake-up must not destroy host files.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "epollcr/file.h"
#include "epollcr/mutex.h"
#include "epollcr/result.h"

namespace epollcr {

class HostFile final : public File {
 public:
  // What identifies the file behind an fd, and the fd's open state: what a checkpoint records of a host file
  // (proto/epollcr/v1/image.proto HostFileReference) and what a restorer checks an fd against.
  struct Identity {
    int fd = -1;
    std::uint64_t dev = 0;
    std::uint64_t ino = 0;
    std::uint32_t file_type = 0;   // the S_IFMT bits of st_mode
    std::uint32_t open_flags = 0;  // fcntl(F_GETFL)
    std::uint64_t offset = 0;      // the file position, 0 where there is none
  };

  // Wraps `fd`, which must be open; the HostFile owns it from then on (on success only). EBADF if it is not open;
  // EEXIST if another HostFile already wraps this fd number. Regular files and directories are accepted but not
  // Epollable (an EventPoll refuses them with EPERM, as epoll_ctl does).
  //
  // When the notifier starts watching a ready fd, the kernel reports it once; Create returns only after that report
  // has gone by, so it cannot reach an entry added afterwards as an edge that never happened.
  static Result<std::shared_ptr<HostFile>> Create(int fd);

  // For restorers: a host file whose fd is not watched yet (no wake-up reaches its waiters) and whose file type the
  // caller already knows (S_IFMT bits, from its own fstat). Entries can be put back on it first; Watch() then makes
  // the kernel report every ready fd once, and those first reports are what re-checks the entries' readiness (one
  // system call per file instead of a poll per entry).
  static Result<std::shared_ptr<HostFile>> CreateUnwatched(int fd, std::uint32_t file_type);
  // Starts watching; nothing if already watched or not Epollable. EEXIST if another host file watches this fd number.
  std::error_code Watch();
  bool watched() const { return watch_key_ != 0; }
  // Watch() for many files, their kernel calls batched (a restore of 10,000 host fds enters the kernel a few dozen
  // times instead of 10,000). On failure returns the first error with the index of its file in `failed`; the files
  // before that one are watched, the others are not.
  static std::error_code WatchAll(std::span<HostFile* const> files, std::size_t* failed);

  // Returns once every report the kernel had for the notifier has reached its file.
  static void Settle();
  // Watching many host files at once: while a Batch lives the notifier thread is not woken once per ready fd; its
  // end lets the thread go on and settles (Settle()).
  class Batch {
   public:
    Batch();
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
  };
  ~HostFile() override;

  int fd() const { return fd_.load(std::memory_order_acquire); }
  // The identity of the file behind fd() now (fstat, F_GETFL, lseek).
  Result<Identity> Identify() const;
  // "socket 8:0 ino 1234" style text for messages: type, device and inode.
  static std::string Describe(const Identity& identity);

  // Gives the fd back to the caller: the file stops watching it and will not close it. Returns the fd (-1 if it was
  // already given back). The file then reports no readiness and fails I/O with EBADF. Not concurrently with
  // another ReleaseFd or with the file's destruction.
  int ReleaseFd();

  EventMask Readiness(EventMask mask) override;
  bool Epollable() const override { return epollable_; }
  int KernelFd() override { return epollable_ ? fd() : -1; }
  std::string_view TypeName() const override { return "host"; }
  // read(2), write(2) and shutdown(2) on the fd; they block if the fd is blocking (set O_NONBLOCK for an event loop).
  Result<std::size_t> Read(std::span<std::byte> buffer) override;
  Result<std::size_t> Write(std::span<const std::byte> buffer) override;
  std::error_code Shutdown(int how) override;

  // Held by the notifier while it passes a kernel event to this file's waiters, so a snapshot never sees half of one.
  Mutex* MutationLock() const override { return &notify_mu_; }

  // Number of host fds the notifier watches, and whether its thread runs (tests check that it stops).
  static std::size_t WatchedFds();
  static bool NotifierRunning();

  // Internal: the notifier's delivery of a kernel event.
  void DeliverHostEvents(EventMask events);

  HostFile(int fd, bool epollable) : fd_(fd), epollable_(epollable) {}

 private:
  friend class HostNotifier;

  mutable Mutex notify_mu_;  // LOCKING 2 (lib/src/event_poll_internal.h)
  std::atomic<int> fd_;
  bool epollable_;
  std::uint64_t watch_key_ = 0;  // the notifier's key for this file; 0 when not watched
};

}  // namespace epollcr
