// Image files: atomic, durable writing and bounded reading (docs/image-format.md, "Writing and reading files").

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "epollcr/result.h"
#include "epollcr/unique_fd.h"
#include "image/file.h"

#include "big_buffer.h"
#include "fault_injection.h"

namespace epollcr::image {
namespace {

std::error_code LastErrno() { return Errno(errno); }

bool IsEintr(std::error_code ec) { return ec == std::errc::interrupted; }

// The system calls of the file functions, one call each, each at its fault-injection point (fault_injection.h):
// a failure is the errno in a std::error_code (EINTR included: the callers retry).
using testing::FaultAt;
using testing::FaultPoint;

std::error_code Injected(FaultPoint point) {
  const int e = FaultAt(point).error;
  return e != 0 ? Errno(e) : std::error_code();
}

// open(2) at `point` (kImageOpen or kImageOpenDirectory); the fd goes to *fd.
std::error_code Open(FaultPoint point, const std::string& path, int flags, mode_t mode, UniqueFd* fd) {
  if (std::error_code ec = Injected(point)) return ec;
  const int result = ::open(path.c_str(), flags, mode);
  if (result < 0) return LastErrno();
  *fd = UniqueFd(result);
  return {};
}

// write(2) / read(2): one call, which may transfer fewer bytes than asked; *done is the count.
std::error_code WriteSome(int fd, const char* data, std::size_t size, std::size_t* done) {
  const testing::Fault fault = FaultAt(FaultPoint::kImageWrite);
  if (fault.error != 0) return Errno(fault.error);
  const ssize_t n = ::write(fd, data, std::min(size, fault.max_bytes));
  if (n < 0) return LastErrno();
  *done = static_cast<std::size_t>(n);
  return {};
}
std::error_code ReadSome(int fd, char* data, std::size_t size, std::size_t* done) {
  const testing::Fault fault = FaultAt(FaultPoint::kImageRead);
  if (fault.error != 0) return Errno(fault.error);
  const ssize_t n = ::read(fd, data, std::min(size, fault.max_bytes));
  if (n < 0) return LastErrno();
  *done = static_cast<std::size_t>(n);
  return {};
}

std::error_code Fsync(int fd) {
  if (std::error_code ec = Injected(FaultPoint::kImageFsync)) return ec;
  return ::fsync(fd) < 0 ? LastErrno() : std::error_code();
}
std::error_code Fstat(int fd, struct stat* st) {
  if (std::error_code ec = Injected(FaultPoint::kImageFstat)) return ec;
  return ::fstat(fd, st) < 0 ? LastErrno() : std::error_code();
}
std::error_code Rename(const std::string& from, const std::string& to) {
  if (std::error_code ec = Injected(FaultPoint::kImageRename)) return ec;
  return ::rename(from.c_str(), to.c_str()) < 0 ? LastErrno() : std::error_code();
}
std::error_code Unlink(const std::string& path) {
  if (std::error_code ec = Injected(FaultPoint::kImageUnlink)) return ec;
  return ::unlink(path.c_str()) < 0 ? LastErrno() : std::error_code();
}

// Closes `fd` now (if it holds one) and reports close(2)'s result, EINTR as success: the callers fsync before they
// close, so nothing is left for close to flush. An injected failure still closes (Linux frees the descriptor even
// when close fails).
std::error_code Close(UniqueFd& fd) {
  if (!fd.valid()) return {};
  const std::error_code injected = Injected(FaultPoint::kImageClose);
  std::error_code ec = fd.Close();
  if (injected) ec = injected;
  return IsEintr(ec) ? std::error_code() : ec;
}

Status SystemError(std::string_view step, const std::string& path, std::error_code ec, std::string_view note = {}) {
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

Status FormatError(std::error_code ec, const std::string& path, std::string_view what) {
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
std::error_code WriteAll(int fd, std::string_view bytes) {
  constexpr std::size_t kMaxChunk = std::size_t{1} << 30;  // below Linux's 0x7ffff000 per-call limit (write(2))
  while (!bytes.empty()) {
    std::size_t done = 0;
    const std::error_code ec = WriteSome(fd, bytes.data(), std::min(bytes.size(), kMaxChunk), &done);
    if (IsEintr(ec)) continue;
    if (ec) return ec;
    if (done == 0) return make_error_code(std::errc::io_error);  // no progress and no errno: do not spin
    bytes.remove_prefix(done);
  }
  return {};
}

std::error_code FsyncRetrying(int fd) {
  std::error_code ec;
  do {
    ec = Fsync(fd);
  } while (IsEintr(ec));
  return ec;
}

// Everything in WriteImageFile up to and including the rename; on failure the caller removes `temporary`.
Status WriteAndRename(const std::string& path, const std::string& temporary, UniqueFd file,
                          std::string_view payload) {
  const FrameHeaderBytes header = FrameHeader(payload);
  if (std::error_code ec = WriteAll(file.get(), std::string_view(header.data(), header.size()))) {
    return SystemError("write", temporary, ec);
  }
  if (std::error_code ec = WriteAll(file.get(), payload)) return SystemError("write", temporary, ec);
  if (std::error_code ec = FsyncRetrying(file.get())) return SystemError("fsync", temporary, ec);
  if (std::error_code ec = Close(file)) return SystemError("close", temporary, ec);
  if (std::error_code ec = Rename(temporary, path)) {
    return SystemError("rename", temporary, ec, "to " + path);
  }
  return {};
}

}  // namespace

std::string TemporaryPrefix(const std::string& path) {
  constexpr std::size_t kMaxNameInTemporary = 200;  // + ".tmp.PID.RANDOM" stays under NAME_MAX (255)
  return "." + BaseName(path).substr(0, kMaxNameInTemporary) + ".tmp";
}

Status WriteImageFile(const std::string& path, std::string_view payload) {
  if (path.empty()) return {Errno(ENOENT), "write image: empty path"};
  if (path.back() == '/') return SystemError("write image", path, Errno(EISDIR), "ends in '/'");

  // The directory first: if it cannot be opened (for the fsync after the rename), fail before touching anything.
  const std::string directory = DirectoryToSync(path);
  UniqueFd dir;
  {
    std::error_code ec;
    do {
      ec = Open(FaultPoint::kImageOpenDirectory, directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, &dir);
    } while (IsEintr(ec));
    if (ec) return SystemError("open directory", directory, ec);
  }

  // Create the temporary file; O_EXCL makes the name ours, and another name is tried if it was taken.
  std::string temporary;
  UniqueFd file;
  for (int attempt = 0;; ++attempt) {
    temporary = TemporaryPath(path);
    const std::error_code ec =
        Open(FaultPoint::kImageOpen, temporary, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600, &file);
    if (!ec) break;
    if ((ec == std::errc::file_exists && attempt < 16) || IsEintr(ec)) continue;
    return SystemError("create", temporary, ec);
  }

  if (Status error = WriteAndRename(path, temporary, std::move(file), payload); !error.ok()) {
    // WriteAndRename closed the file (its UniqueFd is gone); remove it so no temporary is left behind.
    if (std::error_code ec = Unlink(temporary); ec && ec != std::errc::no_such_file_or_directory) {
      error.message += "; removing " + temporary + " also failed: " + ec.message();
    }
    return error;
  }

  // The rename is done: `path` holds the new image. The directory fsync makes the rename itself durable.
  if (std::error_code ec = FsyncRetrying(dir.get())) {
    return SystemError("fsync directory", directory, ec,
                       "after the rename: " + path + " holds the new image, but a power loss may bring back the old one");
  }
  (void)Close(dir);  // a read-only directory fd: nothing to flush, nothing to report
  return {};
}

namespace {

// Reads the image file open as `file` into storage from `allocate(size)` (sized by the file, which the limit bounds;
// never by what the header claims) and unframes it. On success sets *payload to view the payload.
template <typename Allocate>
Status ReadOpenAndUnframe(const std::string& path, int file, const ReadLimits& limits, Allocate allocate,
                              std::string_view* payload) {
  struct stat st {};
  if (std::error_code ec = Fstat(file, &st)) return SystemError("fstat", path, ec);
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
    const std::error_code ec = ReadSome(file, bytes + got, size - got, &done);
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
      ec = ReadSome(file, &probe, 1, &done);
    } while (IsEintr(ec));
    if (ec) return SystemError("read", path, ec);
    if (done != 0) {
      return FormatError(make_error_code(ImageErrc::kTrailingBytes), path,
                         "the file grew while it was read (fstat said " + std::to_string(size) + " bytes)");
    }
  }

  const Result<std::string_view> unframed = Unframe(std::string_view(bytes, got), limits);
  if (!unframed.ok()) return FormatError(unframed.error(), path, unframed.status().message);
  *payload = unframed.value();
  return {};
}

// Opens the image file, reads and unframes it (ReadOpenAndUnframe), and closes it.
template <typename Allocate>
Status ReadAndUnframe(const std::string& path, const ReadLimits& limits, Allocate allocate,
                          std::string_view* payload) {
  UniqueFd file;
  std::error_code ec;
  do {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is rejected as not a regular file.
    ec = Open(FaultPoint::kImageOpen, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0, &file);
  } while (IsEintr(ec));
  if (ec) return SystemError("open", path, ec);
  Status error = ReadOpenAndUnframe(path, file.get(), limits, allocate, payload);
  (void)Close(file);  // read-only: nothing to flush, nothing to report
  return error;
}

}  // namespace

Status ReadImageFile(const std::string& path, std::string* payload_out, const ReadLimits& limits) {
  if (payload_out == nullptr) return {Errno(EINVAL), "read image " + path + ": no place for the payload"};
  std::string bytes;
  std::string_view payload;
  auto allocate = [&](std::size_t size) {
    bytes.resize(size);
    return bytes.data();
  };
  if (Status e = ReadAndUnframe(path, limits, allocate, &payload); !e.ok()) return e;
  bytes.resize(kHeaderSize + payload.size());
  bytes.erase(0, kHeaderSize);  // the payload is the rest: keep this buffer rather than copy it
  *payload_out = std::move(bytes);
  return {};
}

Status ReadImageFileBytes(const std::string& path, BigBuffer* file_bytes_out, std::string_view* payload_out,
                              const ReadLimits& limits) {
  if (file_bytes_out == nullptr || payload_out == nullptr) {
    return {Errno(EINVAL), "read image " + path + ": no place for the payload"};
  }
  BigBuffer bytes;
  std::string_view payload;
  auto allocate = [&](std::size_t size) {
    bytes = BigBuffer(size);
    return static_cast<char*>(bytes.data());
  };
  if (Status e = ReadAndUnframe(path, limits, allocate, &payload); !e.ok()) return e;
  *file_bytes_out = std::move(bytes);  // the memory does not move, so the view stays valid
  *payload_out = payload;
  return {};
}

Status CleanStaleTemporaries(const std::string& path, std::size_t* removed) {
  std::size_t count = 0;
  const std::string directory = DirectoryToSync(path);
  const std::string prefix = TemporaryPrefix(path) + ".";
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(directory.c_str()), &::closedir);
  if (!dir) return SystemError("open directory", directory, LastErrno());
  Status result;
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
