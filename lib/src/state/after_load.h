// after_load for a loaded world, whatever it was loaded from (a Boost archive or a protobuf image). Internal.
#pragma once

#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "epollcr/memory.h"
#include "event_poll_internal.h"
#include "state/load_objects.h"
#include "state/visitors.h"

namespace epollcr::state {

// An EventPoll's entries as loaded, before after_load puts them in the poll. Until then the entries are this
// object's: it destroys them if the load fails first.
struct PendingPoll {
  PendingPoll() = default;
  PendingPoll(const PendingPoll&) = delete;
  PendingPoll& operator=(const PendingPoll&) = delete;
  ~PendingPoll() {
    if (!taken) {
      for (PollEntry* e : entries) e->~PollEntry();
    }
  }

  // A new entry, stored in `chunks`; `expected_more` (this one included) sizes a new block.
  PollEntry* Make(std::size_t expected_more, EventPoll* poll, FileIdentifier id, std::uint32_t events,
                  std::uint64_t data) {
    if (entries.size() == entries.capacity()) {  // so that push_back cannot throw after the entry exists
      entries.reserve(std::max<std::size_t>(16, entries.capacity() * 2));
    }
    PollEntry* e = chunks.Make(expected_more, poll, id, events, data);
    entries.push_back(e);
    return e;
  }

  EntryChunks chunks;
  // As large as the entries. Most polls have a few (a world of many small polls is restored poll by poll, and each of
  // its checkpoints made three heap blocks a poll here): those stay inside the PendingPoll; more come from
  // AllocateLarge (epollcr/memory.h), like the entries' own blocks.
  template <typename T>
  using Column = boost::container::small_vector<T, 4, LargeAllocator<T>>;
  Column<PollEntry*> entries;
  Column<std::uint32_t> ready;
  Column<std::uint32_t> ranks;  // per entry: its place among the epoll waiters of its file's queue
  std::optional<EventPoll::Impl::KernelState> kernel;  // the kernel epoll the image recorded (image.proto)
  bool checked = false;              // the entries were validated already (a protobuf image): skip the re-check
  bool taken = false;                // the poll took the entries (and their blocks)
};

// Checks that pipes and socket pairs have their ends as their counts say, then runs every object's after_load in
// the order the wait references give: ends re-attach to their shared state; each EventPoll, after the files it
// watches, checks and takes its entries (saved lists, ready order) and checks its depth; then every waiter is
// registered again so that each file's wait queue has its saved order. Entries of embedder files are re-checked for
// readiness. `polls` is keyed by the poll's position in `objects`. Throws LoadError, naming the object.
void RunAfterLoad(LoadObjects& objects, std::map<std::uint32_t, PendingPoll>& polls);

}  // namespace epollcr::state
