// EventPoll's fields and entries. Internal: not installed; lib/ and the project's tests include it.
//
// LOCKING (the engine's one lock order; the model is the "LOCKING:" comment of fs/eventpoll.c). Every lock of the
// engine, its files and the state model, outermost first; a thread holding one may take only locks further down:
//
//  1. The fd table's lock (FdTable::mu_; FdTable::Freeze, fd_table.h). Guards the fd -> file slots. In operation
//     nothing is taken under it (a closed fd's file is released after it is dropped), so a snapshot may take it
//     first and hold it for the whole cut (docs/state-model.md).
//  2. File mutation locks (File::MutationLock, file.h): a pipe's or socket pair's op_mu_, an eventfd's op_mu_. Held
//     across a file's state change *and* the wake-up it sends, so a snapshot, which holds all of them (tried
//     without waiting, else taken in address order; a pipe's two ends share one), never sees a change whose wake-up
//     has not arrived. Under one: the file's state lock (8), released before the wake-up takes its queue lock (5).
//     Host files have none: the kernel carries their wake-ups (kernel entries), and nothing of them is in flight in
//     epollcr.
//  3. nest_mu (NestMutex(), the one global; Linux's epnested_mutex). Serializes the ADDs that may change the nesting
//     graph (a poll into a poll, or anything into a watched poll), so the loop, depth and path checks see a graph no
//     other ADD changes. Held across the whole ADD: the checks take polls' mu_ (one at a time) and queue locks.
//     Never held together with a mutation lock, so 2 and 3 could come in either order.
//  4. An EventPoll's mu_ (Impl::mu_; Linux's ep->mtx). Guards the entries map and each entry's registration, mask
//     and data. Held by ADD/MOD/DEL, the harvest and Release, and all of them at once by a snapshot; ADD/MOD notify
//     the poll's watchers before releasing it. A thread holds one poll's mu_ at a time, except a snapshot (two
//     snapshots of one world are kept apart by the fd table's lock, 1).
//  5. A file's queue lock (WaiterQueue::mu_, waiter_queue.h; Linux's wait queue head lock). Guards the queue's
//     registrations. Notify calls each waiter back with it held, so a callback may take only what follows: a
//     poll's lists_mu_ (6), and, once that is released, the poll's own queue lock to wake its watchers. Queue locks
//     therefore nest from inner polls to outer ones, at most kMaxNests deep.
//  6. An EventPoll's lists_mu_ (Impl::lists_mu_; Linux's ep->lock). Guards the three lists, each entry's list tag
//     and the blocked-waiter count, and the sleeper's fds (a blocked Wait sleeps in the kernel, outside every lock). Taken by wake-up callbacks (under a queue
//     lock) and by the harvest (under mu_), which polls files' Readiness with it held.
//  7. Inner polls' lists_mu_: the Readiness of a watched poll takes its lists_mu_ under the outer poll's, and polls
//     its own files; lists locks nest from outer polls to inner ones, at most kMaxNests deep.
//  8. File state locks (the state_mutex() of a PipeBuffer, SocketPairState or EventFd). Guard the file's data.
//     Leaves: taken by I/O (under the mutation lock) and by Readiness (under a lists lock); a file never notifies
//     with its state lock held (file.h), since the callback would take a lists lock that may be waiting for it.
//
// Outside the order, leaves taken alone: the state model's registry of file kinds (state/registry.cc).
//
// Checked by clang (-Wthread-safety, scripts/test; epollcr/mutex.h): every field guarded by a lock of its own object
// says so with EPOLLCR_GUARDED_BY, every function that needs a lock held with EPOLLCR_REQUIRES, and the order of two
// locks of one object (mu_ before lists_mu_; a file's op_mu_ before its state lock) with EPOLLCR_ACQUIRED_BEFORE. The
// analysis compares lock expressions, not objects, so it cannot express the rest: the order between locks of
// different objects or classes (1 -> 2 -> ... -> 8, outer poll -> inner poll), nor a PollEntry's fields, which
// are guarded by the locks of the poll that owns the entry (the code reaches them as `s.mu_`, the field would name
// `poll->impl()->mu_`). Those are kept by the comments here and beside the fields. Where the analysis cannot follow
// a held lock (in a vector or a std::unique_lock, held by a member, or not needed: a load before the object is shared,
// a lock-free read), the narrowest function says why and is marked EPOLLCR_NO_THREAD_SAFETY_ANALYSIS.
#pragma once

#include <boost/container/small_vector.hpp>
#include <boost/intrusive/list.hpp>
#include <boost/intrusive/unordered_set.hpp>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/mutex.h"
#include "epollcr/state.h"
#include "epollcr/unique_fd.h"
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
    v.Field("kernel", kernel, kNoSave);          // after_load links the entries of kernel files again
  }

  // A load makes an entry first and then sets its declared fields (state.h): whether the waiter is exclusive follows
  // from the loaded events. Preconditions: not registered.
  void FieldsLoaded() { SetExclusive((events & kEpollExclusive) != 0); }

  // Field order keeps the record at 88 bytes (a 96-byte heap chunk): fd fills WaiterEntry's tail padding. The guards
  // are the owning poll's locks, which clang cannot check here (LOCKING, above).
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
  bool kernel = false;                       // A kernel entry (Impl::links_). Written with mu_ and lists_mu_ held.
  std::uint64_t data;                        // Guarded by mu_ (ReadEvents reads it holding both locks).
};

// A block of entries a load made, shared by the polls whose entries it holds and freed when the last of them lets
// it go (a poll lets its blocks go when its last pooled entry goes: Impl::pooled_).
class EntryBlock {
 public:
  explicit EntryBlock(std::size_t entries) : buffer_(entries * sizeof(PollEntry)) {}
  std::byte* data() const { return static_cast<std::byte*>(buffer_.data()); }

  // An owning reference (the block starts with none).
  class Ref {
   public:
    Ref() = default;
    explicit Ref(EntryBlock* block) : block_(block) { block_->users_.fetch_add(1, std::memory_order_relaxed); }
    Ref(Ref&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
    Ref& operator=(Ref&& other) noexcept {
      if (this != &other) {
        Drop();
        block_ = std::exchange(other.block_, nullptr);
      }
      return *this;
    }
    ~Ref() { Drop(); }
    EntryBlock* get() const { return block_; }

   private:
    void Drop() noexcept {
      if (block_ != nullptr && block_->users_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete block_;
      block_ = nullptr;
    }
    EntryBlock* block_ = nullptr;
  };

 private:
  BigBuffer buffer_;
  std::atomic<std::size_t> users_{0};
};

// Where a load makes its next entries: the current block and what is left of it. A load's polls share one
// (PendingPolls): a world of many small polls puts their entries in a few blocks, not one heap block per poll, which
// was a tenth of a replay's checkpoint of such a world (an allocation in the load, a free in the teardown).
struct EntryCursor {
  EntryBlock::Ref block;
  std::byte* next = nullptr;
  std::size_t room = 0;  // entries that still fit in the current block
};

// The entries a load makes for one poll: a few large blocks instead of one heap block per entry, so that restoring a
// million entries costs a few allocations, not a million (and frees as few). Entries made here are `pooled`: their
// poll destroys them in place, and lets the blocks go when the last of them goes (Impl::pooled_).
class EntryChunks {
 public:
  // With `shared`, the entries of a small poll (kShareBelow) are made at that cursor, in blocks that the load's other
  // polls share; a larger poll's entries take blocks of their own, sized for them.
  explicit EntryChunks(EntryCursor* shared = nullptr) : shared_(shared) {}
  EntryChunks(EntryChunks&&) noexcept = default;
  EntryChunks& operator=(EntryChunks&&) noexcept = default;

  // Constructs an entry in the current block; a new block, sized for up to `expected_more` entries (at least 1, at
  // most kMaxBlockEntries; kSharedBlockEntries for a shared one), when it is full. The caller owns the entry's
  // lifetime (not its storage).
  PollEntry* Make(std::size_t expected_more, EventPoll* poll, FileIdentifier id, std::uint32_t events,
                  std::uint64_t data);
  bool empty() const { return blocks_.empty(); }
  // The blocks the entries were made in, for the poll that takes them (no entry may be made afterwards).
  using Blocks = boost::container::small_vector<EntryBlock::Ref, 1>;
  Blocks&& TakeBlocks() && { return std::move(blocks_); }

 private:
  // Untouched pages cost nothing (big_buffer.h), so a block may be sized for all the entries still expected.
  static constexpr std::size_t kMaxBlockEntries = std::size_t{1} << 20;
  // A poll of fewer entries shares blocks; a shared block is small (from the heap, below BigBuffer's mappings), so
  // that a poll kept after the others of its load are gone keeps little memory that is not its own.
  static constexpr std::size_t kShareBelow = 64;
  static constexpr std::size_t kSharedBlockEntries = 128;
  Blocks blocks_;  // a load of a poll's entries takes one block
  EntryCursor own_;
  EntryCursor* shared_ = nullptr;
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

// The global lock that serializes changes to the nesting graph (nest_mu; LOCKING 3; event_poll_nesting.cc).
Mutex& NestMutex();

struct EventPoll::Impl {
  explicit Impl(EventPoll* self);
  ~Impl();

  // Checkpoint policy (state.h). The entries and the lists they are on are saved by the poll's manual hooks (every
  // entry with its list tag, then the ready list's order); the blocked-waiter count must be zero at save time (the
  // seed's zerovalue waiter queue: nobody may be blocked in Wait while a snapshot is taken).
  // Not analysed: it names guarded fields for a visitor, which runs under the snapshot's locks (a vector of them).
  template <typename V>
  void VisitState(V& v) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    v.Field("entries", entries_, kManual);
    v.Field("ready", ready_, kManual);
    v.Field("waiting", waiting_, kManual);
    v.Field("disabled", disabled_, kManual);
    v.Field("waiters", blocked_, kZeroValue);
    v.Field("mu", mu_, kNoSave);
    v.Field("lists_mu", lists_mu_, kNoSave);
    v.Field("initial_buckets", initial_buckets_, kNoSave);
    v.Field("buckets", buckets_, kNoSave);
    v.Field("kernel_fd", kernel_fd_, kNoSave);
    v.Field("bell_fd", bell_fd_, kNoSave);
    v.Field("kernel_entries", kernel_entries_, kNoSave);  // rebuilt by after_load with links_
    v.Field("links", links_, kNoSave);
    v.Field("by_key", by_key_, kNoSave);
    v.Field("next_key", next_key_, kNoSave);
    v.Field("kernel_active", kernel_active_, kNoSave);
  }

  // Lock order: LOCKING, above (4 and 6).
  mutable Mutex mu_ EPOLLCR_ACQUIRED_BEFORE(lists_mu_);  // The entries map; every entry's events and data.
  // The map's first buckets are part of the poll, so that making a poll (or loading one of a few entries) takes no
  // block of its own for them; buckets_ holds the array once the map outgrows them (ReserveLocked), and stays empty
  // until then. Declared before entries_, which uses them until it is destroyed.
  static constexpr std::size_t kInitialBuckets = 8;
  EntryMap::bucket_type initial_buckets_[kInitialBuckets] EPOLLCR_GUARDED_BY(mu_);
  BucketArray buckets_ EPOLLCR_GUARDED_BY(mu_);
  std::size_t bucket_count_ EPOLLCR_GUARDED_BY(mu_) = 0;
  EntryMap entries_ EPOLLCR_GUARDED_BY(mu_);
  // The map's bucket array in use: initial_buckets_ or buckets_.
  EntryMap::bucket_type* BucketsLocked() EPOLLCR_REQUIRES(mu_) {
    return bucket_count_ > kInitialBuckets ? buckets_.get() : initial_buckets_;
  }

  mutable Mutex lists_mu_;                           // The three lists, every entry's list tag, blocked_.
  EntryList_t ready_ EPOLLCR_GUARDED_BY(lists_mu_);
  EntryList_t waiting_ EPOLLCR_GUARDED_BY(lists_mu_);
  EntryList_t disabled_ EPOLLCR_GUARDED_BY(lists_mu_);
  int blocked_ EPOLLCR_GUARDED_BY(lists_mu_) = 0;  // threads blocked in Wait
  // The kernel side (docs/engine.md, "Kernel entries"). kernel_fd_ is a kernel epoll, made when first needed: by the
  // first kernel entry or the first Wait that blocks. Every entry whose file has a KernelFd() (a host file, or a poll
  // that has kernel entries itself) is a kernel entry: it is registered in kernel_fd_ with its own events word, so the
  // kernel holds its place in the ready list and does its wake-ups, key filtering, re-checks, edges and one-shot
  // disarming exactly as for an epoll of its own; such an entry never sits on ready_. A blocked Wait sleeps in
  // epoll_pwait2(kernel_fd_), so a signal handler ends it with EINTR as it ends epoll_wait. bell_fd_, an eventfd in
  // kernel_fd_ under kBellKey (edge-triggered, never read: a write only makes an edge, and its counter cannot fill in
  // 2^64 writes), is what a wake-up of an in-memory entry writes to wake one sleeper (the sleepers of an epoll wait
  // exclusively, as a poll's waiters do). It exists whenever kernel_fd_ does and the poll has in-memory entries.
  // Both are kept until the poll goes.
  UniqueFd kernel_fd_ EPOLLCR_GUARDED_BY(lists_mu_);
  UniqueFd bell_fd_ EPOLLCR_GUARDED_BY(lists_mu_);
  std::size_t kernel_entries_ EPOLLCR_GUARDED_BY(lists_mu_) = 0;  // entries with `kernel` set
  // A kernel entry's registration: the key its records carry in the kernel (a number of this poll's, never reused, so
  // a record of a removed entry names no other), the fd it is registered under (the file's own, or a private
  // duplicate when another entry of this poll already holds that (file, fd) pair: epollcr's dup), and whether it is
  // in kernel_fd_ (a disarmed one-shot entry of a load is not, until UpdateEntry re-arms it).
  struct KernelLink {
    std::uint64_t key = 0;
    int fd = -1;
    UniqueFd dup;
    bool linked = false;
  };
  std::unordered_map<const PollEntry*, KernelLink> links_ EPOLLCR_GUARDED_BY(mu_);
  std::unordered_map<std::uint64_t, PollEntry*> by_key_ EPOLLCR_GUARDED_BY(mu_);
  std::uint64_t next_key_ EPOLLCR_GUARDED_BY(mu_) = 1;  // 0 is the bell's
  // Set once the poll has had a kernel entry, never cleared: from then on the polls that watch it register its
  // kernel_fd_ in theirs (kernel entries too), so the kernel carries the nesting (Impl::PromoteParents).
  std::atomic<bool> kernel_active_{false};

  // Set once the poll's kernel epoll is watched from outside (EventPoll::Fd(), or the kernel epolls of the polls
  // that watch it): the bell is then level-triggered, readable exactly while an in-memory entry on ready_ is really
  // ready (bell_set_ says whether its counter is non-zero), so the kernel epoll is readable exactly when the poll has
  // an event to report. Rung on every wake-up that queues an in-memory entry (as ep_poll_callback wakes the poll's
  // own watchers on each), cleared when a harvest, a Readiness() or a file's ReadinessMayHaveDropped() finds none.
  std::atomic<bool> visible_{false};
  bool bell_set_ EPOLLCR_GUARDED_BY(lists_mu_) = false;
  // Makes the poll visible (above); idempotent. Errors: those of MakeBellLocked.
  std::error_code MakeVisibleLocked() EPOLLCR_REQUIRES(lists_mu_);
  void RingBellLocked() EPOLLCR_REQUIRES(lists_mu_);
  // Sets or clears the bell of a visible poll to say whether an in-memory entry on ready_ is really ready.
  void RefreshBellLocked() EPOLLCR_REQUIRES(lists_mu_);
  // Whether an in-memory entry on ready_ is really ready; the stale ones in front of the first ready one leave the
  // list, as a poll(2) of a kernel epoll drops them (a visible poll's fd may be polled from outside at any moment).
  bool ListReadyLocked() EPOLLCR_REQUIRES(lists_mu_);
  // ep_done_scan's hand-on of a wake-up to the next blocked waiter while entries remain ready (a visible poll's
  // level bell does that by itself).
  void PassWakeUpLocked() EPOLLCR_REQUIRES(lists_mu_);

  // Makes kernel_fd_ if it is not there, and bell_fd_ if the poll has in-memory entries (not counting the
  // `becoming_kernel` entries on the lists that are being made kernel entries). Errors: the kernel's (EMFILE, ENFILE,
  // ENOMEM).
  std::error_code MakeKernelLocked(std::size_t becoming_kernel = 0) EPOLLCR_REQUIRES(lists_mu_);
  // Makes kernel_fd_ alone if it is not there.
  std::error_code MakeEpollLocked() EPOLLCR_REQUIRES(lists_mu_);
  // Makes bell_fd_ (and kernel_fd_) if it is not there.
  std::error_code MakeBellLocked() EPOLLCR_REQUIRES(lists_mu_);
  // What a blocking Wait needs to sleep: kernel_fd_, and the bell if the poll has in-memory entries.
  std::error_code MakeSleeperLocked() EPOLLCR_REQUIRES(lists_mu_);
  // Makes `e` a kernel entry registered under `file_fd` with `events` (not registered while disarmed), which become
  // its events; takes it off ready_ (the kernel holds its place from now on). On failure `e` is unchanged.
  std::error_code LinkKernelLocked(PollEntry& e, int file_fd, std::uint32_t events) EPOLLCR_REQUIRES(mu_)
      EPOLLCR_EXCLUDES(lists_mu_);
  // LinkKernelLocked for many entries (a load), each with its current events, their ADDs batched (syscall_batch.h).
  // On failure returns the error with the index of its entry in `failed`: the entries before it are kernel entries,
  // the others are unchanged.
  std::error_code LinkKernelManyLocked(std::span<const std::pair<PollEntry*, int>> entries, std::size_t* failed)
      EPOLLCR_REQUIRES(mu_) EPOLLCR_EXCLUDES(lists_mu_);
  // EPOLL_CTL_MOD (or ADD, if it was not registered) of a kernel entry to `events`, which the caller then stores.
  std::error_code RelinkKernelLocked(PollEntry& e, std::uint32_t events) EPOLLCR_REQUIRES(mu_);
  // EPOLL_CTL_DEL of a kernel entry, and forgets its link.
  void UnlinkKernelLocked(PollEntry& e) EPOLLCR_REQUIRES(mu_);
  // Takes up to `max` records from kernel_fd_ without blocking and translates them (TranslateLocked).
  int HarvestKernelLocked(Event* events, int max, bool list_unharvested) EPOLLCR_REQUIRES(mu_, lists_mu_);
  // Turns `got` records that kernel_fd_ returned into events in place: the entry's data for its key, a one-shot
  // entry disarmed as the kernel just disarmed it; a record of a removed entry is dropped; the bell's harvests the
  // in-memory entries into the slots left (when `list_unharvested`: a call that already reported in-memory entries
  // does not report them twice). Returns the number of events.
  int TranslateLocked(Event* events, int got, int max, bool list_unharvested) EPOLLCR_REQUIRES(mu_, lists_mu_);
  // The scan of the in-memory entries (ep_send_events over ready_).
  int HarvestListLocked(Event* events, int max) EPOLLCR_REQUIRES(mu_, lists_mu_);
  // The kernel side as a checkpoint carries it (image.proto KernelEpollState): the fds and keys of a kernel epoll
  // that a restore in the same process, or in a new one that inherited the fds, takes over as it is (AdoptKernel),
  // so its ready list, edges and wait-queue order go on exactly.
  struct KernelState {
    int fd = -1;
    int bell_fd = -1;
    bool bell_level = false;  // visible_
    bool bell_set = false;
    std::uint64_t next_key = 1;
    std::vector<std::uint64_t> keys;  // per entry, in the order given: 0 for an in-memory entry
    std::vector<int> fds;             // per entry: the fd it is registered under, -1 if it is not registered
    std::vector<int> dups;            // the private duplicates among them (KernelFdsLocked's), in entry order
  };
  // For a snapshot (which holds mu_ and lists_mu_): the kernel side of `entries`, or nothing if it has no kernel
  // entry.
  std::optional<KernelState> DescribeKernel(std::span<PollEntry* const> entries) EPOLLCR_REQUIRES(mu_, lists_mu_);
  // For a load, in place of LinkKernelManyLocked: takes over the kernel epoll `state` describes if /proc/self/fdinfo
  // shows it registers exactly what `state` says (every registration's fd, events and key, and the bell) and each
  // registration fd is the entry's file (the host fd, a duplicate of it, or a watched poll's adopted kernel epoll).
  // Returns false, with nothing taken, when it does not: the caller registers the entries afresh.
  bool AdoptKernelLocked(const KernelState& state, std::span<PollEntry* const> entries) EPOLLCR_REQUIRES(mu_)
      EPOLLCR_EXCLUDES(lists_mu_);
  // Gives up the kernel side without closing or changing it (a restore took it over): the entries stop being kernel
  // entries here, and the fds stay open.
  void DetachKernelLocked() EPOLLCR_REQUIRES(mu_) EPOLLCR_EXCLUDES(lists_mu_);
  // The fds of the kernel side: the kernel epoll, the bell, the private duplicates.
  std::vector<int> KernelFdsLocked() EPOLLCR_REQUIRES(mu_) EPOLLCR_EXCLUDES(lists_mu_);

  // Makes `poll` kernel-active (kernel_active_, with its kernel epoll made) before its first kernel entry: the entries
  // that watch it become kernel entries on its kernel epoll first (PromoteParents), each watching poll made active the
  // same way, top-down.
  static std::error_code Activate(EventPoll& poll) EPOLLCR_REQUIRES(NestMutex());
  // Makes the entries that watch `child` kernel entries on its kernel epoll, in their polls (each made active first).
  static std::error_code PromoteParents(EventPoll& child) EPOLLCR_REQUIRES(NestMutex());

  EventPoll* const self_;  // Immutable: the EventPoll this is the state of.

  // The blocks of the entries a load gave this poll (EntryChunks), let go when the last pooled entry goes. One load
  // gives a poll all its entries at once, in one block: room for one inside the poll.
  EntryChunks::Blocks pooled_ EPOLLCR_GUARDED_BY(mu_);
  std::size_t pooled_live_ EPOLLCR_GUARDED_BY(mu_) = 0;
  // The heap block of the last entry removed (destroyed, not freed), for the next entry added: a server whose
  // connections come and go adds and removes entries all the time, and malloc and free were an eighth of an ADD+DEL
  // pair (BENCHMARKS.md section 3). Freed with the poll.
  void* spare_entry_ EPOLLCR_GUARDED_BY(mu_) = nullptr;
  // Takes the blocks of `n` pooled entries that are now this poll's.
  void AdoptLocked(EntryChunks&& chunks, std::size_t n) EPOLLCR_REQUIRES(mu_);

  EntryList_t& ListOf(EntryList which) EPOLLCR_REQUIRES(lists_mu_);
  // Moves `e` to the back of list `to` (from wherever it is).
  void MoveToLocked(PollEntry& e, EntryList to) EPOLLCR_REQUIRES(lists_mu_);
  // Queues `e` on the ready list if it is not there and the file is ready for its mask; returns true if it was newly
  // queued.
  bool QueueIfReadyLocked(PollEntry& e) EPOLLCR_REQUIRES(mu_, lists_mu_);
  // Wakes one blocked waiter if any.
  void WakeOneWaiterLocked() EPOLLCR_REQUIRES(lists_mu_);
  // Removes an entry: unregisters its waiter, unlinks it, deletes it (a pooled one in place).
  void RemoveLocked(PollEntry* e) EPOLLCR_REQUIRES(mu_) EPOLLCR_EXCLUDES(lists_mu_);
  // The entries map grows its bucket array as it fills.
  void MaybeGrowLocked() EPOLLCR_REQUIRES(mu_);
  // Sizes the bucket array for `n` entries at once (a load).
  void ReserveLocked(std::size_t n) EPOLLCR_REQUIRES(mu_);
  PollEntry* FindLocked(FileIdentifier id) EPOLLCR_REQUIRES(mu_);
  // ADD once the nesting checks passed: a new entry, registered, queued if ready. `files_to_count` is set for a full
  // check (the caller holds nest_mu): the wake-up paths from them are counted once the entry is registered.
  std::error_code Insert(FileIdentifier id, std::uint32_t events, std::uint64_t data,
                         const std::vector<std::shared_ptr<File>>* files_to_count) EPOLLCR_EXCLUDES(mu_);

  // Whether the poll has a really ready entry; stale entries in front of it leave the ready list.
  bool HasReadyLocked() EPOLLCR_REQUIRES(lists_mu_);
  // Wakes the poll's own watchers (outer polls) with EPOLLIN.
  void NotifyWatchers() EPOLLCR_EXCLUDES(lists_mu_);
  // Removes this poll's entries for `file` (any fd).
  void RemoveEntriesOfFile(File& file) EPOLLCR_EXCLUDES(mu_);
};

// How many polls of the process are visible (Impl::visible_): files skip ReadinessMayHaveDropped's walk while none is.
int VisiblePolls();
void VisiblePollGone();

// Nesting (event_poll_nesting.cc).
// Whether `poll` is watched by another EventPoll (its queue holds an epoll entry).
bool HasParentPolls(const EventPoll& poll);
// ELOOP check for adding `inner` into `outer`: a cycle, or more than kMaxNests links in any chain through the new
// one (fs/eventpoll.c ep_loop_check). Collects the non-poll files found below `inner` into `files_below` for the
// path check. Preconditions: no poll's mu_ is held.
bool WouldLoop(EventPoll& outer, EventPoll& inner, std::vector<std::shared_ptr<File>>* files_below)
    EPOLLCR_REQUIRES(NestMutex());
// The wake-up path limit check once the new entry is registered (fs/eventpoll.c reverse_path_check): for each file,
// counts the paths from it up to polls that nobody watches, by length; false when a length's limit is passed.
// Preconditions: no queue lock is held.
bool PathsWithinLimits(const std::vector<std::shared_ptr<File>>& files) EPOLLCR_REQUIRES(NestMutex());

// Removes every entry that watches `file` from every poll (the release of a file's last reference).
void ReleaseFileFromPolls(File& file);

}  // namespace epollcr
