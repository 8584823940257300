#include "epollcr/host_file.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <unordered_set>
#include <vector>

#include "epollcr/mutex.h"

namespace epollcr {

namespace {

// The fd numbers host files own: one HostFile per number. A bit per fd number below 2^20 (Linux's default bound on
// fd numbers, fs.nr_open), not a set: a hand-off that wraps 10,000 inherited fds took a heap block and a hash per fd,
// in the pause. Numbers above it (a raised fs.nr_open) are kept in a set.
class Wrapped {
 public:
  static Wrapped& Instance() {
    static Wrapped wrapped;
    return wrapped;
  }
  bool Add(int fd) {
    const auto at = static_cast<std::size_t>(fd);
    MutexLock lock(mu_);
    bool added = false;
    if (at >= kDense) {
      added = high_.insert(fd).second;
    } else {
      if (at >= low_.size()) low_.resize(std::min(kDense, std::max(at + 1, 2 * low_.size())));
      added = !low_[at];
      low_[at] = true;
    }
    count_ += added ? 1 : 0;
    return added;
  }
  void Remove(int fd) {
    const auto at = static_cast<std::size_t>(fd);
    MutexLock lock(mu_);
    bool removed = false;
    if (at >= kDense) {
      removed = high_.erase(fd) > 0;
    } else if (at < low_.size()) {
      removed = low_[at];
      low_[at] = false;
    }
    count_ -= removed ? 1 : 0;
  }
  std::size_t Count() {
    MutexLock lock(mu_);
    return count_;
  }

 private:
  static constexpr std::size_t kDense = std::size_t{1} << 20;
  Mutex mu_;
  std::vector<bool> low_ EPOLLCR_GUARDED_BY(mu_);  // by fd number, below kDense
  std::unordered_set<int> high_ EPOLLCR_GUARDED_BY(mu_);
  std::size_t count_ EPOLLCR_GUARDED_BY(mu_) = 0;
};

}  // namespace

Result<std::shared_ptr<HostFile>> HostFile::Wrap(int fd, std::uint32_t file_type) {
  if (fd < 0) return Errno(EBADF);
  if (!Wrapped::Instance().Add(fd)) return Errno(EEXIST);
  const bool plain = file_type == S_IFREG || file_type == S_IFDIR;  // epoll_ctl refuses them (EPERM)
  return MakeFile<HostFile>(fd, !plain);
}

Result<std::shared_ptr<HostFile>> HostFile::Wrap(const Identity& identity) {
  Result<std::shared_ptr<HostFile>> file = Wrap(identity.fd, identity.file_type);
  if (!file.ok()) return file;
  HostFile& h = *file.value();
  h.dev_.store(identity.dev, std::memory_order_relaxed);
  h.ino_.store(identity.ino, std::memory_order_relaxed);
  h.file_type_.store(identity.file_type, std::memory_order_relaxed);
  h.known_.store(true, std::memory_order_release);
  return file;
}

Result<std::shared_ptr<HostFile>> HostFile::Create(int fd) {
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return Errno(EBADF);
  Identity id;
  id.fd = fd;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.file_type = st.st_mode & S_IFMT;
  return Wrap(id);
}

HostFile::~HostFile() {
  const int fd = ReleaseFd();
  if (fd >= 0) close(fd);
}

int HostFile::ReleaseFd() {
  const int fd = fd_.exchange(-1, std::memory_order_acq_rel);
  if (fd >= 0) Wrapped::Instance().Remove(fd);
  return fd;
}

std::error_code HostFile::Reattach(int fd) {
  if (fd < 0) return Errno(EBADF);
  if (this->fd() >= 0) return Errno(EBUSY);
  if (!Wrapped::Instance().Add(fd)) return Errno(EEXIST);
  last_fd_.store(fd, std::memory_order_relaxed);
  detached_.store(false, std::memory_order_relaxed);
  fd_.store(fd, std::memory_order_release);
  return {};
}

Result<std::shared_ptr<HostFile>> HostFile::Detached(const Identity& identity) {
  if (identity.fd < 0) return Errno(EBADF);
  const bool plain = identity.file_type == S_IFREG || identity.file_type == S_IFDIR;
  Result<std::shared_ptr<HostFile>> file = MakeFile<HostFile>(-1, !plain);
  if (!file.ok()) return file;
  HostFile& h = *file.value();
  h.last_fd_.store(identity.fd, std::memory_order_relaxed);
  h.dev_.store(identity.dev, std::memory_order_relaxed);
  h.ino_.store(identity.ino, std::memory_order_relaxed);
  h.file_type_.store(identity.file_type, std::memory_order_relaxed);
  h.known_.store(true, std::memory_order_release);
  h.detached_.store(true, std::memory_order_release);
  return file;
}

std::optional<HostFile::Identity> HostFile::LastIdentity() const {
  if (!known_.load(std::memory_order_acquire)) return std::nullopt;
  Identity id;
  id.fd = last_fd_.load(std::memory_order_relaxed);
  id.dev = dev_.load(std::memory_order_relaxed);
  id.ino = ino_.load(std::memory_order_relaxed);
  id.file_type = file_type_.load(std::memory_order_relaxed);
  return id;
}

std::size_t HostFile::WrappedFds() { return Wrapped::Instance().Count(); }

Result<HostFile::Identity> HostFile::Identify(bool open_state) const {
  Identity id;
  id.fd = fd();
  if (id.fd < 0) return Errno(EBADF);
  if (!known_.load(std::memory_order_acquire)) {
    struct stat st;
    if (fstat(id.fd, &st) != 0) return Errno(EBADF);
    dev_.store(st.st_dev, std::memory_order_relaxed);
    ino_.store(st.st_ino, std::memory_order_relaxed);
    file_type_.store(st.st_mode & S_IFMT, std::memory_order_relaxed);
    known_.store(true, std::memory_order_release);
  }
  id.dev = dev_.load(std::memory_order_relaxed);
  id.ino = ino_.load(std::memory_order_relaxed);
  id.file_type = file_type_.load(std::memory_order_relaxed);
  if (!open_state) return id;
  const int flags = fcntl(id.fd, F_GETFL);
  if (flags < 0) return Errno(errno);
  id.open_flags = static_cast<std::uint32_t>(flags);
  if (id.file_type != S_IFSOCK && id.file_type != S_IFIFO) {  // those have no position (lseek: ESPIPE)
    const off_t offset = lseek(id.fd, 0, SEEK_CUR);
    id.offset = offset < 0 ? 0 : static_cast<std::uint64_t>(offset);
  }
  return id;
}

std::string HostFile::Describe(const Identity& identity) {
  const char* type = "unknown";
  switch (identity.file_type) {
    case S_IFSOCK: type = "socket"; break;
    case S_IFIFO: type = "fifo"; break;
    case S_IFCHR: type = "character device"; break;
    case S_IFBLK: type = "block device"; break;
    case S_IFREG: type = "regular file"; break;
    case S_IFDIR: type = "directory"; break;
    case S_IFLNK: type = "symlink"; break;
    default: break;
  }
  char text[128];
  std::snprintf(text, sizeof text, "%s dev 0x%llx ino %llu", type, static_cast<unsigned long long>(identity.dev),
                static_cast<unsigned long long>(identity.ino));
  return text;
}

EventMask HostFile::Readiness(EventMask mask) {
  const int fd = this->fd();
  if (fd < 0) return 0;
  pollfd p{fd, static_cast<short>(mask & 0x7fff), 0};
  int n;
  do {
    n = poll(&p, 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;
  if (p.revents & POLLNVAL) return mask & (kEventErr | kEventHup);  // closed behind the file's back
  return static_cast<EventMask>(static_cast<unsigned short>(p.revents)) & mask;
}

Result<std::size_t> HostFile::Read(std::span<std::byte> buffer) {
  const int fd = this->fd();
  if (fd < 0) return Errno(EBADF);
  const ssize_t n = read(fd, buffer.data(), buffer.size());
  if (n < 0) return Errno(errno);
  return static_cast<std::size_t>(n);
}

Result<std::size_t> HostFile::Write(std::span<const std::byte> buffer) {
  const int fd = this->fd();
  if (fd < 0) return Errno(EBADF);
  // write(2), SIGPIPE included: a write to a broken pipe or socket raises it, as the program's own write would (its
  // disposition is the program's). Its generation is visible: it wakes every signalfd of the process, and with them
  // the epolls that watch them.
  const ssize_t n = write(fd, buffer.data(), buffer.size());
  if (n < 0) return Errno(errno);
  return static_cast<std::size_t>(n);
}

std::error_code HostFile::Shutdown(int how) {
  const int fd = this->fd();
  if (fd < 0) return Errno(EBADF);
  if (shutdown(fd, how) != 0) return Errno(errno);
  return {};
}

}  // namespace epollcr
