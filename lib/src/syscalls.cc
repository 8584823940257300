#include "epollcr/syscalls.h"

#include "epollcr/eventfd.h"
#include "epollcr/pipe.h"
#include "epollcr/socket_pair.h"

namespace epollcr::sys {

Result<int> EpollCreate1(FdTable& fds, int flags) {
  if ((flags & ~kEpollCloexec) != 0) return Errno(EINVAL);
  return fds.Install(EventPoll::Create());
}

// do_epoll_ctl's order: EFAULT (the event is copied first, for every op but DEL), EBADF (epfd), EBADF (fd), EPERM
// (no poll support), EINVAL (same file, or epfd not a poll), EINVAL (EPOLLEXCLUSIVE rules), then the op itself:
// ELOOP, EEXIST/ENOENT, EINVAL for an unknown op or a MOD of an exclusive entry, EINVAL for too many paths.
std::error_code EpollCtl(FdTable& fds, int epfd, int op, int fd, const Event* event) {
  const bool has_event = op != kEpollCtlDel;
  if (has_event && event == nullptr) return Errno(EFAULT);
  std::shared_ptr<File> epfile = fds.Get(epfd);
  if (!epfile) return Errno(EBADF);
  std::shared_ptr<File> target = fds.Get(fd);
  if (!target) return Errno(EBADF);
  if (!target->Epollable()) return Errno(EPERM);
  auto* poll = dynamic_cast<EventPoll*>(epfile.get());
  if (poll == nullptr || epfile == target) return Errno(EINVAL);
  const std::uint32_t events = has_event ? event->events : 0;
  if (has_event && (events & kEpollExclusive) != 0) {
    if (op == kEpollCtlMod) return Errno(EINVAL);
    if (op == kEpollCtlAdd &&
        (dynamic_cast<EventPoll*>(target.get()) != nullptr || (events & ~kEpollExclusiveOkBits) != 0)) {
      return Errno(EINVAL);
    }
  }
  const FileIdentifier id{target.get(), fd};
  switch (op) {
    case kEpollCtlAdd:
      return poll->AddEntry(id, FlagsFromLinux(events), MaskFromLinux(events), event->Data());
    case kEpollCtlDel:
      return poll->RemoveEntry(id);
    case kEpollCtlMod:
      return poll->UpdateEntry(id, FlagsFromLinux(events), MaskFromLinux(events), event->Data());
    default:
      return Errno(EINVAL);
  }
}

namespace {

// epoll_wait's checks in the order Linux 6.15 and later make them (do_epoll_wait, ep_check_params; earlier kernels
// checked the count before the fd), measured on 6.18 by tests/lib/event_poll_signal_test.cc, WaitErrorsTest: the fd
// (EBADF), the count (EINVAL), the fd's kind (EINVAL). A null buffer is EFAULT here; Linux faults only when it copies
// an event out (docs/engine.md, "Known differences").
Result<EventPoll*> WaitTarget(FdTable& fds, int epfd, Event* events, int max, std::shared_ptr<File>* holder) {
  *holder = fds.Get(epfd);
  if (!*holder) return Errno(EBADF);
  if (max <= 0 || max > kMaxEvents) return Errno(EINVAL);
  auto* poll = dynamic_cast<EventPoll*>(holder->get());
  if (poll == nullptr) return Errno(EINVAL);
  if (events == nullptr) return Errno(EFAULT);
  return poll;
}

}  // namespace

Result<int> EpollWait(FdTable& fds, int epfd, Event* events, int max, int timeout_ms) {
  return EpollPwait(fds, epfd, events, max, timeout_ms, nullptr);
}

Result<int> EpollPwait(FdTable& fds, int epfd, Event* events, int max, int timeout_ms, const sigset_t* mask) {
  std::shared_ptr<File> holder;
  Result<EventPoll*> poll = WaitTarget(fds, epfd, events, max, &holder);
  if (!poll.ok()) return poll.status();
  return poll.value()->PWait(events, max, timeout_ms, mask);
}

Result<int> EpollPwait2(FdTable& fds, int epfd, Event* events, int max, const timespec* timeout,
                        const sigset_t* mask) {
  // epoll_pwait2 checks the timeout before anything else.
  if (!EventPoll::ValidTimeout(timeout)) return Errno(EINVAL);
  std::shared_ptr<File> holder;
  Result<EventPoll*> poll = WaitTarget(fds, epfd, events, max, &holder);
  if (!poll.ok()) return poll.status();
  return poll.value()->PWait2(events, max, timeout, mask);
}

Result<int> EventFd(FdTable& fds, std::uint64_t initial, bool semaphore) {
  return fds.Install(EventFd::Create(initial, semaphore));
}

std::error_code Pipe(FdTable& fds, int out[2]) {
  PipeEnds ends = NewPipe();
  Result<int> r = fds.Install(ends.read);
  if (!r.ok()) return r.error();
  Result<int> w = fds.Install(ends.write);
  if (!w.ok()) {
    (void)fds.Close(r.value());  // nothing half-made stays behind
    return w.error();
  }
  out[0] = r.value();
  out[1] = w.value();
  return {};
}

std::error_code SocketPair(FdTable& fds, int out[2]) {
  auto [a, b] = NewSocketPair();
  Result<int> fa = fds.Install(a);
  if (!fa.ok()) return fa.error();
  Result<int> fb = fds.Install(b);
  if (!fb.ok()) {
    (void)fds.Close(fa.value());
    return fb.error();
  }
  out[0] = fa.value();
  out[1] = fb.value();
  return {};
}

Result<std::size_t> Read(FdTable& fds, int fd, std::span<std::byte> buffer) {
  std::shared_ptr<File> file = fds.Get(fd);
  if (!file) return Errno(EBADF);
  return file->Read(buffer);
}

Result<std::size_t> Write(FdTable& fds, int fd, std::span<const std::byte> buffer) {
  std::shared_ptr<File> file = fds.Get(fd);
  if (!file) return Errno(EBADF);
  return file->Write(buffer);
}

std::error_code Shutdown(FdTable& fds, int fd, int how) {
  std::shared_ptr<File> file = fds.Get(fd);
  if (!file) return Errno(EBADF);
  return file->Shutdown(how);
}

Result<int> Dup(FdTable& fds, int fd) { return fds.Dup(fd); }

std::error_code Close(FdTable& fds, int fd) { return fds.Close(fd); }

}  // namespace epollcr::sys
