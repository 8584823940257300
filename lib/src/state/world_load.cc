// Loading a World: read every object, check it, then run after_load hooks in the order the wait references give.
//
// Stages (docs/state-model.md): (1) shared pipe and socket-pair state, (2) every file created from its header,
// (3) every file's fields, wait references resolved to objects of the archive, (4) the fd table and roots, (5)
// after_load in dependency order: pipe and socket ends re-attach to their shared state, each EventPoll after the
// files it watches rebuilds its entries on the saved lists, ready list in the saved order, and registers its
// waiters. A failure at any stage drops everything made so far: no file, no registration is left behind.
#include <algorithm>
#include <set>

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "event_poll_internal.h"
#include "state/visitors.h"
#include "state/world_archive.h"

namespace epollcr::state {

namespace {

using boost::serialization::make_nvp;

struct PendingPoll {
  std::vector<std::unique_ptr<PollEntry>> entries;
  std::vector<std::uint32_t> ready;
};

template <typename Ar>
class Loader {
 public:
  explicit Loader(Ar& ar) : ar_(ar) {}

  void Read(World* out) {
    std::uint32_t layout = 0;
    ar_ >> make_nvp("layout", layout);
    if (layout == 0 || layout > kLayoutVersion) {
      throw LoadError("archive layout version " + std::to_string(layout) + " is not one this build reads (1.." +
                      std::to_string(kLayoutVersion) + ")");
    }
    ReadShared();
    ReadFiles();
    ReadTables(out);
    AfterLoad();
  }

 private:
  std::uint64_t Count(const char* name) {
    std::uint64_t n = 0;
    ar_ >> make_nvp(name, n);
    if (n > kMaxObjects) throw LoadError(std::string(name) + ": count " + std::to_string(n) + " is beyond the limit");
    return n;
  }

  std::uint64_t NewId() {
    std::uint64_t id = 0;
    ar_ >> make_nvp("id", id);
    if (id == 0 || objects_.kinds.count(id)) throw LoadError("object id " + std::to_string(id) + " is 0 or repeated");
    return id;
  }

  void ReadShared() {
    const std::uint64_t n = Count("shared_objects");
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t id = NewId();
      std::string kind;
      ar_ >> make_nvp("kind", kind);
      objects_.kinds[id] = kind;
      PlainLoad<Ar> v{ar_};
      if (kind == "pipe") {
        auto pipe = std::make_shared<PipeBuffer>();
        pipe->VisitState(v);
        if (std::string bad = pipe->Validate(); !bad.empty()) throw LoadError(objects_.Name(id) + ": " + bad);
        objects_.pipes[id] = std::move(pipe);
      } else if (kind == "socket-pair") {
        auto pair = std::make_shared<SocketPairState>();
        pair->VisitState(v);
        if (std::string bad = pair->Validate(); !bad.empty()) throw LoadError(objects_.Name(id) + ": " + bad);
        objects_.pairs[id] = std::move(pair);
      } else {
        throw LoadError("shared object " + std::to_string(id) + " has unknown kind '" + kind + "'");
      }
    }
  }

  void ReadFiles() {
    const std::uint64_t n = Count("files");
    std::vector<std::uint64_t> order;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t id = NewId();
      std::string kind;
      ar_ >> make_nvp("kind", kind);
      objects_.kinds[id] = kind;
      objects_.files[id] = Create(id, kind);
      order.push_back(id);
    }
    for (std::uint64_t id : order) {
      const std::string& kind = objects_.kinds[id];
      File* f = objects_.files[id].get();
      FileLoad<Ar> v{ar_, objects_, id};
      if (kind == "eventfd") {
        static_cast<EventFd*>(f)->VisitState(v);
      } else if (kind == "pipe-read") {
        static_cast<PipeReadEnd*>(f)->VisitState(v);
      } else if (kind == "pipe-write") {
        static_cast<PipeWriteEnd*>(f)->VisitState(v);
      } else if (kind == "unix-stream") {
        auto* s = static_cast<UnixSocket*>(f);
        s->VisitState(v);
        if (s->side() != 0 && s->side() != 1) throw LoadError(objects_.Name(id) + ": side is not 0 or 1");
      } else if (kind == "eventpoll") {
        ReadPoll(id, static_cast<EventPoll*>(f));
      }
    }
  }

  std::shared_ptr<File> Create(std::uint64_t id, const std::string& kind) {
    if (kind == "eventfd") return MakeFile<EventFd>(0, false);
    if (kind == "pipe-read") return MakeFile<PipeReadEnd>(nullptr);
    if (kind == "pipe-write") return MakeFile<PipeWriteEnd>(nullptr);
    if (kind == "unix-stream") return MakeFile<UnixSocket>(nullptr, 0);
    if (kind == "eventpoll") return EventPoll::Create();
    std::string state;
    ar_ >> make_nvp("state", state);
    FileFactory factory = FindFileType(kind);
    if (!factory) throw LoadError(objects_.Name(id) + ": file kind '" + kind + "' is not registered");
    Result<std::shared_ptr<File>> made = factory(state);
    if (!made.ok() || !made.value() || !made.value()->managed()) {
      throw LoadError(objects_.Name(id) + ": the factory of '" + kind + "' failed" +
                      (made.ok() ? std::string(" (returned no managed file)") : ": " + made.error().message()));
    }
    custom_.insert(made.value().get());
    return std::move(made).value();
  }

  void ReadPoll(std::uint64_t id, EventPoll* poll) {
    PendingPoll& p = polls_[id];
    const std::uint64_t n = Count("entries");
    for (std::uint64_t i = 0; i < n; ++i) {
      auto e = std::make_unique<PollEntry>(poll, FileIdentifier{}, 0, 0);
      FileLoad<Ar> v{ar_, objects_, id};
      e->VisitState(v);
      p.entries.push_back(std::move(e));
    }
    ar_ >> make_nvp("ready_order", p.ready);
  }

  void ReadTables(World* out) {
    const std::uint64_t nfds = Count("fds");
    for (std::uint64_t i = 0; i < nfds; ++i) {
      std::int32_t fd = -1;
      std::uint64_t id = 0;
      ar_ >> make_nvp("fd", fd) >> make_nvp("file", id);
      auto it = objects_.files.find(id);
      if (it == objects_.files.end()) throw LoadError("fd " + std::to_string(fd) + ": file " + std::to_string(id) + " is not in the archive");
      if (std::error_code ec = out->fds.InstallAt(fd, it->second)) {
        throw LoadError("fd " + std::to_string(fd) + ": " + (ec == Errno(EBUSY) ? "repeated" : "out of range"));
      }
    }
    const std::uint64_t nroots = Count("roots");
    for (std::uint64_t i = 0; i < nroots; ++i) {
      std::string name;
      std::uint64_t id = 0;
      ar_ >> make_nvp("name", name) >> make_nvp("file", id);
      auto it = objects_.files.find(id);
      if (it == objects_.files.end()) throw LoadError("root " + name + ": file " + std::to_string(id) + " is not in the archive");
      if (!out->roots.emplace(name, it->second).second) throw LoadError("root " + name + " is repeated");
    }
  }

  // Kahn's algorithm over the wait edges; what is left over lies on a cycle.
  std::vector<std::uint64_t> AfterLoadOrder() {
    std::map<std::uint64_t, int> pending;  // wait references not yet satisfied
    std::multimap<std::uint64_t, std::uint64_t> waiters;  // referenced -> owner
    for (const auto& [id, kind] : objects_.kinds) pending[id] = 0;
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

  // Each pipe and socket pair has its ends exactly as its counts say: one read and one write end per open side.
  void CheckEnds() {
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

  void AfterLoad() {
    CheckEnds();
    for (std::uint64_t id : AfterLoadOrder()) {
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
        RestorePoll(id, static_cast<EventPoll*>(file));
      }
    }
  }

  // The EventPoll's after_load: entries back on their saved lists (the ready list in its saved order), waiters
  // registered again. An in-memory file's state was captured in the same cut as the lists, so the lists are exact
  // and are not re-derived (re-deriving would turn a consumed edge-triggered event into a new one). Entries of
  // embedder files, whose state the factory rebuilt, are re-checked: a waiting entry whose file is ready is queued.
  void RestorePoll(std::uint64_t id, EventPoll* poll) {
    PendingPoll& p = polls_[id];
    EventPoll::Impl& s = *poll->impl();
    const std::string name = objects_.Name(id);
    std::vector<bool> in_ready(p.entries.size(), false);
    for (std::uint32_t i : p.ready) {
      if (i >= p.entries.size() || in_ready[i] || p.entries[i]->list != EntryList::kReady) {
        throw LoadError(name + ": the ready order lists entry " + std::to_string(i) + " that is not a ready entry");
      }
      in_ready[i] = true;
    }
    std::set<std::pair<const File*, int>> keys;
    for (std::size_t i = 0; i < p.entries.size(); ++i) {  // everything is checked before the poll takes anything
      PollEntry& e = *p.entries[i];
      const std::string where = name + ", entry " + std::to_string(i) + ": ";
      const EventMask armed = e.events & ~kEpollPrivateBits;
      if (e.list != EntryList::kReady && e.list != EntryList::kWaiting && e.list != EntryList::kDisabled) {
        throw LoadError(where + "unknown list");
      }
      if ((e.list == EntryList::kReady) != in_ready[i]) throw LoadError(where + "ready but not in the ready order");
      if (e.list == EntryList::kDisabled ? (armed != 0 || (e.events & kEpollOneShot) == 0)
                                         : (armed & kAlwaysReported) != kAlwaysReported) {
        throw LoadError(where + "mask " + FormatEventMask(e.events) + " does not fit its list");
      }
      if ((e.events & kEpollExclusive) != 0 && (e.events & ~kEpollExclusiveOkBits) != 0) {
        throw LoadError(where + "EPOLLEXCLUSIVE with bits Linux refuses");
      }
      if (e.fd < 0 || e.file == poll || !e.file->Epollable()) throw LoadError(where + "bad fd or file");
      if (!keys.emplace(e.file, e.fd).second) throw LoadError(where + "a second entry for the same (file, fd)");
    }
    std::lock_guard lock(s.mu_);
    for (auto& e : p.entries) {
      s.entries_.insert(*e);
      s.MaybeGrowLocked();
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
    for (PollEntry* e : entries) {
      e->file->EventRegister(e);
      e->registered = true;
    }
    bool queued = false;
    {
      std::lock_guard lists(s.lists_mu_);
      for (PollEntry* e : entries) {
        if (e->list == EntryList::kWaiting && custom_.count(e->file)) queued |= s.QueueIfReadyLocked(*e);
      }
    }
    if (queued) s.NotifyWatchers();
    CheckDepth(id, poll);
  }

  // The nesting limit of ADD holds for loaded graphs too: no chain of more than kMaxNests links.
  void CheckDepth(std::uint64_t id, EventPoll* poll) {
    int h = 0;
    for (PollEntry& e : poll->impl()->entries_) {
      if (auto* inner = dynamic_cast<EventPoll*>(e.file)) h = std::max(h, height_[inner] + 1);
    }
    if (h > kMaxNests) throw LoadError(objects_.Name(id) + ": polls nested deeper than " + std::to_string(kMaxNests));
    height_[poll] = h;
  }

  Ar& ar_;
  LoadObjects objects_;
  std::map<std::uint64_t, PendingPoll> polls_;
  std::set<const File*> custom_;
  std::map<const EventPoll*, int> height_;
};

}  // namespace

template <typename Ar>
Status LoadWorldFrom(Ar& ar, World* out) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "load: the world is not empty");
  try {
    Loader<Ar> loader(ar);
    loader.Read(out);
    return {};
  } catch (const std::exception& e) {
    // Everything made so far is dropped with the loader and the world's tables: no file stays registered.
    out->roots.clear();
    out->fds.Clear();
    return Status::Error(EINVAL, std::string("load: ") + e.what());
  }
}

template Status LoadWorldFrom(boost::archive::text_iarchive&, World*);
template Status LoadWorldFrom(boost::archive::xml_iarchive&, World*);
template Status LoadWorldFrom(boost::archive::binary_iarchive&, World*);

}  // namespace epollcr::state
