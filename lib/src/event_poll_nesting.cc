// Nesting rules for EventPolls watching EventPolls (fs/eventpoll.c: ep_loop_check, ep_get_upwards_depth_proc,
// reverse_path_check, path_limits). Upward links are not stored: the polls watching a poll are the epoll entries in
// its waiter queue, exactly the registrations that carry its wake-ups.
#include <algorithm>
#include <map>

#include "event_poll_internal.h"

namespace epollcr {

namespace {

// path_limits: paths through 1, 2, 3, 4 intermediate polls are capped at 500, 100, 50, 10; direct registrations in a
// poll nobody watches are unlimited (path_count_inc ignores depth 0).
constexpr int kPathLimits[kMaxNests + 1] = {1000, 500, 100, 50, 10};

// The polls that watch `file`. Preconditions: the caller keeps `file` alive.
template <typename Fn>
void ForEachParent(const File& file, Fn&& fn) {
  file.queue().ForEach([&](WaiterEntry& w) {
    if (EventPoll* p = w.WatchingPoll()) fn(*p);
  });
}

class LoopCheck {
 public:
  LoopCheck(EventPoll& outer, std::vector<std::shared_ptr<File>>* files) : outer_(&outer), files_(files) {}

  // How many poll levels lie below `p` (0 for a poll that watches no poll); more than kMaxNests when the walk meets
  // the poll being inserted into (a cycle) or goes too deep (ep_loop_check_proc).
  int DepthBelow(EventPoll& p, int depth) {
    if (auto it = below_.find(&p); it != below_.end()) return it->second;
    std::vector<std::shared_ptr<EventPoll>> children;
    {
      MutexLock lock(p.impl()->mu_);
      for (PollEntry& e : p.impl()->entries_) {
        std::shared_ptr<File> held = e.file->weak_from_this().lock();
        if (!held) continue;  // being released: it is leaving this poll
        if (auto child = std::dynamic_pointer_cast<EventPoll>(held)) {
          children.push_back(std::move(child));
        } else if (files_ != nullptr) {
          files_->push_back(std::move(held));
        }
      }
    }
    int result = 0;
    for (auto& child : children) {
      if (child.get() == outer_ || depth > kMaxNests) {
        result = kMaxNests + 1;
      } else {
        result = std::max(result, DepthBelow(*child, depth + 1) + 1);
      }
      if (result > kMaxNests) break;
    }
    below_[&p] = result;
    return result;
  }

  // How many poll levels lie above `p` (ep_get_upwards_depth_proc).
  int DepthAbove(const EventPoll& p) {
    if (auto it = above_.find(&p); it != above_.end()) return it->second;
    int result = 0;
    ForEachParent(p, [&](EventPoll& parent) { result = std::max(result, DepthAbove(parent) + 1); });
    above_[&p] = result;
    return result;
  }

 private:
  EventPoll* const outer_;
  std::vector<std::shared_ptr<File>>* const files_;
  std::map<const EventPoll*, int> below_;
  std::map<const EventPoll*, int> above_;
};

// Counts the paths from `file` up to unwatched polls by their number of intermediate polls (reverse_path_check_proc).
bool CountPaths(const File& file, int depth, int counts[kMaxNests + 1]) {
  if (depth > kMaxNests) return false;
  bool ok = true;
  ForEachParent(file, [&](EventPoll& parent) {
    if (!ok) return;
    if (!HasParentPolls(parent)) {
      if (depth > 0 && ++counts[depth] > kPathLimits[depth]) ok = false;
    } else {
      ok = CountPaths(parent, depth + 1, counts);
    }
  });
  return ok;
}

}  // namespace

Mutex& NestMutex() {
  // The one global of the engine (epnested_mutex in Linux; LOCKING 3, event_poll_internal.h): loop, depth and path
  // checks see a nesting graph that no other ADD changes underneath them. Removals may still shorten it, which can
  // only make a check pessimistic.
  static Mutex mu;
  return mu;
}

bool HasParentPolls(const EventPoll& poll) {
  bool any = false;
  ForEachParent(poll, [&](EventPoll&) { any = true; });
  return any;
}

bool WouldLoop(EventPoll& outer, EventPoll& inner, std::vector<std::shared_ptr<File>>* files_below) {
  LoopCheck check(outer, files_below);
  if (&inner == &outer) return true;
  const int below = check.DepthBelow(inner, 0);
  if (below > kMaxNests) return true;
  return below + 1 + check.DepthAbove(outer) > kMaxNests;
}

bool PathsWithinLimits(const std::vector<std::shared_ptr<File>>& files) {
  for (const auto& file : files) {
    int counts[kMaxNests + 1] = {};
    if (!CountPaths(*file, 0, counts)) return false;
  }
  return true;
}

}  // namespace epollcr
