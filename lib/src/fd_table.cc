#include "epollcr/fd_table.h"

#include <algorithm>

namespace epollcr {

FdTable::~FdTable() { Clear(); }

Result<int> FdTable::Install(std::shared_ptr<File> file) {
  if (!file) return Errno(EBADF);
  MutexLock lock(mu_);
  int fd;
  if (!free_.empty()) {
    fd = *free_.begin();
    free_.erase(free_.begin());
  } else {
    if (static_cast<int>(files_.size()) >= max_fds_) return Errno(EMFILE);
    fd = static_cast<int>(files_.size());
    files_.emplace_back();
  }
  files_[fd] = std::move(file);
  ++count_;
  return fd;
}

void FdTable::Reserve(int n) {
  MutexLock lock(mu_);
  try {
    files_.reserve(static_cast<std::size_t>(std::clamp(n, 0, max_fds_)));
  } catch (const std::exception&) {  // bad_alloc: the table grows as fds are installed instead
  }
}

std::error_code FdTable::InstallAt(int fd, std::shared_ptr<File> file) {
  MutexLock lock(mu_);
  return InstallAtLocked(fd, std::move(file));
}

std::error_code FdTable::InstallAtLocked(int fd, std::shared_ptr<File> file) {
  if (!file || fd < 0 || fd >= max_fds_) return Errno(EBADF);
  if (fd < static_cast<int>(files_.size()) && files_[fd]) return Errno(EBUSY);
  if (fd == static_cast<int>(files_.size())) {  // appending, as a load in fd order does: no gap to record
    files_.push_back(std::move(file));
    ++count_;
    return {};
  }
  for (int i = static_cast<int>(files_.size()); i <= fd; ++i) {
    files_.emplace_back();
    free_.insert(i);
  }
  free_.erase(fd);
  files_[fd] = std::move(file);
  ++count_;
  return {};
}

Result<int> FdTable::Dup(int fd) {
  std::shared_ptr<File> file = Get(fd);
  if (!file) return Errno(EBADF);
  return Install(std::move(file));
}

std::error_code FdTable::Close(int fd) {
  std::shared_ptr<File> dropped;  // Released after the lock: releasing a file reaches into the polls watching it.
  {
    MutexLock lock(mu_);
    if (fd < 0 || fd >= static_cast<int>(files_.size()) || !files_[fd]) return Errno(EBADF);
    dropped = std::move(files_[fd]);
    free_.insert(fd);
    --count_;
  }
  return {};
}

std::shared_ptr<File> FdTable::Get(int fd) const {
  MutexLock lock(mu_);
  if (fd < 0 || fd >= static_cast<int>(files_.size())) return nullptr;
  return files_[fd];
}

int FdTable::Count() const {
  MutexLock lock(mu_);
  return count_;
}

void FdTable::Clear() {
  Slots dropped;
  {
    MutexLock lock(mu_);
    dropped.swap(files_);
    free_.clear();
    count_ = 0;
  }
  // Close from the highest fd down, the order a process's exit closes them in is not specified; any order works.
  while (!dropped.empty()) dropped.pop_back();
}

std::vector<std::pair<int, std::shared_ptr<File>>> FdTable::Snapshot() const {
  MutexLock lock(mu_);
  return SnapshotFrozen();
}

std::vector<std::pair<int, std::shared_ptr<File>>> FdTable::SnapshotFrozen() const {
  std::vector<std::pair<int, std::shared_ptr<File>>> out;
  for (int fd = 0; fd < static_cast<int>(files_.size()); ++fd) {
    if (files_[fd]) out.emplace_back(fd, files_[fd]);
  }
  return out;
}

}  // namespace epollcr
