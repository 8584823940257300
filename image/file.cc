// Image files: atomic, durable writing and bounded reading (docs/image-format.md, "Writing and reading files").

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "epollcr/result.h"
#include "image/file.h"

#include "big_buffer.h"

namespace epollcr::image {
namespace {

std::error_code LastErrno() { return Errno(errno); }

class SystemFileOps final : public FileOps {
 public:
  std::error_code Open(const std::string& path, int flags, mode_t mode, int* fd) override {
    const int result = ::open(path.c_str(), flags, mode);
    if (result < 0) return LastErrno();
    *fd = result;
    return {};
  }
  std::error_code OpenDirectory(const std::string& path, int* fd) override {
    const int result = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (result < 0) return LastErrno();
    *fd = result;
    return {};
  }
  std::error_code Write(int fd, const char* data, std::size_t size, std::size_t* done) override {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) return LastErrno();
    *done = static_cast<std::size_t>(n);
    return {};
  }
  std::error_code Read(int fd, char* data, std::size_t size, std::size_t* done) override {
    const ssize_t n = ::read(fd, data, size);
    if (n < 0) return LastErrno();
    *done = static_cast<std::size_t>(n);
    return {};
  }
  std::error_code Fsync(int fd) override { return ::fsync(fd) < 0 ? LastErrno() : std::error_code(); }
  std::error_code Fstat(int fd, struct stat* st) override {
    return ::fstat(fd, st) < 0 ? LastErrno() : std::error_code();
  }
  std::error_code Close(int fd) override { return ::close(fd) < 0 ? LastErrno() : std::error_code(); }
  std::error_code Rename(const std::string& from, const std::string& to) override {
    return ::rename(from.c_str(), to.c_str()) < 0 ? LastErrno() : std::error_code();
  }
  std::error_code Unlink(const std::string& path) override {
    return ::unlink(path.c_str()) < 0 ? LastErrno() : std::error_code();
  }
};

bool IsEintr(std::error_code ec) { return ec == std::errc::interrupted; }

// Owns one fd opened through a FileOps: closes it through the same FileOps when destroyed, unless Close() already
// did. Move-only.
class OwnedFd {
 public:
  OwnedFd() = default;
  OwnedFd(FileOps* ops, int fd) : ops_(ops), fd_(fd) {}
  OwnedFd(OwnedFd&& other) noexcept : ops_(other.ops_), fd_(std::exchange(other.fd_, -1)) {}
  OwnedFd& operator=(OwnedFd&& other) noexcept {
    if (this != &other) {
      Reset();
      ops_ = other.ops_;
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { Reset(); }

  int get() const { return fd_; }

  // Closes now and reports close(2)'s result. The fd is released whatever the result: on Linux close(2) frees the
  // descriptor even when it fails, and EINTR must not be retried (close(2), "Dealing with error returns"). EINTR is
  // reported as success: the callers fsync before they close, so nothing is left for close to flush.
  std::error_code Close() {
    const int fd = std::exchange(fd_, -1);
    if (fd < 0) return {};
    const std::error_code ec = ops_->Close(fd);
    return IsEintr(ec) ? std::error_code() : ec;
  }

 private:
  void Reset() {
    if (fd_ >= 0) (void)ops_->Close(std::exchange(fd_, -1));  // a failure here has no one to tell; see Close()
  }

  FileOps* ops_ = nullptr;
  int fd_ = -1;
};

ImageError SystemError(std::string_view step, const std::string& path, std::error_code ec, std::string_view note = {}) {
  std::string message(step);
  message += ' ';
  message += path;
  if (!note.empty()) {
    message += " (";
    message += note;
    message += ')';
  }
  message += ": ";
  message += ec.message();
  return {ec, std::move(message)};
}

ImageError FormatError(std::error_code ec, const std::string& path, std::string_view what) {
  std::string message = path;
  message += ": ";
  message += what;
  return {ec, std::move(message)};
}

// "dir/name" -> "dir/" (kept as given, with its slash), "name" -> "".
std::string DirectoryPrefix(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

std::string BaseName(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The directory to open and fsync: "a/b/name" -> "a/b", "/name" -> "/", "name" -> ".".
std::string DirectoryToSync(const std::string& path) {
  std::string directory = DirectoryPrefix(path);
  if (directory.empty()) return ".";
  while (directory.size() > 1 && directory.back() == '/') directory.pop_back();
  return directory;
}

std::uint64_t RandomSuffix() {
  std::uint64_t value = 0;
  if (::getrandom(&value, sizeof value, GRND_NONBLOCK) == sizeof value) return value;
  // No entropy yet (very early boot) or no getrandom: a per-process counter and the clock are unique enough, since
  // O_EXCL catches a collision and the caller retries with another name.
  static std::atomic<std::uint64_t> counter{0};
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return (static_cast<std::uint64_t>(now.tv_nsec) << 20) ^ static_cast<std::uint64_t>(now.tv_sec) ^
         (counter.fetch_add(1) * 0x9e3779b97f4a7c15ull);
}

std::string TemporaryPath(const std::string& path) {
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, ".%ld.%016llx", static_cast<long>(::getpid()),
                static_cast<unsigned long long>(RandomSuffix()));
  return DirectoryPrefix(path) + TemporaryPrefix(path) + suffix;
}

// Writes all of `bytes`, continuing after short writes and EINTR.
std::error_code WriteAll(FileOps& ops, int fd, std::string_view bytes) {
  constexpr std::size_t kMaxChunk = std::size_t{1} << 30;  // below Linux's 0x7ffff000 per-call limit (write(2))
  while (!bytes.empty()) {
    std::size_t done = 0;
    const std::error_code ec = ops.Write(fd, bytes.data(), std::min(bytes.size(), kMaxChunk), &done);
    if (IsEintr(ec)) continue;
    if (ec) return ec;
    if (done == 0) return make_error_code(std::errc::io_error);  // no progress and no errno: do not spin
    bytes.remove_prefix(done);
  }
  return {};
}

std::error_code FsyncRetrying(FileOps& ops, int fd) {
  std::error_code ec;
  do {
    ec = ops.Fsync(fd);
  } while (IsEintr(ec));
  return ec;
}

// Everything in WriteImageFile up to and including the rename; on failure the caller removes `temporary`.
ImageError WriteAndRename(const std::string& path, const std::string& temporary, OwnedFd file,
                          std::string_view payload, FileOps& ops) {
  const FrameHeaderBytes header = FrameHeader(payload);
  if (std::error_code ec = WriteAll(ops, file.get(), std::string_view(header.data(), header.size()))) {
    return SystemError("write", temporary, ec);
  }
  if (std::error_code ec = WriteAll(ops, file.get(), payload)) return SystemError("write", temporary, ec);
  if (std::error_code ec = FsyncRetrying(ops, file.get())) return SystemError("fsync", temporary, ec);
  if (std::error_code ec = file.Close()) return SystemError("close", temporary, ec);
  if (std::error_code ec = ops.Rename(temporary, path)) {
    return SystemError("rename", temporary, ec, "to " + path);
  }
  return {};
}

}  // namespace

FileOps& DefaultFileOps() {
  static SystemFileOps ops;
  return ops;
}

std::string TemporaryPrefix(const std::string& path) {
  constexpr std::size_t kMaxNameInTemporary = 200;  // + ".tmp.PID.RANDOM" stays under NAME_MAX (255)
  return "." + BaseName(path).substr(0, kMaxNameInTemporary) + ".tmp";
}

ImageError WriteImageFile(const std::string& path, std::string_view payload, FileOps& ops) {
  if (path.empty()) return {Errno(ENOENT), "write image: empty path"};
  if (path.back() == '/') return SystemError("write image", path, Errno(EISDIR), "ends in '/'");

  // The directory first: if it cannot be opened (for the fsync after the rename), fail before touching anything.
  const std::string directory = DirectoryToSync(path);
  OwnedFd dir;
  {
    int fd = -1;
    std::error_code ec;
    do {
      ec = ops.OpenDirectory(directory, &fd);
    } while (IsEintr(ec));
    if (ec) return SystemError("open directory", directory, ec);
    dir = OwnedFd(&ops, fd);
  }

  // Create the temporary file; O_EXCL makes the name ours, and another name is tried if it was taken.
  std::string temporary;
  OwnedFd file;
  for (int attempt = 0;; ++attempt) {
    temporary = TemporaryPath(path);
    int fd = -1;
    const std::error_code ec = ops.Open(temporary, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600, &fd);
    if (!ec) {
      file = OwnedFd(&ops, fd);
      break;
    }
    if ((ec == std::errc::file_exists && attempt < 16) || IsEintr(ec)) continue;
    return SystemError("create", temporary, ec);
  }

  if (ImageError error = WriteAndRename(path, temporary, std::move(file), payload, ops)) {
    // WriteAndRename closed the file (its OwnedFd is gone); remove it so no temporary is left behind.
    if (std::error_code ec = ops.Unlink(temporary); ec && ec != std::errc::no_such_file_or_directory) {
      error.message += "; removing " + temporary + " also failed: " + ec.message();
    }
    return error;
  }

  // The rename is done: `path` holds the new image. The directory fsync makes the rename itself durable.
  if (std::error_code ec = FsyncRetrying(ops, dir.get())) {
    return SystemError("fsync directory", directory, ec,
                       "after the rename: " + path + " holds the new image, but a power loss may bring back the old one");
  }
  (void)dir.Close();  // a read-only directory fd: nothing to flush, nothing to report
  return {};
}

namespace {

// Reads the image file into storage from `allocate(size)` (sized by the file, which the limit bounds; never by what
// the header claims) and unframes it. On success returns the bytes read and sets *payload to view the payload.
template <typename Allocate>
ImageError ReadAndUnframe(const std::string& path, const ReadLimits& limits, FileOps& ops, Allocate allocate,
                          std::string_view* payload) {
  OwnedFd file;
  {
    int fd = -1;
    std::error_code ec;
    do {
      // O_NONBLOCK: opening a FIFO must not wait for a writer; it is rejected below as not a regular file.
      ec = ops.Open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0, &fd);
    } while (IsEintr(ec));
    if (ec) return SystemError("open", path, ec);
    file = OwnedFd(&ops, fd);
  }

  struct stat st {};
  if (std::error_code ec = ops.Fstat(file.get(), &st)) return SystemError("fstat", path, ec);
  if (S_ISDIR(st.st_mode)) return FormatError(Errno(EISDIR), path, "is a directory, not an image file");
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISFIFO(st.st_mode)  ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                                              : "not a regular file";
    return FormatError(make_error_code(ImageErrc::kNotRegularFile), path,
                       std::string("is ") + kind + ", not an image file");
  }
  if (st.st_size == 0) {
    return FormatError(make_error_code(ImageErrc::kEmptyFile), path, "empty file (not an epollcr image)");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t max_file = limits.max_payload > std::numeric_limits<std::uint64_t>::max() - kHeaderSize
                                     ? std::numeric_limits<std::uint64_t>::max()
                                     : limits.max_payload + kHeaderSize;
  if (size > max_file || size > std::numeric_limits<std::size_t>::max()) {
    return FormatError(make_error_code(ImageErrc::kTooLarge), path,
                       "file is " + std::to_string(size) + " bytes, more than the limit of " +
                           std::to_string(limits.max_payload) + " payload bytes plus the " +
                           std::to_string(kHeaderSize) + "-byte header");
  }

  char* bytes = nullptr;
  try {
    bytes = allocate(static_cast<std::size_t>(size));
  } catch (const std::bad_alloc&) {
    return SystemError("read", path, Errno(ENOMEM), std::to_string(size) + " bytes");
  } catch (const std::length_error&) {
    return SystemError("read", path, Errno(ENOMEM), std::to_string(size) + " bytes");
  }
  std::size_t got = 0;
  while (got < size) {
    std::size_t done = 0;
    const std::error_code ec = ops.Read(file.get(), bytes + got, size - got, &done);
    if (IsEintr(ec)) continue;
    if (ec) return SystemError("read", path, ec);
    if (done == 0) break;  // the file shrank since fstat: Unframe reports it as truncated
    got += done;
  }
  if (got == size) {
    // The file may have grown since fstat; a complete image never does (it is replaced by rename, not rewritten).
    char probe = 0;
    std::size_t done = 0;
    std::error_code ec;
    do {
      ec = ops.Read(file.get(), &probe, 1, &done);
    } while (IsEintr(ec));
    if (ec) return SystemError("read", path, ec);
    if (done != 0) {
      return FormatError(make_error_code(ImageErrc::kTrailingBytes), path,
                         "the file grew while it was read (fstat said " + std::to_string(size) + " bytes)");
    }
  }

  const UnframeResult unframed = Unframe(std::string_view(bytes, got), limits);
  if (!unframed.ok()) return FormatError(unframed.error.code, path, unframed.error.message);
  *payload = unframed.payload;
  return {};
}

}  // namespace

ImageError ReadImageFile(const std::string& path, std::string* payload_out, const ReadLimits& limits,
                         FileOps& ops) {
  if (payload_out == nullptr) return {Errno(EINVAL), "read image " + path + ": no place for the payload"};
  std::string bytes;
  std::string_view payload;
  auto allocate = [&](std::size_t size) {
    bytes.resize(size);
    return bytes.data();
  };
  if (ImageError e = ReadAndUnframe(path, limits, ops, allocate, &payload)) return e;
  bytes.resize(kHeaderSize + payload.size());
  bytes.erase(0, kHeaderSize);  // the payload is the rest: keep this buffer rather than copy it
  *payload_out = std::move(bytes);
  return {};
}

ImageError ReadImageFileBytes(const std::string& path, BigBuffer* file_bytes_out, std::string_view* payload_out,
                              const ReadLimits& limits, FileOps& ops) {
  if (file_bytes_out == nullptr || payload_out == nullptr) {
    return {Errno(EINVAL), "read image " + path + ": no place for the payload"};
  }
  BigBuffer bytes;
  std::string_view payload;
  auto allocate = [&](std::size_t size) {
    bytes = BigBuffer(size);
    return static_cast<char*>(bytes.data());
  };
  if (ImageError e = ReadAndUnframe(path, limits, ops, allocate, &payload)) return e;
  *file_bytes_out = std::move(bytes);  // the memory does not move, so the view stays valid
  *payload_out = payload;
  return {};
}

ImageError CleanStaleTemporaries(const std::string& path, std::size_t* removed) {
  std::size_t count = 0;
  const std::string directory = DirectoryToSync(path);
  const std::string prefix = TemporaryPrefix(path) + ".";
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(directory.c_str()), &::closedir);
  if (!dir) return SystemError("open directory", directory, LastErrno());
  ImageError result;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir.get());
    if (entry == nullptr) {
      if (errno != 0) result = SystemError("read directory", directory, LastErrno());
      break;
    }
    const std::string_view name(entry->d_name);
    if (name.substr(0, prefix.size()) != prefix) continue;
    // The rest is "PID.RANDOM" with a decimal PID and 16 hex digits.
    const std::string_view rest = name.substr(prefix.size());
    const std::size_t dot = rest.find('.');
    if (dot == std::string_view::npos || dot == 0 || dot > 10 || rest.size() - dot - 1 != 16) continue;
    long pid = 0;
    bool digits = true;
    for (char c : rest.substr(0, dot)) {
      if (c < '0' || c > '9') digits = false;
      pid = pid * 10 + (c - '0');
    }
    bool hex = true;
    for (char c : rest.substr(dot + 1)) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) hex = false;
    }
    if (!digits || !hex || pid <= 0 || pid > std::numeric_limits<pid_t>::max()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or cannot tell: keep it
    const std::string victim = DirectoryPrefix(path) + std::string(name);
    if (::unlink(victim.c_str()) == 0) {
      ++count;
    } else if (errno != ENOENT && result.ok()) {
      result = SystemError("unlink", victim, LastErrno());
    }
  }
  if (removed != nullptr) *removed = count;
  return result;
}

}  // namespace epollcr::image
