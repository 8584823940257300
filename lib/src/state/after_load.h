// after_load for a loaded world, whatever it was loaded from (a Boost archive or a protobuf image). Internal.
#pragma once

#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <new>
#include <tuple>
#include <utility>
#include <vector>

#include "epollcr/memory.h"
#include "event_poll_internal.h"
#include "state/load_objects.h"
#include "state/visitors.h"

namespace epollcr::state {

// An EventPoll's entries as loaded, before after_load puts them in the poll. Until then the entries are this
// object's: it destroys them if the load fails first.
struct PendingPoll {
  // `shared`: the cursor of the load's shared entry blocks (EntryChunks).
  explicit PendingPoll(EntryCursor* shared = nullptr) : chunks(shared) {}
  PendingPoll(const PendingPoll&) = delete;
  PendingPoll& operator=(const PendingPoll&) = delete;
  // Moved as PendingPolls grows: the entries stay where they are (in the blocks of `chunks`, which move with it), and
  // only the new owner destroys them.
  PendingPoll(PendingPoll&& other) noexcept
      : chunks(std::move(other.chunks)),
        entries(std::move(other.entries)),
        ready(std::move(other.ready)),
        ranks(std::move(other.ranks)),
        kernel(std::move(other.kernel)),
        checked(other.checked),
        taken(std::exchange(other.taken, true)) {}
  PendingPoll& operator=(PendingPoll&& other) noexcept {
    if (this != &other) {
      this->~PendingPoll();
      new (this) PendingPoll(std::move(other));
    }
    return *this;
  }
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

// The pending polls of a load, each with its poll's position in LoadObjects, kept in order of position in one array:
// a load makes them in that order (it reads the polls in file order), so each is appended. A tree node per poll was a
// heap block to make and free per poll, and a world of many small polls is restored at each of a replay's checkpoints.
// A reference to a PendingPoll stays valid until the next one is made (Reserve first to keep them all valid).
class PendingPolls {
 public:
  PendingPolls() = default;
  PendingPolls(const PendingPolls&) = delete;  // its polls point to its cursor
  PendingPolls& operator=(const PendingPolls&) = delete;
  void Reserve(std::size_t n) { polls_.reserve(n); }
  // The pending poll of position `at`, made if there is none.
  PendingPoll& operator[](std::uint32_t at) {
    if (polls_.empty() || polls_.back().first < at) {
      return polls_.emplace_back(std::piecewise_construct, std::forward_as_tuple(at), std::forward_as_tuple(&cursor_))
          .second;
    }
    auto it = std::lower_bound(polls_.begin(), polls_.end(), at,
                               [](const std::pair<std::uint32_t, PendingPoll>& p, std::uint32_t a) { return p.first < a; });
    if (it == polls_.end() || it->first != at) it = polls_.emplace(it, at, PendingPoll(&cursor_));
    return it->second;
  }
  std::size_t size() const { return polls_.size(); }
  auto begin() { return polls_.begin(); }
  auto end() { return polls_.end(); }
  auto begin() const { return polls_.begin(); }
  auto end() const { return polls_.end(); }

 private:
  EntryCursor cursor_;  // where the small polls' entries are made (EntryChunks)
  std::vector<std::pair<std::uint32_t, PendingPoll>> polls_;  // by increasing position
};

// Checks that pipes and socket pairs have their ends as their counts say, then runs every object's after_load in
// the order the wait references give: ends re-attach to their shared state; each EventPoll, after the files it
// watches, checks and takes its entries (saved lists, ready order) and checks its depth; then every waiter is
// registered again so that each file's wait queue has its saved order. Entries of embedder files are re-checked for
// readiness. `polls` is keyed by the poll's position in `objects`. Throws LoadError, naming the object.
void RunAfterLoad(LoadObjects& objects, PendingPolls& polls);

}  // namespace epollcr::state
