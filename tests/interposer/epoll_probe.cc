// A program that knows nothing of epollcr: it calls the epoll system calls through libc, as any program does, and
// prints one line per step. tests/interposer/interposer_test.cc runs it twice, on the kernel's epoll and under
// `epollcr run` (libepollcr-preload.so), and the two outputs must be the same: the kernel is the oracle.
//
// Usage: epoll_probe [raw | mixed] [SEED | fork | exec | hold [close-all] | order FILE], or epoll_probe io_uring | then PROG [ARGS].
// `raw` makes the scenarios' epoll calls raw system calls, `mixed` each call either way (Create1 and its kind, below).
// `io_uring` tries to set up an io_uring; `then` execs PROG. Without an argument it runs the fixed scenarios (errors,
// dup and close, registrations that outlive their fd, nesting, signals, the epoll fd under poll(2)); with a seed, a random sequence of operations on pipes,
// socket pairs and eventfds; `fork`, an epoll shared by a parent and its child; `exec`, an epoll that crosses an exec;
// `hold`, two epolls in a known state (a level-triggered ready entry, a taken edge, a fired one-shot, an idle entry,
// one epoll in the other), kept until standard input ends: `epollcr ps` looks at them (`close-all`: after an epoll
// and then every fd from 3 up were closed, as a daemon does).
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

int step = 0;

// How the scenarios call epoll: through libc, as most programs do (the default); as raw system calls ("raw": a
// program with system call wrappers of its own, or a language runtime); or each call either way at random
// ("mixed", the same choices in every run).
enum class Calls { kLibc, kRaw, kMixed };
Calls calls = Calls::kLibc;
std::mt19937 mixer(11);
bool Raw() { return calls == Calls::kRaw || (calls == Calls::kMixed && mixer() % 2 == 0); }

int Create1(int flags) {
  return Raw() ? static_cast<int>(syscall(SYS_epoll_create1, long{flags})) : epoll_create1(flags);
}
int Create(int size) { return Raw() ? static_cast<int>(syscall(SYS_epoll_create, long{size})) : epoll_create(size); }
int EpollCtl(int ep, int op, int fd, epoll_event* event) {
  return Raw() ? static_cast<int>(syscall(SYS_epoll_ctl, long{ep}, long{op}, long{fd}, event))
               : epoll_ctl(ep, op, fd, event);
}
int EpollWait(int ep, epoll_event* events, int max, int timeout) {
  return Raw() ? static_cast<int>(syscall(SYS_epoll_wait, long{ep}, events, long{max}, long{timeout}))
               : epoll_wait(ep, events, max, timeout);
}
int Pwait(int ep, epoll_event* events, int max, int timeout, const sigset_t* mask) {
  return Raw() ? static_cast<int>(syscall(SYS_epoll_pwait, long{ep}, events, long{max}, long{timeout}, mask, _NSIG / 8))
               : epoll_pwait(ep, events, max, timeout, mask);
}
int Pwait2(int ep, epoll_event* events, int max, const timespec* timeout, const sigset_t* mask) {
  return Raw() ? static_cast<int>(syscall(SYS_epoll_pwait2, long{ep}, events, long{max}, timeout, mask, _NSIG / 8))
               : epoll_pwait2(ep, events, max, timeout, mask);
}

// "N what: ok" or "N what: err ENAME".
void Say(const char* what, int result) {
  ++step;
  if (result >= 0) {
    std::printf("%d %s: ok\n", step, what);
  } else {
    std::printf("%d %s: err %s\n", step, what, strerrorname_np(errno));
  }
}

int Ctl(int ep, int op, int fd, std::uint32_t events, std::uint64_t data) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = data;
  return EpollCtl(ep, op, fd, &ev);
}

// Prints what a wait returns: its count and each event as EVENTS@DATA (hex), in order.
void Wait(const char* what, int ep, int max, int timeout) {
  std::vector<epoll_event> events(static_cast<std::size_t>(std::max(max, 1)));
  const int n = EpollWait(ep, events.data(), max, timeout);
  ++step;
  if (n < 0) {
    std::printf("%d %s: err %s\n", step, what, strerrorname_np(errno));
    return;
  }
  std::printf("%d %s: %d", step, what, n);
  for (int i = 0; i < n; ++i) {
    std::printf(" %x@%llx", events[static_cast<std::size_t>(i)].events,
                static_cast<unsigned long long>(events[static_cast<std::size_t>(i)].data.u64));
  }
  std::printf("\n");
}

void Readable(const char* what, int fd) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  const int n = poll(&p, 1, 0);
  ++step;
  std::printf("%d %s: poll %d revents %x\n", step, what, n, static_cast<unsigned>(p.revents));
}

void OnSignal(int) {}

void Errors() {
  const int ep = Create1(EPOLL_CLOEXEC);
  int p[2];
  (void)pipe2(p, O_NONBLOCK | O_CLOEXEC);
  Say("create1 with a bad flag", Create1(1));
  Say("create with size 0", Create(0));
  Say("ctl on a closed epfd", Ctl(1000, EPOLL_CTL_ADD, p[0], EPOLLIN, 1));
  Say("ctl of a closed fd", Ctl(ep, EPOLL_CTL_ADD, 1000, EPOLLIN, 1));
  Say("ctl of itself", Ctl(ep, EPOLL_CTL_ADD, ep, EPOLLIN, 1));
  Say("ctl on a pipe as epfd", Ctl(p[0], EPOLL_CTL_ADD, p[1], EPOLLOUT, 1));
  char path[] = "/tmp/epoll-probe-XXXXXX";
  const int regular = mkstemp(path);
  unlink(path);
  Say("ctl of a regular file", Ctl(ep, EPOLL_CTL_ADD, regular, EPOLLIN, 1));
  Say("add", Ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 7));
  Say("add again", Ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 7));
  Say("mod of an unregistered fd", Ctl(ep, EPOLL_CTL_MOD, p[1], EPOLLOUT, 1));
  Say("del of an unregistered fd", Ctl(ep, EPOLL_CTL_DEL, p[1], 0, 0));
  Say("bad op", Ctl(ep, 99, p[0], EPOLLIN, 1));
  Say("add with a null event", EpollCtl(ep, EPOLL_CTL_ADD, p[1], nullptr));
  Say("exclusive with mod", Ctl(ep, EPOLL_CTL_MOD, p[0], EPOLLIN | EPOLLEXCLUSIVE, 1));
  Say("exclusive with oneshot", Ctl(ep, EPOLL_CTL_ADD, p[1], EPOLLOUT | EPOLLEXCLUSIVE | EPOLLONESHOT, 1));
  epoll_event one{};
  ++step;
  std::printf("%d wait with max 0: %s\n", step, EpollWait(ep, &one, 0, 0) < 0 ? strerrorname_np(errno) : "ok");
  ++step;
  std::printf("%d wait on a pipe: %s\n", step, EpollWait(p[0], &one, 1, 0) < 0 ? strerrorname_np(errno) : "ok");
  // A loop of nested epolls.
  const int a = Create1(0);
  const int b = Create1(0);
  Say("nest b in a", Ctl(a, EPOLL_CTL_ADD, b, EPOLLIN, 2));
  Say("nest a in b", Ctl(b, EPOLL_CTL_ADD, a, EPOLLIN, 3));
  close(a);
  close(b);
  close(regular);
  close(p[0]);
  close(p[1]);
  close(ep);
}

void Readiness() {
  const int ep = Create1(0);
  int s[2];
  (void)socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s);
  const int ev = eventfd(0, EFD_NONBLOCK);
  Say("add s0 in|et", Ctl(ep, EPOLL_CTL_ADD, s[0], EPOLLIN | EPOLLET | EPOLLRDHUP, 1));
  Say("add ev in oneshot", Ctl(ep, EPOLL_CTL_ADD, ev, EPOLLIN | EPOLLONESHOT, 2));
  Say("add s1 out", Ctl(ep, EPOLL_CTL_ADD, s[1], EPOLLOUT, 3));
  Wait("wait: s1 writable", ep, 8, 0);
  Readable("the epoll fd under poll", ep);
  std::uint64_t one = 1;
  (void)!write(ev, &one, sizeof one);
  (void)!write(s[1], "abc", 3);
  Wait("wait: three ready", ep, 8, 0);
  Wait("wait: the edge is taken, the one-shot disarmed", ep, 8, 0);
  Say("mod s1 to nothing", Ctl(ep, EPOLL_CTL_MOD, s[1], 0, 3));
  Wait("wait: nothing", ep, 8, 0);
  Readable("the epoll fd under poll, nothing ready", ep);
  Say("rearm ev", Ctl(ep, EPOLL_CTL_MOD, ev, EPOLLIN | EPOLLONESHOT, 4));
  Wait("wait: the re-armed one-shot", ep, 8, 0);
  // A dup keeps the registration of a closed fd alive: the kernel goes on reporting it.
  const int copy = dup(s[0]);
  shutdown(s[1], SHUT_WR);
  Wait("wait: rdhup on s0", ep, 8, 0);
  close(s[1]);
  Say("del of a closed fd", Ctl(ep, EPOLL_CTL_DEL, s[1], 0, 0));
  close(copy);
  // The epoll fd nested in a kernel-made epoll watcher and under poll.
  const int outer = Create1(0);
  Say("add the epoll to another", Ctl(outer, EPOLL_CTL_ADD, ep, EPOLLIN, 9));
  Wait("outer wait", outer, 8, 0);
  (void)!write(ev, &one, sizeof one);
  Say("rearm ev again", Ctl(ep, EPOLL_CTL_MOD, ev, EPOLLIN | EPOLLONESHOT, 5));
  Wait("outer wait: the inner one is ready", outer, 8, 0);
  Wait("inner wait", ep, 8, 0);
  // dup of an epoll fd is the same epoll.
  const int ep2 = dup(ep);
  Say("ctl through the dup", Ctl(ep2, EPOLL_CTL_MOD, ev, EPOLLIN, 6));
  Wait("wait through the first name", ep, 8, 0);
  close(ep);
  Wait("wait through the dup after the first is closed", ep2, 8, 0);
  const int ep3 = fcntl(ep2, F_DUPFD_CLOEXEC, 100);
  Say("fcntl dup is >= 100", ep3 >= 100 ? 0 : -1);
  Wait("wait through the fcntl dup", ep3, 8, 0);
  close(ep2);
  close(ep3);
  close(outer);
  close(s[0]);
  close(ev);
}

// A registration lives with the open file description, not the fd (epoll(7), questions 6 and 7): a registered fd
// closed while another fd holds its file (a dup, a forked child's copy) stays registered and goes on reporting under
// its data, until the file's last fd closes; the file back at that number (dup2) finds it registered again.
void Orphans() {
  const int ep = Create1(0);
  int p[2];
  (void)pipe2(p, O_NONBLOCK);
  Say("add the pipe", Ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 0x61));
  const int copy = dup(p[0]);
  Say("close the registered fd while a dup holds its file", close(p[0]));
  (void)!write(p[1], "a", 1);
  Wait("wait: the registration outlived its fd", ep, 8, 0);
  Say("mod of the closed fd", Ctl(ep, EPOLL_CTL_MOD, p[0], EPOLLIN, 0x62));
  Say("del of the closed fd", Ctl(ep, EPOLL_CTL_DEL, p[0], 0, 0));
  int q[2];
  (void)pipe2(q, O_NONBLOCK);
  Say("another file takes the number", q[0] == p[0] ? 0 : -1);
  Say("mod of the new file there", Ctl(ep, EPOLL_CTL_MOD, q[0], EPOLLIN, 0x63));
  Say("add the new file there", Ctl(ep, EPOLL_CTL_ADD, q[0], EPOLLIN, 0x64));
  (void)!write(q[1], "b", 1);
  Wait("wait: both, each under its data", ep, 8, 0);
  Say("dup2 the first file back to its number", dup2(copy, p[0]));
  Wait("wait: the replaced file's registration went with it", ep, 8, 0);
  Say("add it again", Ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 0x65));
  Say("mod it to edge-triggered", Ctl(ep, EPOLL_CTL_MOD, p[0], EPOLLIN | EPOLLET, 0x66));
  Wait("wait: the edge under the new data", ep, 8, 0);
  Wait("wait: the edge was taken", ep, 8, 0);
  Say("del it", Ctl(ep, EPOLL_CTL_DEL, p[0], 0, 0));
  Wait("wait: deleted", ep, 8, 0);
  // The last fd closes: the registration goes.
  Say("add the dup, level-triggered", Ctl(ep, EPOLL_CTL_ADD, copy, EPOLLIN, 0x67));
  Say("close the dup while the other name holds the file", close(copy));
  Wait("wait: still registered", ep, 8, 0);
  Say("close the file's last fd", close(p[0]));
  Wait("wait: gone with the file", ep, 8, 0);
  // close_range and dup2 over a registered name, a copy kept far away.
  int t[2];
  (void)pipe2(t, O_NONBLOCK);
  Say("add another pipe", Ctl(ep, EPOLL_CTL_ADD, t[0], EPOLLIN | EPOLLONESHOT, 0x68));
  const int far = fcntl(t[0], F_DUPFD, 200);
  Say("close_range over the registered fd", close_range(static_cast<unsigned>(t[0]), static_cast<unsigned>(t[0]), 0));
  (void)!write(t[1], "c", 1);
  Wait("wait: the one-shot fires", ep, 8, 0);
  Say("dup2 it back", dup2(far, t[0]));
  Say("re-arm it", Ctl(ep, EPOLL_CTL_MOD, t[0], EPOLLIN, 0x69));
  const int ev = eventfd(1, EFD_NONBLOCK);
  Say("dup2 an eventfd over the registered name", dup2(ev, t[0]));
  Wait("wait: the pipe still reports", ep, 8, 0);
  Say("add the eventfd under that name", Ctl(ep, EPOLL_CTL_ADD, t[0], EPOLLIN, 0x6a));
  Wait("wait: both", ep, 8, 0);
  // A forked child's copy keeps the registration until the child exits.
  int s[2];
  (void)socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s);
  int go[2];
  (void)pipe(go);
  Say("add a socket", Ctl(ep, EPOLL_CTL_ADD, s[0], EPOLLIN | EPOLLRDHUP, 0x6b));
  std::fflush(stdout);
  const pid_t child = fork();
  if (child == 0) {
    close(go[1]);
    char byte;
    (void)!read(go[0], &byte, 1);
    _exit(0);
  }
  close(go[0]);
  Say("close it while the child holds it", close(s[0]));
  (void)!write(s[1], "d", 1);
  Wait("wait: the child's copy keeps it registered", ep, 8, 0);
  close(go[1]);
  int status = 0;
  Say("the child exits", waitpid(child, &status, 0) == child ? 0 : -1);
  Wait("wait: gone with the child's copy", ep, 8, 0);
  close(s[1]);
  close(t[0]);
  close(t[1]);
  close(far);
  close(ev);
  close(q[1]);
  close(p[1]);
  close(ep);
}

void Signals() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // epoll_wait is never restarted
  sigaction(SIGUSR1, &action, nullptr);
  const int ep = Create1(0);
  timer_t timer;
  sigevent sev{};
  sev.sigev_notify = SIGEV_SIGNAL;
  sev.sigev_signo = SIGUSR1;
  timer_create(CLOCK_MONOTONIC, &sev, &timer);
  itimerspec in{};
  in.it_value.tv_nsec = 20'000'000;
  timer_settime(timer, 0, &in, nullptr);
  Wait("wait interrupted by a handler (SA_RESTART)", ep, 4, 5000);
  // A signal blocked outside the wait and unblocked by its mask.
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigprocmask(SIG_BLOCK, &block, nullptr);
  raise(SIGUSR1);
  sigset_t during;
  sigemptyset(&during);
  epoll_event one{};
  const int n = Pwait(ep, &one, 1, 5000, &during);
  ++step;
  std::printf("%d pwait with the pending signal unblocked: %s\n", step, n < 0 ? strerrorname_np(errno) : "returned");
  sigprocmask(SIG_UNBLOCK, &block, nullptr);
  timespec zero{};
  ++step;
  std::printf("%d pwait2 with a zero timeout: %d\n", step, Pwait2(ep, &one, 1, &zero, nullptr));
  timespec bad{.tv_sec = 0, .tv_nsec = 2'000'000'000};
  ++step;
  std::printf("%d pwait2 with a bad timeout: %s\n", step,
              Pwait2(ep, &one, 1, &bad, nullptr) < 0 ? strerrorname_np(errno) : "ok");
  timer_delete(timer);
  close(ep);
}

// A random sequence over a few pipes, socket pairs and eventfds on two epolls (one nested in the other).
void Random(unsigned seed) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    int p[2];
    (void)pipe2(p, O_NONBLOCK);
    fds.push_back(p[0]);
    fds.push_back(p[1]);
    (void)socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p);
    fds.push_back(p[0]);
    fds.push_back(p[1]);
    fds.push_back(eventfd(0, EFD_NONBLOCK));
  }
  const int eps[2] = {Create1(0), Create1(0)};
  Say("nest", Ctl(eps[0], EPOLL_CTL_ADD, eps[1], EPOLLIN, 99));
  static constexpr std::uint32_t kMasks[] = {EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLOUT, EPOLLIN | EPOLLET,
                                             EPOLLOUT | EPOLLET, EPOLLIN | EPOLLONESHOT, EPOLLIN | EPOLLRDHUP, 0};
  char buffer[4096];
  for (int i = 0; i < 200; ++i) {
    const int fd = fds[static_cast<std::size_t>(pick(static_cast<int>(fds.size())))];
    const int ep = eps[pick(2)];
    switch (pick(9)) {
      case 0:
      case 1: Say("add", Ctl(ep, EPOLL_CTL_ADD, fd, kMasks[pick(8)], static_cast<std::uint64_t>(fd))); break;
      case 2: Say("mod", Ctl(ep, EPOLL_CTL_MOD, fd, kMasks[pick(8)], static_cast<std::uint64_t>(fd) + 100)); break;
      case 3: Say("del", Ctl(ep, EPOLL_CTL_DEL, fd, 0, 0)); break;
      case 4: {
        const std::uint64_t one = 1;
        Say("write", static_cast<int>(write(fd, pick(2) == 0 ? static_cast<const void*>(&one) : "0123456789", 8)));
        break;
      }
      case 5: Say("read", static_cast<int>(read(fd, buffer, static_cast<std::size_t>(1 + pick(4096))))); break;
      case 6:
      case 7: Wait("wait", ep, 1 + pick(6), 0); break;
      case 8: Readable("poll", eps[pick(2)]); break;
    }
  }
  for (int fd : fds) close(fd);
  close(eps[0]);
  close(eps[1]);
}

// After fork the kernel shares an epoll between parent and child. The child waits on it, then the parent.
void Fork() {
  const int ep = epoll_create1(0);
  int p[2];
  (void)pipe2(p, O_NONBLOCK);
  Say("add", Ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 5));
  (void)!write(p[1], "x", 1);
  const pid_t child = fork();
  if (child == 0) {
    Wait("child: wait on the parent's epoll", ep, 4, 0);
    Say("child: close it", close(ep));
    const int own = epoll_create1(0);
    Say("child: its own epoll, the inherited pipe", Ctl(own, EPOLL_CTL_ADD, p[0], EPOLLIN, 6));
    Wait("child: wait on its own", own, 4, 0);
    std::fflush(stdout);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  Wait("parent: wait", ep, 4, 0);
  close(p[0]);
  close(p[1]);
  close(ep);
}

// An epoll without FD_CLOEXEC crosses an exec with its registrations, its taken edges and its ready list: the kernel
// keeps them all (a registered fd that is closed on exec leaves it). The first program image sets it up and execs
// itself (`exec`); the new one (`exec2 EP P0 P1 EV`) goes on with the same fds.
void ExecFirst(const char* self) {
  const int ep = epoll_create(1);
  int p[2];
  (void)pipe2(p, O_NONBLOCK);
  const int ev = eventfd(0, EFD_NONBLOCK);
  int s[2];
  (void)socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s);  // closed on exec
  Say("add the pipe, edge-triggered", Ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN | EPOLLET, 0x51));
  Say("add the eventfd", Ctl(ep, EPOLL_CTL_ADD, ev, EPOLLIN, 0x52));
  Say("add a close-on-exec socket", Ctl(ep, EPOLL_CTL_ADD, s[0], EPOLLOUT, 0x53));
  Say("add the pipe's write end, one-shot", Ctl(ep, EPOLL_CTL_ADD, p[1], EPOLLOUT | EPOLLONESHOT, 0x54));
  int o[2];
  (void)pipe2(o, O_NONBLOCK);
  Say("add another pipe", Ctl(ep, EPOLL_CTL_ADD, o[0], EPOLLIN, 0x56));
  const int keep = dup(o[0]);
  Say("close it while a dup holds its file", close(o[0]));
  (void)!write(o[1], "o", 1);
  (void)!write(p[1], "abc", 3);
  Wait("wait before the exec", ep, 8, 0);
  const std::uint64_t one = 1;
  (void)!write(ev, &one, sizeof one);
  std::fflush(stdout);
  const std::string args[] = {std::to_string(ep), std::to_string(p[0]), std::to_string(p[1]), std::to_string(ev),
                              std::to_string(keep)};
  execl(self, self, "exec2", args[0].c_str(), args[1].c_str(), args[2].c_str(), args[3].c_str(), args[4].c_str(),
        nullptr);
  std::printf("exec failed: %s\n", strerrorname_np(errno));
}

void ExecSecond(char** argv) {
  const int ep = std::atoi(argv[2]);
  const int p0 = std::atoi(argv[3]);
  const int p1 = std::atoi(argv[4]);
  const int ev = std::atoi(argv[5]);
  const int keep = std::atoi(argv[6]);
  step = 100;
  Wait("after the exec: the eventfd and the closed pipe (the edge was taken, the one-shot fired)", ep, 8, 0);
  (void)!write(p1, "d", 1);
  Wait("a new edge on the pipe", ep, 8, 0);
  Say("re-arm the one-shot", Ctl(ep, EPOLL_CTL_MOD, p1, EPOLLOUT | EPOLLONESHOT, 0x55));
  Wait("the re-armed one-shot", ep, 8, 0);
  Readable("the epoll fd under poll", ep);
  Say("close the dup that kept the closed pipe registered", close(keep));
  Wait("its registration is gone", ep, 8, 0);
  close(p0);
  close(p1);
  close(ev);
  close(ep);
}

// `order FILE`: an epoll whose ready list has a known order (a level-triggered pipe, an edge-triggered eventfd, a
// one-shot eventfd and a level-triggered socket made ready in turn, the socket then moved to the tail by a wait of one
// event; an idle pipe), each entry's data its fd. Prints "held PID", and when standard input ends writes to FILE the
// data of what a wait then returns, in order.
void Order(const char* path) {
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  int a[2];
  (void)pipe2(a, O_NONBLOCK);
  const int b = eventfd(0, EFD_NONBLOCK);
  const int c = eventfd(0, EFD_NONBLOCK);
  int d[2];
  (void)socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, d);
  int e[2];
  (void)pipe2(e, O_NONBLOCK);
  (void)Ctl(ep, EPOLL_CTL_ADD, a[0], EPOLLIN, static_cast<std::uint64_t>(a[0]));
  (void)Ctl(ep, EPOLL_CTL_ADD, b, EPOLLIN | EPOLLET, static_cast<std::uint64_t>(b));
  (void)Ctl(ep, EPOLL_CTL_ADD, c, EPOLLIN | EPOLLONESHOT, static_cast<std::uint64_t>(c));
  (void)Ctl(ep, EPOLL_CTL_ADD, d[0], EPOLLIN, static_cast<std::uint64_t>(d[0]));
  (void)Ctl(ep, EPOLL_CTL_ADD, e[0], EPOLLIN, static_cast<std::uint64_t>(e[0]));
  const std::uint64_t one = 1;
  (void)!write(d[1], "d", 1);
  (void)!write(b, &one, sizeof one);
  (void)!write(a[1], "a", 1);
  (void)!write(c, &one, sizeof one);
  epoll_event first;
  (void)EpollWait(ep, &first, 1, 0);  // the socket, queued again at the tail
  std::printf("held %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);
  char byte;
  while (read(0, &byte, 1) > 0) {
  }
  epoll_event events[8];
  const int n = EpollWait(ep, events, 8, 0);
  std::FILE* out = std::fopen(path, "w");
  if (out == nullptr) return;
  for (int i = 0; i < n; ++i) std::fprintf(out, "%s%llu", i == 0 ? "" : " ", static_cast<unsigned long long>(events[i].data.u64));
  std::fprintf(out, "\n");
  std::fclose(out);
}

// Two epolls in a known state; prints "held PID" and waits until standard input ends. With `close_all`, an epoll is
// made and then every fd from 3 up is closed first (as a daemon does): fd numbers go on as in the kernel.
void Hold(bool close_all) {
  if (close_all) {
    (void)epoll_create1(0);
    (void)close_range(3, ~0U, 0);
  }
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  int p[2];
  (void)pipe2(p, O_NONBLOCK);
  const int edge = eventfd(1, EFD_NONBLOCK);
  const int once = eventfd(1, EFD_NONBLOCK);
  int s[2];
  (void)socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s);
  (void)!write(p[1], "x", 1);
  (void)Ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 0x1111);
  (void)Ctl(ep, EPOLL_CTL_ADD, edge, EPOLLIN | EPOLLET, 0x2222);
  (void)Ctl(ep, EPOLL_CTL_ADD, once, EPOLLIN | EPOLLONESHOT, 0x3333);
  (void)Ctl(ep, EPOLL_CTL_ADD, s[0], EPOLLIN | EPOLLRDHUP, 0x4444);
  epoll_event events[8];
  (void)epoll_wait(ep, events, 8, 0);  // the pipe, the edge and the one-shot
  const int outer = epoll_create1(EPOLL_CLOEXEC);
  (void)Ctl(outer, EPOLL_CTL_ADD, ep, EPOLLIN, 0x5555);
  std::printf("held %d\n", static_cast<int>(getpid()));
  char byte;
  while (read(0, &byte, 1) > 0) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && (std::string(argv[1]) == "raw" || std::string(argv[1]) == "mixed")) {
    calls = std::string(argv[1]) == "raw" ? Calls::kRaw : Calls::kMixed;
    --argc;
    ++argv;
  }
  if (argc > 1 && std::string(argv[1]) == "io_uring") {
    io_uring_params params{};
    const long fd = syscall(SYS_io_uring_setup, 4L, &params);
    std::printf("io_uring_setup: %s\n", fd >= 0 ? "ok" : strerrorname_np(errno));
    return 0;
  }
  if (argc > 2 && std::string(argv[1]) == "then") {  // then PROGRAM [ARGS...]: exec it
    execv(argv[2], argv + 2);
    return 127;
  }
  if (argc > 1 && std::string(argv[1]) == "exec") {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    ExecFirst(argv[0]);
    return 1;
  }
  if (argc > 6 && std::string(argv[1]) == "exec2") {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    ExecSecond(argv);
    return 0;
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc > 1 && std::string(argv[1]) == "fork") {
    Fork();
    return 0;
  }
  if (argc > 2 && std::string(argv[1]) == "order") {
    Order(argv[2]);
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "hold") {
    Hold(argc > 2 && std::string(argv[2]) == "close-all");
    return 0;
  }
  if (argc > 1) {
    Random(static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)));
    return 0;
  }
  Errors();
  Readiness();
  Orphans();
  Signals();
  return 0;
}
