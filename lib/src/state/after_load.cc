// after_load (docs/state-model.md, "Loading", stage 5).
//
// Everything here is linear in the number of objects and entries: positions index vectors (load_objects.h), the
// wait graph is walked with Kahn's algorithm over arrays, and registrations are put in queue order with a counting
// sort on their ranks. A checkpoint of a million entries spends its time creating entries, not finding things.
#include "state/after_load.h"

#include "big_buffer.h"

#include <algorithm>
#include <memory_resource>
#include <unordered_map>
#include <unordered_set>

namespace epollcr::state {

namespace {

// Each pipe and socket pair has its ends exactly as its counts say: one read and one write end per open side.
void CheckEnds(const LoadObjects& objects) {
  std::unordered_map<const void*, int> seen;  // per shared object: a bit per end
  for (std::uint32_t i = 0; i < objects.size(); ++i) {
    File* f = objects.files[i].get();
    int bit = 0;
    const void* shared = nullptr;
    switch (objects.kinds[i]) {
      case ObjectKind::kPipeRead: shared = static_cast<PipeReadEnd*>(f)->pipe().get(), bit = 1; break;
      case ObjectKind::kPipeWrite: shared = static_cast<PipeWriteEnd*>(f)->pipe().get(), bit = 2; break;
      case ObjectKind::kUnixStream: {
        auto* s = static_cast<UnixSocket*>(f);
        shared = s->pair().get(), bit = 1 << s->side();
        break;
      }
      default: continue;
    }
    if (seen[shared] & bit) throw LoadError(objects.Name(i) + ": a second file for the same end");
    seen[shared] |= bit;
  }
  for (const auto& [at, pipe] : objects.pipes) {
    if (seen[pipe.get()] != pipe->OpenEnds()) throw LoadError(objects.Name(at) + ": its open ends do not match its files");
  }
  for (const auto& [at, pair] : objects.pairs) {
    if (seen[pair.get()] != pair->OpenEnds()) throw LoadError(objects.Name(at) + ": its open ends do not match its files");
  }
}

// Kahn's algorithm over the wait edges; what is left over lies on a cycle. Positions in, positions out.
std::vector<std::uint32_t> AfterLoadOrder(const LoadObjects& objects) {
  const std::size_t n = objects.size();
  std::vector<std::uint32_t> pending(n, 0);     // wait edges of each owner not yet satisfied
  std::vector<std::uint32_t> first(n + 1, 0);   // owners waiting on each object: owners[first[r] .. first[r + 1])
  for (const auto& [owner, ref] : objects.waits) {
    if (owner == ref) throw LoadError("wait cycle: " + objects.Name(owner) + " -> " + objects.Name(owner));
    ++pending[owner];
    ++first[ref + 1];
  }
  for (std::size_t i = 0; i < n; ++i) first[i + 1] += first[i];
  std::vector<std::uint32_t> owners(objects.waits.size());
  {
    std::vector<std::uint32_t> fill(first.begin(), first.end() - 1);
    for (const auto& [owner, ref] : objects.waits) owners[fill[ref]++] = owner;
  }
  std::vector<std::uint32_t> order, ready;
  order.reserve(n);
  for (std::uint32_t i = static_cast<std::uint32_t>(n); i-- > 0;) {
    if (pending[i] == 0) ready.push_back(i);  // the lowest position is taken first
  }
  while (!ready.empty()) {
    const std::uint32_t at = ready.back();
    ready.pop_back();
    order.push_back(at);
    for (std::uint32_t k = first[at]; k < first[at + 1]; ++k) {
      if (--pending[owners[k]] == 0) ready.push_back(owners[k]);
    }
  }
  if (order.size() != n) {
    std::string cycle;
    for (std::uint32_t i = 0; i < n; ++i) {
      if (pending[i] > 0) cycle += (cycle.empty() ? "" : " -> ") + objects.Name(i);
    }
    throw LoadError("wait cycle among: " + cycle);
  }
  return order;
}

struct Registration {
  PollEntry* entry;
  std::uint32_t rank;
};

// The checks of a poll's loaded entries that a validated image has passed already (a Boost archive has not).
// `name` is the poll's (LoadObjects::Name), made only for an error.
template <typename Name>
void CheckEntries(const Name& name, const PendingPoll& p, const EventPoll* poll) {
  if (p.ranks.size() != p.entries.size()) throw LoadError(name() + ": a queue rank is missing");
  boost::container::small_vector<bool, 64> in_ready(p.entries.size(), false);  // no heap block for a small poll
  for (std::uint32_t i : p.ready) {
    if (i >= p.entries.size() || in_ready[i] || p.entries[i]->list != EntryList::kReady) {
      throw LoadError(name() + ": the ready order lists entry " + std::to_string(i) + " that is not a ready entry");
    }
    in_ready[i] = true;
  }
  for (std::size_t i = 0; i < p.entries.size(); ++i) {
    const PollEntry& e = *p.entries[i];
    auto where = [&] { return name() + ", entry " + std::to_string(i) + ": "; };
    const EventMask armed = e.events & ~kEpollPrivateBits;
    if (e.list != EntryList::kReady && e.list != EntryList::kWaiting && e.list != EntryList::kDisabled) {
      throw LoadError(where() + "unknown list");
    }
    if ((e.list == EntryList::kReady) != in_ready[i]) throw LoadError(where() + "ready but not in the ready order");
    if (e.list == EntryList::kDisabled ? (armed != 0 || (e.events & kEpollOneShot) == 0)
                                       : (armed & kAlwaysReported) != kAlwaysReported) {
      throw LoadError(where() + "mask " + FormatEventMask(e.events) + " does not fit its list");
    }
    if ((e.events & kEpollExclusive) != 0 && (e.events & ~kEpollExclusiveOkBits) != 0) {
      throw LoadError(where() + "EPOLLEXCLUSIVE with bits Linux refuses");
    }
    if (e.fd < 0 || e.file == poll || !e.file->Epollable()) throw LoadError(where() + "bad fd or file");
  }
}

// The EventPoll's after_load: entries back on their saved lists (the ready list in its saved order); their waiters
// are registered afterwards, all together (RegisterInQueueOrder). An in-memory file's state was captured in the same
// cut as the lists, so the lists are exact and are not re-derived (re-deriving would turn a consumed edge-triggered
// event into a new one). The nesting limit of ADD holds for loaded graphs too: no chain of more than kMaxNests links
// (inner polls ran their after_load first, so their heights are known).
// Not analysed: the poll's locks are not taken. It is the load's alone (the world being loaded is the caller's, and
// not in use until the load returns: state.h LoadWorld), no queue holds its entries yet (RegisterInQueueOrder comes
// later), and only polls of the same load watch it; the two lock pairs were a tenth of this function in a world of
// many small polls.
template <typename Name>
void RestorePoll(const Name& name, PendingPoll& p, std::pmr::unordered_map<const EventPoll*, int>& heights,
                 EventPoll* poll) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
  if (!p.checked) CheckEntries(name, p, poll);  // everything is checked before the poll takes anything
  EventPoll::Impl& s = *poll->impl();
  s.ReserveLocked(p.entries.size());
  int height = 0;
  // A map of a million entries is far larger than the caches, so every insert would wait for its bucket and then for
  // the entry already in it. Both are prefetched a few entries ahead: the bucket 2 * kAhead entries ahead, the first
  // entry of the bucket kAhead ahead (its bucket has arrived by then).
  constexpr std::size_t kAhead = 8;
  const std::size_t n = p.entries.size();
  auto bucket_of = [&](std::size_t i) EPOLLCR_REQUIRES(s.mu_) {
    return s.entries_.bucket(FileIdentifier{p.entries[i]->file, p.entries[i]->fd});
  };
  for (std::size_t i = 0; i < n; ++i) {
    if (i + 2 * kAhead < n) __builtin_prefetch(&s.BucketsLocked()[bucket_of(i + 2 * kAhead)]);
    if (i + kAhead < n) {
      const std::size_t b = bucket_of(i + kAhead);
      if (auto first = s.entries_.begin(b); first != s.entries_.end(b)) __builtin_prefetch(&*first);
    }
    PollEntry& e = *p.entries[i];
    if (!s.entries_.insert(e).second) {
      for (std::size_t j = 0; j < i; ++j) s.entries_.erase(s.entries_.iterator_to(*p.entries[j]));  // give them back
      throw LoadError(name() + ", entry " + std::to_string(i) + ": a second entry for the same (file, fd)");
    }
    if (EventPoll* inner = e.file->AsEventPoll()) {
      const auto it = heights.find(inner);
      height = std::max(height, (it == heights.end() ? 0 : it->second) + 1);
    }
  }
  if (height > kMaxNests) {
    for (PollEntry* e : p.entries) s.entries_.erase(s.entries_.iterator_to(*e));
    throw LoadError(name() + ": polls nested deeper than " + std::to_string(kMaxNests));
  }
  if (height > 0) heights.emplace(poll, height);  // a poll of no poll (most are) is of height 0, and not stored
  s.AdoptLocked(std::move(p.chunks), p.entries.size());
  p.taken = true;  // from here on the poll owns the entries (nothing below throws but bad_alloc)
  for (std::size_t i = 0; i < p.entries.size(); ++i) {
    PollEntry* e = p.entries[i];
    if (e->list == EntryList::kWaiting) s.waiting_.push_back(*e);
    if (e->list == EntryList::kDisabled) s.disabled_.push_back(*e);
  }
  for (std::uint32_t i : p.ready) s.ready_.push_back(*p.entries[i]);
}

// Every waiter goes back into its file's queue at its saved place: non-exclusive waiters are pushed to the front
// (so the highest rank first), exclusive ones to the back (lowest rank first), as WaiterQueue::EventRegister does.
// The order is a stable sort by descending rank of the registrations of `polls` (the polls in after_load order, each
// one's entries in order): a counting sort when the ranks are dense (as every writer makes them), else
// std::stable_sort. The counting sort reads the ranks where the polls keep them and stores only the sorted entries:
// a load's temporaries are as large as its entries, and fresh memory costs a page fault per page (big_buffer.h).
void RegisterInQueueOrder(const std::vector<const PendingPoll*>& polls, std::size_t total) {
  std::uint32_t max_rank = 0;
  for (const PendingPoll* p : polls) {
    for (std::size_t i = 0; i < p->entries.size(); ++i) max_rank = std::max(max_rank, p->ranks[i]);
  }
  BigArray<PollEntry*> sorted(total);
  if (max_rank <= total) {
    BigArray<std::uint32_t> start(static_cast<std::size_t>(max_rank) + 2);  // by descending rank
    start.resize_uninitialized(static_cast<std::size_t>(max_rank) + 2);
    std::fill(start.begin(), start.end(), 0u);
    for (const PendingPoll* p : polls) {
      for (std::size_t i = 0; i < p->entries.size(); ++i) ++start[max_rank - p->ranks[i] + 1];
    }
    for (std::size_t k = 1; k < start.size(); ++k) start[k] += start[k - 1];
    sorted.resize_uninitialized(total);
    for (const PendingPoll* p : polls) {
      for (std::size_t i = 0; i < p->entries.size(); ++i) sorted[start[max_rank - p->ranks[i]]++] = p->entries[i];
    }
  } else {
    BigArray<Registration> registrations(total);
    for (const PendingPoll* p : polls) {
      for (std::size_t i = 0; i < p->entries.size(); ++i) registrations.push_back({p->entries[i], p->ranks[i]});
    }
    std::stable_sort(registrations.begin(), registrations.end(),
                     [](const Registration& a, const Registration& b) { return a.rank > b.rank; });
    for (const Registration& r : registrations) sorted.push_back(r.entry);
  }
  // The entries are reached in queue order, not in memory order: in a large world each one was a cache miss, and
  // reading every entry's events twice (once per pass) two of them, most of after_load's time at a million entries.
  // Each entry is prefetched a few registrations ahead (both lines an 88-byte entry may straddle), and the exclusive
  // ones (rare) are kept aside when first met, so the second pass reads only them.
  constexpr std::size_t kAhead = 8;
  std::vector<PollEntry*> exclusive;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (i + kAhead < sorted.size()) {
      const auto* ahead = reinterpret_cast<const char*>(sorted[i + kAhead]);
      __builtin_prefetch(ahead);
      __builtin_prefetch(ahead + sizeof(PollEntry) - 1);
    }
    PollEntry* e = sorted[i];
    if ((e->events & kEpollExclusive) != 0) {
      exclusive.push_back(e);
      continue;
    }
    e->file->EventRegister(e);
    e->registered = true;
  }
  for (auto it = exclusive.rbegin(); it != exclusive.rend(); ++it) {
    (*it)->file->EventRegister(*it);
    (*it)->registered = true;
  }
}

// The entries of kernel files become kernel entries again (inner polls come first, so the kernel epoll of a poll with
// kernel entries exists before its watchers register it). When the image recorded the poll's kernel epoll and this
// process holds it with exactly those registrations, the poll takes it over (AdoptKernelLocked): nothing changes in
// the kernel, so the ready list, edges and wait-queue order go on exactly. Otherwise a kernel epoll of its own
// registers them: the kernel's ADD polls each file, and a ready one is queued, in the order of the saved ready list
// first, then of the waiting entries; a disarmed one-shot entry is registered by the UpdateEntry that re-arms it.
void LinkKernelEntries(EventPoll& poll, const PendingPoll& pending) {
  // Most polls have no kernel entry (no entry of a host file or of a kernel-active poll): they take no lock here. The
  // loaded world is not shared yet, and the entries are the poll's lists' (RestorePoll put them there).
  if (!pending.kernel && std::none_of(pending.entries.begin(), pending.entries.end(),
                                      [](PollEntry* e) { return e->file->KernelFd() >= 0; })) {
    return;
  }
  EventPoll::Impl& s = *poll.impl();
  MutexLock lock(s.mu_);
  const std::span<PollEntry* const> entries(pending.entries.data(), pending.entries.size());
  if (pending.kernel && s.AdoptKernelLocked(*pending.kernel, entries)) return;
  std::vector<std::pair<PollEntry*, int>> kernel;
  {
    MutexLock lists(s.lists_mu_);
    for (EntryList_t* list : {&s.ready_, &s.waiting_, &s.disabled_}) {
      for (PollEntry& e : *list) {
        if (const int fd = e.file->KernelFd(); fd >= 0) kernel.emplace_back(&e, fd);
      }
    }
  }
  if (kernel.empty()) return;
  std::size_t failed = 0;
  if (std::error_code error = s.LinkKernelManyLocked(kernel, &failed)) {
    throw LoadError("eventpoll entry fd " + std::to_string(kernel[failed].first->fd) + " (host fd " +
                    std::to_string(kernel[failed].second) + "): its kernel registration failed: " + error.message());
  }
}

}  // namespace

void RunAfterLoad(LoadObjects& objects, PendingPolls& polls) {
  // Every poll has its pending poll (a load makes one for each) before any is pointed to below: making one could move
  // the others.
  const auto poll_objects =
      static_cast<std::size_t>(std::count(objects.kinds.begin(), objects.kinds.end(), ObjectKind::kEventPoll));
  for (std::uint32_t at = 0; polls.size() != poll_objects && at < objects.size(); ++at) {
    if (objects.kinds[at] == ObjectKind::kEventPoll) polls[at];
  }
  std::vector<PendingPoll*> pending_at(objects.size(), nullptr);  // by position: no search per poll below
  for (auto& [at, p] : polls) pending_at[at] = &p;
  // The heights of the polls that watch a poll (any other's is 0), in nodes taken from one growing buffer and freed
  // together: a load of many small polls would otherwise allocate and free a node per poll.
  std::pmr::monotonic_buffer_resource height_nodes;
  std::pmr::unordered_map<const EventPoll*, int> heights(&height_nodes);
  heights.reserve(polls.size());
  std::size_t total = 0;
  for (const auto& [at, p] : polls) total += p.entries.size();
  std::vector<EventPoll*> restored;         // in after_load order: inner polls first
  std::vector<const PendingPoll*> entries;  // their entries, in the same order
  CheckEnds(objects);
  for (std::uint32_t at : AfterLoadOrder(objects)) {
    File* file = objects.files[at].get();
    switch (objects.kinds[at]) {
      case ObjectKind::kPipeRead: {
        auto* end = static_cast<PipeReadEnd*>(file);
        end->pipe()->Attach(end, nullptr);
        break;
      }
      case ObjectKind::kPipeWrite: {
        auto* end = static_cast<PipeWriteEnd*>(file);
        end->pipe()->Attach(nullptr, end);
        break;
      }
      case ObjectKind::kUnixStream: {
        auto* s = static_cast<UnixSocket*>(file);
        s->pair()->AttachEnd(s->side(), s);
        break;
      }
      case ObjectKind::kEventPoll: {
        auto* poll = static_cast<EventPoll*>(file);
        PendingPoll& p = *pending_at[at];
        RestorePoll([&] { return objects.Name(at); }, p, heights, poll);
        restored.push_back(poll);
        entries.push_back(&p);
        break;
      }
      default: break;  // shared state, eventfds and embedder files have no after_load here
    }
  }
  RegisterInQueueOrder(entries, total);
  for (std::size_t i = 0; i < restored.size(); ++i) LinkKernelEntries(*restored[i], *entries[i]);
  // Waiting entries of embedder files, whose state their factory rebuilt, are re-checked (docs/state-model.md); the
  // kernel's ADD re-checked the kernel entries.
  std::unordered_set<const File*> custom;
  for (const auto& [at, kind] : objects.custom_kinds) custom.insert(objects.files[at].get());
  if (custom.empty()) return;
  for (EventPoll* poll : restored) {
    EventPoll::Impl& s = *poll->impl();
    MutexLock lock(s.mu_);
    bool queued = false;
    {
      MutexLock lists(s.lists_mu_);
      for (PollEntry& e : s.entries_) {
        if (e.list == EntryList::kWaiting && !e.kernel && custom.count(e.file)) queued |= s.QueueIfReadyLocked(e);
      }
    }
    if (queued) s.NotifyWatchers();
  }
}

}  // namespace epollcr::state
