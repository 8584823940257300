// after_load (docs/state-model.md, "Loading", stage 5).
#include "state/after_load.h"

#include <algorithm>

namespace epollcr::state {

namespace {

// Each pipe and socket pair has its ends exactly as its counts say: one read and one write end per open side.
void CheckEnds(LoadObjects& objects_) {
  std::map<const void*, int> seen;  // per shared object: a bit per end
  for (const auto& [id, f] : objects_.files) {
    const std::string& kind = objects_.kinds[id];
    int bit = 0;
    const void* shared = nullptr;
    if (kind == "pipe-read") {
      shared = static_cast<PipeReadEnd*>(f.get())->pipe().get(), bit = 1;
    } else if (kind == "pipe-write") {
      shared = static_cast<PipeWriteEnd*>(f.get())->pipe().get(), bit = 2;
    } else if (kind == "unix-stream") {
      auto* s = static_cast<UnixSocket*>(f.get());
      shared = s->pair().get(), bit = 1 << s->side();
    } else {
      continue;
    }
    if (seen[shared] & bit) throw LoadError(objects_.Name(id) + ": a second file for the same end");
    seen[shared] |= bit;
  }
  for (const auto& [id, pipe] : objects_.pipes) {
    if (seen[pipe.get()] != pipe->OpenEnds()) throw LoadError(objects_.Name(id) + ": its open ends do not match its files");
  }
  for (const auto& [id, pair] : objects_.pairs) {
    if (seen[pair.get()] != pair->OpenEnds()) throw LoadError(objects_.Name(id) + ": its open ends do not match its files");
  }
}

// Kahn's algorithm over the wait edges; what is left over lies on a cycle.
std::vector<std::uint64_t> AfterLoadOrder(LoadObjects& objects_) {
  std::map<std::uint64_t, int> pending;  // wait references not yet satisfied
  std::multimap<std::uint64_t, std::uint64_t> waiters;  // referenced -> owner
  for (const auto& [id, kind] : objects_.kinds) pending[id] = 0;
  // One edge per (owner, referenced): a poll's entries refer to the same file many times over.
  std::sort(objects_.waits.begin(), objects_.waits.end());
  objects_.waits.erase(std::unique(objects_.waits.begin(), objects_.waits.end()), objects_.waits.end());
  for (const auto& [owner, ref] : objects_.waits) {
    if (owner == ref) throw LoadError("wait cycle: " + objects_.Name(owner) + " -> " + objects_.Name(owner));
    ++pending[owner];
    waiters.emplace(ref, owner);
  }
  std::vector<std::uint64_t> order, ready;
  for (const auto& [id, n] : pending) {
    if (n == 0) ready.push_back(id);
  }
  while (!ready.empty()) {
    std::uint64_t id = ready.back();
    ready.pop_back();
    order.push_back(id);
    auto [b, e] = waiters.equal_range(id);
    for (auto it = b; it != e; ++it) {
      if (--pending[it->second] == 0) ready.push_back(it->second);
    }
  }
  if (order.size() != pending.size()) {
    std::string cycle;
    for (const auto& [id, n] : pending) {
      if (n > 0) cycle += (cycle.empty() ? "" : " -> ") + objects_.Name(id);
    }
    throw LoadError("wait cycle among: " + cycle);
  }
  return order;
}

// The nesting limit of ADD holds for loaded graphs too: no chain of more than kMaxNests links.
void CheckDepth(LoadObjects& objects_, std::map<const EventPoll*, int>& height_, std::uint64_t id, EventPoll* poll) {
  int h = 0;
  for (PollEntry& e : poll->impl()->entries_) {
    if (EventPoll* inner = e.file->AsEventPoll()) h = std::max(h, height_[inner] + 1);
  }
  if (h > kMaxNests) throw LoadError(objects_.Name(id) + ": polls nested deeper than " + std::to_string(kMaxNests));
  height_[poll] = h;
}


struct Registration {
  PollEntry* entry;
  std::uint32_t rank;
};

// The EventPoll's after_load: entries back on their saved lists (the ready list in its saved order); their waiters
// are registered afterwards, all together (RegisterInQueueOrder). An in-memory file's state was captured in the same
// cut as the lists, so the lists are exact and are not re-derived (re-deriving would turn a consumed edge-triggered
// event into a new one).
void RestorePoll(LoadObjects& objects_, PendingPoll& p, std::vector<Registration>& registrations,
                 std::map<const EventPoll*, int>& height_, std::uint64_t id, EventPoll* poll) {
  if (p.ranks.size() != p.entries.size()) throw LoadError(objects_.Name(id) + ": a queue rank is missing");
  EventPoll::Impl& s = *poll->impl();
  const std::string name = objects_.Name(id);
  std::vector<bool> in_ready(p.entries.size(), false);
  for (std::uint32_t i : p.ready) {
    if (i >= p.entries.size() || in_ready[i] || p.entries[i]->list != EntryList::kReady) {
      throw LoadError(name + ": the ready order lists entry " + std::to_string(i) + " that is not a ready entry");
    }
    in_ready[i] = true;
  }
  for (std::size_t i = 0; i < p.entries.size(); ++i) {  // everything is checked before the poll takes anything
    PollEntry& e = *p.entries[i];
    auto where = [&] { return name + ", entry " + std::to_string(i) + ": "; };
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
  std::lock_guard lock(s.mu_);
  s.ReserveLocked(p.entries.size());
  for (std::size_t i = 0; i < p.entries.size(); ++i) {
    if (s.FindLocked({p.entries[i]->file, p.entries[i]->fd}) != nullptr) {
      for (std::size_t j = 0; j < i; ++j) s.entries_.erase(s.entries_.iterator_to(*p.entries[j]));  // give them back
      throw LoadError(name + ", entry " + std::to_string(i) + ": a second entry for the same (file, fd)");
    }
    s.entries_.insert(*p.entries[i]);
  }
  std::vector<PollEntry*> entries;
  for (auto& e : p.entries) entries.push_back(e.release());
  {
    std::lock_guard lists(s.lists_mu_);
    for (PollEntry* e : entries) {
      if (e->list == EntryList::kWaiting) s.waiting_.push_back(*e);
      if (e->list == EntryList::kDisabled) s.disabled_.push_back(*e);
    }
    for (std::uint32_t i : p.ready) s.ready_.push_back(*entries[i]);
  }
  for (std::size_t i = 0; i < entries.size(); ++i) registrations.push_back({entries[i], p.ranks[i]});
  CheckDepth(objects_, height_, id, poll);
}

// Every waiter goes back into its file's queue at its saved place: non-exclusive waiters are pushed to the front
// (so the highest rank first), exclusive ones to the back (lowest rank first), as WaiterQueue::EventRegister does.
void RegisterInQueueOrder(std::vector<Registration>& registrations) {
  std::stable_sort(registrations.begin(), registrations.end(), [](const Registration& a, const Registration& b) {
    return a.rank > b.rank;
  });
  for (const Registration& r : registrations) {
    if ((r.entry->events & kEpollExclusive) == 0) {
      r.entry->file->EventRegister(r.entry);
      r.entry->registered = true;
    }
  }
  for (auto it = registrations.rbegin(); it != registrations.rend(); ++it) {
    if ((it->entry->events & kEpollExclusive) != 0) {
      it->entry->file->EventRegister(it->entry);
      it->entry->registered = true;
    }
  }
}

void RunAfterLoadImpl(LoadObjects& objects_, std::map<std::uint64_t, PendingPoll>& polls_,
                      const std::set<const File*>& custom_) {
  std::map<const EventPoll*, int> height_;
  std::vector<Registration> registrations;
  std::vector<EventPoll*> restored;  // in after_load order: inner polls first
  CheckEnds(objects_);
  for (std::uint64_t id : AfterLoadOrder(objects_)) {
    auto f = objects_.files.find(id);
    if (f == objects_.files.end()) continue;  // shared state has no hook of its own
    File* file = f->second.get();
    const std::string& kind = objects_.kinds[id];
    if (kind == "pipe-read") {
      auto* end = static_cast<PipeReadEnd*>(file);
      end->pipe()->Attach(end, nullptr);
    } else if (kind == "pipe-write") {
      auto* end = static_cast<PipeWriteEnd*>(file);
      end->pipe()->Attach(nullptr, end);
    } else if (kind == "unix-stream") {
      auto* s = static_cast<UnixSocket*>(file);
      s->pair()->AttachEnd(s->side(), s);
    } else if (kind == "eventpoll") {
      RestorePoll(objects_, polls_[id], registrations, height_, id, static_cast<EventPoll*>(file));
      restored.push_back(static_cast<EventPoll*>(file));
    }
  }
  RegisterInQueueOrder(registrations);
  // Entries of embedder files, whose state their factory rebuilt, are re-checked (docs/state-model.md).
  for (EventPoll* poll : restored) {
    EventPoll::Impl& s = *poll->impl();
    std::lock_guard lock(s.mu_);
    bool queued = false;
    {
      std::lock_guard lists(s.lists_mu_);
      for (PollEntry& e : s.entries_) {
        if (e.list == EntryList::kWaiting && custom_.count(e.file)) queued |= s.QueueIfReadyLocked(e);
      }
    }
    if (queued) s.NotifyWatchers();
  }
}

}  // namespace

void RunAfterLoad(LoadObjects& objects, std::map<std::uint64_t, PendingPoll>& polls,
                  const std::set<const File*>& custom) {
  RunAfterLoadImpl(objects, polls, custom);
}

}  // namespace epollcr::state
