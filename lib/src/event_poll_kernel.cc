// EventPoll's kernel side: the kernel epoll every poll sleeps in, and the kernel entries it holds (docs/engine.md,
// "Kernel entries"). An entry on a file the kernel can watch (a host fd, or a poll that has kernel entries) is
// registered in the poll's kernel epoll with the entry's own events word; the kernel then keeps that entry's place
// in the ready list and does everything fs/eventpoll.c does for it (ep_poll_callback's key filter, ep_send_events'
// re-check and level-triggered requeue, ep_done_scan's order, edges, one-shot disarming, nesting), so what a Wait
// reports for it is what an epoll over the same fds reports, with nothing in flight between the kernel and the poll.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <string>

#include <unordered_set>

#include "epollcr/host_file.h"
#include "epollcr/state.h"
#include "event_poll_internal.h"
#include "fault_injection.h"
#include "syscall_batch.h"

namespace epollcr {

namespace {

using testing::FaultPoint;
using testing::Faulted;

// The bell's key; entries' keys count from 1.
constexpr std::uint64_t kBellKey = 0;

epoll_event KernelEvent(std::uint32_t events, std::uint64_t key) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  return ev;
}

// EPOLL_CTL_ADD of `link` to `kernel_fd`. EEXIST means that another entry of this poll holds (file, fd) in the
// kernel, which keys its entries by both: this one is another name of the same file in epollcr's fd table, and gets a
// name of its own, as a dup(2) would.
std::atomic<int> internal_fd_floor{0};  // SetInternalFdFloor

// `fd`, moved to the internal floor when there is one and it is below it.
int AboveFloor(int fd) {
  const int floor = internal_fd_floor.load(std::memory_order_relaxed);
  if (fd < 0 || floor <= 0 || fd >= floor) return fd;
  const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, floor);
  if (high < 0) return fd;
  ::close(fd);
  return high;
}

std::error_code AddLink(int kernel_fd, EventPoll::Impl::KernelLink& link, std::uint32_t events) {
  epoll_event ev = KernelEvent(events, link.key);
  if (::epoll_ctl(kernel_fd, EPOLL_CTL_ADD, link.fd, &ev) != 0) {
    if (errno != EEXIST || link.dup.valid()) return Errno(errno);
    UniqueFd dup(::fcntl(link.fd, F_DUPFD_CLOEXEC, 0));
    dup.Reset(AboveFloor(dup.Release()));
    if (!dup.valid()) return Errno(errno);
    if (::epoll_ctl(kernel_fd, EPOLL_CTL_ADD, dup.get(), &ev) != 0) return Errno(errno);
    link.fd = dup.get();
    link.dup = std::move(dup);
  }
  link.linked = true;
  return {};
}

}  // namespace

std::error_code EventPoll::Impl::MakeEpollLocked() {
  if (kernel_fd_.valid()) return {};
  UniqueFd kernel_fd(AboveFloor(Faulted(FaultPoint::kWaitEpollCreate) ? -1 : ::epoll_create1(EPOLL_CLOEXEC)));
  if (!kernel_fd.valid()) return Errno(errno);
  kernel_fd_ = std::move(kernel_fd);
  return {};
}

std::error_code EventPoll::Impl::MakeKernelLocked(std::size_t becoming_kernel) {
  if (std::error_code error = MakeEpollLocked()) return error;
  const bool in_memory = ready_.size() + waiting_.size() + disabled_.size() > kernel_entries_ + becoming_kernel;
  return in_memory ? MakeBellLocked() : std::error_code{};
}

std::error_code EventPoll::Impl::MakeBellLocked() {
  if (bell_fd_.valid()) return {};
  if (std::error_code error = MakeEpollLocked()) return error;
  UniqueFd bell_fd(AboveFloor(Faulted(FaultPoint::kWaitEventFd) ? -1 : ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
  if (!bell_fd.valid()) return Errno(errno);
  epoll_event ev = KernelEvent(EPOLLIN | EPOLLET, kBellKey);
  if (Faulted(FaultPoint::kWaitEventFdAdd) || ::epoll_ctl(kernel_fd_.get(), EPOLL_CTL_ADD, bell_fd.get(), &ev) != 0) {
    return Errno(errno);
  }
  bell_fd_ = std::move(bell_fd);
  return {};
}

std::error_code EventPoll::Impl::MakeSleeperLocked() { return MakeKernelLocked(); }

// ---- the bell of a visible poll -------------------------------------------------------------------------------------

namespace {
std::atomic<int> visible_polls{0};
}  // namespace

int VisiblePolls() { return visible_polls.load(std::memory_order_relaxed); }
void VisiblePollGone() { visible_polls.fetch_sub(1, std::memory_order_relaxed); }

std::error_code EventPoll::Impl::MakeVisibleLocked() {
  if (visible_.load(std::memory_order_relaxed)) return {};
  if (std::error_code error = MakeBellLocked()) return error;
  epoll_event ev = KernelEvent(EPOLLIN, kBellKey);  // level-triggered from now on
  if (::epoll_ctl(kernel_fd_.get(), EPOLL_CTL_MOD, bell_fd_.get(), &ev) != 0) return Errno(errno);
  std::uint64_t count;
  (void)!::read(bell_fd_.get(), &count, sizeof count);  // the kicks of sleeping waiters, never read until now
  bell_set_ = false;
  visible_.store(true, std::memory_order_relaxed);
  visible_polls.fetch_add(1, std::memory_order_relaxed);
  if (ListReadyLocked()) RingBellLocked();
  return {};
}

void EventPoll::Impl::RingBellLocked() {
  // A wake-up whose entry is not ready after all (a key that met the mask, readiness that did not) wakes the kernel's
  // watchers too, but they find nothing when they poll: an outside watcher here is not woken at all.
  if (!ListReadyLocked()) return RefreshBellLocked();
  const std::uint64_t one = 1;
  (void)!::write(bell_fd_.get(), &one, sizeof one);  // a wake-up: an edge-triggered watcher re-edges
  bell_set_ = true;
}

bool EventPoll::Impl::ListReadyLocked() {
  // What polling a kernel epoll does (__ep_eventpoll_poll): the stale entries in front of the first ready one leave
  // the ready list. A visible poll's fd may be polled from outside at any moment, so its list is kept as such a poll
  // leaves it (docs/engine.md, "EventPoll::Fd").
  while (!ready_.empty()) {
    PollEntry& e = ready_.front();
    const EventMask armed = e.events & ~kEpollPrivateBits;
    if (armed != 0 && (e.file->Readiness(armed) & armed) != 0) return true;
    MoveToLocked(e, EntryList::kWaiting);
  }
  return false;
}

void EventPoll::Impl::RefreshBellLocked() {
  const bool ready = ListReadyLocked();
  if (ready == bell_set_) return;
  std::uint64_t count = 1;
  // Readiness that comes without a queueing (a re-armed entry that was already queued) is a wake-up too: the kernel
  // wakes the poll's watchers when it queues such an entry again once a poll has dropped it.
  if (ready) {
    (void)!::write(bell_fd_.get(), &count, sizeof count);
  } else {
    (void)!::read(bell_fd_.get(), &count, sizeof count);
  }
  bell_set_ = ready;
}

void File::ReadinessMayHaveDropped() {
  if (VisiblePolls() == 0) return;
  queue_.ForEach([](WaiterEntry& w) {
    EventPoll* poll = w.WatchingPoll();
    if (poll == nullptr) return;
    EventPoll::Impl& s = *poll->impl();
    if (!s.visible_.load(std::memory_order_relaxed)) return;
    MutexLock lists(s.lists_mu_);
    if (static_cast<PollEntry&>(w).list == EntryList::kReady) s.RefreshBellLocked();
  });
}

Result<int> EventPoll::Fd() {
  MutexLock lists(impl_->lists_mu_);
  if (std::error_code error = impl_->MakeVisibleLocked()) return error;
  return impl_->kernel_fd_.get();
}

std::error_code EventPoll::Impl::LinkKernelLocked(PollEntry& e, int file_fd, std::uint32_t events) {
  int kernel_fd;
  {
    MutexLock lists(lists_mu_);
    if (std::error_code error = MakeKernelLocked(/*becoming_kernel=*/1)) return error;
    kernel_fd = kernel_fd_.get();
  }
  KernelLink link;
  link.key = next_key_;
  link.fd = file_fd;
  if ((events & ~kEpollPrivateBits) != 0) {  // a disarmed one-shot entry waits for UpdateEntry
    if (std::error_code error = AddLink(kernel_fd, link, events)) return error;
  }
  ++next_key_;
  by_key_.emplace(link.key, &e);
  links_.emplace(&e, std::move(link));
  {
    // In one step for a wake-up callback (NotifyEvent): from here on it leaves the entry to the kernel.
    MutexLock lists(lists_mu_);
    e.events = events;
    e.kernel = true;
    ++kernel_entries_;
    if (e.list == EntryList::kReady) MoveToLocked(e, EntryList::kWaiting);  // the kernel's ADD polled it
  }
  kernel_active_.store(true, std::memory_order_release);
  return {};
}

std::error_code EventPoll::Impl::LinkKernelManyLocked(std::span<const std::pair<PollEntry*, int>> entries,
                                                      std::size_t* failed) {
  int kernel_fd;
  {
    MutexLock lists(lists_mu_);
    if (std::error_code error = MakeKernelLocked(entries.size())) {
      *failed = 0;
      return error;
    }
    kernel_fd = kernel_fd_.get();
  }
  // The armed ones go to the kernel in one batch, in order; a disarmed one-shot entry waits for UpdateEntry.
  std::vector<KernelLink> links(entries.size());
  std::vector<int> fds;
  std::vector<epoll_event> events;
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    links[i].key = next_key_ + i;
    links[i].fd = entries[i].second;
    const std::uint32_t armed = entries[i].first->events;
    if ((armed & ~kEpollPrivateBits) == 0) continue;
    fds.push_back(entries[i].second);
    events.push_back(KernelEvent(armed, links[i].key));
    at.push_back(i);
  }
  std::vector<int> errors(fds.size());
  sys::EpollAddMany(kernel_fd, fds, events, errors);
  std::size_t done = entries.size();
  std::error_code error;
  for (std::size_t k = 0; k < at.size() && !error; ++k) {
    KernelLink& link = links[at[k]];
    if (errors[k] == 0) {
      link.linked = true;
    } else if (errors[k] == EEXIST) {  // another name of a file already registered: AddLink gives it a dup
      error = AddLink(kernel_fd, link, entries[at[k]].first->events);
    } else {
      error = Errno(errors[k]);
    }
    if (error) done = at[k];
  }
  // Entries after a failure were added to the kernel all the same: they are taken out again.
  for (std::size_t k = 0; k < at.size(); ++k) {
    if (at[k] > done && errors[k] == 0) (void)::epoll_ctl(kernel_fd, EPOLL_CTL_DEL, fds[k], nullptr);
  }
  {
    MutexLock lists(lists_mu_);
    for (std::size_t i = 0; i < done; ++i) {
      PollEntry& e = *entries[i].first;
      e.kernel = true;
      ++kernel_entries_;
      if (e.list == EntryList::kReady) MoveToLocked(e, EntryList::kWaiting);
    }
  }
  for (std::size_t i = 0; i < done; ++i) {
    by_key_.emplace(links[i].key, entries[i].first);
    links_.emplace(entries[i].first, std::move(links[i]));
  }
  next_key_ += done;
  if (done > 0) kernel_active_.store(true, std::memory_order_release);
  *failed = done;
  return error;
}

std::error_code EventPoll::Impl::RelinkKernelLocked(PollEntry& e, std::uint32_t events) {
  KernelLink& link = links_.at(&e);
  int kernel_fd;
  {
    MutexLock lists(lists_mu_);
    kernel_fd = kernel_fd_.get();
  }
  if (!link.linked) return AddLink(kernel_fd, link, events);
  epoll_event ev = KernelEvent(events, link.key);
  return ::epoll_ctl(kernel_fd, EPOLL_CTL_MOD, link.fd, &ev) == 0 ? std::error_code{} : Errno(errno);
}

void EventPoll::Impl::UnlinkKernelLocked(PollEntry& e) {
  auto it = links_.find(&e);
  if (it == links_.end()) return;
  MutexLock lists(lists_mu_);
  // Fails only if the fd was closed behind the file's back, and then the kernel dropped the registration itself. A
  // file that gave its fd back (HostFile::ReleaseFd) no longer owns that number, which may name another file by now:
  // no DEL by number then. Its registration goes when its open file description closes, as an epoll's does.
  const bool owned = it->second.dup.valid() || e.file->KernelFd() == it->second.fd;
  if (it->second.linked && owned) (void)::epoll_ctl(kernel_fd_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
  by_key_.erase(it->second.key);
  links_.erase(it);
  e.kernel = false;
  --kernel_entries_;
}

int EventPoll::Impl::HarvestKernelLocked(Event* events, int max, bool list_unharvested) {
  static_assert(sizeof(Event) == sizeof(epoll_event));
  const int got = ::epoll_wait(kernel_fd_.get(), reinterpret_cast<epoll_event*>(events), max, 0);
  return got <= 0 ? 0 : TranslateLocked(events, got, max, list_unharvested);
}

int EventPoll::Impl::TranslateLocked(Event* events, int got, int max, bool list_unharvested) {
  int n = 0;
  bool bell = false;
  for (int i = 0; i < got; ++i) {
    const std::uint64_t key = events[i].Data();
    if (key == kBellKey) {
      bell = true;
      continue;
    }
    auto it = by_key_.find(key);
    if (it == by_key_.end()) continue;  // removed by another thread since the kernel's scan
    PollEntry& e = *it->second;
    events[n].events = events[i].events;
    events[n].SetData(e.data);
    ++n;
    if ((e.events & kEpollOneShot) != 0) {  // ep_send_events disarmed it in the kernel; the mirror follows
      e.events &= kEpollPrivateBits;
      MoveToLocked(e, EntryList::kDisabled);
    }
  }
  if (bell && list_unharvested && n < max) n += HarvestListLocked(events + n, max - n);
  return n;
}

// ---- checkpoint: carry the kernel side, or give it up -------------------------------------------------------------

std::optional<EventPoll::Impl::KernelState> EventPoll::Impl::DescribeKernel(std::span<PollEntry* const> entries) {
  // A kernel-active poll is a kernel file for the polls that watch it (KernelFd), even with no kernel entry left.
  if (!kernel_active_.load(std::memory_order_acquire) || !kernel_fd_.valid()) return std::nullopt;
  KernelState k;
  k.fd = kernel_fd_.get();
  k.bell_fd = bell_fd_.valid() ? bell_fd_.get() : -1;
  k.bell_level = visible_.load(std::memory_order_relaxed);
  k.bell_set = bell_set_;
  k.next_key = next_key_;
  k.keys.reserve(entries.size());
  k.fds.reserve(entries.size());
  for (PollEntry* e : entries) {
    auto it = links_.find(e);
    k.keys.push_back(it == links_.end() ? 0 : it->second.key);
    k.fds.push_back(it == links_.end() || !it->second.linked ? -1 : it->second.fd);
    if (it != links_.end() && it->second.dup.valid()) k.dups.push_back(it->second.dup.get());
  }
  return k;
}

namespace {

// The kernel-side fds a world of this process gave up (ReleaseHostResources) and no restore has taken over yet: the
// only fds a restore may adopt, so an image can never make a poll take over an fd something else owns.
class Released {
 public:
  static Released& Instance() {
    static Released released;
    return released;
  }
  // `described`: the fd came from the process that saved the image, which described its registrations in the image
  // in the same consistent cut (a live hand-off): they need not be read back from /proc.
  void Add(int fd, bool described = false) {
    MutexLock lock(mu_);
    fds_[fd] = described;
  }
  bool Contains(int fd) {
    MutexLock lock(mu_);
    return fds_.count(fd) != 0;
  }
  bool Described(int fd) {
    MutexLock lock(mu_);
    auto it = fds_.find(fd);
    return it != fds_.end() && it->second;
  }
  // Removes `fd`; whether it was there.
  bool Take(int fd) {
    MutexLock lock(mu_);
    return fds_.erase(fd) != 0;
  }

 private:
  Mutex mu_;
  std::unordered_map<int, bool> fds_ EPOLLCR_GUARDED_BY(mu_);
};

// One registration of a kernel epoll as /proc/self/fdinfo shows it (fs/eventpoll.c ep_show_fdinfo).
struct Registration {
  int fd;
  std::uint32_t events;
  std::uint64_t data;
  auto operator<=>(const Registration&) const = default;
};

// What /proc/self/fd/N links to ("anon_inode:[eventpoll]"), or "".
std::string FdTarget(int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  char target[128];
  const ssize_t n = ::readlink(path, target, sizeof target - 1);
  return n <= 0 ? std::string() : std::string(target, static_cast<std::size_t>(n));
}

// The registrations of kernel epoll `fd`, sorted; nothing if its fdinfo cannot be read.
std::optional<std::vector<Registration>> RegistrationsOf(int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  std::FILE* f = std::fopen(path, "re");
  if (f == nullptr) return std::nullopt;
  std::vector<Registration> out;
  char line[512];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    int tfd;
    unsigned events;
    unsigned long long data;
    if (std::sscanf(line, "tfd: %d events: %x data: %llx", &tfd, &events, &data) == 3) {
      out.push_back({tfd, events, data});
    }
  }
  std::fclose(f);
  std::sort(out.begin(), out.end());
  return out;
}

// A host file whose fd the program closed while kernel epolls kept its registrations (HostFile::MarkDetached).
bool Detached(File& file) {
  return file.builtin() == File::Builtin::kHost && static_cast<HostFile&>(file).detached();
}

// Whether fds a and b of this process are the same open file description.
bool SameFile(int a, int b) {
  if (a == b) return true;
  const long same = ::syscall(SYS_kcmp, ::getpid(), ::getpid(), KCMP_FILE, a, b);
  if (same >= 0) return same == 0;
  struct stat sa, sb;  // no kcmp here: the same inode, at least
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

bool EventPoll::Impl::AdoptKernelLocked(const KernelState& state, std::span<PollEntry* const> entries) {
  if (state.keys.size() != entries.size() || state.fds.size() != entries.size()) return false;
  // Only what a world of this process gave up (ReleaseHostResources) can be taken over.
  Released& released = Released::Instance();
  if (!released.Contains(state.fd) || (state.bell_fd >= 0 && !released.Contains(state.bell_fd))) return false;
  // Handed over by the process that saved the image (AcceptHandedOver): its registrations are the image's, and every
  // fd is where the image says (one that is not, a re-keyed one, makes the poll register afresh).
  const bool described = released.Described(state.fd);
  if (FdTarget(state.fd) != "anon_inode:[eventpoll]") return false;
  if (state.bell_fd >= 0 && FdTarget(state.bell_fd) != "anon_inode:[eventfd]") return false;
  std::vector<Registration> want;
  if (state.bell_fd >= 0) {
    // epoll_ctl adds EPOLLERR|EPOLLHUP to every registration's events.
    const std::uint32_t bell = EPOLLIN | EPOLLERR | EPOLLHUP | (state.bell_level ? 0u : std::uint32_t{EPOLLET});
    want.push_back({state.bell_fd, bell, kBellKey});
  }
  std::vector<int> own(entries.size(), -1);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (state.keys[i] == 0) continue;
    if (state.keys[i] >= state.next_key) return false;
    own[i] = entries[i]->file->KernelFd();
    if (Detached(*entries[i]->file)) {  // no fd to compare: the fdinfo shows whether the kernel epoll holds it
      if (state.fds[i] >= 0 && !described) {
        want.push_back({state.fds[i], entries[i]->events & ~std::uint32_t{EPOLLWAKEUP}, state.keys[i]});
      }
      continue;
    }
    if (own[i] < 0) return false;  // not a kernel file here (a watched poll that was not adopted)
    if (state.fds[i] >= 0) {
      if (state.fds[i] != own[i] && !released.Contains(state.fds[i])) return false;  // a private duplicate
      if (described ? state.fds[i] != own[i] && !released.Described(state.fds[i]) : !SameFile(state.fds[i], own[i])) {
        return false;
      }
      // EPOLLWAKEUP is kept here as given, but the kernel drops it without CAP_BLOCK_SUSPEND or CONFIG_PM_SLEEP.
      if (!described) want.push_back({state.fds[i], entries[i]->events & ~std::uint32_t{EPOLLWAKEUP}, state.keys[i]});
    }
  }
  if (!described) {
    std::sort(want.begin(), want.end());
    std::vector<std::uint64_t> keys;
    for (const Registration& r : want) keys.push_back(r.data);
    std::sort(keys.begin(), keys.end());
    if (std::adjacent_find(keys.begin(), keys.end()) != keys.end()) return false;
    std::optional<std::vector<Registration>> have = RegistrationsOf(state.fd);
    if (!have) return false;
    for (Registration& r : *have) r.events &= ~std::uint32_t{EPOLLWAKEUP};
    if (*have != want) return false;
  }
  // Taken over as it is: the kernel's ready list, edges and wait-queue places go on.
  MutexLock lists(lists_mu_);
  kernel_fd_.Reset(state.fd);
  (void)released.Take(state.fd);
  if (state.bell_fd >= 0) {
    bell_fd_.Reset(state.bell_fd);
    (void)released.Take(state.bell_fd);
  }
  next_key_ = state.next_key;
  // Room for every link at once: a hand-off of 10,000 connections otherwise rehashed both maps a dozen times each.
  by_key_.reserve(by_key_.size() + entries.size());
  links_.reserve(links_.size() + entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (state.keys[i] == 0) continue;
    KernelLink link;
    link.key = state.keys[i];
    link.linked = state.fds[i] >= 0;
    link.fd = link.linked ? state.fds[i] : own[i];
    if (link.linked && state.fds[i] != own[i] && !Detached(*entries[i]->file)) {  // a private duplicate
      link.dup.Reset(state.fds[i]);
      (void)released.Take(state.fds[i]);
    }
    PollEntry& e = *entries[i];
    by_key_.emplace(link.key, &e);
    links_.emplace(&e, std::move(link));
    e.kernel = true;
    ++kernel_entries_;
    if (e.list == EntryList::kReady) MoveToLocked(e, EntryList::kWaiting);
  }
  if (state.bell_level) {
    bell_set_ = state.bell_set;
    visible_.store(true, std::memory_order_relaxed);
    visible_polls.fetch_add(1, std::memory_order_relaxed);
  }
  kernel_active_.store(true, std::memory_order_release);
  return true;
}

void EventPoll::Impl::DetachKernelLocked() {
  MutexLock lists(lists_mu_);
  for (auto& [e, link] : links_) {
    (void)link.dup.Release();
    const_cast<PollEntry*>(e)->kernel = false;
  }
  links_.clear();
  by_key_.clear();
  kernel_entries_ = 0;
  (void)kernel_fd_.Release();
  (void)bell_fd_.Release();
  bell_set_ = false;
  if (visible_.exchange(false, std::memory_order_relaxed)) VisiblePollGone();
}

namespace {

// Calls fn(file) once for every file of the world: its fd table, its roots, and what their polls' entries watch.
template <typename Fn>
void ForEachFileOf(const World& world, Fn&& fn) {
  std::vector<std::shared_ptr<File>> todo;
  for (auto& [fd, file] : world.fds.Snapshot()) todo.push_back(file);
  for (auto& [name, file] : world.roots) todo.push_back(file);
  std::unordered_set<File*> seen;
  while (!todo.empty()) {
    std::shared_ptr<File> file = std::move(todo.back());
    todo.pop_back();
    if (!file || !seen.insert(file.get()).second) continue;
    if (EventPoll* poll = file->AsEventPoll()) {
      MutexLock lock(poll->impl()->mu_);
      for (PollEntry& e : poll->impl()->entries_) {
        if (auto held = e.file->weak_from_this().lock()) todo.push_back(std::move(held));
      }
    }
    fn(*file);
  }
}

}  // namespace

std::vector<int> EventPoll::Impl::KernelFdsLocked() {
  std::vector<int> fds;
  MutexLock lists(lists_mu_);
  if (kernel_fd_.valid()) fds.push_back(kernel_fd_.get());
  if (bell_fd_.valid()) fds.push_back(bell_fd_.get());
  for (auto& [e, link] : links_) {
    if (link.dup.valid()) fds.push_back(link.dup.get());
  }
  return fds;
}

std::vector<int> ReleaseHostResources(World& world) {
  std::vector<int> released;
  Released& registry = Released::Instance();
  ForEachFileOf(world, [&](File& file) {
    if (auto* host = dynamic_cast<HostFile*>(&file)) (void)host->ReleaseFd();
    if (EventPoll* poll = file.AsEventPoll()) {
      EventPoll::Impl& s = *poll->impl();
      MutexLock lock(s.mu_);
      if (!s.kernel_active_.load(std::memory_order_acquire)) return;  // not in the image: the old world closes it
      for (int fd : s.KernelFdsLocked()) {
        released.push_back(fd);
        registry.Add(fd);
      }
      s.DetachKernelLocked();
    }
  });
  return released;
}

void SetInternalFdFloor(int floor) {
  internal_fd_floor.store(floor < 0 ? 0 : floor, std::memory_order_relaxed);
}

namespace {

std::vector<int> Accept(const std::vector<int>& fds, bool described) {
  std::vector<int> missing;
  for (int fd : fds) {
    if (fd < 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
      missing.push_back(fd);
      continue;
    }
    Released::Instance().Add(fd, described);
  }
  return missing;
}

}  // namespace

std::vector<int> AcceptInherited(const std::vector<int>& fds) { return Accept(fds, /*described=*/false); }
std::vector<int> AcceptHandedOver(const std::vector<int>& fds) { return Accept(fds, /*described=*/true); }

std::vector<int> KernelResources(World& world) {
  // Only polls have kernel-side fds, and only polls lead to more polls: the other files (a live hand-off's thousands
  // of sockets) are looked at once each, without being remembered.
  std::vector<std::shared_ptr<File>> todo;
  auto note = [&](const std::shared_ptr<File>& f) {
    if (f && f->AsEventPoll() != nullptr) todo.push_back(f);
  };
  for (auto& [fd, file] : world.fds.Snapshot()) note(file);
  for (auto& [name, file] : world.roots) note(file);
  std::unordered_set<File*> seen;
  std::vector<int> fds;
  while (!todo.empty()) {
    std::shared_ptr<File> file = std::move(todo.back());
    todo.pop_back();
    if (!seen.insert(file.get()).second) continue;
    EventPoll::Impl& s = *file->AsEventPoll()->impl();
    MutexLock lock(s.mu_);
    for (PollEntry& e : s.entries_) {
      if (e.file->AsEventPoll() == nullptr) continue;
      if (auto held = e.file->weak_from_this().lock()) todo.push_back(std::move(held));
    }
    if (!s.kernel_active_.load(std::memory_order_acquire)) continue;
    for (int fd : s.KernelFdsLocked()) fds.push_back(fd);
  }
  return fds;
}

void CloseUnadopted(const std::vector<int>& released) {
  for (int fd : released) {
    if (Released::Instance().Take(fd)) ::close(fd);
  }
}

// ---- nesting ------------------------------------------------------------------------------------------------------

std::error_code EventPoll::Impl::Activate(EventPoll& poll) {
  Impl& s = *poll.impl();
  if (s.kernel_active_.load(std::memory_order_acquire)) return {};
  {
    MutexLock lists(s.lists_mu_);
    if (std::error_code error = s.MakeVisibleLocked()) return error;
  }
  // The watchers register this poll's kernel epoll before it holds anything: from then on the kernel filters and
  // passes on every wake-up exactly as between nested epolls. (Registered later, with the poll already ready, a
  // watcher's ADD would queue it on a poll whose wake-up the kernel's would have filtered out by its key.)
  if (std::error_code error = PromoteParents(poll)) return error;
  s.kernel_active_.store(true, std::memory_order_release);
  return {};
}

std::error_code EventPoll::Impl::PromoteParents(EventPoll& child) {
  struct Parent {
    std::shared_ptr<File> holder;
    EventPoll* poll;
    int fd;
  };
  std::vector<Parent> parents;
  child.queue().ForEach([&](WaiterEntry& w) {
    if (EventPoll* p = w.WatchingPoll()) {
      if (auto held = p->weak_from_this().lock()) parents.push_back({std::move(held), p, static_cast<PollEntry&>(w).fd});
    }
  });
  int child_fd;
  {
    MutexLock lists(child.impl()->lists_mu_);
    child_fd = child.impl()->kernel_fd_.get();
  }
  // The kernel queues a poll's watchers at the head of its wait queue (add_wait_queue, as WaiterQueue does), so they
  // are registered last-woken first to keep the order their wake-ups reach them in.
  for (auto it = parents.rbegin(); it != parents.rend(); ++it) {
    const Parent& parent = *it;
    if (std::error_code error = Activate(*parent.poll)) return error;  // top-down: its own watchers first
    Impl& s = *parent.poll->impl();
    MutexLock lock(s.mu_);
    PollEntry* e = s.FindLocked({&child, parent.fd});
    if (e == nullptr) continue;  // removed meanwhile
    {
      MutexLock lists(s.lists_mu_);
      if (e->kernel) continue;
    }
    if (std::error_code error = s.LinkKernelLocked(*e, child_fd, e->events)) return error;
  }
  return {};
}

// ---- the poll as a kernel file ------------------------------------------------------------------------------------

std::optional<EventPoll::KernelRegistration> EventPoll::KernelRegistrationOf(FileIdentifier id) const {
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  PollEntry* e = s.FindLocked(id);
  if (e == nullptr) return std::nullopt;
  auto it = s.links_.find(e);
  if (it == s.links_.end() || !it->second.linked) return std::nullopt;
  return KernelRegistration{it->second.fd, it->second.key};
}

// The poll's kernel epoll, -1 if it has none (the lists lock guards it).
static int KernelEpollOf(EventPoll::Impl& s) {
  MutexLock lists(s.lists_mu_);
  return s.kernel_fd_.get();
}

bool EventPoll::KernelHolds(KernelRegistration registration) const {
  const int kernel_fd = KernelEpollOf(*impl_);
  if (kernel_fd < 0) return false;
  // kcmp(KCMP_EPOLL_TFD) finds the first registration under that fd number, if any (it then compares its file with
  // kernel_fd's; only ENOENT matters here): none is the usual answer, and a certain one. Otherwise the fdinfo says
  // whether the one with this key is among them.
  kcmp_epoll_slot slot{static_cast<std::uint32_t>(kernel_fd), static_cast<std::uint32_t>(registration.fd), 0};
  if (::syscall(SYS_kcmp, ::getpid(), ::getpid(), KCMP_EPOLL_TFD, kernel_fd, &slot) < 0 && errno == ENOENT) {
    return false;
  }
  std::optional<std::vector<Registration>> held = RegistrationsOf(kernel_fd);
  if (!held) return true;  // unknown: kept, as the kernel keeps what it cannot prove gone
  return std::any_of(held->begin(), held->end(), [&](const Registration& r) {
    return r.fd == registration.fd && r.data == registration.key;
  });
}

bool EventPoll::KernelHoldsFileAt(int fd) const {
  const int kernel_fd = KernelEpollOf(*impl_);
  // Registrations under one number are told apart by their position among them (kcmp_epoll_slot.toff); ENOENT past
  // the last. One file is registered at most once per epoll, and a number rarely names many.
  for (std::uint32_t at = 0; kernel_fd >= 0 && at < 64; ++at) {
    kcmp_epoll_slot slot{static_cast<std::uint32_t>(kernel_fd), static_cast<std::uint32_t>(fd), at};
    const long order = ::syscall(SYS_kcmp, ::getpid(), ::getpid(), KCMP_EPOLL_TFD, fd, &slot);
    if (order < 0) return false;
    if (order == 0) return true;
  }
  return false;
}

// No system call reads a kernel epoll's ready list without consuming it, so this one takes it and puts it back:
// harvest everything (epoll_wait, timeout 0), and again while level-triggered records were among the last ones (the
// kernel queues those again at the tail: each is made one-shot first, so the next harvest takes it off and disarms
// it), then EPOLL_CTL_MOD every harvested registration, front first, back to its own events word. ep_modify polls the
// file and queues a ready registration at the tail, so the list is rebuilt in its order, each entry reported as its
// file is ready now, as the kernel's delivery would report it.
Result<std::vector<std::uint64_t>> EventPoll::KernelReadyKeys() {
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  int kernel_fd;
  int bell_fd;
  std::uint32_t bell_events;
  {
    MutexLock lists(s.lists_mu_);
    kernel_fd = s.kernel_fd_.get();
    bell_fd = s.bell_fd_.get();
    bell_events = EPOLLIN | (s.visible_.load(std::memory_order_relaxed) ? 0u : std::uint32_t{EPOLLET});
  }
  std::vector<std::uint64_t> order;
  if (kernel_fd < 0) return order;
  // A registration that EPOLL_CTL_MOD cannot put back: an exclusive one (EINVAL), a detached file's (no fd).
  for (const auto& [e, link] : s.links_) {
    if (link.linked && ((e->events & kEpollExclusive) != 0 || Detached(*e->file))) return Errno(ENOTSUP);
  }
  // Each registration's fd and events word, by key (the bell's under kBellKey).
  std::unordered_map<std::uint64_t, std::pair<int, std::uint32_t>> registrations;
  if (bell_fd >= 0) registrations.emplace(kBellKey, std::pair{bell_fd, bell_events});
  for (const auto& [e, link] : s.links_) {
    if (link.linked) registrations.emplace(link.key, std::pair{link.fd, e->events});
  }
  auto registration = [&](std::uint64_t key, int* fd, std::uint32_t* events) {
    auto at = registrations.find(key);
    if (at == registrations.end()) return false;
    *fd = at->second.first;
    *events = at->second.second;
    return true;
  };
  std::unordered_set<std::uint64_t> seen;
  std::unordered_set<std::uint64_t> made_one_shot;
  std::vector<epoll_event> records(registrations.size() + 1);
  std::error_code failed;
  for (bool again = true; again && !failed;) {
    again = false;
    const int n = ::epoll_wait(kernel_fd, records.data(), static_cast<int>(records.size()), 0);
    if (n < 0) {
      failed = Errno(errno);
      break;
    }
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = records[static_cast<std::size_t>(i)].data.u64;
      int fd;
      std::uint32_t events;
      if (!registration(key, &fd, &events)) continue;
      if (seen.insert(key).second) order.push_back(key);
      if ((events & (EPOLLET | EPOLLONESHOT)) != 0 || !made_one_shot.insert(key).second) continue;
      epoll_event ev = KernelEvent(events | EPOLLONESHOT, key);
      if (::epoll_ctl(kernel_fd, EPOLL_CTL_MOD, fd, &ev) != 0) failed = Errno(errno);
      again = true;
    }
  }
  for (std::uint64_t key : order) {  // back, front first, even after a failure
    int fd;
    std::uint32_t events;
    if (!registration(key, &fd, &events)) continue;
    epoll_event ev = KernelEvent(events, key);
    if (::epoll_ctl(kernel_fd, EPOLL_CTL_MOD, fd, &ev) != 0 && !failed) failed = Errno(errno);
  }
  if (failed) return failed;
  std::erase(order, kBellKey);
  return order;
}

int EventPoll::KernelFd() {
  if (!impl_->kernel_active_.load(std::memory_order_acquire)) return -1;
  MutexLock lists(impl_->lists_mu_);
  return impl_->kernel_fd_.get();
}

}  // namespace epollcr
