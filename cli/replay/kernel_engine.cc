#include "replay/kernel_engine.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>

#include "replay/sigpipe_guard.h"

namespace epollcr::replay {
namespace {

static_assert(sizeof(epoll_event) == sizeof(Event), "epollcr::Event mirrors struct epoll_event");

std::error_code LastError() { return Errno(errno); }

}  // namespace

Result<int> KernelEngine::Adopt(int fd) {
  if (fd < 0) return LastError();
  assert(!owned_.contains(fd));
  owned_.emplace(fd, UniqueFd(fd));
  return fd;
}

Result<int> KernelEngine::EpollCreate() { return Adopt(::epoll_create1(EPOLL_CLOEXEC)); }

std::error_code KernelEngine::Pipe(int out[2]) {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return LastError();
  out[0] = Adopt(fds[0]).value();
  out[1] = Adopt(fds[1]).value();
  return {};
}

Result<int> KernelEngine::EventFd(std::uint32_t initial, bool semaphore) {
  return Adopt(::eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC | (semaphore ? EFD_SEMAPHORE : 0)));
}

std::error_code KernelEngine::SocketPair(int out[2]) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) return LastError();
  out[0] = Adopt(fds[0]).value();
  out[1] = Adopt(fds[1]).value();
  return {};
}

Result<int> KernelEngine::Dup(int fd) {
  // dup(2) with close-on-exec: the lowest free fd, sharing the open file description (and its O_NONBLOCK).
  return Adopt(::fcntl(Owned(fd), F_DUPFD_CLOEXEC, 0));
}

std::error_code KernelEngine::Close(int fd) {
  auto it = owned_.find(fd);
  if (it == owned_.end()) {
    // Not ours (a dead name passes -1): let the kernel answer for -1.
    return ::close(-1) < 0 ? LastError() : std::error_code{};
  }
  // close(2) releases the fd even when it reports an error; never retry.
  const std::error_code e = it->second.Close();
  owned_.erase(it);
  return e;
}

std::error_code KernelEngine::EpollCtl(int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = data;
  if (::epoll_ctl(Owned(epfd), op, Owned(fd), &event) < 0) return LastError();
  return {};
}

Result<int> KernelEngine::EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) {
  if (wait_buffer_.size() < buffer.size()) wait_buffer_.resize(buffer.size());
  int n = ::epoll_wait(Owned(epfd), wait_buffer_.data(), max, timeout_ms);
  if (n < 0) return LastError();
  assert(static_cast<std::size_t>(n) <= buffer.size());
  for (int i = 0; i < n; ++i) {
    buffer[i].events = wait_buffer_[i].events;
    buffer[i].SetData(wait_buffer_[i].data.u64);
  }
  return n;
}

Result<std::size_t> KernelEngine::Read(int fd, std::span<std::byte> buffer) {
  ssize_t n = ::read(Owned(fd), buffer.data(), buffer.size());
  if (n < 0) return LastError();
  return static_cast<std::size_t>(n);
}

Result<std::size_t> KernelEngine::Write(int fd, std::span<const std::byte> buffer) {
  SigPipeGuard guard;
  ssize_t n = ::write(Owned(fd), buffer.data(), buffer.size());
  if (n < 0) {
    std::error_code error = LastError();
    if (error.value() == EPIPE) guard.set_broken();
    return error;
  }
  return static_cast<std::size_t>(n);
}

std::error_code KernelEngine::Shutdown(int fd, int how) {
  if (::shutdown(Owned(fd), how) < 0) return LastError();
  return {};
}

// ---- Kernel-only kinds: made by host_ (replay/host_objects.h), as in the userspace engine. ----

Result<int> KernelEngine::Adopt(Result<int> fd) {
  if (!fd.ok()) return fd.error();
  return Adopt(fd.value());
}

std::error_code KernelEngine::AdoptPair(std::error_code made, int out[2]) {
  if (made) return made;
  for (int i = 0; i < 2; ++i) {
    if (out[i] >= 0) out[i] = Adopt(out[i]).value();
  }
  return {};
}

Result<int> KernelEngine::TimerFd() { return Adopt(host::HostObjects::TimerFd()); }

std::error_code KernelEngine::TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns, bool absolute) {
  return host::HostObjects::TimerSetTime(Owned(fd), value_ns, interval_ns, absolute);
}

Result<int> KernelEngine::SignalFd(int signal) { return Adopt(host_.SignalFd(signal)); }

std::error_code KernelEngine::Raise(int signal) { return host_.Raise(signal); }

Result<int> KernelEngine::Listen() { return Adopt(host::HostObjects::Listen()); }

Result<int> KernelEngine::Connect(int listener) { return Adopt(host::HostObjects::Connect(Owned(listener))); }

Result<int> KernelEngine::Accept(int listener) { return Adopt(host::HostObjects::Accept(Owned(listener))); }

std::error_code KernelEngine::UdpPair(int out[2]) { return AdoptPair(host::HostObjects::UdpPair(out), out); }

std::error_code KernelEngine::Fifo(std::string_view name, bool read_end, bool write_end, int out[2]) {
  return AdoptPair(host_.Fifo(name, read_end, write_end, out), out);
}

std::error_code KernelEngine::CloseReset(int fd) {
  const std::error_code linger = host::HostObjects::LingerReset(Owned(fd));
  const std::error_code closed = Close(fd);
  return linger ? linger : closed;
}

std::vector<int> KernelEngine::KernelFds() const {
  std::vector<int> fds;
  fds.reserve(owned_.size());
  for (const auto& [fd, owned] : owned_) fds.push_back(fd);
  return fds;
}

}  // namespace epollcr::replay
