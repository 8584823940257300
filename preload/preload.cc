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
//   the exec family                   a poll whose fd crosses the exec crosses with its state: saved to a memfd
//                                     here, restored by the new program image (ExecRestore).
// A process with a poll answers `epollcr ps` on a socket of its own (inspect_server.h).
// A call on an fd that is not one of the program's epolls goes to the real function unchanged: the kernel answers.
//
// The library itself uses these functions (the kernel epolls, their duplicates, closes): a thread-local depth marks
// the calls made from inside, which go straight to the real function.
//
// EPOLLCR_RUN_LOG=FILE: one line per epoll instance made ("create PID FD") and, at exit, one per process
// ("exit PID polls N waits W events E raw R"), appended with O_APPEND (epollcr run --log).
#include <dlfcn.h>
#include <linux/audit.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
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
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/fd_table.h"
#include "epollcr/state.h"
#include "epollcr/host_file.h"
#include "epollcr/syscalls.h"
#include "image/codec.h"
#include "image/file.h"
#include "inspect_server.h"
#include "interposable.h"
#include "restore/resolvers.h"
#include "restore/restorer.h"

namespace {

using epollcr::EventPoll;
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

// ---- the epoll system calls the kernel answers ----

// The library's own epoll calls, and a program's calls on an fd that is not one of its epolls, reach the kernel as
// raw system calls tagged as the library's (epollcr::kOwnSyscallTag), not through libc's wrappers: under `epollcr
// run` a seccomp filter traps every epoll system call without the tag, which is a program's own raw call
// (OnRawSyscall). A wait that may block is a cancellation point, as libc's is.
int Own(long result) { return static_cast<int>(result); }

int OwnWait(long nr, int epfd, void* events, int max, long timeout, const sigset_t* mask, bool blocking) {
  int type = PTHREAD_CANCEL_DEFERRED;
  if (blocking) ::pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &type);
  const int n = Own(::syscall(nr, epollcr::OwnSyscallArg(epfd), events, max, timeout, mask, _NSIG / 8));
  const int error = errno;
  if (blocking) ::pthread_setcanceltype(type, nullptr);
  errno = error;
  return n;
}

int KernelCreate1(int flags) { return Own(::syscall(SYS_epoll_create1, epollcr::OwnSyscallArg(flags))); }
int KernelCreate(int size) { return Own(::syscall(SYS_epoll_create, epollcr::OwnSyscallArg(size))); }
int KernelCtl(int epfd, int op, int fd, epoll_event* event) {
  return Own(::syscall(SYS_epoll_ctl, epollcr::OwnSyscallArg(epfd), op, fd, event));
}
int KernelWait(int epfd, epoll_event* events, int max, int timeout) {
  return OwnWait(SYS_epoll_wait, epfd, events, max, timeout, nullptr, timeout != 0);
}
int KernelPwait(int epfd, epoll_event* events, int max, int timeout, const sigset_t* mask) {
  return OwnWait(SYS_epoll_pwait, epfd, events, max, timeout, mask, timeout != 0);
}
int KernelPwait2(int epfd, epoll_event* events, int max, const timespec* timeout, const sigset_t* mask) {
  const bool blocking = timeout == nullptr || timeout->tv_sec != 0 || timeout->tv_nsec != 0;
  return OwnWait(SYS_epoll_pwait2, epfd, events, max, reinterpret_cast<long>(timeout), mask, blocking);
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
  // The mirror: the program's epoll fds and the fds it registered, at their numbers (world->fds). Guarded by mu;
  // replaced in a forked child, and by the restore of polls that crossed an exec (ExecRestore).
  std::unique_ptr<epollcr::World> world = std::make_unique<epollcr::World>();
  // In a forked child: the parent's polls and host files, by fd, still open here. Their use is refused (the kernel
  // epoll is the parent's too); they are never torn down here.
  std::unordered_map<int, std::shared_ptr<File>> inherited;  // guarded by mu
  std::vector<std::shared_ptr<File>> kept;                   // leaked on purpose: the parent's, never torn down
  std::atomic<std::size_t> known{0};                         // fds in `fds` or `inherited`: 0 lets close go by
  // Each wrapped host file's device and inode when it was wrapped: an ADD checks that its fd still names that file
  // (one closed behind the interposer's back, by fclose or a raw system call, and reused is forgotten then).
  std::unordered_map<int, std::pair<dev_t, ino_t>> identity;  // guarded by mu

  // Polls that crossed an exec wait for the first interposed call (EnsureRestored).
  std::atomic<bool> pending{false};
  std::string crossed;  // the value of EPOLLCR_EXEC_IMAGE

  std::atomic<long> polls{0};
  std::atomic<long> waits{0};
  std::atomic<long> events{0};
  std::atomic<long> raw{0};  // a program's raw epoll system calls, answered by OnRawSyscall
  int log_fd = -1;
  int fd_floor = 64;  // the library's fds go at or above it (Init)
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

// Orphans (docs/interposer.md, "A registration outlives its fd"): host files whose fd the program closed while their
// open file description lived on elsewhere (a dup, a forked child's copy, an fd in flight), so that the kernel kept
// their registrations. Their entries stay, reporting what the kernel reports, until the description closes
// (PruneOrphansLocked) or the file comes back at its number (ReviveLocked). They are the world's roots named
// "orphan fd N #K" (N the number they had), so an image (ps, an exec) carries them as detached host files.
constexpr std::string_view kOrphanRoot = "orphan fd ";
std::size_t orphan_count = 0;  // guarded by mu
std::size_t prune_at = 16;     // guarded by mu: the count that prunes next
std::uint64_t orphan_serial = 0;  // guarded by mu

// The orphans' roots, in name order.
auto OrphanRoots(State& s) {
  auto first = s.world->roots.lower_bound(std::string(kOrphanRoot));
  auto last = first;
  while (last != s.world->roots.end() && last->first.starts_with(kOrphanRoot)) ++last;
  return std::pair{first, last};
}

int OrphanFd(const File& file) {
  std::optional<HostFile::Identity> was = static_cast<const HostFile&>(file).LastIdentity();
  return was ? was->fd : -1;
}

// The program's polls, from the table (under mu).
std::vector<std::shared_ptr<File>> PollsLocked(State& s) {
  std::vector<std::shared_ptr<File>> polls;
  for (auto& [fd, file] : s.world->fds.Snapshot()) {
    if (IsPoll(file)) polls.push_back(std::move(file));
  }
  return polls;
}

// Whether a kernel epoll of the program's polls still holds a registration of `file` made under number `fd`.
bool RegisteredLocked(State& s, File& file, int fd) {
  for (const std::shared_ptr<File>& poll : PollsLocked(s)) {
    const EventPoll& p = *poll->AsEventPoll();
    if (auto registration = p.KernelRegistrationOf({&file, fd}); registration && p.KernelHolds(*registration)) {
      return true;
    }
  }
  return false;
}

// Drops the orphans whose registrations the kernel no longer holds: their descriptions closed.
void PruneOrphansLocked(State& s) {
  auto [it, last] = OrphanRoots(s);
  while (it != last) {
    it = RegisteredLocked(s, *it->second, OrphanFd(*it->second)) ? std::next(it) : s.world->roots.erase(it);
  }
  auto [first, end] = OrphanRoots(s);
  orphan_count = static_cast<std::size_t>(std::distance(first, end));
  prune_at = 2 * orphan_count + 16;
}

// The table forgets `fd`, a number that no longer names the file the table holds there: the program closed it (close,
// close_range, the name dup2 or dup3 replaced), or it was closed behind the interposer's back (under mu, exclusive).
// A host file gives the fd number back (the library must not close it again); its entries leave their polls, unless
// its registrations outlived the fd (an orphan, above).
void ForgetLocked(State& s, int fd) {
  if (auto it = s.inherited.find(fd); it != s.inherited.end()) {
    s.kept.push_back(std::move(it->second));
    s.inherited.erase(it);
    s.known.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  std::shared_ptr<File> file = s.world->fds.Get(fd);
  if (file == nullptr) return;
  s.identity.erase(fd);
  if (auto* host = dynamic_cast<HostFile*>(file.get())) {
    (void)host->ReleaseFd();
    const int saved = errno;
    if (RegisteredLocked(s, *host, fd)) {
      host->MarkDetached();
      s.world->roots.emplace(std::string(kOrphanRoot) + std::to_string(fd) + " #" + std::to_string(++orphan_serial),
                             file);
      if (++orphan_count >= prune_at) PruneOrphansLocked(s);
    }
    errno = saved;
  }
  (void)s.world->fds.Close(fd);
  s.known.fetch_sub(1, std::memory_order_relaxed);
}

// `fd` (open, of device and inode `st`, not in the table) is an orphan's file back at its number (dup2 of another
// name of it, or an fd received again): the orphan takes the fd again, with all its entries. True if it was one.
bool ReviveLocked(State& s, int fd, const struct stat& st) {
  auto [it, last] = OrphanRoots(s);
  for (; it != last; ++it) {
    auto* host = static_cast<HostFile*>(it->second.get());
    std::optional<HostFile::Identity> was = host->LastIdentity();
    if (!was || was->fd != fd || was->dev != st.st_dev || was->ino != st.st_ino) continue;
    // The same inode; the same open file description only if a kernel epoll holds this file under `fd`.
    bool same = false;
    for (const std::shared_ptr<File>& poll : PollsLocked(s)) same = same || poll->AsEventPoll()->KernelHoldsFileAt(fd);
    if (!same || host->Reattach(fd)) continue;
    if (s.world->fds.InstallAt(fd, it->second)) {
      (void)host->ReleaseFd();
      host->MarkDetached();
      continue;
    }
    s.world->roots.erase(it);
    --orphan_count;
    return true;
  }
  return false;
}

// A new name `to` for what `from` is (dup and its kind), after the real call made it.
void DupLocked(State& s, int from, int to) {
  std::shared_ptr<File> file = s.world->fds.Get(from);
  if (!IsPoll(file)) return;  // a host file's other names are wrapped when they are registered
  if (!s.world->fds.InstallAt(to, file)) s.known.fetch_add(1, std::memory_order_relaxed);
}

// A call that makes a new name for `old` (dup, dup2, dup3, fcntl F_DUPFD*): the table follows what it made.
template <typename Call>
int NewName(int old, Call call) {
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0) return call();
  Inside inside;
  std::unique_lock lock(*s.mu);
  const int fd = call();
  if (fd >= 0 && fd != old) {
    ForgetLocked(s, fd);  // a name the call replaced (dup2), or a stale one the table still held
    DupLocked(s, old, fd);
  }
  return fd;
}

void AtForkPrepare() { State::Get().mu->lock(); }
void AtForkParent() { State::Get().mu->unlock(); }
// The child: every poll and host file is the parent's too (the kernel epolls are shared). They move aside, never to
// be torn down here; the child starts a table of its own.
void AtForkChild() {
  State& s = State::Get();
  Inside inside;
  for (auto& [fd, file] : s.world->fds.Snapshot()) {
    if (auto* host = dynamic_cast<HostFile*>(file.get())) (void)host->ReleaseFd();
    s.inherited[fd] = file;
  }
  orphan_count = 0;  // the parent's, in its world
  (void)s.world.release();  // leaked: its files are in `inherited`
  s.world = std::make_unique<epollcr::World>();
  s.known.store(s.inherited.size(), std::memory_order_relaxed);
  s.polls = 0;
  s.waits = 0;
  s.events = 0;
  s.mu = new std::shared_mutex();  // the parent's, locked, is left as it is
  epollcr::preload::ForgetInspectServerAfterFork();
}

// What `epollcr ps` gets (inspect_server.h): the table as a framed epollcr image. On the server's thread.
epollcr::Result<std::string> InspectImage() {
  State& s = State::Get();
  Inside inside;
  std::unique_lock lock(*s.mu);
  PruneOrphansLocked(s);
  // Each poll's kernel ready list, read just before the capture (EventPoll::KernelReadyKeys): the program's threads
  // cannot change a poll meanwhile (mu), only the files' readiness can.
  std::unordered_map<const File*, std::vector<std::uint64_t>> ready;
  for (const std::shared_ptr<File>& poll : PollsLocked(s)) {
    epollcr::Result<std::vector<std::uint64_t>> keys = poll->AsEventPoll()->KernelReadyKeys();
    if (keys.ok()) ready[poll.get()] = std::move(keys).value();
  }
  epollcr::Result<epollcr::v1::Image> image = epollcr::image::Capture(*s.world);
  if (!image.ok()) return image.status();
  // The capture numbers files in the order the table first reaches them: fd table ascending, then roots.
  std::unordered_map<std::uint64_t, const File*> by_id;
  for (const epollcr::v1::FdEntry& e : image.value().fds()) {
    if (std::shared_ptr<File> f = s.world->fds.Get(e.fd()); IsPoll(f)) by_id.emplace(e.file(), f.get());
  }
  for (epollcr::v1::File& f : *image.value().mutable_files()) {
    auto poll = by_id.find(f.id());
    auto keys = poll == by_id.end() ? ready.end() : ready.find(poll->second);
    if (!f.has_eventpoll() || keys == ready.end()) continue;
    epollcr::v1::EventPollState& p = *f.mutable_eventpoll();
    p.set_kernel_ready_read(true);
    std::unordered_map<std::uint64_t, std::uint32_t> column;
    for (int i = 0; i < p.kernel_keys_size(); ++i) column.emplace(p.kernel_keys(i), static_cast<std::uint32_t>(i));
    for (std::uint64_t key : keys->second) {
      if (auto at = column.find(key); at != column.end() && key != 0) p.add_kernel_ready_order(at->second);
    }
  }
  epollcr::Result<std::string> payload = epollcr::image::Encode(image.value());
  if (!payload.ok()) return payload.status();
  return epollcr::image::Frame(payload.value());
}

// Under mu (exclusive): the first poll of a process starts its inspection server.
void EnsureInspectServer(State& s) { epollcr::preload::StartInspectServer(s.fd_floor, InspectImage); }

void AtExit() {
  State& s = State::Get();
  Log("exit %d polls %ld waits %ld events %ld raw %ld\n", static_cast<int>(::getpid()), s.polls.load(),
      s.waits.load(), s.events.load(), s.raw.load());
}

// Polls across an exec: the environment variable that names what crossed it (below).
constexpr const char* kExecEnv = "EPOLLCR_EXEC_IMAGE";
void ExecRestore(State& s, const char* value);
// Raw system calls under `epollcr run` (below): the environment variable it sets, and the SIGSYS handler.
constexpr const char* kRawEnv = "EPOLLCR_RAW_SYSCALLS";
bool Trapping() {
  const char* mode = std::getenv(kRawEnv);
  return mode != nullptr && std::strcmp(mode, "emulate") == 0;
}
void OnRawSyscall(int signal, siginfo_t* info, void* context);

__attribute__((constructor)) void Init() {
  State& s = State::Get();
  Inside inside;
  // The library's own fds (each poll's kernel epoll, its bell; the log) go to the upper half of the fd limit, so that
  // the program's fds get the numbers the kernel would give them.
  rlimit limit{};
  const int floor =
      ::getrlimit(RLIMIT_NOFILE, &limit) == 0 ? static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 20) / 2) : 512;
  s.fd_floor = std::max(floor, 64);
  epollcr::SetInternalFdFloor(s.fd_floor);
  if (const char* log = std::getenv("EPOLLCR_RUN_LOG"); log != nullptr && *log != '\0') {
    const int fd = ::open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    const int high = fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, s.fd_floor) : -1;
    if (high >= 0) ::close(fd);
    s.log_fd = high >= 0 ? high : fd;
  }
  // Restored at the first interposed call rather than here: the image decoder's own static tables are initialized
  // by this library's other constructors, in an order no constructor of this file controls.
  if (const char* crossed = std::getenv(kExecEnv); crossed != nullptr) {
    s.crossed = crossed;
    ::unsetenv(kExecEnv);
    s.known.store(1, std::memory_order_relaxed);  // so that no call goes by before the restore
    s.pending.store(true, std::memory_order_release);
  }
  ::pthread_atfork(AtForkPrepare, AtForkParent, AtForkChild);
  if (Trapping()) {
    struct sigaction action {};
    action.sa_sigaction = OnRawSyscall;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    (void)::sigaction(SIGSYS, &action, nullptr);
  }
  std::atexit(AtExit);
}

// The restore of the polls that crossed an exec, once, at the first interposed call of the new program image.
void EnsureRestored() {
  State& s = State::Get();
  if (!s.pending.load(std::memory_order_acquire)) return;
  Inside inside;
  std::unique_lock lock(*s.mu);
  if (!s.pending.load(std::memory_order_relaxed)) return;
  ExecRestore(s, s.crossed.c_str());
  s.pending.store(false, std::memory_order_release);
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
  if (std::error_code error = s.world->fds.InstallAt(fd, poll)) {
    ::close(fd);
    return Fail(error);
  }
  s.known.fetch_add(1, std::memory_order_relaxed);
  s.polls.fetch_add(1, std::memory_order_relaxed);
  EnsureInspectServer(s);
  Log("create %d %d\n", static_cast<int>(::getpid()), fd);
  return fd;
}

// The poll behind `epfd`, or null (not one of the program's epolls: the real call answers).
std::shared_ptr<File> PollOf(State& s, int epfd, bool* inherited) {
  std::shared_lock lock(*s.mu);
  std::shared_ptr<File> file = s.world->fds.Get(epfd);
  if (IsPoll(file)) return file;
  auto it = s.inherited.find(epfd);
  *inherited = it != s.inherited.end() && IsPoll(it->second);
  return nullptr;
}

// `buffer`: the program's epoll_event array (the same layout as epollcr::Event; epoll_event is packed, and a program's
// array of them is 4-byte aligned).
int Wait(int epfd, void* buffer, int max, const timespec* timeout, int timeout_ms, const sigset_t* mask,
         bool pwait2) {
  if (depth == 0) EnsureRestored();
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
  if (depth == 0) EnsureRestored();
  if (depth > 0) {
    return KernelCreate1(flags);
  }
  if ((flags & ~EPOLL_CLOEXEC) != 0) {
    errno = EINVAL;
    return -1;
  }
  return CreatePoll(flags);
}

__attribute__((visibility("default"))) int epoll_create(int size) {
  if (depth == 0) EnsureRestored();
  if (depth > 0) {
    return KernelCreate(size);
  }
  if (size <= 0) {
    errno = EINVAL;
    return -1;
  }
  return CreatePoll(0);
}

__attribute__((visibility("default"))) int epoll_ctl(int epfd, int op, int fd, epoll_event* event) {
  if (depth == 0) EnsureRestored();
  if (depth > 0) return KernelCtl(epfd, op, fd, event);
  State& s = State::Get();
  bool inherited = false;
  if (PollOf(s, epfd, &inherited) == nullptr) {
    if (inherited) return RefuseInherited(epfd, "epoll_ctl");
    return KernelCtl(epfd, op, fd, event);
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
  // An fd the table holds needs no system call unless it is being added (is it still the file that was wrapped?);
  // any other is looked at once, to be wrapped.
  const bool held = fd >= 0 && s.world->fds.Get(fd) != nullptr;
  struct stat st {};
  const bool open = (held && op != EPOLL_CTL_ADD) || (fd >= 0 && ::fstat(fd, &st) == 0);
  if (held && open && op == EPOLL_CTL_ADD) {
    auto it = s.identity.find(fd);
    if (it != s.identity.end() && it->second != std::make_pair(st.st_dev, st.st_ino)) ForgetLocked(s, fd);
  }
  if (open && s.world->fds.Get(fd) == nullptr && ReviveLocked(s, fd, st)) {
    s.identity[fd] = {st.st_dev, st.st_ino};
    s.known.fetch_add(1, std::memory_order_relaxed);
  }
  if (open && s.world->fds.Get(fd) == nullptr) {
    HostFile::Identity identity;
    identity.fd = fd;
    identity.dev = st.st_dev;
    identity.ino = st.st_ino;
    identity.file_type = st.st_mode & S_IFMT;
    epollcr::Result<std::shared_ptr<HostFile>> host = HostFile::Wrap(identity);
    if (!host.ok()) return Fail(host.error());
    if (std::error_code error = s.world->fds.InstallAt(fd, std::move(host).value())) {
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
  if (std::error_code error = epollcr::sys::EpollCtl(s.world->fds, epfd, op, fd, has_event ? &ev : nullptr)) {
    return Fail(error);
  }
  return 0;
}

__attribute__((visibility("default"))) int epoll_wait(int epfd, epoll_event* events, int max, int timeout) {
  if (depth > 0) return KernelWait(epfd, events, max, timeout);
  const int n = Wait(epfd, events, max, nullptr, timeout, nullptr, false);
  return n != -2 ? n : KernelWait(epfd, events, max, timeout);
}

__attribute__((visibility("default"))) int epoll_pwait(int epfd, epoll_event* events, int max, int timeout,
                                                       const sigset_t* mask) {
  if (depth > 0) return KernelPwait(epfd, events, max, timeout, mask);
  const int n = Wait(epfd, events, max, nullptr, timeout, mask, false);
  return n != -2 ? n : KernelPwait(epfd, events, max, timeout, mask);
}

__attribute__((visibility("default"))) int epoll_pwait2(int epfd, epoll_event* events, int max,
                                                        const timespec* timeout, const sigset_t* mask) {
  if (depth > 0) return KernelPwait2(epfd, events, max, timeout, mask);
  const int n = Wait(epfd, events, max, timeout, 0, mask, true);
  return n != -2 ? n : KernelPwait2(epfd, events, max, timeout, mask);
}

__attribute__((visibility("default"))) int close(int fd) {
  if (depth == 0) EnsureRestored();
  EPOLLCR_REAL(close);
  if (depth == 0 && fd >= 0) epollcr::preload::StopInspectServerIfIn(fd, fd);
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0) return real_close(fd);
  Inside inside;
  std::unique_lock lock(*s.mu);
  // Closed first: whether the file's registrations outlive the fd is the kernel's answer after the close.
  const int result = real_close(fd);
  const int saved = errno;
  ForgetLocked(s, fd);
  errno = saved;
  return result;
}

__attribute__((visibility("default"))) int close_range(unsigned first, unsigned last, int flags) {
  if (depth == 0) EnsureRestored();
  EPOLLCR_REAL(close_range);
  if (depth == 0 && (flags & CLOSE_RANGE_CLOEXEC) == 0) epollcr::preload::StopInspectServerIfIn(first, last);
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0 || (flags & CLOSE_RANGE_CLOEXEC) != 0) {
    return real_close_range(first, last, flags);
  }
  Inside inside;
  std::unique_lock lock(*s.mu);
  std::vector<int> names;
  for (const auto& [fd, file] : s.world->fds.Snapshot()) names.push_back(fd);
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
  if (depth == 0) EnsureRestored();
  EPOLLCR_REAL(dup);
  return NewName(old, [&] { return real_dup(old); });
}

}  // extern "C"

namespace {
int Dup3(int old, int to, int flags, bool dup2) {
  if (depth == 0) EnsureRestored();
  EPOLLCR_REAL(dup3);
  static auto const real_dup2 = RealFunction<decltype(&::dup2)>("dup2");
  if (depth == 0 && to >= 0) epollcr::preload::StopInspectServerIfIn(to, to);
  return NewName(old, [&] { return dup2 ? real_dup2(old, to) : real_dup3(old, to, flags); });
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) int dup2(int old, int to) { return Dup3(old, to, 0, true); }
__attribute__((visibility("default"))) int dup3(int old, int to, int flags) { return Dup3(old, to, flags, false); }

// fcntl and fcntl64 (what programs built with _FILE_OFFSET_BITS=64 call; this file is built so too, which makes the
// header's fcntl an alias of fcntl64): both symbols, by their assembler names.
int InterposedFcntl(int fd, int cmd, ...) __asm__("fcntl") __attribute__((visibility("default")));
int InterposedFcntl64(int fd, int cmd, ...) __asm__("fcntl64") __attribute__((visibility("default")));

}  // extern "C"

namespace {
int Fcntl(int fd, int cmd, void* arg) {
  if (depth == 0) EnsureRestored();
  static auto const real_fcntl = RealFunction<int (*)(int, int, ...)>("fcntl64");
  if (real_fcntl == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  if (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC) return real_fcntl(fd, cmd, arg);
  return NewName(fd, [&] { return real_fcntl(fd, cmd, arg); });
}
}  // namespace

extern "C" {

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

}  // extern "C"

namespace {

// Polls across an exec (docs/interposer.md, "exec"). The old program image saves its table as an epollcr image into a
// memfd and lets the memfd and its polls' kernel epolls cross the exec; the environment variable names them:
// "EPOLLCR_EXEC_IMAGE=MEMFD KERNEL,FD,... POLL,FD,...". The new image restores before main (ExecRestore): each poll
// takes its kernel epoll over as it is when it finds it as recorded, or registers afresh.
std::string JoinFds(const std::vector<int>& fds) {
  std::string text;
  for (int fd : fds) text += (text.empty() ? "" : ",") + std::to_string(fd);
  return text.empty() ? "-" : text;
}

std::vector<int> SplitFds(const std::string& text) {
  std::vector<int> fds;
  std::size_t start = 0;
  while (text != "-" && start < text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    fds.push_back(std::atoi(text.substr(start, end - start).c_str()));
    start = end + 1;
  }
  return fds;
}

// What one exec attempt carries; Undo puts everything back when the exec fails.
struct Crossing {
  int memfd = -1;
  std::vector<int> kernel;  // FD_CLOEXEC cleared for the exec
  std::string env;          // "EPOLLCR_EXEC_IMAGE=..."

  void Undo() {
    for (int fd : kernel) (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (memfd >= 0) ::close(memfd);
    memfd = -1;
    kernel.clear();
  }
};

// Under mu (exclusive), before an exec. Nothing to carry unless one of the program's epoll fds lacks FD_CLOEXEC.
Crossing PrepareExec(State& s) {
  Crossing crossing;
  PruneOrphansLocked(s);
  std::vector<int> polls;
  for (const auto& [fd, file] : s.world->fds.Snapshot()) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (IsPoll(file) && flags >= 0 && (flags & FD_CLOEXEC) == 0) polls.push_back(fd);
  }
  if (polls.empty()) return crossing;
  epollcr::Result<std::string> image = epollcr::image::SaveImage(*s.world);
  const int memfd = image.ok() ? static_cast<int>(::syscall(SYS_memfd_create, "epollcr-exec-image", 0)) : -1;
  std::size_t written = 0;
  while (memfd >= 0 && written < image.value().size()) {
    const ssize_t n = ::write(memfd, image.value().data() + written, image.value().size() - written);
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  if (memfd < 0 || written != image.value().size()) {
    if (memfd >= 0) ::close(memfd);
    Report("epollcr: exec in process %d: the epolls cannot be carried across it (%s); epoll fds %s are closed on "
           "exec instead\n",
           static_cast<int>(::getpid()), image.ok() ? std::strerror(errno) : image.status().message.c_str(),
           JoinFds(polls).c_str());
    for (int fd : polls) (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
    return crossing;
  }
  crossing.memfd = memfd;
  for (int fd : epollcr::KernelResources(*s.world)) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) != 0) continue;
    crossing.kernel.push_back(fd);
  }
  crossing.env = std::string(kExecEnv) + "=" + std::to_string(memfd) + " " + JoinFds(crossing.kernel) + " " +
                 JoinFds(polls);
  return crossing;
}

// In the new program image, before main: the polls that crossed the exec, back in the table.
void ExecRestore(State& s, const char* value) {
  char memfd_text[32] = {0};
  char kernel_text[4096] = {0};
  char polls_text[4096] = {0};
  if (std::sscanf(value, "%31s %4095s %4095s", memfd_text, kernel_text, polls_text) != 3) return;
  const int memfd = std::atoi(memfd_text);
  const std::vector<int> kernel = SplitFds(kernel_text);
  const std::vector<int> polls = SplitFds(polls_text);
  std::string bytes;
  char buffer[1 << 16];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(memfd, buffer, sizeof buffer, at);
    if (n <= 0) break;
    bytes.append(buffer, static_cast<std::size_t>(n));
    at += n;
  }
  ::close(memfd);
  (void)epollcr::AcceptInherited(kernel);
  auto world = std::make_unique<epollcr::World>();
  epollcr::restore::InheritedFdResolver inherited;
  epollcr::restore::Options options;
  options.policy = epollcr::restore::Policy::kPrune;  // a registered fd closed on exec leaves its polls
  options.resolvers = {&inherited};
  const epollcr::Status status = epollcr::restore::RestoreBytes(bytes, world.get(), options);
  epollcr::CloseUnadopted(kernel);
  if (!status.ok()) {
    Report("epollcr: process %d: the epolls that crossed the exec cannot be restored (%s); epoll fds %s are closed\n",
           static_cast<int>(::getpid()), status.message.c_str(), polls_text);
    for (int fd : polls) ::close(fd);
    return;
  }
  std::size_t known = 0;
  for (const auto& [fd, file] : world->fds.Snapshot()) {
    if (::fcntl(fd, F_GETFD) < 0) {  // closed on exec
      if (auto* host = dynamic_cast<HostFile*>(file.get())) (void)host->ReleaseFd();
      (void)world->fds.Close(fd);
      continue;
    }
    ++known;
    if (EventPoll* poll = file->AsEventPoll()) {
      // The program's fd names the poll's kernel epoll: the one taken over, or the one registered afresh.
      if (epollcr::Result<int> k = poll->Fd(); k.ok() && k.value() != fd) (void)::dup2(k.value(), fd);
      continue;
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0) s.identity[fd] = {st.st_dev, st.st_ino};
  }
  s.world = std::move(world);
  s.known.store(known, std::memory_order_relaxed);
  PruneOrphansLocked(s);  // the orphans that crossed the exec (detached host files), as roots
  EnsureInspectServer(s);
  Log("restore %d polls %zu\n", static_cast<int>(::getpid()), polls.size());
}

// Under the raw-syscall trap (OnRawSyscall), an exec of a program that the interposer will not reach is reported: an
// epoll system call there raises SIGSYS with no handler to answer it, which ends the program. `path`: the program's
// file (a name to look up in PATH when `search`); `fd`: fexecve's descriptor instead (or -1).
void ReportUninterposedExec(const char* path, bool search, int fd, char* const* envp) {
  if (!Trapping()) return;
  bool preloaded = false;
  for (char* const* e = envp != nullptr ? envp : environ; e != nullptr && *e != nullptr; ++e) {
    preloaded = preloaded || (std::strncmp(*e, "LD_PRELOAD=", 11) == 0 && std::strstr(*e, "libepollcr-preload"));
  }
  std::string file = fd >= 0 ? "/proc/self/fd/" + std::to_string(fd)
                     : path == nullptr ? ""
                     : search ? epollcr::preload::FindProgram(path)
                              : std::string(path);
  const int opened = file.empty() ? -1 : ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (opened < 0) return;  // the exec fails too, and says why
  std::string why = epollcr::preload::WhyNotInterposable(opened);
  ::close(opened);
  if (why.empty() && !preloaded) why = "its environment's LD_PRELOAD does not name libepollcr-preload.so";
  if (why.empty()) return;
  Report("epollcr: process %d execs %s, which epollcr cannot interpose (%s): under epollcr run an epoll system call "
         "there ends it with SIGSYS (docs/interposer.md, \"Raw system calls\")\n",
         static_cast<int>(::getpid()), path != nullptr ? path : file.c_str(), why.c_str());
}

// An exec through `call`, which gets the environment to use (null: the process's own, which then holds the
// variable while the exec is tried).
template <typename Call>
int Exec(char* const* envp, Call call) {
  if (depth == 0) EnsureRestored();
  State& s = State::Get();
  if (depth > 0 || s.known.load(std::memory_order_relaxed) == 0) return call(envp);
  Inside inside;
  std::unique_lock lock(*s.mu);  // held across the exec: no thread changes a poll between the save and the exec
  Crossing crossing = PrepareExec(s);
  if (crossing.memfd < 0) return call(envp);
  std::vector<char*> env;
  char* const* source = envp != nullptr ? envp : environ;
  for (char* const* e = source; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, kExecEnv, std::strlen(kExecEnv)) != 0) env.push_back(*e);
  }
  env.push_back(crossing.env.data());
  env.push_back(nullptr);
  const int result = call(env.data());
  const int error = errno;
  crossing.Undo();  // the exec failed: this program goes on with its polls as they were
  errno = error;
  return result;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int execve(const char* path, char* const argv[], char* const envp[]) {
  EPOLLCR_REAL(execve);
  ReportUninterposedExec(path, false, -1, envp);
  return Exec(envp, [&](char* const* env) { return real_execve(path, argv, env); });
}

__attribute__((visibility("default"))) int execv(const char* path, char* const argv[]) {
  EPOLLCR_REAL(execve);
  ReportUninterposedExec(path, false, -1, nullptr);
  return Exec(nullptr, [&](char* const* env) { return real_execve(path, argv, env != nullptr ? env : environ); });
}

__attribute__((visibility("default"))) int execvpe(const char* file, char* const argv[], char* const envp[]) {
  EPOLLCR_REAL(execvpe);
  ReportUninterposedExec(file, true, -1, envp);
  return Exec(envp, [&](char* const* env) { return real_execvpe(file, argv, env); });
}

}  // extern "C"

namespace {
// The arguments of execl, execle and execlp after `first`, up to the null one; with `envp`, the environment after it.
std::vector<char*> VarArgs(const char* first, va_list args, char* const** envp) {
  std::vector<char*> argv = {const_cast<char*>(first)};
  while (argv.back() != nullptr) argv.push_back(va_arg(args, char*));
  if (envp != nullptr) *envp = va_arg(args, char* const*);
  return argv;
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) int execl(const char* path, const char* arg, ...) {
  va_list args;
  va_start(args, arg);
  std::vector<char*> argv = VarArgs(arg, args, nullptr);
  va_end(args);
  return execv(path, argv.data());
}

__attribute__((visibility("default"))) int execle(const char* path, const char* arg, ...) {
  va_list args;
  va_start(args, arg);
  char* const* envp = nullptr;
  std::vector<char*> argv = VarArgs(arg, args, &envp);
  va_end(args);
  return execve(path, argv.data(), envp);
}

__attribute__((visibility("default"))) int execlp(const char* file, const char* arg, ...) {
  va_list args;
  va_start(args, arg);
  std::vector<char*> argv = VarArgs(arg, args, nullptr);
  va_end(args);
  return execvp(file, argv.data());
}

__attribute__((visibility("default"))) int fexecve(int fd, char* const argv[], char* const envp[]) {
  EPOLLCR_REAL(fexecve);
  ReportUninterposedExec(nullptr, false, fd, envp);
  return Exec(envp, [&](char* const* env) { return real_fexecve(fd, argv, env); });
}

__attribute__((visibility("default"))) int execvp(const char* file, char* const argv[]) {
  EPOLLCR_REAL(execvpe);
  ReportUninterposedExec(file, true, -1, nullptr);
  return Exec(nullptr, [&](char* const* env) { return real_execvpe(file, argv, env != nullptr ? env : environ); });
}

}  // extern "C"

namespace {

// ---- raw system calls (docs/interposer.md, "Raw system calls") ----

// Under `epollcr run` (--raw-syscalls emulate, the default) a seccomp filter turns every epoll system call that lacks
// the library's tag into a SIGSYS at the instruction that made it: a program's own raw call (syscall(2), or a
// runtime's own system call instruction). This handler answers it with the interposed function, so the program gets
// what its libc call would have given: the result in rax, -errno on failure (errno is the program's to set, as after
// any system call). io_uring_setup is refused (ENOSYS): an io_uring's poll and epoll requests reach the kernel epoll
// behind the program's fd, where nothing can interpose them. A SIGSYS that is not the filter's has its default action.
void ReportOnce(std::atomic<bool>& done, const char* format, long number) {
  if (!done.exchange(true)) Report(format, static_cast<int>(::getpid()), number);
}

// The system calls the filter traps (preload/raw_syscall_trap.h), by their 64-bit numbers.
bool Trapped(long nr) {
  switch (nr) {
    case SYS_epoll_create:
    case SYS_epoll_create1:
    case SYS_epoll_ctl:
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
    case SYS_io_uring_setup: return true;
  }
  return false;
}

long Answer(const siginfo_t& info, const greg_t* r) {
  static std::atomic<bool> io_uring{false}, foreign{false}, inside{false};
  if (info.si_arch != AUDIT_ARCH_X86_64) {
    ReportOnce(foreign,
               "epollcr: process %d made the 32-bit epoll system call %ld (int 0x80): epollcr answers 64-bit calls "
               "only; refused (ENOSYS)\n",
               info.si_syscall);
    errno = ENOSYS;
    return -1;
  }
  if (depth > 0) {  // the library's own calls are tagged: this one escaped the tag
    ReportOnce(inside, "epollcr: process %d: an untagged system call %ld from inside the interposer; refused\n",
               info.si_syscall);
    errno = ENOSYS;
    return -1;
  }
  State::Get().raw.fetch_add(1, std::memory_order_relaxed);
  const auto arg = [&](int reg) { return static_cast<long>(r[reg]); };
  const auto fd = [&](int reg) { return static_cast<int>(r[reg]); };  // an int argument: the lower half
  auto* events = reinterpret_cast<epoll_event*>(arg(REG_RSI));
  auto* mask = reinterpret_cast<const sigset_t*>(arg(REG_R8));
  const bool bad_mask_size = mask != nullptr && static_cast<unsigned long>(arg(REG_R9)) != _NSIG / 8;
  switch (info.si_syscall) {
    case SYS_epoll_create: return epoll_create(fd(REG_RDI));
    case SYS_epoll_create1: return epoll_create1(fd(REG_RDI));
    case SYS_epoll_ctl:
      return epoll_ctl(fd(REG_RDI), fd(REG_RSI), fd(REG_RDX), reinterpret_cast<epoll_event*>(arg(REG_R10)));
    case SYS_epoll_wait: return epoll_wait(fd(REG_RDI), events, fd(REG_RDX), fd(REG_R10));
    case SYS_epoll_pwait:
      if (bad_mask_size) break;
      return epoll_pwait(fd(REG_RDI), events, fd(REG_RDX), fd(REG_R10), mask);
    case SYS_epoll_pwait2:
      if (bad_mask_size) break;
      return epoll_pwait2(fd(REG_RDI), events, fd(REG_RDX), reinterpret_cast<const timespec*>(arg(REG_R10)), mask);
    case SYS_io_uring_setup:
      ReportOnce(io_uring,
                 "epollcr: process %d set up an io_uring (system call %ld): its poll and epoll requests would bypass "
                 "epollcr, so it is refused (ENOSYS); epollcr run --raw-syscalls kernel lets it through\n",
                 info.si_syscall);
      errno = ENOSYS;
      return -1;
  }
  errno = EINVAL;  // a signal mask of the wrong size, as the kernel says
  return -1;
}

constexpr int kBySeccomp = 1;  // SYS_SECCOMP, the si_code of a filter's SIGSYS (glibc's headers lack it)

void OnRawSyscall(int signal, siginfo_t* info, void* context) {
  // Not the filter's (kill -SYS, or another filter's trap): what SIGSYS does without a handler.
  if (info->si_code != kBySeccomp || (info->si_arch == AUDIT_ARCH_X86_64 && !Trapped(info->si_syscall))) {
    ::signal(signal, SIG_DFL);
    ::raise(signal);
    return;
  }
  greg_t* registers = static_cast<ucontext_t*>(context)->uc_mcontext.gregs;
  const int saved = errno;
  const long result = Answer(*info, registers);
  registers[REG_RAX] = result < 0 ? -errno : result;
  errno = saved;
}

}  // namespace
