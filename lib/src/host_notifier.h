// The one notifier of the process's host files (gVisor's fdnotifier): a kernel epoll instance watching every host fd
// in edge-triggered mode, and a thread that passes each event the kernel reports to the HostFile's waiter queue.
// Internal to lib/.
//
// Locks: settle_mu_ -> lifecycle_mu_ (Watch/Unwatch, thread start and stop) -> mu_ (the key -> file map) or
// gate_mu_. The thread holds mu_ while it delivers an event, so Unwatch returning means no delivery to that file is
// running or will start; the delivery takes the file's notify_mu_ and then its waiter queue's locks, so all of these
// come before the engine's (LOCKING 2, lib/src/event_poll_internal.h). Unwatch joins the thread without holding mu_.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "epollcr/mutex.h"
#include "epollcr/unique_fd.h"

struct epoll_event;

namespace epollcr {

class HostFile;

class HostNotifier {
 public:
  static HostNotifier& Instance();

  // Starts watching file->fd(): the thread starts with the first file. EPERM for a file the kernel's epoll refuses
  // (regular files, directories); other errno values from epoll_ctl, epoll_create1, eventfd or thread creation.
  std::error_code Watch(HostFile* file);
  // Watch for many files at once, with their epoll_ctl calls batched (syscall_batch.h). Files already watched or
  // not Epollable are skipped; a file the kernel's epoll refuses with EPERM becomes not Epollable, as in Watch. On
  // the first other failure, returns it with its index in `failed`; the files before it stay watched, the others
  // are not (the caller unwatches what it wants undone).
  std::error_code WatchMany(std::span<HostFile* const> files, std::size_t* failed);
  // Stops watching the file; no delivery to it runs after this returns. The thread stops with the last file.
  void Unwatch(HostFile* file);

  // Returns once the thread has passed on every event the kernel had queued when Settle was called. Watch on a ready
  // fd queues a first report; settling after it means that report cannot reach a waiter registered afterwards (which
  // would see an edge that never happened: an extra event for an edge-triggered entry).
  void Settle();

  // While held, the thread does not go back to the kernel for more reports: watching many fds (a restore) then wakes
  // it at most once instead of once per ready fd. Counted; the last Unhold lets it go on.
  void Hold();
  void Unhold();
  // Unhold, after delivering on the calling thread every report the kernel has queued (the thread is parked at the
  // gate meanwhile): a restore's thousands of first reports then cost no hand-over between threads. Settles.
  void DrainAndUnhold();

  std::size_t Watched();
  bool Running();

 private:
  HostNotifier() = default;
  std::error_code StartLocked() EPOLLCR_REQUIRES(lifecycle_mu_);
  void StopLocked() EPOLLCR_REQUIRES(lifecycle_mu_);
  void Run(int epoll_fd, int settle_fd);
  // Passes one batch of kernel reports to their files.
  void DeliverLocked(const ::epoll_event* events, int n, int settle_fd) EPOLLCR_REQUIRES(mu_);

  Mutex lifecycle_mu_ EPOLLCR_ACQUIRED_BEFORE(mu_, gate_mu_);
  UniqueFd epoll_fd_ EPOLLCR_GUARDED_BY(lifecycle_mu_);
  UniqueFd wake_fd_ EPOLLCR_GUARDED_BY(lifecycle_mu_);
  UniqueFd settle_fd_ EPOLLCR_GUARDED_BY(lifecycle_mu_);
  std::thread thread_ EPOLLCR_GUARDED_BY(lifecycle_mu_);

  Mutex mu_;
  std::unordered_map<std::uint64_t, HostFile*> files_ EPOLLCR_GUARDED_BY(mu_);
  std::uint64_t next_key_ EPOLLCR_GUARDED_BY(mu_) = 2;  // 0 and 1 are the notifier's own fds

  Mutex gate_mu_;
  CondVar gate_cv_;
  int holds_ EPOLLCR_GUARDED_BY(gate_mu_) = 0;
  bool parked_ EPOLLCR_GUARDED_BY(gate_mu_) = false;  // the thread waits at the gate
  bool stopping_ EPOLLCR_GUARDED_BY(gate_mu_) = false;  // a held gate does not keep the thread from stopping

  Mutex settle_mu_ EPOLLCR_ACQUIRED_BEFORE(lifecycle_mu_);  // one Settle at a time
  CondVar settled_cv_;
  bool settling_ EPOLLCR_GUARDED_BY(mu_) = false;  // a settle token is on its way
};

}  // namespace epollcr
