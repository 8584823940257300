// A queue of waiters that are called back when an event they are interested in happens (gVisor's pkg/waiter).
//
// Lock order: a queue's mu_ is the fifth of the engine's locks (LOCKING, lib/src/event_poll_internal.h). Notify()
// calls the entries' callbacks with mu_ held, so a callback may take only locks that come after it.
#pragma once

#include <boost/intrusive/list.hpp>
#include <functional>

#include "epollcr/events.h"
#include "epollcr/mutex.h"

namespace epollcr {

class EventPoll;

// One registration in a WaiterQueue. An entry is in at most one queue at a time; the owner keeps it alive while it is
// registered and unregisters it before destroying it.
class WaiterEntry : public boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>> {
 public:
  explicit WaiterEntry(EventMask mask = kAllEvents, bool exclusive = false)
      : mask_((mask & ~kEpollPrivateBits) | (exclusive ? kEpollExclusive : 0)) {}
  WaiterEntry(const WaiterEntry&) = delete;
  WaiterEntry& operator=(const WaiterEntry&) = delete;
  virtual ~WaiterEntry() = default;

  // Called by WaiterQueue::Notify for a notified mask that meets this entry's mask. Returns whether the waiter took
  // the wake-up; after an exclusive waiter took it, Notify wakes nobody further (Linux's exclusive wait entries).
  // Preconditions: the mu_ of the queue this entry is registered in is held. Must not touch that queue.
  virtual bool NotifyEvent(EventMask mask) = 0;

  // Whether the entry waits exclusively (queued behind the others; see WaiterQueue::Notify). Immutable.
  bool exclusive() const { return (mask_ & kEpollExclusive) != 0; }

  // The EventPoll this entry belongs to, if it is an epoll registration (gVisor: an "epoll waiter"). Used to find the
  // polls that watch a file when it is released, and the polls that watch a poll when nesting is checked.
  virtual EventPoll* WatchingPoll() const { return nullptr; }

 protected:
  // For a waiter whose fields are loaded after it is made (a checkpoint load). Preconditions: not registered.
  void SetExclusive(bool exclusive) {
    mask_ = (mask_ & ~kEpollExclusive) | (exclusive ? kEpollExclusive : 0);
  }

 private:
  friend class WaiterQueue;
  // The event bits the waiter wants, plus kEpollExclusive for an exclusive waiter (it queues behind the others:
  // add_wait_queue_exclusive). Notified masks never carry flag bits. Immutable while the entry is registered.
  EventMask mask_;
};

// A waiter that runs a function: for tests, examples and host code that wants a callback.
class CallbackWaiter final : public WaiterEntry {
 public:
  CallbackWaiter(EventMask mask, std::function<void(EventMask)> fn) : WaiterEntry(mask), fn_(std::move(fn)) {}
  bool NotifyEvent(EventMask mask) override {
    fn_(mask);
    return true;
  }

 private:
  std::function<void(EventMask)> fn_;  // Immutable.
};

// Thread-safe. Every method may be called from any thread.
class WaiterQueue {
 public:
  WaiterQueue() = default;
  WaiterQueue(const WaiterQueue&) = delete;
  WaiterQueue& operator=(const WaiterQueue&) = delete;
  ~WaiterQueue();  // Preconditions: the queue is empty.

  // Adds an entry that is in no queue. Newest entries are notified first, like Linux's add_wait_queue; exclusive
  // entries go behind all others, oldest first (add_wait_queue_exclusive).
  void EventRegister(WaiterEntry* entry);
  // Removes an entry registered in this queue. Once it returns, the entry's callback is not running and will not run.
  void EventUnregister(WaiterEntry* entry);
  // Calls NotifyEvent(mask) on every entry whose mask meets `mask`, in queue order, stopping after the first
  // exclusive entry that takes the wake-up (__wake_up_common with nr_exclusive = 1).
  void Notify(EventMask mask);
  // The union of the masks of every registered entry.
  EventMask Events() const;
  bool IsEmpty() const;

  // Calls fn(entry) for every registered entry with mu_ held. fn must not call back into this queue.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    MutexLock lock(mu_);
    for (const WaiterEntry& e : entries_) fn(const_cast<WaiterEntry&>(e));
  }

 private:
  using List = boost::intrusive::list<WaiterEntry, boost::intrusive::constant_time_size<false>>;
  mutable Mutex mu_;
  List entries_ EPOLLCR_GUARDED_BY(mu_);
};

}  // namespace epollcr
