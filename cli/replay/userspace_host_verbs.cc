// The userspace engine's kernel-only kinds (userspace_engine.h, "Kernel-only kinds"): the kernel objects that
// replay/host_objects.h makes, as for the kernel engine, installed in the world's fd table as host files. The
// kernel keeps their state; the engine's polls hold their entries as kernel entries.
#include <unistd.h>

#include "epollcr/host_file.h"
#include "epollcr/syscalls.h"
#include "replay/userspace_engine.h"

namespace epollcr::replay {

Result<int> UserspaceEngine::InstallMade(Result<int> made) {
  if (!made.ok()) return made.error();
  return InstallHost(made.value());
}

std::error_code UserspaceEngine::InstallMadePair(std::error_code made, int out[2]) {
  if (made) return made;
  int installed[2] = {-1, -1};
  for (int i = 0; i < 2; ++i) {
    if (out[i] < 0) continue;
    Result<int> fd = InstallHost(out[i]);  // closes out[i] on a failure
    if (!fd.ok()) {
      if (i == 0 && out[1] >= 0) ::close(out[1]);
      if (installed[0] >= 0) (void)world_->fds.Close(installed[0]);
      return fd.error();
    }
    installed[i] = fd.value();
  }
  out[0] = installed[0];
  out[1] = installed[1];
  return {};
}

Result<int> UserspaceEngine::TimerFd() { return InstallMade(host::HostObjects::TimerFd()); }

std::error_code UserspaceEngine::TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns,
                                              bool absolute) {
  return host::HostObjects::TimerSetTime(KernelFd(fd), value_ns, interval_ns, absolute);
}

Result<int> UserspaceEngine::SignalFd(int signal) { return InstallMade(host_.SignalFd(signal)); }

std::error_code UserspaceEngine::Raise(int signal) { return host_.Raise(signal); }

int UserspaceEngine::TraceSignal(int signo) const { return host_.TraceSignal(signo); }

Result<int> UserspaceEngine::Listen() { return InstallMade(host::HostObjects::Listen()); }

Result<int> UserspaceEngine::Connect(int listener) {
  return InstallMade(host::HostObjects::Connect(KernelFd(listener)));
}

Result<int> UserspaceEngine::Accept(int listener) { return InstallMade(host::HostObjects::Accept(KernelFd(listener))); }

std::error_code UserspaceEngine::UdpPair(int out[2]) { return InstallMadePair(host::HostObjects::UdpPair(out), out); }

std::error_code UserspaceEngine::Fifo(std::string_view name, bool read_end, bool write_end, int out[2]) {
  return InstallMadePair(host_.Fifo(name, read_end, write_end, out), out);
}

std::error_code UserspaceEngine::CloseReset(int fd) {
  const std::error_code linger = host::HostObjects::LingerReset(KernelFd(fd));
  const std::error_code closed = sys::Close(world_->fds, fd);
  return linger ? linger : closed;
}

int UserspaceEngine::KernelFd(int fd) const {
  const std::shared_ptr<File> file = world_->fds.Get(fd);
  const auto* host = dynamic_cast<const HostFile*>(file.get());
  return host != nullptr ? host->fd() : -1;
}

std::vector<int> UserspaceEngine::KernelFds() const {
  std::vector<int> fds;
  for (const auto& [fd, file] : world_->fds.Snapshot()) {
    if (const auto* host = dynamic_cast<const HostFile*>(file.get()); host != nullptr && host->fd() >= 0) {
      fds.push_back(host->fd());
    }
  }
  return fds;
}

}  // namespace epollcr::replay
