// libepollcr-preload.so: every epoll instance an unmodified, dynamically linked program makes is an epollcr
// EventPoll over host files (docs/interposer.md). `epollcr run -- PROG` preloads it (LD_PRELOAD).
//
// What it interposes, and why:
//   epoll_create, epoll_create1       make an EventPoll; the program's epoll fd is a duplicate of the poll's kernel
//                                     epoll (EventPoll::Fd()), so poll/select/a kernel epoll on it keep working;
//   epoll_ctl                         through epollcr's system-call layer (sys::EpollCtl) over a table that mirrors
//                                     the process's fds: the program's epoll fds, and each fd the program registers,
//                                     wrapped as a HostFile at its own number (so errno precedence is the library's,
//                                     and EPERM/EBADF come from the real file);
//   epoll_wait, epoll_pwait,          EventPoll::PWait / PWait2: a signal interrupts them (EINTR) as the kernel's do;
//   epoll_pwait2
//   close, close_range, dup, dup2,    the fd life cycle: a registration lives with the open file description, not the
//   dup3, fcntl(F_DUPFD*)             fd, so the mirror follows every way an fd number appears or goes;
//   fork (pthread_atfork)             the child gets its own (empty) table; a poll it inherited is the parent's:
//                                     its use in the child is a reported error (EINVAL), its close is allowed;
//   execve family                     an epoll fd that would cross the exec is reported and closed on exec instead
//                                     (its registrations do not cross yet; docs/interposer.md, "Limits").
// A call on an fd that is not one of the program's epolls goes to the real function unchanged: the kernel answers.
//
// The library itself uses these functions (the kernel epolls, their duplicates, closes): a thread-local depth marks
// the calls made from inside, which go straight to the real function.
//
// EPOLLCR_RUN_LOG=FILE: one line per epoll instance made ("create PID FD") and, at exit, one per process
// ("exit PID polls N waits W events E"), appended with O_APPEND (epollcr run --log).
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/fd_table.h"
#include "epollcr/host_file.h"
#include "epollcr/syscalls.h"

namespace {

using epollcr::EventPoll;
using epollcr::FdTable;
using epollcr::File;
using epollcr::HostFile;

// ---- the real functions ----

template <typename F>
F RealFunction(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

#define EPOLLCR_REAL(name)                                                        \
  static auto const real_##name = RealFunction<decltype(&::name)>(#name);        \
  if (real_##name == nullptr) {                                                   \
    errno = ENOSYS;                                                               \
    return -1;                                                                    \
  }

// Calls made while the library runs (depth > 0) go straight to the real function.
thread_local int depth = 0;
struct Inside {
  Inside() { ++depth; }
  ~Inside() { --depth; }
  Inside(const Inside&) = delete;
  Inside& operator=(const Inside&) = delete;
};

int Fail(std::error_code error) {
  errno = error.value() != 0 ? error.value() : EINVAL;
  return -1;
}

// ---- the process's state ----

// Never destroyed: a thread (or an atexit handler of the program) may use it while the process exits, and a poll's
// teardown must never run in a process that shares its kernel epoll with another (after fork).
class State {
 public:
  static State& Get() {
    static State* const state = new State();
    return *state;
  }

  // Shared for lookups (the waits), exclusive for every change of the table and across fork. Replaced in a forked
  // child: a pthread rwlock cannot be unlocked by a thread that did not lock it, and the child's thread is new.
  std::shared_mutex* mu = new std::shared_mutex();
  std::unique_ptr<FdTable> fds = std::make_unique<FdTable>();  // guarded by mu; replaced in a forked child
  // In a forked child: the parent's polls and host files, by fd, still open here. Their use is refused (the kernel
  // epoll is the parent's too); they are never torn down here.
  std::unordered_map<int, std::shared_ptr<File>> inherited;  // guarded by mu
  std::vector<std::shared_ptr<File>> kept;                   // leaked on purpose: the parent's, never torn down
  std::atomic<std::size_t> known{0};                         // fds in `fds` or `inherited`: 0 lets close go by
  // Each wrapped host file's device and inode when it was wrapped: an ADD checks that its fd still names that file
  // (one closed behind the interposer's back, by fclose or a raw system call, and reused is forgotten then).
  std::unordered_map<int, std::pair<dev_t, ino_t>> identity;  // guarded by mu

  std::atomic<long> polls{0};
  std::atomic<long> waits{0};
  std::atomic<long> events{0};
  int log_fd = -1;
};

void Log(const char* format, ...) {
  State& s = State::Get();
  if (s.log_fd < 0) return;
  char line[256];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n > 0) (void)!::write(s.log_fd, line, static_cast<std::size_t>(n) < sizeof line ? n : sizeof line - 1);
}

void Report(const char* format, ...) {
  char line[512];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n > 0) (void)!::write(STDERR_FILENO, line, static_cast<std::size_t>(n) < sizeof line ? n : sizeof line - 1);
}

bool IsPoll(const std::shared_ptr<File>& file) { return file != nullptr && file->AsEventPoll() != nullptr; }

// The table forgets `fd` (under mu, exclusive). A host file gives the fd back first: the program closes it, not the
// library; its entries leave their polls.
void ForgetLocked(State& s, int fd) {
  if (auto it = s.inherited.find(fd); it != s.inherited.end()) {
    s.kept.push_back(std::move(it->second));
    s.inherited.erase(it);
    s.known.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  std::shared_ptr<File> file = s.fds->Get(fd);
  if (file == nullptr) return;
  s.identity.erase(fd);
  if (auto* host = dynamic_cast<HostFile*>(file.get())) (void)host->ReleaseFd();
  (void)s.fds->Close(fd);
  s.known.fetch_sub(1, std::memory_order_relaxed);
}

// A new name `to` for what `from` is (dup and its kind), after the real call made it.
void DupLocked(State& s, int from, int to) {
  std::shared_ptr<File> file = s.fds->Get(from);
  if (!IsPoll(file)) return;  // a host file's other names are wrapped when they are registered
  if (!s.fds->InstallAt(to, file)) s.known.fetch_add(1, std::memory_order_relaxed);
}

void AtForkPrepare() { State::Get().mu->lock(); }
void AtForkParent() { State::Get().mu->unlock(); }
// The child: every poll and host file is the parent's too (the kernel epolls are shared). They move aside, never to
// be torn down here; the child starts a table of its own.
void AtForkChild() {
  State& s = State::Get();
  Inside inside;
  for (auto& [fd, file] : s.fds->Snapshot()) {
    if (auto* host = dynamic_cast<HostFile*>(file.get())) (void)host->ReleaseFd();
    s.inherited[fd] = file;
  }
  (void)s.fds.release();  // leaked: its files are in `inherited`
  s.fds = std::make_unique<FdTable>();
  s.known.store(s.inherited.size(), std::memory_order_relaxed);
  s.polls = 0;
  s.waits = 0;
  s.events = 0;
  s.mu = new std::shared_mutex();  // the parent's, locked, is left as it is
}

void AtExit() {
  State& s = State::Get();
  Log("exit %d polls %ld waits %ld events %ld\n", static_cast<int>(::getpid()), s.polls.load(), s.waits.load(),
      s.events.load());
}

__attribute__((constructor)) void Init() {
  State& s = State::Get();
  Inside inside;
  // The library's own fds (each poll's kernel epoll, its bell; the log) go to the upper half of the fd limit, so that
  // the program's fds get the numbers the kernel would give them.
  rlimit limit{};
  const int floor =
      ::getrlimit(RLIMIT_NOFILE, &limit) == 0 ? static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 20) / 2) : 512;
  epollcr::SetInternalFdFloor(std::max(floor, 64));
  if (const char* log = std::getenv("EPOLLCR_RUN_LOG"); log != nullptr && *log != '\0') {
    const int fd = ::open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    const int high = fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, std::max(floor, 64)) : -1;
    if (high >= 0) ::close(fd);
    s.log_fd = high >= 0 ? high : fd;
  }
  ::pthread_atfork(AtForkPrepare, AtForkParent, AtForkChild);
  std::atexit(AtExit);
}

// The inherited poll `fd` in a forked child: its use is refused and reported.
int RefuseInherited(int fd, const char* call) {
  Report("epollcr: %s on epoll fd %d in process %d: that epoll was made before a fork and is the parent's; under "
         "epollcr a child makes its own (docs/interposer.md, \"fork\")\n",
         call, fd, static_cast<int>(::getpid()));
  errno = EINVAL;
  return -1;
}

int CreatePoll(int flags) {
  State& s = State::Get();
  Inside inside;
  std::shared_ptr<EventPoll> poll = EventPoll::Create();
  epollcr::Result<int> kernel = poll->Fd();
  if (!kernel.ok()) return Fail(kernel.error());
  std::unique_lock lock(*s.mu);
  const int fd = ::fcntl(kernel.value(), (flags & EPOLL_CLOEXEC) != 0 ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
  if (fd < 0) return -1;
  ForgetLocked(s, fd);  // a stale name the table still held (closed behind the interposer's back)
  if (std::error_code error = s.fds->InstallAt(fd, poll)) {
    ::close(fd);
    return Fail(error);
  }
  s.known.fetch_add(1, std::memory_order_relaxed);
  s.polls.fetch_add(1, std::memory_order_relaxed);
  Log("create %d %d\n", static_cast<int>(::getpid()), fd);
  return fd;
}

// The poll behind `epfd`, or null (not one of the program's epolls: the real call answers).
std::shared_ptr<File> PollOf(State& s, int epfd, bool* inherited) {
  std::shared_lock lock(*s.mu);
  std::shared_ptr<File> file = s.fds->Get(epfd);
  if (IsPoll(file)) return file;
  auto it = s.inherited.find(epfd);
  *inherited = it != s.inherited.end() && IsPoll(it->second);
  return nullptr;
}

// `buffer`: the program's epoll_event array (the same layout as epollcr::Event; epoll_event is packed, and a program's
// array of them is 4-byte aligned).
int Wait(int epfd, void* buffer, int max, const timespec* timeout, int timeout_ms, const sigset_t* mask,
         bool pwait2) {
  State& s = State::Get();
  bool inherited = false;
  std::shared_ptr<File> file = PollOf(s, epfd, &inherited);
  if (inherited) return RefuseInherited(epfd, "epoll_wait");
  if (file == nullptr) return -2;  // not ours
  Inside inside;
  auto* out = static_cast<epollcr::Event*>(buffer);
  EventPoll& poll = *file->AsEventPoll();
  epollcr::Result<int> n = max <= 0 || max > epollcr::kMaxEvents ? epollcr::Result<int>(epollcr::Errno(EINVAL))
                           : buffer == nullptr                   ? epollcr::Result<int>(epollcr::Errno(EFAULT))
                           : pwait2                              ? poll.PWait2(out, max, timeout, mask)
                                                                 : poll.PWait(out, max, timeout_ms, mask);
  if (!n.ok()) return Fail(n.error());
  s.waits.fetch_add(1, std::memory_order_relaxed);
  s.events.fetch_add(n.value(), std::memory_order_relaxed);
  return n.value();
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int epoll_create1(int flags) {
  if (depth > 0) {
    EPOLLCR_REAL(epoll_create1);
    return real_epoll_create1(flags);
  }
  if ((flags & ~EPOLL_CLOEXEC) != 0) {
    errno = EINVAL;
    return -1;
  }
  return CreatePoll(flags);
}

__attribute__((visibility("default"))) int epoll_create(int size) {
  if (depth > 0) {
    EPOLLCR_REAL(epoll_create);
    return real_epoll_create(size);
  }
  if (size <= 0) {
    errno = EINVAL;
    return -1;
  }
  return CreatePoll(0);
}

__attribute__((visibility("default"))) int epoll_ctl(int epfd, int op, int fd, epoll_event* event) {
  EPOLLCR_REAL(epoll_ctl);
  if (depth > 0) return real_epoll_ctl(epfd, op, fd, event);
  State& s = State::Get();
  bool inherited = false;
  if (PollOf(s, epfd, &inherited) == nullptr) {
    if (inherited) return RefuseInherited(epfd, "epoll_ctl");
    return real_epoll_ctl(epfd, op, fd, event);
  }
  Inside inside;
  // epoll_ctl(2) reads the event of every op but DEL (a bad op too) before it looks at either fd.
  const bool has_event = op != EPOLL_CTL_DEL;
  if (has_event && event == nullptr) {
    errno = EFAULT;
    return -1;
  }
  std::unique_lock lock(*s.mu);
  if (s.inherited.count(fd) != 0) ForgetLocked(s, fd);  // the parent's host file: this process wraps its own
  struct stat st {};
  const bool open = fd >= 0 && ::fstat(fd, &st) == 0;
  if (open && op == EPOLL_CTL_ADD) {
    auto it = s.identity.find(fd);
    if (it != s.identity.end() && it->second != std::make_pair(st.st_dev, st.st_ino)) ForgetLocked(s, fd);
  }
  if (open && s.fds->Get(fd) == nullptr) {
    epollcr::Result<std::shared_ptr<HostFile>> host = HostFile::Wrap(fd, st.st_mode & S_IFMT);
    if (!host.ok()) return Fail(host.error());
    if (std::error_code error = s.fds->InstallAt(fd, std::move(host).value())) {
      return Fail(error);
    }
    s.identity[fd] = {st.st_dev, st.st_ino};
    s.known.fetch_add(1, std::memory_order_relaxed);
  }
  epollcr::Event ev;
  if (has_event) {
    ev.events = event->events;
    ev.SetData(event->data.u64);
  }
  if (std::error_code error = epollcr::sys::EpollCtl(*s.fds, epfd, op, fd, has_event ? &ev : nullptr)) {
    return Fail(error);
  }
  return 0;
}

__attribute__((visibility("default"))) int epoll_wait(int epfd, epoll_event* events, int max, int timeout) {
  EPOLLCR_REAL(epoll_wait);
  if (depth > 0) return real_epoll_wait(epfd, events, max, timeout);
  const int n = Wait(epfd, events, max, nullptr, timeout, nullptr, false);
  return n != -2 ? n : real_epoll_wait(epfd, events, max, timeout);
}

__attribute__((visibility("default"))) int epoll_pwait(int epfd, epoll_event* events, int max, int timeout,
                                                       const sigset_t* mask) {
  EPOLLCR_REAL(epoll_pwait);
  if (depth > 0) return real_epoll_pwait(epfd, events, max, timeout, mask);
  const int n = Wait(epfd, events, max, nullptr, timeout, mask, false);
  return n != -2 ? n : real_epoll_pwait(epfd, events, max, timeout, mask);
}

__attribute__((visibility("default"))) int epoll_pwait2(int epfd, epoll_event* events, int max,
                                                        const timespec* timeout, const sigset_t* mask) {
  EPOLLCR_REAL(epoll_pwait2);
  if (depth > 0) return real_epoll_pwait2(epfd, events, max, timeout, mask);
  const int n = Wait(epfd, events, max, timeout, 0, mask, true);
  return n != -2 ? n : real_epoll_pwait2(epfd, events, max, timeout, mask);
}

__attribute__((visibility("default"))) int close(int fd) {
  EPOLLCR_REAL(close);
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0) return real_close(fd);
  {
    Inside inside;
    std::unique_lock lock(*s.mu);
    ForgetLocked(s, fd);
  }
  return real_close(fd);
}

__attribute__((visibility("default"))) int close_range(unsigned first, unsigned last, int flags) {
  EPOLLCR_REAL(close_range);
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0 || (flags & CLOSE_RANGE_CLOEXEC) != 0) {
    return real_close_range(first, last, flags);
  }
  Inside inside;
  std::unique_lock lock(*s.mu);
  std::vector<int> names;
  for (const auto& [fd, file] : s.fds->Snapshot()) names.push_back(fd);
  for (const auto& [fd, file] : s.inherited) names.push_back(fd);
  const int result = real_close_range(first, last, flags);
  if (result == 0) {
    for (int fd : names) {
      if (static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) ForgetLocked(s, fd);
    }
  }
  return result;
}

__attribute__((visibility("default"))) int dup(int old) {
  EPOLLCR_REAL(dup);
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0) return real_dup(old);
  Inside inside;
  std::unique_lock lock(*s.mu);
  const int fd = real_dup(old);
  if (fd >= 0) {
    ForgetLocked(s, fd);
    DupLocked(s, old, fd);
  }
  return fd;
}

namespace {
int Dup3(int old, int to, int flags, bool dup2) {
  EPOLLCR_REAL(dup3);
  static auto const real_dup2 = RealFunction<decltype(&::dup2)>("dup2");
  State& s = State::Get();
  auto call = [&] { return dup2 ? real_dup2(old, to) : real_dup3(old, to, flags); };
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0) return call();
  Inside inside;
  std::unique_lock lock(*s.mu);
  const int fd = call();
  if (fd >= 0 && old != to) {
    ForgetLocked(s, fd);  // dup2 closed what `to` was
    DupLocked(s, old, fd);
  }
  return fd;
}
}  // namespace

__attribute__((visibility("default"))) int dup2(int old, int to) { return Dup3(old, to, 0, true); }
__attribute__((visibility("default"))) int dup3(int old, int to, int flags) { return Dup3(old, to, flags, false); }

// fcntl and fcntl64 (what programs built with _FILE_OFFSET_BITS=64 call; this file is built so too, which makes the
// header's fcntl an alias of fcntl64): both symbols, by their assembler names.
int InterposedFcntl(int fd, int cmd, ...) __asm__("fcntl") __attribute__((visibility("default")));
int InterposedFcntl64(int fd, int cmd, ...) __asm__("fcntl64") __attribute__((visibility("default")));

namespace {
int Fcntl(int fd, int cmd, void* arg) {
  static auto const real_fcntl = RealFunction<int (*)(int, int, ...)>("fcntl64");
  if (real_fcntl == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  State& s = State::Get();
  if ((cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC) || depth > 0 || s.known.load(std::memory_order_relaxed) == 0) {
    return real_fcntl(fd, cmd, arg);
  }
  Inside inside;
  std::unique_lock lock(*s.mu);
  const int copy = real_fcntl(fd, cmd, arg);
  if (copy >= 0) {
    ForgetLocked(s, copy);
    DupLocked(s, fd, copy);
  }
  return copy;
}
}  // namespace

int InterposedFcntl(int fd, int cmd, ...) {
  va_list args;
  va_start(args, cmd);
  void* arg = va_arg(args, void*);  // every fcntl argument is passed as one word
  va_end(args);
  return Fcntl(fd, cmd, arg);
}

int InterposedFcntl64(int fd, int cmd, ...) {
  va_list args;
  va_start(args, cmd);
  void* arg = va_arg(args, void*);
  va_end(args);
  return Fcntl(fd, cmd, arg);
}

namespace {
// Before an exec: the program's epoll fds without FD_CLOEXEC would reach the new program as bare kernel epolls whose
// registrations carry epollcr's keys, not the program's data. Until polls cross an exec (docs/interposer.md,
// "Limits"), each is reported and closed on exec instead.
void BeforeExec() {
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0) return;
  Inside inside;
  std::unique_lock lock(*s.mu);
  for (const auto& [fd, file] : s.fds->Snapshot()) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (!IsPoll(file) || flags < 0 || (flags & FD_CLOEXEC) != 0) continue;
    Report("epollcr: exec in process %d: epoll fd %d has no FD_CLOEXEC; epollcr does not carry a poll across an "
           "exec yet, so it is closed on exec (docs/interposer.md, \"exec\")\n",
           static_cast<int>(::getpid()), fd);
    (void)::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
}
}  // namespace

__attribute__((visibility("default"))) int execve(const char* path, char* const argv[], char* const envp[]) {
  EPOLLCR_REAL(execve);
  BeforeExec();
  return real_execve(path, argv, envp);
}

__attribute__((visibility("default"))) int execv(const char* path, char* const argv[]) {
  EPOLLCR_REAL(execv);
  BeforeExec();
  return real_execv(path, argv);
}

__attribute__((visibility("default"))) int execvp(const char* file, char* const argv[]) {
  EPOLLCR_REAL(execvp);
  BeforeExec();
  return real_execvp(file, argv);
}

__attribute__((visibility("default"))) int execvpe(const char* file, char* const argv[], char* const envp[]) {
  EPOLLCR_REAL(execvpe);
  BeforeExec();
  return real_execvpe(file, argv, envp);
}

}  // extern "C"
