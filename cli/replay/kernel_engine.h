// KernelEngine: runs a trace on the Linux kernel itself, with real epoll fds, pipes, eventfds and socket pairs, and the
// kernel-only kinds (replay/host_objects.h: timerfds, signalfds, TCP and UDP sockets on loopback, FIFOs).
//
// Every fd is created non-blocking and close-on-exec, and owned by the engine (UniqueFd) until the trace closes it;
// whatever is left open is closed when the engine is destroyed, whatever happened. Calls with an fd the engine does
// not own are made with -1 instead, so a trace can never touch the process's other fds (stdin, a test's files).
// SIGPIPE is blocked around writes and a SIGPIPE raised by a write is consumed, so a write to a broken pipe or socket
// reports EPIPE and never kills the process.
#pragma once

#include <sys/epoll.h>

#include <map>
#include <vector>

#include "epollcr/unique_fd.h"
#include "replay/engine.h"
#include "replay/host_objects.h"

namespace epollcr::replay {

class KernelEngine final : public Engine {
 public:
  KernelEngine() = default;
  ~KernelEngine() override = default;  // owned_ closes every fd still open

  std::string_view Name() const override { return "kernel"; }

  Result<int> EpollCreate() override;
  std::error_code Pipe(int out[2]) override;
  Result<int> EventFd(std::uint32_t initial, bool semaphore) override;
  std::error_code SocketPair(int out[2]) override;
  Result<int> Dup(int fd) override;
  std::error_code Close(int fd) override;
  std::error_code EpollCtl(int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) override;
  Result<int> EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) override;
  Result<std::size_t> Read(int fd, std::span<std::byte> buffer) override;
  Result<std::size_t> Write(int fd, std::span<const std::byte> buffer) override;
  std::error_code Shutdown(int fd, int how) override;
  Status Checkpoint() override { return Status::Ok(); }
  bool SavesCheckpoints() const override { return false; }

  Result<int> TimerFd() override;
  std::error_code TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns, bool absolute) override;
  Result<int> SignalFd(int signal) override;
  std::error_code Raise(int signal) override;
  int TraceSignal(int signo) const override { return host_.TraceSignal(signo); }
  Result<int> Listen() override;
  Result<int> Connect(int listener) override;
  Result<int> Accept(int listener) override;
  std::error_code UdpPair(int out[2]) override;
  std::error_code Fifo(std::string_view name, bool read_end, bool write_end, int out[2]) override;
  std::error_code CloseReset(int fd) override;
  int KernelFd(int fd) const override { return Owned(fd); }
  std::vector<int> KernelFds() const override;

  // Number of fds the engine holds open.
  std::size_t OpenCount() const { return owned_.size(); }

 private:
  // `fd` if the engine owns it, else -1.
  int Owned(int fd) const { return owned_.contains(fd) ? fd : -1; }
  Result<int> Adopt(int fd);
  Result<int> Adopt(Result<int> fd);
  // Adopts both ends of a pair that host_ made (an end of -1 stays -1).
  std::error_code AdoptPair(std::error_code made, int out[2]);

  host::HostObjects host_{host::SignalRange::kKernel};  // before owned_: the fds close first
  std::map<int, UniqueFd> owned_;
  std::vector<epoll_event> wait_buffer_;
};

}  // namespace epollcr::replay
