#include "replay/scratch.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace epollcr::replay {
namespace {

// ---- the guard process: system calls only, no allocation (it is forked from a process that may have threads) ----

constexpr int kMaxDirs = 64;
char guarded[kMaxDirs][PATH_MAX];
bool in_use[kMaxDirs];

// Removes `name` under `dir` (a file, or a directory and what it holds, `depth` levels down). 0 when it is gone.
int RemoveAt(int dir, const char* name, int depth) {
  if (::unlinkat(dir, name, 0) == 0 || errno == ENOENT) return 0;
  if ((errno != EISDIR && errno != EPERM) || depth == 0) return -1;
  const int fd = ::openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  alignas(dirent64) char buffer[4096];  // getdents64 records: glibc's dirent64 has their layout
  for (;;) {
    const long n = ::syscall(SYS_getdents64, fd, buffer, sizeof buffer);
    if (n <= 0) break;
    for (long at = 0; at < n;) {
      const auto* entry = reinterpret_cast<const dirent64*>(buffer + at);
      at += entry->d_reclen;
      if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) {
        (void)RemoveAt(fd, entry->d_name, depth - 1);
      }
    }
  }
  ::close(fd);
  return ::unlinkat(dir, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : -1;
}

void Track(const char* line, std::size_t size) {
  if (size < 2 || size - 1 >= PATH_MAX) return;
  if (line[0] == '+') {
    for (int i = 0; i < kMaxDirs; ++i) {
      if (in_use[i]) continue;
      std::memcpy(guarded[i], line + 1, size - 1);
      guarded[i][size - 1] = '\0';
      in_use[i] = true;
      return;
    }
  } else if (line[0] == '-') {
    for (int i = 0; i < kMaxDirs; ++i) {
      if (in_use[i] && std::strlen(guarded[i]) == size - 1 && std::memcmp(guarded[i], line + 1, size - 1) == 0) {
        in_use[i] = false;
        return;
      }
    }
  }
}

[[noreturn]] void Guard(int in) {
  for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU}) {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(signal, &ignore, nullptr);
  }
  // Nothing of the replay process's but the pipe: not its standard output (a reader waits for its end), not its fds.
  if (in > 0) (void)::syscall(SYS_close_range, 0, in - 1, 0);
  (void)::syscall(SYS_close_range, in + 1, ~0U, 0);
  static char pending[2 * PATH_MAX];
  std::size_t have = 0;
  for (;;) {
    const ssize_t n = ::read(in, pending + have, sizeof pending - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the replay process has ended
    have += static_cast<std::size_t>(n);
    std::size_t start = 0;
    for (std::size_t i = 0; i < have; ++i) {
      if (pending[i] != '\n') continue;
      Track(pending + start, i - start);
      start = i + 1;
    }
    std::memmove(pending, pending + start, have - start);
    have -= start;
    if (have == sizeof pending) have = 0;  // a line longer than a path: not ours
  }
  // A worker of the exec chain may still be writing into its directory: it exits once it sees the replay process's
  // socket close. Up to 5 s.
  for (int attempt = 0; attempt < 100; ++attempt) {
    bool left = false;
    for (int i = 0; i < kMaxDirs; ++i) {
      if (in_use[i] && RemoveAt(AT_FDCWD, guarded[i], 8) == 0) in_use[i] = false;
      left = left || in_use[i];
    }
    if (!left) break;
    const timespec pause{0, 50 * 1000 * 1000};
    ::nanosleep(&pause, nullptr);
  }
  ::_exit(0);
}

// ---- the replay process ----

std::mutex mu;
int guard_pipe = -1;  // the write end; -1 until the first directory (or if the guard could not start)
int registered = 0;

// Starts the guard: forked twice, so that it is nobody's child here (the exec chain waits for every child it has) and
// outlives this process. Called with the first directory, which comes before the exec chain makes this process a
// child subreaper (an orphan would be its child again).
void StartGuardLocked() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return;
  const pid_t middle = ::fork();
  if (middle == 0) {
    if (::fork() == 0) Guard(p[0]);
    ::_exit(0);
  }
  ::close(p[0]);
  if (middle < 0) {
    ::close(p[1]);
    return;
  }
  while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {
  }
  guard_pipe = p[1];
}

void TellLocked(char sign, const std::string& dir) {
  if (guard_pipe < 0) return;
  const std::string line = sign + dir + "\n";  // shorter than PIPE_BUF: one write, never interleaved
  ssize_t n;
  do {
    n = ::write(guard_pipe, line.data(), line.size());
  } while (n < 0 && errno == EINTR);
}

}  // namespace

Result<std::string> MakeScratchDir(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + std::string(prefix) + "XXXXXX";
  if (dir.front() != '/') {  // the guard removes it by this path: make it absolute
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof cwd) != nullptr) dir = std::string(cwd) + "/" + dir;
  }
  std::lock_guard lock(mu);
  if (guard_pipe < 0) StartGuardLocked();
  if (::mkdtemp(dir.data()) == nullptr) return Status::Error(errno, "mkdtemp " + dir + ": " + std::strerror(errno));
  TellLocked('+', dir);
  ++registered;
  return dir;
}

void RemoveScratchDir(const std::string& dir) {
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  std::lock_guard lock(mu);
  TellLocked('-', dir);
  --registered;
}

int ScratchDirsRegistered() {
  std::lock_guard lock(mu);
  return registered;
}

}  // namespace epollcr::replay
