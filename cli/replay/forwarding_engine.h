// ForwardingEngine: an Engine that passes every call to another one (which it does not own). A base for engines that
// change one thing about another: a test's engine that misreports one operation, one that counts checkpoints.
#pragma once

#include "replay/engine.h"

namespace epollcr::replay {

class ForwardingEngine : public Engine {
 public:
  explicit ForwardingEngine(Engine& inner) : inner_(inner) {}

  std::string_view Name() const override { return "forwarding"; }
  Result<int> EpollCreate() override { return inner_.EpollCreate(); }
  std::error_code Pipe(int out[2]) override { return inner_.Pipe(out); }
  Result<int> EventFd(std::uint32_t initial, bool semaphore) override { return inner_.EventFd(initial, semaphore); }
  std::error_code SocketPair(int out[2]) override { return inner_.SocketPair(out); }
  Result<int> Dup(int fd) override { return inner_.Dup(fd); }
  std::error_code Close(int fd) override { return inner_.Close(fd); }
  std::error_code EpollCtl(int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) override {
    return inner_.EpollCtl(epfd, op, fd, events, data);
  }
  Result<int> EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) override {
    return inner_.EpollWait(epfd, buffer, max, timeout_ms);
  }
  Result<std::size_t> Read(int fd, std::span<std::byte> buffer) override { return inner_.Read(fd, buffer); }
  Result<std::size_t> Write(int fd, std::span<const std::byte> buffer) override { return inner_.Write(fd, buffer); }
  std::error_code Shutdown(int fd, int how) override { return inner_.Shutdown(fd, how); }
  Status Checkpoint() override { return inner_.Checkpoint(); }
  bool SavesCheckpoints() const override { return inner_.SavesCheckpoints(); }
  Result<int> TimerFd() override { return inner_.TimerFd(); }
  std::error_code TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns, bool absolute) override {
    return inner_.TimerSetTime(fd, value_ns, interval_ns, absolute);
  }
  Result<int> SignalFd(int signal) override { return inner_.SignalFd(signal); }
  std::error_code Raise(int signal) override { return inner_.Raise(signal); }
  int TraceSignal(int signo) const override { return inner_.TraceSignal(signo); }
  Result<int> Listen() override { return inner_.Listen(); }
  Result<int> Connect(int listener) override { return inner_.Connect(listener); }
  Result<int> Accept(int listener) override { return inner_.Accept(listener); }
  std::error_code UdpPair(int out[2]) override { return inner_.UdpPair(out); }
  std::error_code Fifo(std::string_view name, bool read_end, bool write_end, int out[2]) override {
    return inner_.Fifo(name, read_end, write_end, out);
  }
  std::error_code CloseReset(int fd) override { return inner_.CloseReset(fd); }
  int KernelFd(int fd) const override { return inner_.KernelFd(fd); }
  std::vector<int> KernelFds() const override { return inner_.KernelFds(); }

 protected:
  Engine& inner() { return inner_; }

 private:
  Engine& inner_;
};

}  // namespace epollcr::replay
