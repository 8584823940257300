// EventPoll's fields and entries. Internal: not installed; lib/ and the project's tests include it.
#pragma once

#include <boost/intrusive/list.hpp>
#include <boost/intrusive/unordered_set.hpp>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/state.h"
#include "big_buffer.h"

namespace epollcr {

namespace bi = boost::intrusive;

// Whether a loaded list tag is one of the three lists.
inline bool Known(EntryList list) { return list <= EntryList::kDisabled; }

// One registration (gVisor: epollInterest; Linux: struct epitem). Owned by its EventPoll.
struct PollEntry final : WaiterEntry {
  PollEntry(EventPoll* poll, FileIdentifier id, std::uint32_t events, std::uint64_t data)
      : WaiterEntry(kAllEvents, (events & kEpollExclusive) != 0), fd(id.fd), poll(poll), file(id.file), events(events), data(data) {}

  // Called with the file's queue lock held (waiter_queue.h). Filters by this entry's mask and queues it.
  bool NotifyEvent(EventMask mask) override;
  EventPoll* WatchingPoll() const override { return poll; }

  // Checkpoint policy (state.h). The entry belongs to its poll's manual section; its file is a wait reference.
  template <typename V>
  void VisitState(V& v) {
    v.Field("fd", fd, kSave);
    v.Field("file", file, kWait);
    v.Field("events", events, kSave);
    v.Field("data", data, kSave);
    v.Field("list", list, kSave);
    v.Field("list_hook", list_hook, kNoSave);  // the lists are rebuilt from `list` and the saved ready order
    v.Field("map_hook", map_hook, kNoSave);
    v.Field("registered", registered, kNoSave);  // after_load registers every waiter again
  }

  // A load makes an entry first and then sets its declared fields (state.h): whether the waiter is exclusive follows
  // from the loaded events. Preconditions: not registered.
  void FieldsLoaded() { SetExclusive((events & kEpollExclusive) != 0); }

  // Field order keeps the record at 88 bytes (a 96-byte heap chunk): fd fills WaiterEntry's tail padding.
  int fd;                                    // Immutable once in the map.
  bi::list_member_hook<> list_hook;          // Guarded by the poll's lists_mu_.
  bi::unordered_set_member_hook<> map_hook;  // Guarded by the poll's mu_.
  EventPoll* const poll;                     // Immutable.
  File* file;                                // Immutable once in the map. Alive while the entry exists (file.h).
  std::uint32_t events;                      // Linux form (mask | ERR | HUP | flags). Written with mu_ and lists_mu_
                                             // held; read with either.
  EntryList list = EntryList::kWaiting;      // Guarded by lists_mu_.
  bool registered = false;                   // Guarded by mu_: the waiter is in the file's queue.
  bool pooled = false;                       // Immutable: made in EntryChunks (a load), not by new.
  std::uint64_t data;                        // Guarded by mu_ (ReadEvents reads it holding both locks).
};

// Storage for the entries a load makes together: a few large blocks instead of one heap block per entry, so that
// restoring a million entries costs a few allocations, not a million (and frees as few). Entries made here are
// `pooled`: their poll destroys them in place, and frees the blocks when the last of them goes (Impl::pooled_).
class EntryChunks {
 public:
  EntryChunks() = default;
  EntryChunks(EntryChunks&&) noexcept = default;
  EntryChunks& operator=(EntryChunks&&) noexcept = default;

  // Constructs an entry in the current block; a new block, sized for up to `expected_more` entries (at least 1, at
  // most kMaxBlockEntries), when it is full. The caller owns the entry's lifetime (not its storage).
  PollEntry* Make(std::size_t expected_more, EventPoll* poll, FileIdentifier id, std::uint32_t events,
                  std::uint64_t data);
  bool empty() const { return blocks_.empty(); }

 private:
  // Untouched pages cost nothing (big_buffer.h), so a block may be sized for all the entries still expected.
  static constexpr std::size_t kMaxBlockEntries = std::size_t{1} << 20;
  std::vector<BigBuffer> blocks_;
  std::byte* next_ = nullptr;
  std::size_t room_ = 0;  // entries that still fit in the current block
};

struct EntryKeyOf {
  using type = FileIdentifier;
  FileIdentifier operator()(const PollEntry& e) const { return {e.file, e.fd}; }
};
struct FileIdentifierHash {
  std::size_t operator()(const FileIdentifier& id) const {
    std::size_t h = std::hash<const void*>()(id.file);
    return h ^ (static_cast<std::size_t>(static_cast<unsigned>(id.fd)) * 0x9E3779B97F4A7C15ULL);
  }
};
struct FileIdentifierEqual {
  bool operator()(const FileIdentifier& a, const FileIdentifier& b) const { return a.file == b.file && a.fd == b.fd; }
};

using EntryList_t = bi::list<PollEntry, bi::member_hook<PollEntry, bi::list_member_hook<>, &PollEntry::list_hook>,
                             bi::constant_time_size<true>>;
using EntryMap = bi::unordered_set<
    PollEntry, bi::member_hook<PollEntry, bi::unordered_set_member_hook<>, &PollEntry::map_hook>,
    bi::key_of_value<EntryKeyOf>, bi::hash<FileIdentifierHash>, bi::equal<FileIdentifierEqual>,
    bi::constant_time_size<true>, bi::power_2_buckets<true>>;

// The entries map's bucket array, in a BigBuffer (a poll of a million entries has a 8 MiB array).
class BucketArray {
 public:
  BucketArray() = default;
  explicit BucketArray(std::size_t n) : buffer_(n * sizeof(EntryMap::bucket_type)), n_(n) {
    for (std::size_t i = 0; i < n_; ++i) new (&get()[i]) EntryMap::bucket_type();
  }
  BucketArray(BucketArray&& other) noexcept : buffer_(std::move(other.buffer_)), n_(std::exchange(other.n_, 0)) {}
  BucketArray& operator=(BucketArray&& other) noexcept {
    Destroy();
    buffer_ = std::move(other.buffer_);
    n_ = std::exchange(other.n_, 0);
    return *this;
  }
  ~BucketArray() { Destroy(); }
  EntryMap::bucket_type* get() const { return static_cast<EntryMap::bucket_type*>(buffer_.data()); }

 private:
  void Destroy() noexcept {
    for (std::size_t i = 0; i < n_; ++i) std::destroy_at(&get()[i]);
    n_ = 0;
  }
  BigBuffer buffer_;
  std::size_t n_ = 0;
};

struct EventPoll::Impl {
  explicit Impl(EventPoll* self);
  ~Impl();

  // Checkpoint policy (state.h). The entries and the lists they are on are saved by the poll's manual hooks (every
  // entry with its list tag, then the ready list's order); the blocked-waiter count must be zero at save time (the
  // seed's zerovalue waiter queue: nobody may be blocked in Wait while a snapshot is taken).
  template <typename V>
  void VisitState(V& v) {
    v.Field("entries", entries_, kManual);
    v.Field("ready", ready_, kManual);
    v.Field("waiting", waiting_, kManual);
    v.Field("disabled", disabled_, kManual);
    v.Field("waiters", blocked_, kZeroValue);
    v.Field("mu", mu_, kNoSave);
    v.Field("lists_mu", lists_mu_, kNoSave);
    v.Field("buckets", buckets_, kNoSave);
    v.Field("cv", cv_, kNoSave);
  }

  // Lock order: see event_poll.h.
  mutable std::mutex mu_;  // The entries map; every entry's events and data.
  BucketArray buckets_;                               // Guarded by mu_.
  std::size_t bucket_count_ = 0;                      // Guarded by mu_.
  EntryMap entries_;                                  // Guarded by mu_.

  mutable std::mutex lists_mu_;  // The three lists, every entry's list tag, blocked_.
  EntryList_t ready_;            // Guarded by lists_mu_.
  EntryList_t waiting_;          // Guarded by lists_mu_.
  EntryList_t disabled_;         // Guarded by lists_mu_.
  int blocked_ = 0;              // Guarded by lists_mu_: threads blocked in Wait.
  std::condition_variable cv_;   // Waits on lists_mu_; signalled one waiter at a time (exclusive, like ep->wq).

  EventPoll* const self_;  // Immutable: the EventPoll this is the state of.

  // Blocks of entries a load gave this poll (EntryChunks), freed when the last pooled entry goes. Guarded by mu_.
  std::vector<EntryChunks> pooled_;
  std::size_t pooled_live_ = 0;
  // Takes the blocks of `n` pooled entries that are now this poll's. Preconditions: mu_ is held.
  void AdoptLocked(EntryChunks chunks, std::size_t n);

  EntryList_t& ListOf(EntryList which);
  // Moves `e` to the back of list `to` (from wherever it is). Preconditions: lists_mu_ is held.
  void MoveToLocked(PollEntry& e, EntryList to);
  // Queues `e` on the ready list if it is not there and the file is ready for its mask; returns true if it was newly
  // queued. Preconditions: mu_ and lists_mu_ are held.
  bool QueueIfReadyLocked(PollEntry& e);
  // Wakes one blocked waiter if any. Preconditions: lists_mu_ is held.
  void WakeOneWaiterLocked();
  // Removes an entry: unregisters its waiter, unlinks it, deletes it (a pooled one in place). Preconditions: mu_ is
  // held, lists_mu_ is not.
  void RemoveLocked(PollEntry* e);
  // The entries map grows its bucket array as it fills. Preconditions: mu_ is held.
  void MaybeGrowLocked();
  // Sizes the bucket array for `n` entries at once (a load). Preconditions: mu_ is held.
  void ReserveLocked(std::size_t n);
  PollEntry* FindLocked(FileIdentifier id);

  // Whether the poll has a really ready entry; stale entries in front of it leave the ready list.
  bool HasReadyLocked();  // Preconditions: lists_mu_ is held.
  // Wakes the poll's own watchers (outer polls) with EPOLLIN. Preconditions: lists_mu_ is not held.
  void NotifyWatchers();
  // Removes this poll's entries for `file` (any fd). Preconditions: mu_ is not held.
  void RemoveEntriesOfFile(File& file);
};

// Nesting (event_poll_nesting.cc). The global lock that serializes changes to the nesting graph (nest_mu).
std::mutex& NestMutex();
// Whether `poll` is watched by another EventPoll (its queue holds an epoll entry).
bool HasParentPolls(const EventPoll& poll);
// ELOOP check for adding `inner` into `outer`: a cycle, or more than kMaxNests links in any chain through the new
// one (fs/eventpoll.c ep_loop_check). Collects the non-poll files found below `inner` into `files_below` for the
// path check. Preconditions: NestMutex() is held; no poll's mu_ is held.
bool WouldLoop(EventPoll& outer, EventPoll& inner, std::vector<std::shared_ptr<File>>* files_below);
// The wake-up path limit check once the new entry is registered (fs/eventpoll.c reverse_path_check): for each file,
// counts the paths from it up to polls that nobody watches, by length; false when a length's limit is passed.
// Preconditions: NestMutex() is held; no queue lock is held.
bool PathsWithinLimits(const std::vector<std::shared_ptr<File>>& files);

// Removes every entry that watches `file` from every poll (the release of a file's last reference).
void ReleaseFileFromPolls(File& file);

}  // namespace epollcr
