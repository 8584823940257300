#include "replay/userspace_engine.h"

#include "epollcr/syscalls.h"

namespace epollcr::replay {

UserspaceEngine::~UserspaceEngine() { fds_.Clear(); }

Result<int> UserspaceEngine::EpollCreate() { return sys::EpollCreate1(fds_, sys::kEpollCloexec); }

std::error_code UserspaceEngine::Pipe(int out[2]) { return sys::Pipe(fds_, out); }

Result<int> UserspaceEngine::EventFd(std::uint32_t initial, bool semaphore) {
  return sys::EventFd(fds_, initial, semaphore);
}

std::error_code UserspaceEngine::SocketPair(int out[2]) { return sys::SocketPair(fds_, out); }

Result<int> UserspaceEngine::Dup(int fd) { return sys::Dup(fds_, fd); }

std::error_code UserspaceEngine::Close(int fd) { return sys::Close(fds_, fd); }

std::error_code UserspaceEngine::EpollCtl(int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) {
  Event event;
  event.events = events;
  event.SetData(data);
  return sys::EpollCtl(fds_, epfd, op, fd, &event);
}

Result<int> UserspaceEngine::EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) {
  return sys::EpollWait(fds_, epfd, buffer.data(), max, timeout_ms);
}

Result<std::size_t> UserspaceEngine::Read(int fd, std::span<std::byte> buffer) { return sys::Read(fds_, fd, buffer); }

Result<std::size_t> UserspaceEngine::Write(int fd, std::span<const std::byte> buffer) {
  return sys::Write(fds_, fd, buffer);
}

std::error_code UserspaceEngine::Shutdown(int fd, int how) { return sys::Shutdown(fds_, fd, how); }

Status UserspaceEngine::Checkpoint() { return Status::Error("checkpoint: not supported yet"); }

}  // namespace epollcr::replay
