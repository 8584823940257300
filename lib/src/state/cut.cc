// Taking a consistent cut of a World, retrying while a file closed just before it is still being released.
#include <chrono>
#include <functional>
#include <thread>

#include "state/cut.h"

namespace epollcr::state {

Status WithCut(const World& world, const std::function<void(Cut&)>& read, SavePause* pause,
               const std::function<void(Cut&)>& after) {
  {
    // A file closed just before the cut may still be registered while its release waits for a poll's lock: take
    // the cut again once it is gone. A file that stays outside the world is the caller's error.
    // Between attempts the saver backs off so the releasing thread gets the poll locks it needs (bounded: about
    // 100 ms before giving up).
    constexpr int kAttempts = 1000;
    for (int attempt = 1;; ++attempt) {
      if (attempt > 1) {
        if (attempt < 10) {
          std::this_thread::yield();
        } else {
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
      }
      Cut snap(world);
      if (Status s = snap.Take(); !s.ok()) return s;
      if (Status s = snap.SaveCustom(); !s.ok()) return s;  // before the cut: embedder code must not run under engine locks
      if (Status s = snap.Lock(); !s.ok()) {
        if (snap.retry() && attempt < kAttempts) continue;
        return s;
      }
      read(snap);
      snap.Unlock();
      if (pause != nullptr) pause->locks_held = std::chrono::steady_clock::now() - snap.locked_at();
      snap.Finish();
      if (after) after(snap);
      return {};
    }
  }
}

}  // namespace epollcr::state
