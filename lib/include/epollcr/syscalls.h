// The epoll system calls over an FdTable, with Linux's argument checks and errno precedence.
//
// These are what a userspace kernel's syscall layer does before it reaches EventPoll (gVisor: sys_epoll.go), but in
// Linux's order (fs/eventpoll.c do_epoll_ctl), e.g. EFAULT before EBADF, EPERM before "epfd is not an epoll".
#pragma once

#include <cstdint>
#include <span>
#include <system_error>

#include "epollcr/event_poll.h"
#include "epollcr/fd_table.h"

namespace epollcr::sys {

inline constexpr int kEpollCtlAdd = 1;
inline constexpr int kEpollCtlDel = 2;
inline constexpr int kEpollCtlMod = 3;
inline constexpr int kEpollCloexec = 0x80000;  // == O_CLOEXEC

// epoll_create1(2): EINVAL for flags other than EPOLL_CLOEXEC (the flag itself has no meaning here).
Result<int> EpollCreate1(FdTable& fds, int flags);
// epoll_ctl(2). `event` may be null for DEL only (EFAULT otherwise). event->events is the Linux word.
std::error_code EpollCtl(FdTable& fds, int epfd, int op, int fd, const Event* event);
// epoll_wait(2), checked in the kernel's order: EBADF, EINVAL for max <= 0 or > kMaxEvents, EINVAL for a non-epoll
// fd, EFAULT for a null buffer; then EventPoll::Wait (EINTR when a signal handler ran).
Result<int> EpollWait(FdTable& fds, int epfd, Event* events, int max, int timeout_ms);
// epoll_pwait(2): the same with `mask` as the thread's signal mask for the wait (null: unchanged).
Result<int> EpollPwait(FdTable& fds, int epfd, Event* events, int max, int timeout_ms, const sigset_t* mask);
// epoll_pwait2(2): a timespec timeout (null: forever), EINVAL for a bad one before any other check.
Result<int> EpollPwait2(FdTable& fds, int epfd, Event* events, int max, const timespec* timeout,
                        const sigset_t* mask);

// The files epollcr emulates, installed at the lowest free fds.
Result<int> EventFd(FdTable& fds, std::uint64_t initial, bool semaphore);
std::error_code Pipe(FdTable& fds, int out[2]);        // out[0] read end, out[1] write end
std::error_code SocketPair(FdTable& fds, int out[2]);  // AF_UNIX stream

Result<std::size_t> Read(FdTable& fds, int fd, std::span<std::byte> buffer);
Result<std::size_t> Write(FdTable& fds, int fd, std::span<const std::byte> buffer);
std::error_code Shutdown(FdTable& fds, int fd, int how);
Result<int> Dup(FdTable& fds, int fd);
std::error_code Close(FdTable& fds, int fd);

}  // namespace epollcr::sys
