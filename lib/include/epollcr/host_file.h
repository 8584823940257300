// A real file descriptor of this process (socket, pipe, eventfd, timerfd, terminal, ...) as an epollcr File, so an
// EventPoll can watch operating-system files next to in-memory ones: epollcr is then a working event loop for real
// sockets.
//
// An EventPoll holds its entries on host files as kernel entries (docs/engine.md, "Kernel entries"): each is
// registered in the poll's own kernel epoll with the entry's events word, so the kernel reports them, in its own
// order, the moment they are ready: a Wait with timeout 0 right after another thread's or process's write sees it, as
// epoll_wait does. Readiness() asks the kernel (poll(2) with a zero timeout). A host file's wake-ups reach EventPolls
// only: a non-poll waiter (CallbackWaiter) on its queue is never called.
//
// A HostFile owns its fd: it closes it when the last reference goes, unless ReleaseFd() gave it back first. Do not
// close the fd behind its back. One HostFile per fd number: a second one for the same number is refused (EEXIST).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "epollcr/file.h"
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
  static Result<std::shared_ptr<HostFile>> Create(int fd);
  // For restorers: Create for an fd whose file type the caller already knows (the S_IFMT bits, from its own fstat).
  static Result<std::shared_ptr<HostFile>> Wrap(int fd, std::uint32_t file_type);
  // The same for an fd whose device and inode the caller knows too (`identity`: fd, dev, ino, file_type), so the
  // file never needs an fstat of its own.
  static Result<std::shared_ptr<HostFile>> Wrap(const Identity& identity);
  ~HostFile() override;

  int fd() const { return fd_.load(std::memory_order_acquire); }
  // The identity of the file behind fd() now. The device, inode and type cannot change while the file owns its fd:
  // they are learnt once (from Create's fstat, Wrap's caller, or the first Identify's fstat). The open flags
  // (F_GETFL) and position (lseek, not for sockets and FIFOs, which have none) are read at each call, unless
  // `open_state` is false (a live hand-off's successor shares the open file: its flags and position come with it).
  Result<Identity> Identify(bool open_state = true) const;
  // "socket 8:0 ino 1234" style text for messages: type, device and inode.
  static std::string Describe(const Identity& identity);

  // Gives the fd back to the caller: the file will not close it. Returns the fd (-1 if it was already given back).
  // The file then reports no readiness and fails I/O with EBADF. Not concurrently with another ReleaseFd or with the
  // file's destruction. The entries of EventPolls on it stay until they are removed (their kernel registrations go
  // when the open file description closes, as an epoll's do).
  int ReleaseFd();
  // Gives a file that gave its fd back an fd again: `fd` must name the same open file description (an interposer's
  // dup2 of it back to the number it had, so that its entries, keyed by that number, apply again). EBUSY if the file
  // still owns an fd, EEXIST if another HostFile wraps `fd`, EBADF if `fd` is negative.
  std::error_code Reattach(int fd);
  // Says that the file gave its fd back because the program closed it while its open file description lived on
  // elsewhere, with registrations in kernel epolls that outlive the fd (an interposer's orphan). An image records
  // such a file as detached (HostFileReference.detached) instead of refusing it. Reattach clears it.
  void MarkDetached() { detached_.store(true, std::memory_order_release); }
  bool detached() const { return detached_.load(std::memory_order_acquire); }
  // A detached file for a restore: the identity's fd is the number it had; the file has no fd (fd() is -1).
  static Result<std::shared_ptr<HostFile>> Detached(const Identity& identity);
  // What Identify() told last, without the open state: the fd the file had (before a ReleaseFd too), its device,
  // inode and type; nullopt if they were never learnt.
  std::optional<Identity> LastIdentity() const;

  EventMask Readiness(EventMask mask) override;
  bool Epollable() const override { return epollable_; }
  int KernelFd() override { return epollable_ ? fd() : -1; }
  std::string_view TypeName() const override { return "host"; }
  Builtin builtin() const override { return Builtin::kHost; }
  // read(2), write(2) and shutdown(2) on the fd; they block if the fd is blocking (set O_NONBLOCK for an event loop).
  Result<std::size_t> Read(std::span<std::byte> buffer) override;
  Result<std::size_t> Write(std::span<const std::byte> buffer) override;
  std::error_code Shutdown(int how) override;

  // How many fds host files own now (tests check that a failed restore leaves none behind).
  static std::size_t WrappedFds();

  HostFile(int fd, bool epollable) : fd_(fd), last_fd_(fd), epollable_(epollable) {}

 private:
  std::atomic<int> fd_;
  std::atomic<int> last_fd_{-1};  // the fd the file had, kept by ReleaseFd
  std::atomic<bool> detached_{false};
  const bool epollable_;
  // The fd's device, inode and file type once known (known_ is set after them, with release; racing first Identify
  // calls store the same values).
  mutable std::atomic<bool> known_{false};
  mutable std::atomic<std::uint64_t> dev_{0}, ino_{0};
  mutable std::atomic<std::uint32_t> file_type_{0};
};

}  // namespace epollcr
