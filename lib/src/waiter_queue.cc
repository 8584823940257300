#include "epollcr/waiter_queue.h"

#include <cassert>

namespace epollcr {

WaiterQueue::~WaiterQueue() {
  // Every owner unregisters its entries before the queue goes away; a leftover entry would dangle.
  assert(entries_.empty());
  entries_.clear();
}

void WaiterQueue::EventRegister(WaiterEntry* entry) {
  MutexLock lock(mu_);
  if (entry->exclusive()) {
    entries_.push_back(*entry);
  } else {
    entries_.push_front(*entry);
  }
}

void WaiterQueue::EventUnregister(WaiterEntry* entry) {
  MutexLock lock(mu_);
  entries_.erase(entries_.iterator_to(*entry));
}

void WaiterQueue::Notify(EventMask mask) {
  MutexLock lock(mu_);
  for (WaiterEntry& e : entries_) {
    if ((e.mask_ & mask) != 0 && e.NotifyEvent(mask) && e.exclusive()) break;
  }
}

EventMask WaiterQueue::Events() const {
  MutexLock lock(mu_);
  EventMask all = 0;
  for (const WaiterEntry& e : entries_) all |= e.mask_;
  return all & ~kEpollPrivateBits;
}

bool WaiterQueue::IsEmpty() const {
  MutexLock lock(mu_);
  return entries_.empty();
}

}  // namespace epollcr
