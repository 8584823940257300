// A table of file descriptors: fd numbers mapping to shared files, allocated lowest-free first like a process's.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "epollcr/file.h"
#include "epollcr/memory.h"
#include "epollcr/mutex.h"
#include "epollcr/result.h"

namespace epollcr {

class FdTable {
 public:
  // 1024 * 1024: Linux's default fs.nr_open, the highest RLIMIT_NOFILE can be raised to (the default soft limit is
  // only 1024; the hard limit 4096, or 524288 under systemd). fds are 0 ... max_fds-1.
  static constexpr int kDefaultMaxFds = 1024 * 1024;

  explicit FdTable(int max_fds = kDefaultMaxFds) : max_fds_(max_fds) {}
  FdTable(const FdTable&) = delete;
  FdTable& operator=(const FdTable&) = delete;
  ~FdTable();

  // Installs `file` at the lowest free fd. EBADF for a null file, EMFILE when the table is full.
  Result<int> Install(std::shared_ptr<File> file);
  // Installs `file` at exactly `fd`, which must be free (EBUSY otherwise; EBADF if out of range).
  std::error_code InstallAt(int fd, std::shared_ptr<File> file);
  // InstallAt for many fds at once, under one lock instead of one per fd (a load installs every fd of a checkpoint:
  // a million lock round trips otherwise). Holds the table's lock while it exists: the thread that made it must not
  // call the table's other methods meanwhile; other threads wait.
  class Filler {
   public:
    explicit Filler(FdTable& table) : table_(table), lock_(table.mu_) {}
    Filler(const Filler&) = delete;
    Filler& operator=(const Filler&) = delete;
    // As FdTable::InstallAt. Not analysed: the lock is held by lock_, a member, which the analysis cannot follow.
    std::error_code InstallAt(int fd, std::shared_ptr<File> file) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
      return table_.InstallAtLocked(fd, std::move(file));
    }

   private:
    FdTable& table_;
    MutexLock lock_;
  };
  // Makes room for fds below `n` (at most the table's limit), so that installing that many does not grow the table
  // step by step (a load installs every fd of a checkpoint at once). Changes no fd. Throws nothing; a failure to make
  // room only means the table grows later.
  void Reserve(int n);
  // dup(2): a new fd for the same file. EBADF, EMFILE.
  Result<int> Dup(int fd);
  // close(2): drops this fd's reference; the file is released when no other fd or owner holds it. EBADF.
  std::error_code Close(int fd);
  // The file at `fd`, or null.
  std::shared_ptr<File> Get(int fd) const;
  // Number of open fds.
  int Count() const;
  // Closes every fd (the files are released outside the table's lock).
  void Clear();
  // The open fds in increasing order with their files.
  std::vector<std::pair<int, std::shared_ptr<File>>> Snapshot() const;
  // fn(fd, file) for each open fd in increasing order, under the table's lock, without copying the table: `fn` must
  // not call into the table.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    MutexLock lock(mu_);
    for (std::size_t fd = 0; fd < files_.size(); ++fd) {
      if (files_[fd]) fn(static_cast<int>(fd), static_cast<const std::shared_ptr<File>&>(files_[fd]));
    }
  }

  // For a consistent checkpoint: no install, dup or close happens while the returned lock is held. The table's lock
  // comes first in the engine's lock order (LOCKING 1, lib/src/event_poll_internal.h): a saver may take it before
  // every other lock.
  [[nodiscard]] std::unique_lock<Mutex> Freeze() const { return std::unique_lock(mu_); }
  // Snapshot() for a caller that holds Freeze(). Not analysed: that lock is in a std::unique_lock, which the analysis
  // cannot see.
  std::vector<std::pair<int, std::shared_ptr<File>>> SnapshotFrozen() const EPOLLCR_NO_THREAD_SAFETY_ANALYSIS;
  // For a caller that holds Freeze(): the number of open fds, and fn(fd, file) for each in increasing order, without
  // copying the table (a checkpoint of a million fds would otherwise copy a million shared_ptrs). Not analysed, as
  // SnapshotFrozen.
  int CountFrozen() const EPOLLCR_NO_THREAD_SAFETY_ANALYSIS { return count_; }
  template <typename Fn>
  void ForEachFrozen(Fn&& fn) const EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    for (std::size_t fd = 0; fd < files_.size(); ++fd) {
      if (files_[fd]) fn(static_cast<int>(fd), files_[fd]);
    }
  }

 private:
  std::error_code InstallAtLocked(int fd, std::shared_ptr<File> file) EPOLLCR_REQUIRES(mu_);

  const int max_fds_;
  mutable Mutex mu_;
  using Slots = std::vector<std::shared_ptr<File>, LargeAllocator<std::shared_ptr<File>>>;
  Slots files_ EPOLLCR_GUARDED_BY(mu_);      // index = fd; null = free
  std::set<int> free_ EPOLLCR_GUARDED_BY(mu_);  // the free indices below files_.size()
  int count_ EPOLLCR_GUARDED_BY(mu_) = 0;
};

}  // namespace epollcr
