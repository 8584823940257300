// A consistent cut of a World (docs/state-model.md): which files and shared objects it holds, with their object
// ids, and the locks that keep it still while a codec reads it. Every format saves from a cut: the Boost backend
// (archive/world_save.cc) and the image (image/codec.cc). Internal to lib/ and image/.
#pragma once

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "epollcr/host_file.h"
#include "big_buffer.h"
#include "epollcr/memory.h"
#include "event_poll_internal.h"
#include "state/visitors.h"

namespace epollcr::state {

// The kind a file is saved as: a built-in kind's name, an embedder file's StateKind (valid while the file lives), or
// empty if it cannot be saved.
inline std::string_view KindOf(const File& f, File::Builtin type) {
  switch (type) {
    case File::Builtin::kEventPoll: return "eventpoll";
    case File::Builtin::kEventFd: return "eventfd";
    case File::Builtin::kPipeRead: return "pipe-read";
    case File::Builtin::kPipeWrite: return "pipe-write";
    case File::Builtin::kUnixStream: return "unix-stream";
    case File::Builtin::kHost: return "host";
    case File::Builtin::kNone: break;
  }
  if (auto* s = dynamic_cast<const SavableFile*>(&f)) return s->StateKind();
  return {};
}

// Memory from AllocateLarge (epollcr/memory.h): from 2 MiB on, huge-page mappings that FreeLarge keeps for a later
// request of the same size (big_buffer.h).
class LargeMemory final : public std::pmr::memory_resource {
 private:
  void* do_allocate(std::size_t bytes, std::size_t) override { return AllocateLarge(bytes); }
  void do_deallocate(void* p, std::size_t bytes, std::size_t) override { FreeLarge(p, bytes); }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

// A cut's memory: blocks of 2 MiB or more straight from AllocateLarge, each its own mapping of the size asked for
// (kept, when freed, for the next save's array of that size), and smaller ones from a monotonic buffer that starts in
// a huge page kept between saves (so a small world's save takes nothing from malloc). A monotonic buffer alone would
// put large arrays in ever larger chunks (it grows them geometrically): a million entries took twice the mapped
// memory, beyond what FreeLarge keeps, and each save faulted part of it in afresh.
// What is taken from it need not be given back: it is all freed with it.
class CutMemory final : public std::pmr::memory_resource {
 public:
  // `first`: the size of the first block, which the small arrays share; more comes from AllocateLarge as needed.
  explicit CutMemory(std::size_t first = BigBuffer::kHugePage) : first_(first) {}
  // A first block for a world of `fds` fds: a whole huge page for one that fills most of it (FreeLarge keeps it for the
  // next save, faulted in already), else about what its arrays take, from malloc. A huge page whatever the size was
  // several times a small world's heap (BENCHMARKS.md goal (i): a save's peak ≤ 3 × the world's heap; 2 MiB was
  // 7 × a 1,000-fd world's).
  static std::size_t FirstBlockFor(int fds) {
    return BigBuffer::FirstBlockFor(std::size_t{128} * static_cast<std::size_t>(std::max(fds, 1)));
  }
  CutMemory(const CutMemory&) = delete;
  CutMemory& operator=(const CutMemory&) = delete;
  ~CutMemory() override {
    for (const auto& [p, bytes] : large_blocks_) large_.deallocate(p, bytes);
  }

 private:
  static bool Large(std::size_t bytes) { return bytes >= BigBuffer::kHugePage; }
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    if (!Large(bytes)) return small_.allocate(bytes, alignment);
    large_blocks_.reserve(large_blocks_.size() + 1);  // before taking the block: nothing to undo if this throws
    void* p = large_.allocate(bytes, alignment);
    large_blocks_.emplace_back(p, bytes);
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    if (!Large(bytes)) return;  // the monotonic buffer frees all at its end
    auto it = std::find(large_blocks_.begin(), large_blocks_.end(), std::pair<void*, std::size_t>{p, bytes});
    if (it == large_blocks_.end()) return;  // not ours: cannot happen
    large_blocks_.erase(it);
    large_.deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

  LargeMemory large_;
  std::vector<std::pair<void*, std::size_t>> large_blocks_;  // handed out and not given back yet (few: 2 MiB or more)
  BigBuffer first_;
  std::pmr::monotonic_buffer_resource small_{first_.data(), first_.size(), &large_};
};

// The cut's arrays that grow with the number of fds or entries, from the cut's memory (Cut::memory()): a huge page
// kept between saves, then AllocateLarge's mappings, which a later save of a world of the same size finds faulted in
// already. A million entries fill about 40 MiB of them; in 4 KiB pages that was ~10,000 page faults per save, each
// taken with the cut's locks held; and a small world's arrays, from malloc, were given back to the kernel at the end of
// each save and faulted in again by the next.
template <typename T>
using CutVector = std::pmr::vector<T>;

struct PollCut {
  EventPoll* poll = nullptr;
  std::uint64_t id = 0;
  int height = 0;  // poll levels below it: outer polls have larger heights than the polls they watch
  // Slices of arrays the cut holds for all its polls (a world of many small polls took blocks per poll per save).
  // Entries are sorted by (file id, fd) once the cut is finished (Cut::Finish, after the locks); with the locks held
  // only a kernel-active poll's are (its kernel epoll is described from them under the locks), and only the entries
  // themselves, which may be read only then.
  std::span<PollEntry* const> entries;
  std::span<const std::uint32_t> ready;    // ready order, as indexes into entries (once finished)
  std::span<const std::uint32_t> ranks;    // each entry's place among the epoll waiters of its file's queue (same)
  // Every entry's saved fields (state::CopySaved), copied by the cut while it held the entry, row_bytes each: entry k
  // (in sorted order) is row order[k]. For codecs, once the cut is finished.
  const std::byte* rows = nullptr;
  std::size_t row_bytes = 0;
  std::span<const std::uint32_t> order;
  const std::byte* Row(std::size_t k) const { return rows + static_cast<std::size_t>(order[k]) * row_bytes; }
};

class Cut {
 public:
  explicit Cut(const World& world) : world_(world), memory_(CutMemory::FirstBlockFor(world.fds.Count())) {}

  Status Take() {
    // The cut's arrays are sized before the fd table is frozen (the pause starts there): for as many fds as it has now
    // (more only if some are opened meanwhile: the arrays grow then), and room for as many files as fds, up to a
    // bound (a million fds are usually dups of far fewer files): no rehash or regrowth on the way for the common
    // sizes, a hand-off of 10,000 connections (a file per fd) among them, which spent a tenth of its save growing the
    // ids table from a bound of 4,096.
    fds_.reserve(static_cast<std::size_t>(world_.fds.Count()));
    const std::size_t files_expected = std::min<std::size_t>(fds_.capacity() + world_.roots.size(), 16384);
    ids_.ids.reserve(files_expected);
    files_.reserve(files_expected);
    kinds_.reserve(files_expected);
    types_.reserve(files_expected);
    mutation_.reserve(files_expected);
    locked_at_ = std::chrono::steady_clock::now();
    frozen_ = world_.fds.Freeze();  // the fd table is part of the cut: held still until the save ends
    // The fds with their files' ids. The frozen table holds every file, so only each file is copied (once), not a
    // shared_ptr per fd; consecutive fds of one file (dups) cost one id lookup between them.
    const File* last = nullptr;
    std::uint64_t last_id = 0;
    world_.fds.ForEachFrozen([&](int fd, const std::shared_ptr<File>& file) {
      if (file.get() != last) {
        last = file.get();
        last_id = Own(file.get());
      }
      fds_.push_back({fd, last_id});
    });
    for (const auto& [name, file] : world_.roots) {
      if (!file) return Status::Error(EINVAL, "root " + name + " is null");
      Own(file.get());
    }
    for (File* f : files_) {
      types_.push_back(f->builtin());
      // Each file's mutation lock, asked while the file is at hand (Lock takes them). The two ends of a pipe or
      // socket pair share one lock, and usually sit side by side.
      Mutex* m = f->MutationLock();
      if (m != nullptr && (mutation_.empty() || mutation_.back() != m)) mutation_.push_back(m);
      kinds_.push_back(KindOf(*f, types_.back()));
      if (kinds_.back().empty()) {
        return Status::Error(EINVAL, "file#" + std::to_string(ids_.Of(f)) + " (" + std::string(f->TypeName()) +
                                         ") cannot be saved: make it a SavableFile and register its kind");
      }
      if (types_.back() == File::Builtin::kNone) {
        kinds_.back() = embedder_kinds_.emplace_back(kinds_.back());  // the file's own string may go with the file
        embedder_files_ = true;
      }
      switch (types_.back()) {
        case File::Builtin::kPipeRead: Share(static_cast<PipeReadEnd*>(f)->pipe(), "pipe"); break;
        case File::Builtin::kPipeWrite: Share(static_cast<PipeWriteEnd*>(f)->pipe(), "pipe"); break;
        case File::Builtin::kUnixStream: Share(static_cast<UnixSocket*>(f)->pair(), "socket-pair"); break;
        default: break;
      }
    }
    return {};
  }

  // Takes every lock of the cut, in the engine's lock order (LOCKING, event_poll_internal.h), and records the polls'
  // entries. Not analysed: the locks are held in locks_, a vector, which the analysis cannot follow.
  Status Lock() EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    polls_.reserve(static_cast<std::size_t>(std::count(types_.begin(), types_.end(), File::Builtin::kEventPoll)));
    for (std::size_t i = 0; i < files_.size(); ++i) {
      if (types_[i] == File::Builtin::kEventPoll) polls_.push_back({files_[i]->AsEventPoll(), i + 1, 0, {}, {}, {}, nullptr, 0, {}});
    }
    locks_.reserve(mutation_.size() + 2 * polls_.size());  // every lock the cut takes: no regrowth on the way
    TakeMutationLocks(mutation_);
    for (PollCut& c : polls_) locks_.emplace_back(c.poll->impl()->mu_);
    // Each poll's place in polls_, by its address: a lookup per waiter of every queue, in constant time (a binary
    // search in a sorted copy was a fifth of the cut of a world of hundreds of small polls).
    IdMap places(&memory_);
    places.reserve(polls_.size());
    for (std::size_t i = 0; i < polls_.size(); ++i) places.try_emplace(polls_[i].poll, i);
    auto poll_index = [&](const EventPoll* p) -> std::optional<std::size_t> {
      const std::uint64_t* at = places.find(p);
      if (at == nullptr) return std::nullopt;
      return static_cast<std::size_t>(*at);
    };
    // The order of each file's wait queue decides the order in which one wake-up queues entries of several polls
    // (or several entries of one poll), so it is part of the state: each entry records its place among the entries
    // of the cut's polls in that queue (0, 1, 2, ...; waiters of polls outside the world are not counted).
    // Registrations change only under their poll's mu_, held now; queue locks come after mu_ and before lists_mu_
    // (LOCKING 4 to 6).
    // The walk over the queues, file by file in id order, also collects each poll's entries with their sort key and
    // place: grouped by file id already, and without a map from entry to place.
    // A queue of a poll of the cut also gives the polls that watch it (inner_of: each poll's watched polls).
    // Every poll's entries in one array, each poll a slice sized for its entries (start[i]..start[i + 1]), of which
    // the walk fills found[i].
    std::vector<std::size_t> start(polls_.size() + 1, 0);
    for (std::size_t i = 0; i < polls_.size(); ++i) start[i + 1] = start[i] + polls_[i].poll->impl()->entries_.size();
    // Not initialized: the walk writes each poll's first found[i] slots, and only those are read.
    Keyed* const keyed_all = Uninitialized<Keyed>(start.back());
    // Each entry's saved fields are copied as the walk meets it, in the slot its Keyed takes: the entry is at hand
    // then, and sorting the entries and copying them in sorted order (a second pass over a million entries, mostly
    // cache misses) waits for the locks to be released (Finish).
    {
      PollEntry scratch(nullptr, FileIdentifier{}, 0, 0);
      row_bytes_ = SavedBytes(scratch);
    }
    rows_ = Uninitialized<std::byte>(start.back() * row_bytes_);
    // So are the eventfds' (their counters), as the walk meets each file: the cut holds their mutation locks, which
    // guard the counter (eventfd.h), and they are at hand.
    {
      EventFd scratch(0, false);
      eventfd_row_bytes_ = SavedBytes(scratch);
    }
    eventfd_rows_ = Uninitialized<std::byte>(
        static_cast<std::size_t>(std::count(types_.begin(), types_.end(), File::Builtin::kEventFd)) *
        eventfd_row_bytes_);
    std::vector<std::size_t> found(polls_.size(), 0);
    std::vector<std::vector<std::size_t>> inner_of(polls_.size());
    std::size_t next_poll = 0;  // polls_ is in file order
    // The last waiter's poll and its place, kept from file to file: most files are watched by the same few polls.
    const EventPoll* last = nullptr;
    std::size_t last_at = 0;
    std::size_t eventfds = 0;
    for (std::size_t i = 0; i < files_.size(); ++i) {
      if (types_[i] == File::Builtin::kEventFd) {
        CopySaved(*static_cast<EventFd*>(files_[i]), eventfd_rows_ + eventfds++ * eventfd_row_bytes_);
      }
      std::optional<std::size_t> this_poll;
      if (next_poll < polls_.size() && polls_[next_poll].id == i + 1) this_poll = next_poll++;
      std::uint32_t next = 0;
      files_[i]->queue().ForEach([&](WaiterEntry& w) {
        const EventPoll* p = w.WatchingPoll();
        if (p == nullptr) return;
        if (p != last) {
          const std::optional<std::size_t> at = poll_index(p);
          if (!at) return;
          last = p;
          last_at = *at;
        }
        auto* e = static_cast<PollEntry*>(&w);
        // More waiters than the poll has entries cannot be (each entry waits in one queue once); if it were so, the
        // count says it and the poll's map decides, as for one whose walk missed some.
        if (const std::size_t slot = start[last_at] + found[last_at]; slot < start[last_at + 1]) {
          keyed_all[slot] = {static_cast<std::uint32_t>(i + 1), e->fd, next,
                             static_cast<std::uint32_t>(found[last_at]), e, e->list == EntryList::kReady};
          CopySaved(*e, rows_ + slot * row_bytes_);
        }
        ++found[last_at];
        ++next;
        if (this_poll) inner_of[last_at].push_back(*this_poll);
      });
    }
    // Whether the walk found every entry of every poll; else some poll's nesting is read from its map below.
    bool all_found = true;
    for (std::size_t i = 0; i < polls_.size(); ++i) {
      all_found = all_found && found[i] == polls_[i].poll->impl()->entries_.size();
    }
    // Each poll's height is computed once: a graph of polls can hold very many paths to one poll (a loaded one is
    // not bound by ADD's path limits), and walking every path took seconds (fuzz regression
    // boost_text_loader/nested-polls-many-paths).
    for (PollCut& c : polls_) c.height = -1;  // not known yet
    auto height = [&](auto& self, std::size_t at, int depth) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS -> int {
      PollCut& c = polls_[at];
      if (c.height >= 0) return c.height;
      if (depth > kMaxNests + 1) return depth;  // cannot happen: nesting is limited on ADD and on load
      int h = 0;
      if (all_found) {
        for (std::size_t inner : inner_of[at]) h = std::max(h, self(self, inner, depth + 1) + 1);
      } else {
        for (PollEntry& e : c.poll->impl()->entries_) {
          const EventPoll* inner = e.file->AsEventPoll();
          if (inner == nullptr) continue;
          if (const std::optional<std::size_t> i = poll_index(inner)) h = std::max(h, self(self, *i, depth + 1) + 1);
        }
      }
      c.height = h;
      return h;
    };
    for (std::size_t i = 0; i < polls_.size(); ++i) height(height, i, 0);
    std::vector<PollCut*> order;
    order.reserve(polls_.size());
    for (PollCut& c : polls_) order.push_back(&c);
    std::stable_sort(order.begin(), order.end(), [](PollCut* a, PollCut* b) { return a->height > b->height; });
    for (PollCut* c : order) locks_.emplace_back(c->poll->impl()->lists_mu_);

    // Not initialized either: each poll's slice is written as far as its span reaches.
    entries_ = Uninitialized<PollEntry*>(start.back());
    ranks_ = Uninitialized<std::uint32_t>(start.back());
    order_ = Uninitialized<std::uint32_t>(start.back());
    keyed_ = keyed_all;
    start_ = std::move(start);
    sorted_.assign(polls_.size(), false);
    ready_start_.assign(polls_.size() + 1, 0);
    CutVector<Keyed> from_map(&memory_);  // a poll's entries read from its map, when the walk missed some
    CutVector<std::pair<const PollEntry*, std::uint32_t>> on_ready(&memory_);
    for (std::size_t pi = 0; pi < polls_.size(); ++pi) {
      PollCut& c = polls_[pi];
      // The poll's name is made only for a message: a world of many small polls made one per poll per save.
      auto name = [&] { return "eventpoll#" + std::to_string(c.id); };
      ZeroValueCheck zero;
      c.poll->impl()->VisitState(zero);
      if (!zero.status.ok()) return Status(zero.status.code, name() + zero.status.message);
      std::span<Keyed> keyed(keyed_all + start_[pi], std::min(found[pi], start_[pi + 1] - start_[pi]));
      if (found[pi] == c.poll->impl()->entries_.size()) {
        // Every entry was in its file's queue: in file id order, and a file's entries in queue order (the latest
        // registration first: Linux puts a non-exclusive waiter at the head of the queue, waiter_queue.cc), so
        // mostly in falling fd order. Sorted by Finish, after the locks; a kernel-active poll's now, since its kernel
        // epoll is described from its sorted entries under the locks.
        if (c.poll->impl()->kernel_active_.load(std::memory_order_acquire)) {
          SortEachFileByFd(keyed);
          sorted_[pi] = true;
        }
      } else if (Status s = KeyedFromMap(c, name(), keyed, from_map); !s.ok()) {
        return s;
      } else {
        // Sorted already, and no more entries than the poll's slice has room for: they take the slice, each with its
        // fields copied again in this order.
        std::copy(from_map.begin(), from_map.end(), keyed_all + start_[pi]);
        keyed = std::span<Keyed>(keyed_all + start_[pi], from_map.size());
        for (std::size_t k = 0; k < keyed.size(); ++k) {
          keyed[k].row = static_cast<std::uint32_t>(k);
          CopySaved(*keyed[k].entry, rows_ + (start_[pi] + k) * row_bytes_);
        }
        sorted_[pi] = true;
      }
      // The ready list's entries by their rows: the entries that are on the ready list (an entry's list is kReady
      // exactly while it is on ready_), each with its row in an open-addressed table by address, in which each entry
      // of ready_ is looked up (a sort of them and a binary search per entry of ready_, each a cache miss, were a
      // fifth of the locked time of a poll of 100,000 entries, 10,000 of them ready). Finish turns rows into places.
      on_ready.clear();
      PollEntry** entries = entries_ + start_[pi];
      for (std::size_t k = 0; k < keyed.size(); ++k) {
        if (keyed[k].ready) on_ready.emplace_back(keyed[k].entry, keyed[k].row);
        entries[k] = keyed[k].entry;
      }
      c.entries = std::span<PollEntry* const>(entries, keyed.size());
      if (!on_ready.empty()) {
        IdMap row_of(&memory_);
        row_of.reserve(on_ready.size());
        for (const auto& [entry, row] : on_ready) row_of.try_emplace(entry, row);
        for (const PollEntry& e : c.poll->impl()->ready_) {
          // An entry of the ready list that is not among the cut's (its file is being released) is left out.
          if (const std::uint64_t* row = row_of.find(&e)) ready_.push_back(static_cast<std::uint32_t>(*row));
        }
      }
      ready_start_[pi + 1] = ready_.size();
    }
    return {};
  }

  // What the cut copied under the locks, put in the order codecs write it, once the locks are released: each poll's
  // entries sorted by (file id, fd) (the walk met them file by file, a file's mostly in falling fd order), their
  // ranks and rows in that order, and its ready order as places among them. Reads no object of the world.
  void Finish() {
    std::vector<std::uint32_t> place_of_row;
    for (std::size_t pi = 0; pi < polls_.size(); ++pi) {
      PollCut& c = polls_[pi];
      const std::size_t n = c.entries.size();
      std::span<Keyed> keyed(keyed_ + start_[pi], n);
      if (!sorted_[pi]) SortEachFileByFd(keyed);
      PollEntry** entries = entries_ + start_[pi];
      std::uint32_t* ranks = ranks_ + start_[pi];
      std::uint32_t* order = order_ + start_[pi];
      place_of_row.resize(n);
      for (std::size_t k = 0; k < n; ++k) {
        entries[k] = keyed[k].entry;
        ranks[k] = keyed[k].rank;
        order[k] = keyed[k].row;
        place_of_row[keyed[k].row] = static_cast<std::uint32_t>(k);
      }
      std::uint32_t* ready = ready_.data() + ready_start_[pi];
      const std::size_t ready_count = ready_start_[pi + 1] - ready_start_[pi];
      for (std::size_t j = 0; j < ready_count; ++j) ready[j] = place_of_row[ready[j]];
      c.ranks = std::span<const std::uint32_t>(ranks, n);
      c.ready = std::span<const std::uint32_t>(ready, ready_count);
      c.rows = rows_ + start_[pi] * row_bytes_;
      c.row_bytes = row_bytes_;
      c.order = std::span<const std::uint32_t>(order, n);
    }
  }

  // The files' mutation locks (LOCKING 2), into locks_. They are tried in file order, without waiting: a snapshot
  // that never waits while it holds one cannot take part in a deadlock, and no sort is needed (a thousand eventfds'
  // locks sorted by address were a tenth of a small world's save). Only if one is busy (a file is changing, or two
  // files share a lock that the walk did not see twice in a row) are they let go and taken again in address order,
  // waiting for each: the order every snapshot waits in, so two of them cannot deadlock either.
  void TakeMutationLocks(std::vector<Mutex*>& mutation) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    const std::size_t before = locks_.size();
    bool all = true;
    for (Mutex* m : mutation) {
      if (!m->try_lock()) {
        all = false;
        break;
      }
      locks_.emplace_back(*m, std::adopt_lock);
    }
    if (all) return;
    while (locks_.size() > before) locks_.pop_back();  // released in reverse order of taking
    std::sort(mutation.begin(), mutation.end(), std::less<Mutex*>());
    mutation.erase(std::unique(mutation.begin(), mutation.end()), mutation.end());
    for (Mutex* m : mutation) locks_.emplace_back(*m);
  }

  // The last failure was "not in the world", which a concurrent install can cause.
  bool retry() const { return retry_; }
  // When Take froze the fd table, the first of the cut's locks: the pause starts there.
  std::chrono::steady_clock::time_point locked_at() const { return locked_at_; }

  // Releases every lock of the cut, the fd table last; what the cut copied stays (it is freed with the cut, after).
  void Unlock() EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    while (!locks_.empty()) locks_.pop_back();
    if (frozen_.owns_lock()) frozen_.unlock();
  }

  Status SaveCustom() {
    if (!embedder_files_) return {};  // the fd table is frozen already: a world of built-in files does not walk it
    for (std::size_t i = 0; i < files_.size(); ++i) {
      if (types_[i] != File::Builtin::kNone) continue;
      auto* s = dynamic_cast<SavableFile*>(files_[i]);
      if (!s || IsBuiltIn(kinds_[i])) continue;
      if (custom_.empty()) custom_.resize(files_.size());  // only a world with embedder files needs the column
      Result<std::string> bytes = s->SaveState();
      if (!bytes.ok()) {
        return {bytes.error(),
                std::string(kinds_[i]) + "#" + std::to_string(i + 1) + ": SaveState failed: " + bytes.error().message()};
      }
      custom_[i] = std::move(bytes).value();
    }
    return {};
  }

  // What the cut holds, for codecs. File i has object id i + 1; the files themselves may be read only while the cut's
  // locks are held (between Take() and Unlock()), their types and kinds until the end of the snapshot.
  const std::vector<File*>& files() const { return files_; }
  // File i's kind (a built-in kind's name, or its StateKind) and type, for codecs (no virtual call per file).
  const std::vector<std::string_view>& kinds() const { return kinds_; }
  File::Builtin type(std::size_t i) const { return types_[i]; }
  // File i's SaveState bytes: empty unless it is an embedder file (the column is made only if the world has one).
  const std::string& custom_state(std::size_t i) const {
    static const std::string kNone;
    return i < custom_.size() ? custom_[i] : kNone;
  }
  // The fd table, in fd order: each fd with its file's object id.
  struct Fd {
    int fd;
    std::uint64_t file;
  };
  const CutVector<Fd>& fds() const { return fds_; }
  // Every eventfd's saved fields (state::CopySaved), in file order, eventfd_row_bytes() each: copied under the locks,
  // for codecs after them.
  const std::byte* eventfd_rows() const { return eventfd_rows_; }
  std::size_t eventfd_row_bytes() const { return eventfd_row_bytes_; }
  // The cut's memory, for a codec's scratch during the save: what is taken from it need not be given back, it is
  // released with the cut.
  std::pmr::memory_resource* memory() { return &memory_; }
  const std::map<std::string, std::shared_ptr<File>>& roots() const { return world_.roots; }
  std::vector<PollCut>& polls() { return polls_; }
  const SaveIds& ids() const { return ids_; }

  static bool IsBuiltIn(std::string_view kind) { return BuiltInFileKind(kind).has_value(); }

  // A pipe buffer or socket pair state, shared by two files; ids follow the files'.
  struct Shared {
    std::uint64_t id;
    std::string kind;
    PipeBuffer* pipe = nullptr;
    SocketPairState* pair = nullptr;
  };
  const std::vector<Shared>& shared() const { return shared_; }

 private:
  struct Keyed {  // an entry with its sort key, (file id, fd), its place in its file's queue, its row, whether ready
    std::uint32_t id;  // file ids are 1..files_.size(), and a world has fewer than 2^32 files (they take fds)
    int fd;
    std::uint32_t rank;
    std::uint32_t row;  // where its saved fields were copied, among its poll's rows
    PollEntry* entry;
    bool ready;  // on the poll's ready list (read while the walk has the entry at hand)
  };
  static bool KeyLess(const Keyed& a, const Keyed& b) { return a.id != b.id ? a.id < b.id : a.fd < b.fd; }

  // A poll some of whose entries the queue walk did not find (a waiter not registered, or a file outside the cut):
  // its entries from its map, each with the place the walk found for it (0 if none), sorted. A file outside the world
  // fails the save (retry() then says the caller may take the cut again).
  Status KeyedFromMap(PollCut& c, const std::string& name, std::span<const Keyed> walked, CutVector<Keyed>& keyed)
      EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    std::unordered_map<const PollEntry*, std::uint32_t> ranks;
    for (const Keyed& k : walked) {
      if (k.rank > 0) ranks.emplace(k.entry, k.rank);
    }
    keyed.clear();
    for (PollEntry& e : c.poll->impl()->entries_) {
      if (e.file->weak_from_this().expired()) continue;  // its release is waiting for mu_: already gone
      if (!ids_.ids.contains(e.file)) {
        retry_ = true;  // maybe closed an instant before the cut: the caller takes it again
        return Status::Error(EINVAL, name + " entry fd " + std::to_string(e.fd) + ": its file (" +
                                         std::string(e.file->TypeName()) +
                                         ") is not in the world (not in the fd table or the roots)");
      }
      auto rank = ranks.find(&e);
      keyed.push_back({static_cast<std::uint32_t>(ids_.Of(e.file)), e.fd, rank != ranks.end() ? rank->second : 0, 0,
                       &e, e.list == EntryList::kReady});
    }
    SortByFileAndFd(keyed);
    return {};
  }

  // Sorts by (file id, fd). A poll with many entries, in linear time: file ids are 1..files_.size(), so a counting
  // sort by id, then each file's few entries by fd. A poll with few entries among many files (one of many small polls)
  // is sorted as it is: a counting sort would cost the whole range of ids for each of them.
  void SortByFileAndFd(CutVector<Keyed>& keyed) const {
    if (keyed.size() < 64 || keyed.size() * 4 < files_.size()) {
      std::sort(keyed.begin(), keyed.end(), KeyLess);
      return;
    }
    CutVector<std::uint32_t> start(files_.size() + 2, 0, keyed.get_allocator());
    for (const Keyed& k : keyed) ++start[k.id + 1];
    for (std::size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
    CutVector<Keyed> sorted(keyed.size(), keyed.get_allocator());
    for (const Keyed& k : keyed) sorted[start[k.id]++] = k;
    for (std::size_t i = 0, j; i < sorted.size(); i = j) {
      for (j = i + 1; j < sorted.size() && sorted[j].id == sorted[i].id;) ++j;
      if (j - i > 1) {
        std::sort(sorted.begin() + static_cast<std::ptrdiff_t>(i), sorted.begin() + static_cast<std::ptrdiff_t>(j),
                  [](const Keyed& a, const Keyed& b) { return a.fd < b.fd; });
      }
    }
    keyed.swap(sorted);
  }

  // Entries grouped by file id, in increasing id order: each file's entries sorted by fd (reversed, when they were in
  // falling order).
  static void SortEachFileByFd(std::span<Keyed> keyed) {
    if (keyed.size() < 2) return;  // most polls of a world of many have one entry
    auto fd_less = [](const Keyed& a, const Keyed& b) { return a.fd < b.fd; };
    auto fd_greater = [](const Keyed& a, const Keyed& b) { return a.fd > b.fd; };
    for (auto group = keyed.begin(), end = group; group != keyed.end(); group = end) {
      end = std::find_if(group, keyed.end(), [&](const Keyed& k) { return k.id != group->id; });
      if (end - group < 2 || std::is_sorted(group, end, fd_less)) continue;
      if (std::is_sorted(group, end, fd_greater)) {
        std::reverse(group, end);
      } else {
        std::sort(group, end, fd_less);
      }
    }
  }

  // Room for n objects of trivial type T from the cut's memory, not initialized (zeroing a million entries' arrays was
  // a tenth of the locked time); freed with the cut.
  template <typename T>
  T* Uninitialized(std::size_t n) {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);
    return static_cast<T*>(memory_.allocate(std::max<std::size_t>(n, 1) * sizeof(T), alignof(T)));
  }

  // The file's id, given it if it has none yet: files take ids 1..n; shared objects follow.
  std::uint64_t Own(File* f) {
    const auto [id, added] = ids_.ids.try_emplace(f, files_.size() + 1);
    if (added) files_.push_back(f);
    return id;
  }
  template <typename T>
  void Share(const std::shared_ptr<T>& object, const char* kind) {
    if (!object || ids_.ids.contains(object.get())) return;
    Shared s{0, kind};
    if constexpr (std::is_same_v<T, PipeBuffer>) {
      s.pipe = object.get();
    } else {
      s.pair = object.get();
    }
    s.id = files_.size() + shared_.size() + 1;  // every file is owned before the first Share
    ids_.ids.try_emplace(object.get(), s.id);
    shared_.push_back(s);
  }

  const World& world_;
  // Every array of the cut that grows with the world but files_, kinds_, types_, mutation_ and the locks, and the ids
  // table's slots.
  CutMemory memory_;
  CutVector<Fd> fds_{&memory_};
  // The files, not owned: the fd table, frozen, and the roots hold them while the locks are held. After Unlock a file
  // may be closed and freed at any time, so nothing of the cut reads them then (what a codec needs later is copied
  // under the locks: their types and kinds, their saved fields); their addresses stay keys of ids_.
  std::vector<File*> files_;
  std::vector<std::string_view> kinds_;    // a built-in kind's name, or one of embedder_kinds_
  std::deque<std::string> embedder_kinds_;  // the embedder files' kinds, copied (a deque: views of them stay valid)
  std::vector<File::Builtin> types_;
  std::vector<Mutex*> mutation_;  // the files' mutation locks, in file order (Take), for Lock
  std::vector<std::string> custom_;
  std::vector<Shared> shared_;
  std::vector<PollCut> polls_;
  PollEntry** entries_ = nullptr;                // every poll's sorted entries, a slice each (PollCut::entries)
  std::uint32_t* ranks_ = nullptr;               // every poll's queue ranks, a slice each
  std::uint32_t* order_ = nullptr;               // every poll's rows in entry order, a slice each (PollCut::order)
  CutVector<std::uint32_t> ready_{&memory_};     // every poll's ready order, a slice each (rows until Finish)
  std::vector<std::size_t> ready_start_;         // poll i's ready order is ready_[ready_start_[i], ready_start_[i+1])
  Keyed* keyed_ = nullptr;                       // every poll's entries with their keys, a slice each (start_)
  std::vector<std::size_t> start_;               // poll i's slices start at start_[i]
  std::vector<bool> sorted_;                     // whether poll i's slice is sorted already
  std::byte* rows_ = nullptr;                    // every entry's saved fields, row_bytes_ each, poll after poll
  std::size_t row_bytes_ = 0;
  std::byte* eventfd_rows_ = nullptr;            // every eventfd's saved fields, in file order
  std::size_t eventfd_row_bytes_ = 0;
  SaveIds ids_{&memory_};
  bool retry_ = false;
  bool embedder_files_ = false;                  // whether a file is an embedder's (SaveCustom has work)
  std::chrono::steady_clock::time_point locked_at_;
  std::unique_lock<Mutex> frozen_;               // taken first, released last
  std::vector<std::unique_lock<Mutex>> locks_;  // released in reverse order of taking
};


// Takes a cut of `world` (retrying while a just-closed file is still being released), then calls `read` with every
// lock held. Embedder SaveState() runs before the locks are taken. `pause`, if given, receives how long the cut that
// `read` saw was held: from freezing the fd table to releasing the last lock. `after`, if given, runs once the locks
// are released and the cut is finished (Cut::Finish), with what the cut copied (files, kinds, embedder states, fds,
// each poll's entry rows, ranks and ready order), but no longer the right to read the world's objects.
Status WithCut(const World& world, const std::function<void(Cut&)>& read, SavePause* pause = nullptr,
               const std::function<void(Cut&)>& after = {});

}  // namespace epollcr::state
