#include "epollcr/host_file.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "host_notifier.h"

namespace epollcr {

Result<std::shared_ptr<HostFile>> HostFile::CreateUnwatched(int fd, std::uint32_t file_type) {
  if (fd < 0) return Errno(EBADF);
  const bool plain = file_type == S_IFREG || file_type == S_IFDIR;  // epoll_ctl refuses them (EPERM)
  return MakeFile<HostFile>(fd, !plain);
}

std::error_code HostFile::Watch() {
  if (!epollable_ || watched()) return {};
  std::error_code e = HostNotifier::Instance().Watch(this);
  if (e == Errno(EPERM)) {
    epollable_ = false;  // a file without poll support (/dev/null): epoll refuses it too
    return {};
  }
  return e;
}

std::error_code HostFile::WatchAll(std::span<HostFile* const> files, std::size_t* failed) {
  return HostNotifier::Instance().WatchMany(files, failed);
}

Result<std::shared_ptr<HostFile>> HostFile::Create(int fd) {
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return Errno(EBADF);
  Result<std::shared_ptr<HostFile>> file = CreateUnwatched(fd, st.st_mode & S_IFMT);
  if (!file.ok()) return file;
  if (std::error_code e = file.value()->Watch()) {
    file.value()->ReleaseFd();  // the caller keeps its fd
    return e;
  }
  // Only a fd that is ready now has a first report on its way (one that becomes ready later sends a real edge).
  if (file.value()->watched() && file.value()->Readiness(kAllEvents) != 0) Settle();
  return file;
}

void HostFile::Settle() { HostNotifier::Instance().Settle(); }

HostFile::Batch::Batch() { HostNotifier::Instance().Hold(); }
HostFile::Batch::~Batch() { HostNotifier::Instance().DrainAndUnhold(); }

HostFile::~HostFile() {
  const int fd = ReleaseFd();
  if (fd >= 0) close(fd);
}

int HostFile::ReleaseFd() {
  if (watch_key_ != 0) HostNotifier::Instance().Unwatch(this);
  return fd_.exchange(-1, std::memory_order_acq_rel);
}

Result<HostFile::Identity> HostFile::Identify() const {
  Identity id;
  id.fd = fd();
  struct stat st;
  if (id.fd < 0 || fstat(id.fd, &st) != 0) return Errno(EBADF);
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.file_type = st.st_mode & S_IFMT;
  const int flags = fcntl(id.fd, F_GETFL);
  if (flags < 0) return Errno(errno);
  id.open_flags = static_cast<std::uint32_t>(flags);
  const off_t offset = lseek(id.fd, 0, SEEK_CUR);
  id.offset = offset < 0 ? 0 : static_cast<std::uint64_t>(offset);  // ESPIPE: sockets, pipes, ...
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

void HostFile::DeliverHostEvents(EventMask events) {
  MutexLock lock(notify_mu_);
  Notify(events & ~kEpollPrivateBits);
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
  // send(MSG_NOSIGNAL) on sockets: a peer that went away is EPIPE, not a SIGPIPE that kills the program.
  ssize_t n = send(fd, buffer.data(), buffer.size(), MSG_NOSIGNAL);
  if (n < 0 && errno == ENOTSOCK) n = write(fd, buffer.data(), buffer.size());
  if (n < 0) return Errno(errno);
  return static_cast<std::size_t>(n);
}

std::error_code HostFile::Shutdown(int how) {
  const int fd = this->fd();
  if (fd < 0) return Errno(EBADF);
  if (shutdown(fd, how) != 0) return Errno(errno);
  return {};
}

std::size_t HostFile::WatchedFds() { return HostNotifier::Instance().Watched(); }
bool HostFile::NotifierRunning() { return HostNotifier::Instance().Running(); }

}  // namespace epollcr
