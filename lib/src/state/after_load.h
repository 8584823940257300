// after_load for a loaded world, whatever it was loaded from (a Boost archive or a protobuf image). Internal.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "event_poll_internal.h"
#include "state/visitors.h"

namespace epollcr::state {

// An EventPoll's entries as loaded, before after_load puts them in the poll.
struct PendingPoll {
  std::vector<std::unique_ptr<PollEntry>> entries;
  std::vector<std::uint32_t> ready;
  std::vector<std::uint32_t> ranks;  // per entry: its place among the epoll waiters of its file's queue
};

// Checks that pipes and socket pairs have their ends as their counts say, then runs every object's after_load in
// the order the wait references give: ends re-attach to their shared state; each EventPoll, after the files it
// watches, checks and takes its entries (saved lists, ready order) and checks its depth; then every waiter is
// registered again so that each file's wait queue has its saved order.
// Entries of `custom` (embedder) files are re-checked for readiness. Throws LoadError, naming the object.
void RunAfterLoad(LoadObjects& objects, std::map<std::uint64_t, PendingPoll>& polls,
                  const std::set<const File*>& custom);

}  // namespace epollcr::state
