#include "host_notifier.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <vector>

#include "epollcr/host_file.h"
#include "epollcr/result.h"
#include "fault_injection.h"
#include "syscall_batch.h"

namespace epollcr {

namespace {

// Every readiness event a host fd can wake with, edge-triggered: the kernel queues the fd at each wake-up of the
// file (new data, new space, a hang-up), which is when its waiters here must hear of it.
constexpr std::uint32_t kWatchedEvents = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
constexpr std::uint64_t kWakeKey = 0;    // the notifier's stop eventfd
constexpr std::uint64_t kSettleKey = 1;  // its settle eventfd; file keys start at 2

using testing::FaultPoint;
using testing::Faulted;


// An eventfd added to `epoll_fd` under `key`; not valid on failure, with errno set.
UniqueFd NewEventFd(int epoll_fd, std::uint64_t key) {
  UniqueFd fd(Faulted(FaultPoint::kNotifierEventFd) ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) return fd;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = key;
  if (Faulted(FaultPoint::kNotifierEventFdAdd) || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
    const int e = errno;
    fd.Reset();
    errno = e;
  }
  return fd;
}

void Poke(int eventfd) {
  const std::uint64_t one = 1;
  while (write(eventfd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

}  // namespace

HostNotifier& HostNotifier::Instance() {
  // Never destroyed: host files may outlive static destruction, and a running thread must not meet ~thread.
  static HostNotifier* const instance = new HostNotifier();
  return *instance;
}

std::error_code HostNotifier::StartLocked() {
  // On any failure the fds made so far close as these go.
  UniqueFd epoll_fd(Faulted(FaultPoint::kNotifierEpollCreate) ? -1 : epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd.valid()) return Errno(errno);
  UniqueFd wake_fd = NewEventFd(epoll_fd.get(), kWakeKey);
  if (!wake_fd.valid()) return Errno(errno);
  UniqueFd settle_fd = NewEventFd(epoll_fd.get(), kSettleKey);
  if (!settle_fd.valid()) return Errno(errno);
  try {
    if (const int e = testing::FaultAt(FaultPoint::kNotifierThread).error) {
      throw std::system_error(e, std::generic_category(), "thread");
    }
    thread_ = std::thread([this, epoll = epoll_fd.get(), settle = settle_fd.get()] { Run(epoll, settle); });
  } catch (const std::system_error& e) {
    return e.code();
  }
  epoll_fd_ = std::move(epoll_fd);
  wake_fd_ = std::move(wake_fd);
  settle_fd_ = std::move(settle_fd);
  return {};
}

void HostNotifier::StopLocked() {
  {
    MutexLock gate(gate_mu_);
    stopping_ = true;
  }
  gate_cv_.NotifyAll();
  Poke(wake_fd_.get());
  thread_.join();
  {
    MutexLock gate(gate_mu_);
    stopping_ = false;
  }
  settle_fd_.Reset();
  wake_fd_.Reset();
  epoll_fd_.Reset();
}

std::error_code HostNotifier::Watch(HostFile* file) {
  MutexLock lifecycle(lifecycle_mu_);
  if (!thread_.joinable()) {
    if (std::error_code e = StartLocked()) return e;
  }
  std::uint64_t key;
  {
    // In the map before the kernel knows the fd: an event that comes at once finds its file.
    MutexLock lock(mu_);
    key = next_key_++;
    files_.emplace(key, file);
  }
  epoll_event ev{};
  ev.events = kWatchedEvents;
  ev.data.u64 = key;
  if (Faulted(FaultPoint::kNotifierWatchAdd) || epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, file->fd(), &ev) != 0) {
    const int e = errno;
    bool last;
    {
      MutexLock lock(mu_);
      files_.erase(key);
      last = files_.empty();
    }
    if (last) StopLocked();
    return Errno(e);
  }
  file->watch_key_ = key;
  return {};
}

std::error_code HostNotifier::WatchMany(std::span<HostFile* const> files, std::size_t* failed) {
  std::vector<std::size_t> todo;  // indices into `files`
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (files[i]->Epollable() && !files[i]->watched()) todo.push_back(i);
  }
  if (todo.empty()) return {};
  MutexLock lifecycle(lifecycle_mu_);
  if (!thread_.joinable()) {
    if (std::error_code e = StartLocked()) {
      *failed = todo.front();
      return e;
    }
  }
  std::vector<int> fds(todo.size());
  std::vector<epoll_event> events(todo.size());
  std::vector<int> errors(todo.size());
  {
    MutexLock lock(mu_);  // in the map before the kernel knows the fds, as in Watch
    files_.reserve(files_.size() + todo.size());
    for (std::size_t k = 0; k < todo.size(); ++k) {
      HostFile* file = files[todo[k]];
      fds[k] = file->fd();
      const std::uint64_t key = next_key_++;
      events[k].events = kWatchedEvents;
      events[k].data.u64 = key;
      files_.emplace(key, file);
    }
  }
  sys::EpollAddMany(epoll_fd_.get(), fds, events, errors);
  std::error_code first;
  bool last;
  {
    MutexLock lock(mu_);
    for (std::size_t k = 0; k < todo.size(); ++k) {
      HostFile* file = files[todo[k]];
      const std::uint64_t key = events[k].data.u64;
      if (errors[k] == 0 && !first) {
        file->watch_key_ = key;
        continue;
      }
      if (errors[k] == 0) {
        // Watched by the kernel after an earlier failure: undone, so that only files before the failure are.
        epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fds[k], nullptr);
      } else if (errors[k] == EPERM) {
        file->epollable_ = false;  // a file without poll support, as in HostFile::Watch
      } else if (!first) {
        first = Errno(errors[k]);
        *failed = todo[k];
      }
      files_.erase(key);
    }
    last = files_.empty();
  }
  if (last) StopLocked();
  return first;
}

void HostNotifier::Unwatch(HostFile* file) {
  MutexLock lifecycle(lifecycle_mu_);
  if (file->watch_key_ == 0) return;
  // The fd is still open (the file closes it after this), so the kernel's registration goes with it now.
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, file->fd(), nullptr);
  bool last;
  {
    MutexLock lock(mu_);  // waits for a delivery to this file that is under way
    files_.erase(file->watch_key_);
    last = files_.empty();
  }
  file->watch_key_ = 0;
  if (last) StopLocked();
}

void HostNotifier::Settle() {
  MutexLock one(settle_mu_);
  MutexLock lifecycle(lifecycle_mu_);  // the thread stays up until the token is through
  if (!thread_.joinable()) return;
  MutexLock lock(mu_);
  settling_ = true;
  Poke(settle_fd_.get());  // queued behind every event already on the kernel's ready list
  while (settling_) settled_cv_.Wait(mu_);
}

void HostNotifier::Hold() {
  MutexLock gate(gate_mu_);
  ++holds_;
}

void HostNotifier::DrainAndUnhold() {
  {
    MutexLock lifecycle(lifecycle_mu_);  // the thread stays up meanwhile
    if (thread_.joinable()) {
      MutexLock gate(gate_mu_);
      if (!parked_) {
        gate.Unlock();
        Poke(settle_fd_.get());  // out of epoll_wait, if it is there, and on to the gate
        gate.Lock();
      }
      while (!parked_) gate_cv_.Wait(gate_mu_);
      gate.Unlock();
      epoll_event events[256];
      for (;;) {
        const int n = epoll_wait(epoll_fd_.get(), events, 256, 0);
        if (n <= 0) break;
        MutexLock lock(mu_);
        DeliverLocked(events, n, settle_fd_.get());
      }
    }
  }
  Unhold();
}

void HostNotifier::Unhold() {
  {
    MutexLock gate(gate_mu_);
    --holds_;
  }
  gate_cv_.NotifyAll();
}

std::size_t HostNotifier::Watched() {
  MutexLock lock(mu_);
  return files_.size();
}

bool HostNotifier::Running() {
  MutexLock lifecycle(lifecycle_mu_);
  return thread_.joinable();
}

void HostNotifier::Run(int epoll_fd, int settle_fd) {
  epoll_event events[256];
  for (;;) {
    {
      MutexLock gate(gate_mu_);
      if (holds_ != 0 && !stopping_) {
        parked_ = true;
        gate_cv_.NotifyAll();
        while (holds_ != 0 && !stopping_) gate_cv_.Wait(gate_mu_);
        parked_ = false;
      }
    }
    const int n = epoll_wait(epoll_fd, events, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // EBADF/EINVAL cannot happen while the instance owns epoll_fd; nothing to deliver to
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeKey) return;  // Stop: no file is watched any more
    }
    MutexLock lock(mu_);
    DeliverLocked(events, n, settle_fd);
  }
}

void HostNotifier::DeliverLocked(const epoll_event* events, int n, int settle_fd) {
  for (int i = 0; i < n; ++i) {
    // A copy: struct epoll_event is packed on x86-64, so its data.u64 is not 8-byte aligned, and a reference to it
    // (std::unordered_map::find takes one) is undefined behaviour (found by the handoff_receive fuzz target, UBSan).
    const std::uint64_t key = events[i].data.u64;
    if (key == kSettleKey) {
      std::uint64_t count;
      while (read(settle_fd, &count, sizeof count) < 0 && errno == EINTR) {
      }
      settling_ = false;
      settled_cv_.NotifyAll();
      continue;
    }
    auto it = files_.find(key);
    if (it != files_.end()) it->second->DeliverHostEvents(events[i].events);
  }
}

}  // namespace epollcr
