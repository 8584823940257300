// The engines a trace runs on: the Linux kernel (KernelEngine) and epollcr's userspace engine (UserspaceEngine).
//
// An engine is a process-like world of fds. The Runner maps trace names to the fds an engine hands out, and passes
// -1 for a dead name, so both engines answer EBADF for it. Every call is non-blocking except EpollWait with a
// positive or negative timeout. Errors are Linux errno values, exactly as the calls return them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "epollcr/events.h"
#include "epollcr/result.h"

namespace epollcr::replay {

// An engine operation that is not a system call succeeds or says why the run cannot go on: a Status whose code is
// the errno of the failed system call, or ECANCELED when nothing failed but the run must stop (a worker that died, a
// checkpoint the engine does not support).
inline Status Halt(std::string why) { return Status::Error(ECANCELED, std::move(why)); }

class Engine {
 public:
  Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  virtual ~Engine() = default;

  // "kernel", "userspace".
  virtual std::string_view Name() const = 0;

  virtual Result<int> EpollCreate() = 0;                              // epoll_create1(EPOLL_CLOEXEC)
  virtual std::error_code Pipe(int out[2]) = 0;                       // out[0] read end, out[1] write end
  virtual Result<int> EventFd(std::uint32_t initial, bool semaphore) = 0;
  virtual std::error_code SocketPair(int out[2]) = 0;                 // AF_UNIX, SOCK_STREAM
  virtual Result<int> Dup(int fd) = 0;
  virtual std::error_code Close(int fd) = 0;
  // epoll_ctl(epfd, op, fd, {events, data}); op is 1 (ADD), 2 (DEL) or 3 (MOD). The event is passed for DEL too.
  virtual std::error_code EpollCtl(int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) = 0;
  // epoll_wait(epfd, buffer, max, timeout_ms). `max` is passed as is; the caller guarantees that `buffer` holds at
  // least as many events as the poll has registrations, so the engine never writes past it.
  virtual Result<int> EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) = 0;
  virtual Result<std::size_t> Read(int fd, std::span<std::byte> buffer) = 0;
  virtual Result<std::size_t> Write(int fd, std::span<const std::byte> buffer) = 0;
  virtual std::error_code Shutdown(int fd, int how) = 0;

  // Saves the whole world and restores it before the run goes on (the kernel has nothing to do). A failure stops
  // the run.
  virtual Status Checkpoint() = 0;
  // Whether Checkpoint saves anything (the kernel engine's does not): a trace with kernel-only objects is not
  // checkpointed on such an engine yet (Trace::host_objects).
  virtual bool SavesCheckpoints() const = 0;

  // ---- The kinds only the kernel has (docs/trace-format.md, "Kernel-only kinds"). Both engines make them as real
  // kernel objects with replay/host_objects.h, the userspace engine then as host files. ----
  virtual Result<int> TimerFd() = 0;
  // timerfd_settime(fd, absolute ? TFD_TIMER_ABSTIME : 0, {interval_ns, value_ns}).
  virtual std::error_code TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns, bool absolute) = 0;
  virtual Result<int> SignalFd(int signal) = 0;  // trace signal 1..kTraceSignals
  virtual std::error_code Raise(int signal) = 0;
  // The trace signal that the real signal `signo` (ssi_signo of a signalfd read) stands for, or 0.
  virtual int TraceSignal(int signo) const = 0;
  virtual Result<int> Listen() = 0;
  virtual Result<int> Connect(int listener) = 0;
  virtual Result<int> Accept(int listener) = 0;
  virtual std::error_code UdpPair(int out[2]) = 0;
  // The FIFO `name`: out[0] its read end (if `read_end`), out[1] its write end (if `write_end`), -1 otherwise.
  virtual std::error_code Fifo(std::string_view name, bool read_end, bool write_end, int out[2]) = 0;
  // SO_LINGER {on, 0} on fd's socket, then close(fd): a reset. The first error.
  virtual std::error_code CloseReset(int fd) = 0;
  // The kernel fd behind `fd` (the kernel engine's own fds; a host file's fd in the userspace engine), or -1: what
  // the settling of TCP and UDP (replay/host_objects.h) works on.
  virtual int KernelFd(int fd) const = 0;
  // The kernel fds of every open fd of the engine that has one.
  virtual std::vector<int> KernelFds() const = 0;
};

}  // namespace epollcr::replay
