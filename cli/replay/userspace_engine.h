// UserspaceEngine: runs a trace on epollcr's engine, through the system-call layer (epollcr::sys) over the fd table
// of an epollcr::World, so that argument checks and errno precedence are the library's, exactly as an embedder gets
// them.
//
// A checkpoint saves the whole world (SaveWorld, in the engine's archive format), loads the archive into a fresh
// World (LoadWorld) and goes on there. A load keeps fd numbers, so the Runner's name -> fd map stays valid.
#pragma once

#include <memory>

#include "epollcr/state.h"
#include "replay/engine.h"

namespace epollcr::replay {

class UserspaceEngine final : public Engine {
 public:
  // boost-text is the default: portable across architectures and readable (docs/trace-format.md).
  explicit UserspaceEngine(ArchiveFormat format = ArchiveFormat::kBoostText);
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
  // Save -> load into a fresh World -> swap. The old world is dropped only once the new one has loaded; on a failure
  // ("checkpoint: <why>") the engine keeps the old world, but the Runner stops the run anyway.
  Status Checkpoint() override;

  ArchiveFormat format() const { return format_; }
  // Checkpoints that succeeded so far.
  int checkpoints() const { return checkpoints_; }
  // The current world. Replaced by every checkpoint: do not keep references across one.
  const FdTable& fds() const { return world_->fds; }
  World& world() { return *world_; }

 private:
  ArchiveFormat format_;
  int checkpoints_ = 0;
  std::unique_ptr<World> world_;  // never null
};

}  // namespace epollcr::replay
