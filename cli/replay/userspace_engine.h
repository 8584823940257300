// UserspaceEngine: runs a trace on epollcr's engine, through the system-call layer (epollcr::sys) over an FdTable,
// so that argument checks and errno precedence are the library's, exactly as an embedder gets them.
#pragma once

#include "epollcr/fd_table.h"
#include "replay/engine.h"

namespace epollcr::replay {

class UserspaceEngine final : public Engine {
 public:
  UserspaceEngine() = default;
  ~UserspaceEngine() override;  // closes every fd still open

  std::string_view Name() const override { return "userspace"; }

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
  // Not yet: the state model (save/restore of the world) does not exist. A later issue replaces this with a save of
  // fds_ and everything it reaches, then a restore into a fresh table.
  Status Checkpoint() override;

  const FdTable& fds() const { return fds_; }

 private:
  FdTable fds_;
};

}  // namespace epollcr::replay
