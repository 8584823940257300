// Saving a World: take a consistent cut, then write it. See docs/state-model.md.
//
// The cut holds the locks docs/state-model.md lists, taken in the engine's lock order (LOCKING,
// event_poll_internal.h). With all of them held no entry can be on two lists or none, and every ready entry's file
// is alive. Files are read under their own state lock while they are written.
#include <algorithm>
#include <chrono>
#include <thread>
#include <functional>
#include <mutex>

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "epollcr/host_file.h"
#include "event_poll_internal.h"
#include "state/snapshot.h"

namespace epollcr::state {

template <typename Ar>
Status SaveWorldTo(Ar& ar, const World& world) {
  try {
    Status refused;
    Status s = WithSnapshot(world, [&](Snapshot& snap) {
      for (std::size_t i = 0; i < snap.files().size(); ++i) {
        if (auto* h = dynamic_cast<HostFile*>(snap.files()[i].get())) {
          refused = Status::Error(EINVAL, "file#" + std::to_string(i + 1) + " (host fd " + std::to_string(h->fd()) +
                                              "): host files are saved only in protobuf images (image/codec.h), "
                                              "which a restorer resolves; a Boost archive cannot hold them");
          return;
        }
      }
      snap.Write(ar);
    });
    return s ? s : refused;
  } catch (const std::exception& e) {
    return Status::Error(EIO, std::string("save: ") + e.what());
  }
}

Status WithSnapshot(const World& world, const std::function<void(Snapshot&)>& read) {
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
      Snapshot snap(world);
      if (Status s = snap.Take()) return s;
      if (Status s = snap.SaveCustom()) return s;  // before the cut: embedder code must not run under engine locks
      if (Status s = snap.Lock()) {
        if (snap.retry() && attempt < kAttempts) continue;
        return s;
      }
      read(snap);
      return {};
    }
  }
}

template Status SaveWorldTo(boost::archive::text_oarchive&, const World&);
template Status SaveWorldTo(boost::archive::xml_oarchive&, const World&);
template Status SaveWorldTo(boost::archive::binary_oarchive&, const World&);

}  // namespace epollcr::state
