// EventPoll: registration, wake-up and harvest. Semantics follow fs/eventpoll.c; structure follows gVisor's
// pkg/sentry/vfs/epoll.go. Nesting checks (ELOOP, path limits) are in event_poll_nesting.cc.
#include <sys/epoll.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <limits>
#include <new>
#include <utility>
#include <type_traits>
#include <thread>

#include "event_poll_internal.h"
#include "fault_injection.h"

namespace epollcr {

namespace {

// An entry's armed event bits: none once a one-shot entry has fired (its events keep only flag bits).
EventMask Armed(const PollEntry& e) { return e.events & ~kEpollPrivateBits; }

using testing::FaultPoint;
using testing::Faulted;

}  // namespace

// ---- wake-up ------------------------------------------------------------------------------------------------------

// ep_poll_callback: a wake-up whose key meets the entry's mask queues the entry (once) and wakes one blocked waiter;
// every such wake-up also wakes the poll's own watchers, even when the entry was already queued, so an outer
// edge-triggered entry re-edges on each inner wake-up (fs/eventpoll.c ep_poll_callback queues the outer entry on every wake-up; gVisor only does it on a new queueing).
// The result tells the file's queue whether an exclusive entry consumed the wake-up: only when its poll had a
// blocked waiter and the key is IN alone, OUT alone (each requested), or no key at all.
bool PollEntry::NotifyEvent(EventMask mask) {
  EventPoll::Impl* impl = poll->impl();
  const bool exclusive = WaiterEntry::exclusive();  // fixed at construction; `events` is read under lists_mu_ only
  bool consumed = !exclusive;
  {
    MutexLock lock(impl->lists_mu_);
    if (kernel) return consumed;  // the kernel carries its wake-ups (event_poll_kernel.cc)
    const EventMask armed = Armed(*this);
    if (armed == 0 || (mask & armed) == 0) return consumed;
    if (list != EntryList::kReady) impl->MoveToLocked(*this, EntryList::kReady);
    if (impl->visible_.load(std::memory_order_relaxed)) impl->RingBellLocked();
    if (impl->blocked_ > 0 && exclusive) {
      const EventMask key = mask == kAllEvents ? 0 : mask & (kEventIn | kEventOut);
      consumed = key == 0 || (key == kEventIn && (events & kEventIn) != 0) ||
                 (key == kEventOut && (events & kEventOut) != 0);
    }
    impl->WakeOneWaiterLocked();
  }
  impl->NotifyWatchers();
  return consumed;
}

// ---- Impl ---------------------------------------------------------------------------------------------------------

EventPoll::Impl::Impl(EventPoll* self)
    : bucket_count_(kInitialBuckets),
      entries_(EntryMap::bucket_traits(initial_buckets_, kInitialBuckets)),
      self_(self) {}

EventPoll::Impl::~Impl() EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {  // no one else can reach a poll being destroyed
  assert(entries_.empty());
  ::operator delete(spare_entry_);
  if (visible_.load(std::memory_order_relaxed)) VisiblePollGone();
}

static_assert(sizeof(PollEntry) <= 88, "PollEntry grew past a 96-byte heap chunk (memory per entry goal)");

EntryList_t& EventPoll::Impl::ListOf(EntryList which) {
  switch (which) {
    case EntryList::kReady:
      return ready_;
    case EntryList::kWaiting:
      return waiting_;
    case EntryList::kDisabled:
      break;
  }
  return disabled_;
}

void EventPoll::Impl::MoveToLocked(PollEntry& e, EntryList to) {
  if (e.list_hook.is_linked()) {
    EntryList_t& from = ListOf(e.list);
    from.erase(from.iterator_to(e));
  }
  e.list = to;
  ListOf(to).push_back(e);
}

bool EventPoll::Impl::QueueIfReadyLocked(PollEntry& e) {
  // The file is polled even when the entry is already queued (ep_modify always polls): polling a nested poll drops
  // its stale ready entries, which shows in its later order.
  if (e.kernel) return false;  // the kernel polled it when it was registered
  const EventMask armed = Armed(e);
  if (armed == 0 || (e.file->Readiness(armed) & armed) == 0 || e.list == EntryList::kReady) return false;
  MoveToLocked(e, EntryList::kReady);
  return true;
}

void EventPoll::Impl::WakeOneWaiterLocked() {
  if (visible_.load(std::memory_order_relaxed)) return RingBellLocked();
  PassWakeUpLocked();
}

void EventPoll::Impl::PassWakeUpLocked() {
  // A sleeper made the bell before it counted itself in blocked_ (when the poll had in-memory entries), and an
  // in-memory entry added while one sleeps makes it (Insert): only in-memory entries ring it.
  if (blocked_ == 0 || !bell_fd_.valid() || visible_.load(std::memory_order_relaxed)) return;
  const std::uint64_t one = 1;
  (void)!::write(bell_fd_.get(), &one, sizeof one);
}

void EventPoll::Impl::NotifyWatchers() { self_->Notify(kEpollWakeKey); }

PollEntry* EventPoll::Impl::FindLocked(FileIdentifier id) {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &*it;
}

void EventPoll::Impl::MaybeGrowLocked() {
  if (entries_.size() >= bucket_count_) ReserveLocked(bucket_count_ * 2);
}

void EventPoll::Impl::ReserveLocked(std::size_t want) {
  std::size_t n = bucket_count_;
  while (n < want) n *= 2;
  if (n == bucket_count_) return;
  BucketArray bigger(n);
  entries_.rehash(EntryMap::bucket_traits(bigger.get(), n));
  buckets_ = std::move(bigger);
  bucket_count_ = n;
}

void EventPoll::Impl::RemoveLocked(PollEntry* e) {
  // Unregistering waits for a running callback of this entry to finish; none can start afterwards.
  if (e->registered) e->file->EventUnregister(e);
  if (e->kernel) UnlinkKernelLocked(*e);  // synchronous: no record of it is left in the kernel's list
  {
    MutexLock lock(lists_mu_);
    EntryList_t& from = ListOf(e->list);
    from.erase(from.iterator_to(*e));
    if (e->list == EntryList::kReady && visible_.load(std::memory_order_relaxed)) RefreshBellLocked();
  }
  entries_.erase(entries_.iterator_to(*e));
  if (!e->pooled) {
    if (spare_entry_ == nullptr) {  // kept for the next Insert; delete would free it (operator delete(void*))
      e->~PollEntry();
      spare_entry_ = e;
      return;
    }
    delete e;
    return;
  }
  e->~PollEntry();
  if (--pooled_live_ == 0) pooled_.clear();
}

void EventPoll::Impl::AdoptLocked(EntryChunks&& chunks, std::size_t n) {
  if (n == 0) return;
  EntryChunks::Blocks&& blocks = std::move(chunks).TakeBlocks();
  if (pooled_.empty()) {
    pooled_ = std::move(blocks);
  } else {
    for (EntryBlock::Ref& block : blocks) pooled_.push_back(std::move(block));
  }
  pooled_live_ += n;
}

PollEntry* EntryChunks::Make(std::size_t expected_more, EventPoll* poll, FileIdentifier id, std::uint32_t events,
                             std::uint64_t data) {
  // The poll's first entry says how many it has: a small poll takes all of them at the shared cursor.
  if (blocks_.empty() && expected_more >= kShareBelow) shared_ = nullptr;
  EntryCursor& at = shared_ != nullptr ? *shared_ : own_;
  if (at.room == 0) {
    at.room = shared_ != nullptr ? kSharedBlockEntries : std::clamp<std::size_t>(expected_more, 1, kMaxBlockEntries);
    at.block = EntryBlock::Ref(new EntryBlock(at.room));
    at.next = at.block.get()->data();
  }
  if (blocks_.empty() || blocks_.back().get() != at.block.get()) blocks_.emplace_back(at.block.get());
  auto* e = new (at.next) PollEntry(poll, id, events, data);
  e->pooled = true;
  at.next += sizeof(PollEntry);
  --at.room;
  return e;
}

bool EventPoll::Impl::HasReadyLocked() {
  while (!ready_.empty()) {
    PollEntry& e = ready_.front();
    const EventMask armed = Armed(e);
    if (armed != 0 && (e.file->Readiness(armed) & armed) != 0) return true;
    MoveToLocked(e, EntryList::kWaiting);
  }
  if (visible_.load(std::memory_order_relaxed)) RefreshBellLocked();
  if (kernel_entries_ == 0) return false;
  // The kernel's answer for its part (ep_eventpoll_poll: it too drops stale records in front of a ready one).
  pollfd p{kernel_fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

void EventPoll::Impl::RemoveEntriesOfFile(File& file) {
  MutexLock lock(mu_);
  std::vector<PollEntry*> mine;
  file.queue().ForEach([&](WaiterEntry& w) {
    if (w.WatchingPoll() == self_) mine.push_back(static_cast<PollEntry*>(&w));
  });
  for (PollEntry* e : mine) RemoveLocked(e);
}

// ---- release protocol (file.h) --------------------------------------------------------------------------------------

void ReleaseFileFromPolls(File& file) {
  for (;;) {
    bool watched = false;
    std::shared_ptr<File> holder;
    EventPoll* poll = nullptr;
    file.queue().ForEach([&](WaiterEntry& w) {
      if (watched) return;
      if (EventPoll* p = w.WatchingPoll()) {
        watched = true;
        poll = p;
        holder = p->weak_from_this().lock();
      }
    });
    if (!watched) return;
    if (!holder) {
      // That poll's last reference is going away right now; its release unregisters its entries from this file.
      std::this_thread::yield();
      continue;
    }
    poll->impl()->RemoveEntriesOfFile(file);
    holder.reset();  // May release the poll; no lock is held here.
  }
}

// ---- EventPoll ------------------------------------------------------------------------------------------------------

std::shared_ptr<EventPoll> EventPoll::Create() { return MakeFile<EventPoll>(PrivateTag{}); }

EventPoll::EventPoll(PrivateTag) : impl_(new (impl_storage_) Impl(this)) {
  static_assert(sizeof(Impl) <= kImplBytes && alignof(Impl) <= alignof(std::max_align_t),
                "EventPoll::Impl outgrew the room EventPoll keeps for it: raise kImplBytes");
}

// Not analysed: the last reference is gone, so no method of the poll runs and nothing but this destructor changes its
// map; a wake-up callback touches only an entry that is in it. A poll with no entry left (a world's teardown releases
// every poll first: cli/replay's Release) has nothing to remove, and takes no lock for it.
EventPoll::~EventPoll() EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
  if (!impl_->entries_.empty()) Release();
  impl_->~Impl();
}

std::error_code EventPoll::AddEntry(FileIdentifier id, EntryFlags flags, EventMask mask, std::uint64_t data) {
  if (id.file == nullptr) return Errno(EBADF);
  if (!id.file->Epollable()) return Errno(EPERM);
  if (id.file == this || !id.file->managed() || (mask & kEpollPrivateBits) != 0) return Errno(EINVAL);
  EventPoll* inner = id.file->AsEventPoll();
  const std::uint32_t events = ToLinux(flags, mask);
  // EPOLLEXCLUSIVE: only with kEpollExclusiveOkBits, never on a poll (do_epoll_ctl).
  if (Any(flags & EntryFlags::kExclusive) && (inner != nullptr || (events & ~kEpollExclusiveOkBits) != 0)) {
    return Errno(EINVAL);
  }

  // A full check (loops, depth, wake-up paths) is needed when the new link can lengthen a chain: the target is a poll,
  // or this poll is itself watched (do_epoll_ctl's full_check). Reading "watched" without nest_mu races with a
  // concurrent ADD of this poll elsewhere exactly as Linux's READ_ONCE(f_ep) does; it can only skip a path count.
  // The first kernel entry of a poll also takes nest_mu: the polls watching it then watch its kernel epoll instead
  // (Impl::Activate), and no ADD of this poll into another may slip between.
  const bool activates = !impl_->kernel_active_.load(std::memory_order_acquire) && id.file->KernelFd() >= 0;
  const bool full_check = inner != nullptr || activates || HasParentPolls(*this);
  if (!full_check) return impl_->Insert(id, events, data, nullptr);
  MutexLock nest(NestMutex());
  std::vector<std::shared_ptr<File>> files_to_count;
  if (inner != nullptr) {
    if (WouldLoop(*this, *inner, &files_to_count)) return Errno(ELOOP);
  } else if (auto held = id.file->weak_from_this().lock()) {
    files_to_count.push_back(std::move(held));
  }
  // A resource error (EMFILE, ENOMEM) here adds nothing; the polls already made active stay so, which changes nothing
  // they report.
  if (id.file->KernelFd() >= 0) {
    if (std::error_code error = Impl::Activate(*this)) return error;
  }
  return impl_->Insert(id, events, data, &files_to_count);
}

std::error_code EventPoll::Impl::Insert(FileIdentifier id, std::uint32_t events, std::uint64_t data,
                                        const std::vector<std::shared_ptr<File>>* files_to_count) {
  MutexLock lock(mu_);
  if (FindLocked(id) != nullptr) return Errno(EEXIST);
  // The entry starts with no armed bits, so a wake-up racing with the path check below cannot queue it.
  PollEntry* e = nullptr;
  if (spare_entry_ != nullptr) {  // the block `new PollEntry` gave an entry removed before (RemoveLocked)
    e = new (std::exchange(spare_entry_, nullptr)) PollEntry(self_, id, events & kEpollPrivateBits, data);
  } else {
    e = new PollEntry(self_, id, events & kEpollPrivateBits, data);
  }
  entries_.insert(*e);
  MaybeGrowLocked();
  {
    MutexLock lists(lists_mu_);
    waiting_.push_back(*e);
  }
  id.file->EventRegister(e);
  e->registered = true;
  if (files_to_count != nullptr) {
    NestMutex().AssertHeld();  // taken by AddEntry for a full check
    if (!PathsWithinLimits(*files_to_count)) {
      RemoveLocked(e);  // ep_insert: too many wake-up paths -> EINVAL
      return Errno(EINVAL);
    }
  }
  if (const int kernel_fd = id.file->KernelFd(); kernel_fd >= 0) {
    // A kernel entry: the kernel's ADD polls the file and queues the entry if it is ready (ep_insert), and wakes this
    // poll's sleepers and watchers itself.
    if (std::error_code error = LinkKernelLocked(*e, kernel_fd, events | kAlwaysReported)) {
      RemoveLocked(e);
      return error;
    }
    return {};
  }
  bool queued;
  {
    MutexLock lists(lists_mu_);
    if (kernel_fd_.valid()) {  // a sleeper may be in the kernel epoll: it needs the bell to hear of this entry
      if (std::error_code error = MakeBellLocked()) {
        lists.Unlock();
        RemoveLocked(e);
        return error;
      }
    }
    e->events = events | kAlwaysReported;
    queued = QueueIfReadyLocked(*e);
    if (queued) WakeOneWaiterLocked();
  }
  // Watchers are notified before mu_ is released, so a snapshot (which holds every mu_) never sees the entry
  // queued while the outer poll's wake-up is still in flight.
  if (queued) NotifyWatchers();
  return {};
}

std::error_code EventPoll::UpdateEntry(FileIdentifier id, EntryFlags flags, EventMask mask, std::uint64_t data) {
  if (id.file == nullptr) return Errno(EBADF);
  if (!id.file->Epollable()) return Errno(EPERM);
  if (id.file == this || (mask & kEpollPrivateBits) != 0) return Errno(EINVAL);
  // EPOLLEXCLUSIVE is for ADD only; it is refused before the lookup, so not ENOENT (do_epoll_ctl).
  if (Any(flags & EntryFlags::kExclusive)) return Errno(EINVAL);
  Impl& s = *impl_;
  bool queued = false;
  {
    MutexLock lock(s.mu_);
    PollEntry* e = s.FindLocked(id);
    if (e == nullptr) return Errno(ENOENT);
    if ((e->events & kEpollExclusive) != 0) return Errno(EINVAL);  // ep_modify is skipped for exclusive entries
    if (e->kernel) {
      // ep_modify in the kernel: it re-polls and queues the entry (re-arming an edge or a one-shot) and wakes.
      const std::uint32_t events = ToLinux(flags, mask) | kAlwaysReported;
      if (std::error_code error = s.RelinkKernelLocked(*e, events)) return error;
      MutexLock lists(s.lists_mu_);
      e->events = events;
      e->data = data;
      if (e->list == EntryList::kDisabled) s.MoveToLocked(*e, EntryList::kWaiting);
      return {};
    }
    {
      MutexLock lists(s.lists_mu_);
      e->events = ToLinux(flags, mask) | kAlwaysReported;
      e->data = data;
      if (e->list == EntryList::kDisabled) s.MoveToLocked(*e, EntryList::kWaiting);
      queued = s.QueueIfReadyLocked(*e);  // ep_modify re-polls: re-arms ET and one-shot entries
      if (queued) s.WakeOneWaiterLocked();
      if (!queued && s.visible_.load(std::memory_order_relaxed)) s.RefreshBellLocked();  // its new mask may be met
    }
    if (queued) s.NotifyWatchers();  // under mu_, as in AddEntry
  }
  return {};
}

std::error_code EventPoll::RemoveEntry(FileIdentifier id) {
  if (id.file == nullptr) return Errno(EBADF);
  if (!id.file->Epollable()) return Errno(EPERM);
  if (id.file == this) return Errno(EINVAL);
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  PollEntry* e = s.FindLocked(id);
  if (e == nullptr) return Errno(ENOENT);
  s.RemoveLocked(e);  // Silent: no event, no wake-up (ep_remove).
  return {};
}

Result<int> EventPoll::ReadEvents(Event* events, int max) {
  if (max <= 0 || max > kMaxEvents) return Errno(EINVAL);
  if (events == nullptr) return Errno(EFAULT);
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  MutexLock lists(s.lists_mu_);
  int n = s.HarvestListLocked(events, max);
  // Then the kernel entries' records (a mixed poll reports its in-memory entries first: docs/engine.md).
  if (n < max && s.kernel_entries_ > 0) n += s.HarvestKernelLocked(events + n, max - n, n == 0);
  return n;
}

int EventPoll::Impl::HarvestListLocked(Event* events, int max) {
  // ep_send_events: take entries from the front; re-check each; a reported level-triggered entry goes to the back
  // (after every entry not examined), an edge-triggered one waits for its next wake-up, a one-shot one is disabled.
  EntryList_t requeue;
  int n = 0;
  while (n < max && !ready_.empty()) {
    PollEntry& e = ready_.front();
    ready_.pop_front();
    const EventMask armed = Armed(e);
    const EventMask revents = armed == 0 ? 0 : e.file->Readiness(armed) & armed;
    if (revents == 0) {
      e.list = EntryList::kWaiting;
      waiting_.push_back(e);
      continue;
    }
    events[n].events = revents;
    events[n].SetData(e.data);
    ++n;
    if ((e.events & kEpollOneShot) != 0) {
      e.events &= kEpollPrivateBits;
      e.list = EntryList::kDisabled;
      disabled_.push_back(e);
    } else if ((e.events & kEpollEdgeTriggered) != 0) {
      e.list = EntryList::kWaiting;
      waiting_.push_back(e);
    } else {
      requeue.push_back(e);  // stays kReady
    }
  }
  ready_.splice(ready_.end(), requeue);
  // ep_done_scan: while entries remain ready, pass the wake-up on to the next blocked waiter.
  if (!ready_.empty()) PassWakeUpLocked();
  if (visible_.load(std::memory_order_relaxed)) RefreshBellLocked();
  return n;
}

namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

// When a wait ends: never (block until an event), now (poll), or at a point of the monotonic clock.
struct EventPoll::WaitLimit {
  enum Kind : std::uint8_t { kForever, kPoll, kUntil } kind = kForever;
  Clock::time_point deadline{};

  static WaitLimit FromMilliseconds(int timeout_ms) {
    if (timeout_ms < 0) return {};
    if (timeout_ms == 0) return {kPoll, {}};
    return {kUntil, Clock::now() + std::chrono::milliseconds(timeout_ms)};
  }
  static Result<WaitLimit> FromTimespec(const timespec* timeout) {
    if (!ValidTimeout(timeout)) return Errno(EINVAL);
    if (timeout == nullptr) return WaitLimit{};
    if (timeout->tv_sec == 0 && timeout->tv_nsec == 0) return WaitLimit{kPoll, {}};
    const auto now = Clock::now();
    // A timeout too long to add to the clock is forever (the kernel caps it the same way).
    if (timeout->tv_sec >= std::chrono::duration_cast<std::chrono::seconds>(Clock::time_point::max() - now).count()) {
      return WaitLimit{};
    }
    return WaitLimit{kUntil, now + std::chrono::seconds(timeout->tv_sec) + std::chrono::nanoseconds(timeout->tv_nsec)};
  }
};

namespace {

// Signals blocked for the rest of a Wait once a wake-up found nothing (see EventPoll::PWait2), restored at its end.
class SignalsHeld {
 public:
  SignalsHeld() = default;
  SignalsHeld(const SignalsHeld&) = delete;
  SignalsHeld& operator=(const SignalsHeld&) = delete;
  ~SignalsHeld() {
    if (held_) (void)::pthread_sigmask(SIG_SETMASK, &saved_, nullptr);
  }
  void Hold() {
    if (held_) return;
    sigset_t all;
    ::sigfillset(&all);
    held_ = ::pthread_sigmask(SIG_BLOCK, &all, &saved_) == 0;
  }
  // The mask to sleep with: the caller's for PWait, else the thread's own (as it was before Hold).
  const sigset_t* SleepMask(const sigset_t* mask) const { return mask != nullptr ? mask : (held_ ? &saved_ : nullptr); }

 private:
  bool held_ = false;
  sigset_t saved_{};
};

// epoll_pwait2, or, where the kernel has none (Linux before 5.11; valgrind 3.19 does not know it either: ENOSYS),
// epoll_pwait with the timeout rounded up to a whole millisecond, never a shorter sleep than asked (the kernel rounds
// epoll_wait's up too). A timeout longer than epoll_pwait's int of milliseconds sleeps that long and sets
// *cut_short, so that a 0 from it is not taken for the end of the caller's timeout.
int SleepIn(int epfd, epoll_event* events, int max, const timespec* timeout, const sigset_t* mask, bool* cut_short) {
  static std::atomic<bool> no_pwait2{false};
  *cut_short = false;
  if (!no_pwait2.load(std::memory_order_relaxed)) {
    const int got = ::epoll_pwait2(epfd, events, max, timeout, mask);
    if (got >= 0 || errno != ENOSYS) return got;
    no_pwait2.store(true, std::memory_order_relaxed);
  }
  int ms = -1;
  if (timeout != nullptr) {
    constexpr long long kMaxMs = std::numeric_limits<int>::max();
    const long long whole = timeout->tv_sec > kMaxMs / 1000 ? kMaxMs : timeout->tv_sec * 1000LL;
    const long long total = std::min(kMaxMs, whole + (timeout->tv_nsec + 999'999) / 1'000'000);
    *cut_short = total == kMaxMs;
    ms = static_cast<int>(total);
  }
  return ::epoll_pwait(epfd, events, max, ms, mask);
}

}  // namespace

Result<int> EventPoll::Wait(Event* events, int max, int timeout_ms) { return PWait(events, max, timeout_ms, nullptr); }

Result<int> EventPoll::PWait(Event* events, int max, int timeout_ms, const sigset_t* mask) {
  return WaitUntil(events, max, WaitLimit::FromMilliseconds(timeout_ms), mask);
}

Result<int> EventPoll::PWait2(Event* events, int max, const timespec* timeout, const sigset_t* mask) {
  Result<WaitLimit> limit = WaitLimit::FromTimespec(timeout);  // checked first, as epoll_pwait2 does
  if (!limit.ok()) return limit.status();
  return WaitUntil(events, max, limit.value(), mask);
}

// ep_poll: harvest; if nothing is ready, sleep in the kernel until a wake-up, the timeout or a signal, and harvest
// again. The sleep is epoll_pwait2 on the poll's sleeper, with the caller's mask for PWait, so a signal whose handler
// runs during the sleep ends it with EINTR, whatever SA_RESTART says (signal(7): epoll_wait is never restarted), and
// one that the mask unblocks and that arrived before the call is delivered during it (EINTR at once). A wake-up that
// finds nothing (another waiter took the events, an entry went stale) sleeps again; from the first such wake-up on,
// every signal is blocked outside the sleeps, so one that arrives between two sleeps still ends the Wait with EINTR
// at the next sleep, as the kernel checks signal_pending before it sleeps again. What stays open is the one harvest
// between the first empty wake-up and that blocking: a handler that runs there is missed (docs/engine.md).
Result<int> EventPoll::WaitUntil(Event* events, int max, const WaitLimit& limit, const sigset_t* mask) {
  if (max <= 0 || max > kMaxEvents) return Errno(EINVAL);
  if (events == nullptr) return Errno(EFAULT);
  Impl& s = *impl_;
  SignalsHeld held;
  bool woken = false;  // the last sleep ended by a wake-up
  for (;;) {
    if (woken) held.Hold();
    int kernel_fd = -1;
    {
      MutexLock lock(s.mu_);
      MutexLock lists(s.lists_mu_);
      int n = s.HarvestListLocked(events, max);
      if (n > 0 || limit.kind == WaitLimit::kPoll) {
        if (n < max && s.kernel_entries_ > 0) n += s.HarvestKernelLocked(events + n, max - n, n == 0);
        return n;
      }
      // Nothing in memory: the kernel's epoll_pwait2 reports its entries' records at once, or sleeps.
      if (std::error_code e = s.MakeSleeperLocked()) return e;
      kernel_fd = s.kernel_fd_.get();
      ++s.blocked_;
    }
    timespec left{};
    const timespec* timeout = nullptr;
    if (limit.kind == WaitLimit::kUntil) {
      const auto now = Clock::now();
      const auto ns = limit.deadline > now
                          ? std::chrono::duration_cast<std::chrono::nanoseconds>(limit.deadline - now).count()
                          : 0;
      left.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      left.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      timeout = &left;
    }
    bool cut_short = false;
    const int got = SleepIn(kernel_fd, reinterpret_cast<epoll_event*>(events), max, timeout, held.SleepMask(mask),
                            &cut_short);
    const int error = errno;
    {
      MutexLock lock(s.mu_);
      MutexLock lists(s.lists_mu_);
      --s.blocked_;
      if (got < 0) return Errno(error);  // EINTR: a signal handler ran
      const int n = s.TranslateLocked(events, got, max, true);
      // Timed out: what is ready in memory now, if anything (ep_poll looks once more; the kernel looked at its own).
      if (n > 0 || (got == 0 && !cut_short)) return n > 0 ? n : s.HarvestListLocked(events, max);
    }
    woken = true;
  }
}

EventMask EventPoll::Readiness(EventMask mask) {
  MutexLock lists(impl_->lists_mu_);
  return impl_->HasReadyLocked() ? (kEpollReadable & mask) : 0;
}

void EventPoll::Release() {
  // RemoveLocked for every entry, in bulk: every waiter leaves its file's queue first (each waits for a running
  // callback of its entry, as one removal does), then the lists and the map are emptied at once rather than entry by
  // entry, and the entries are destroyed. The lists hold every entry once, in the order they were made, which walks
  // memory in order (the map's order is random). A poll of a few entries (most are) collects them without a heap
  // block.
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  boost::container::small_vector<PollEntry*, 16> all;
  all.reserve(s.entries_.size());
  {
    MutexLock lists(s.lists_mu_);  // not held below: EventUnregister takes queue locks (LOCKING 5, before 6)
    for (EntryList_t* list : {&s.waiting_, &s.ready_, &s.disabled_}) {
      for (PollEntry& e : *list) all.push_back(&e);
    }
  }
  for (PollEntry* e : all) {
    if (e->registered) e->file->EventUnregister(e);
    e->registered = false;
    if (e->kernel) s.UnlinkKernelLocked(*e);
  }
  {
    MutexLock lists(s.lists_mu_);
    s.waiting_.clear();
    s.ready_.clear();
    s.disabled_.clear();
    if (s.visible_.load(std::memory_order_relaxed)) s.RefreshBellLocked();
  }
  s.entries_.clear();
  for (PollEntry* e : all) {
    if (e->pooled) {
      e->~PollEntry();
    } else {
      delete e;
    }
  }
  s.pooled_live_ = 0;
  s.pooled_.clear();
}

void EventPoll::UnregisterEpollWaiters() {
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  for (PollEntry& e : s.entries_) {
    if (e.registered) {
      e.file->EventUnregister(&e);
      e.registered = false;
    }
  }
}

void EventPoll::RegisterEpollWaiters() {
  Impl& s = *impl_;
  bool queued = false;
  {
    MutexLock lock(s.mu_);
    for (PollEntry& e : s.entries_) {
      if (!e.registered) {
        e.file->EventRegister(&e);
        e.registered = true;
      }
    }
    {
      MutexLock lists(s.lists_mu_);
      for (PollEntry& e : s.entries_) queued |= s.QueueIfReadyLocked(e);
      if (queued) s.WakeOneWaiterLocked();
    }
    if (queued) s.NotifyWatchers();
  }
}

namespace {
EntryInfo InfoOf(const PollEntry& e) { return EntryInfo{e.file, e.fd, e.events, e.data, e.list}; }
}  // namespace

std::vector<EntryInfo> EventPoll::Entries() const {
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  MutexLock lists(s.lists_mu_);
  std::vector<EntryInfo> out;
  out.reserve(s.entries_.size());
  for (const PollEntry& e : s.entries_) out.push_back(InfoOf(e));
  std::sort(out.begin(), out.end(), [](const EntryInfo& a, const EntryInfo& b) {
    return std::less<const File*>()(a.file, b.file) || (a.file == b.file && a.fd < b.fd);
  });
  return out;
}

std::vector<EntryInfo> EventPoll::ReadyList() const {
  Impl& s = *impl_;
  MutexLock lock(s.mu_);
  MutexLock lists(s.lists_mu_);
  std::vector<EntryInfo> out;
  for (const PollEntry& e : s.ready_) out.push_back(InfoOf(e));
  return out;
}

std::size_t EventPoll::EntryCount() const {
  MutexLock lock(impl_->mu_);
  return impl_->entries_.size();
}

int EventPoll::BlockedWaiters() const {
  MutexLock lists(impl_->lists_mu_);
  return impl_->blocked_;
}

}  // namespace epollcr
