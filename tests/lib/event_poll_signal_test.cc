// Signals and a blocking EventPoll::Wait/PWait/PWait2, with the kernel as the oracle: every scenario runs once on a
// kernel epoll (epoll_wait, epoll_pwait, epoll_pwait2) and once on an EventPoll, with real signals, handlers and
// threads, and both must end the same way (the same count or the same errno, the same signals left pending).
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "epollcr/syscalls.h"
#include "epollcr/unique_fd.h"
#include "fault_injection.h"

namespace epollcr {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::atomic<int> handled{0};
void CountSignal(int) { handled.fetch_add(1); }

// Installs a handler (or SIG_IGN) for `sig` for the life of the object, with or without SA_RESTART.
class Handler {
 public:
  Handler(int sig, void (*handler)(int), bool restart) : sig_(sig) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    EXPECT_EQ(sigaction(sig, &sa, &old_), 0);
  }
  ~Handler() { sigaction(sig_, &old_, nullptr); }

 private:
  int sig_;
  struct sigaction old_ {};
};

// Blocks `sig` in the calling thread for the life of the object.
class Blocked {
 public:
  explicit Blocked(int sig) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    EXPECT_EQ(pthread_sigmask(SIG_BLOCK, &set, &old_), 0);
  }
  ~Blocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

 private:
  sigset_t old_{};
};

// The calling thread's signal mask with `sig` taken out of it, or added to it.
sigset_t ThreadMaskWithout(int sig) {
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  sigdelset(&mask, sig);
  return mask;
}
sigset_t ThreadMaskWith(int sig) {
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  sigaddset(&mask, sig);
  return mask;
}

bool Pending(int sig) {
  sigset_t set;
  sigpending(&set);
  return sigismember(&set, sig) == 1;
}

// Takes a pending `sig` of this thread without running its handler.
void Discard(int sig) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  const timespec zero{0, 0};
  while (sigtimedwait(&set, nullptr, &zero) == sig) {
  }
}

// A thread's scheduler state from /proc ('S' while it sleeps in a system call).
char ThreadState(pid_t tid) {
  std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const std::size_t close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

// How a wait ended: a count, or an errno.
struct Ended {
  int count = -1;
  int error = 0;
  bool operator==(const Ended&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Ended& e) {
  return e.error != 0 ? os << "errno " << e.error : os << e.count << " events";
}

// One side of a scenario: a poll with one eventfd registered (level-triggered IN), and its wait calls.
class Side {
 public:
  virtual ~Side() = default;
  virtual void MakeReady() = 0;  // the eventfd becomes readable
  virtual Ended Wait(int timeout_ms) = 0;
  virtual Ended PWait(int timeout_ms, const sigset_t* mask) = 0;
  virtual Ended PWait2(const timespec* timeout, const sigset_t* mask) = 0;
  virtual std::string Name() const = 0;
};

Ended FromKernel(int n) { return n < 0 ? Ended{-1, errno} : Ended{n, 0}; }
Ended FromResult(const Result<int>& r) { return r.ok() ? Ended{r.value(), 0} : Ended{-1, r.error().value()}; }

class KernelSide : public Side {
 public:
  KernelSide() : ep_(epoll_create1(EPOLL_CLOEXEC)), efd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    EXPECT_EQ(epoll_ctl(ep_.get(), EPOLL_CTL_ADD, efd_.get(), &ev), 0);
  }
  void MakeReady() override {
    const std::uint64_t one = 1;
    EXPECT_EQ(write(efd_.get(), &one, sizeof one), 8);
  }
  Ended Wait(int timeout_ms) override { return FromKernel(epoll_wait(ep_.get(), events_, 4, timeout_ms)); }
  Ended PWait(int timeout_ms, const sigset_t* mask) override {
    return FromKernel(epoll_pwait(ep_.get(), events_, 4, timeout_ms, mask));
  }
  Ended PWait2(const timespec* timeout, const sigset_t* mask) override {
    return FromKernel(epoll_pwait2(ep_.get(), events_, 4, timeout, mask));
  }
  std::string Name() const override { return "kernel"; }

 private:
  UniqueFd ep_;
  UniqueFd efd_;
  epoll_event events_[4];
};

class EpollcrSide : public Side {
 public:
  EpollcrSide() : poll_(EventPoll::Create()), efd_(EventFd::Create(0, false)) {
    EXPECT_FALSE(poll_->AddEntry({efd_.get(), 3}, {}, kEventIn, 3));
  }
  void MakeReady() override {
    const std::uint64_t one = 1;
    EXPECT_TRUE(efd_->Write({reinterpret_cast<const std::byte*>(&one), sizeof one}).ok());
  }
  Ended Wait(int timeout_ms) override { return FromResult(poll_->Wait(events_, 4, timeout_ms)); }
  Ended PWait(int timeout_ms, const sigset_t* mask) override {
    return FromResult(poll_->PWait(events_, 4, timeout_ms, mask));
  }
  Ended PWait2(const timespec* timeout, const sigset_t* mask) override {
    return FromResult(poll_->PWait2(events_, 4, timeout, mask));
  }
  std::string Name() const override { return "epollcr"; }
  EventPoll& poll() { return *poll_; }

 private:
  std::shared_ptr<EventPoll> poll_;
  std::shared_ptr<EventFd> efd_;
  Event events_[4];
};

// Runs `wait` in a new thread; once that thread sleeps in the kernel, calls `meanwhile(tid)` from this thread.
Ended WaitInThread(const std::function<Ended()>& wait, const std::function<void(pthread_t, pid_t)>& meanwhile) {
  std::atomic<pid_t> tid{0};
  Ended ended;
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    tid = gettid();
    ended = wait();
    done = true;
  });
  while (tid.load() == 0) std::this_thread::yield();
  const auto give_up = steady_clock::now() + milliseconds(5000);
  while (!done && ThreadState(tid) != 'S' && steady_clock::now() < give_up) std::this_thread::sleep_for(milliseconds(1));
  std::this_thread::sleep_for(milliseconds(20));  // asleep in the wait itself, not in a step before it
  if (!done) meanwhile(waiter.native_handle(), tid);
  waiter.join();
  return ended;
}

// Both sides, for one scenario.
template <typename Scenario>
void OnBoth(Scenario scenario) {
  KernelSide kernel;
  EpollcrSide mine;
  const Ended k = scenario(kernel);
  const Ended u = scenario(mine);
  EXPECT_EQ(u, k) << "epollcr ended otherwise than the kernel";
}

class SignalTest : public ::testing::TestWithParam<bool> {};  // the parameter: SA_RESTART

TEST_P(SignalTest, AHandlerThatRunsDuringTheWaitEndsItWithEintr) {
  Handler h(SIGUSR1, CountSignal, GetParam());
  OnBoth([](Side& side) {
    handled = 0;
    const Ended e = WaitInThread([&] { return side.Wait(3000); }, [](pthread_t t, pid_t) { pthread_kill(t, SIGUSR1); });
    EXPECT_EQ(handled.load(), 1) << side.Name();
    return e;
  });
}

TEST_P(SignalTest, PWait2WithoutTimeoutEndsWithEintrToo) {
  Handler h(SIGUSR1, CountSignal, GetParam());
  OnBoth([](Side& side) {
    return WaitInThread([&] { return side.PWait2(nullptr, nullptr); },
                        [](pthread_t t, pid_t) { pthread_kill(t, SIGUSR1); });
  });
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutRestart, SignalTest, ::testing::Bool());

TEST(SignalTest, AnIgnoredSignalDoesNotEndTheWait) {
  Handler h(SIGUSR1, SIG_IGN, false);
  OnBoth([](Side& side) {
    return WaitInThread([&] { return side.Wait(300); }, [](pthread_t t, pid_t) { pthread_kill(t, SIGUSR1); });
  });
}

TEST(SignalTest, ASignalForAnotherThreadDoesNotEndTheWait) {
  Handler h(SIGUSR1, CountSignal, false);
  OnBoth([](Side& side) {
    handled = 0;
    const Ended e = WaitInThread([&] { return side.Wait(300); }, [](pthread_t, pid_t) { raise(SIGUSR1); });
    EXPECT_EQ(handled.load(), 1) << side.Name() << ": the handler ran in this thread";
    return e;
  });
}

TEST(SignalTest, ABlockedSignalStaysPendingAndTheWaitTimesOut) {
  Handler h(SIGUSR1, CountSignal, false);
  OnBoth([](Side& side) {
    handled = 0;
    bool pending = false;
    const Ended e = WaitInThread(
        [&] {
          Blocked b(SIGUSR1);
          const Ended r = side.Wait(300);
          pending = Pending(SIGUSR1);
          Discard(SIGUSR1);
          return r;
        },
        [](pthread_t t, pid_t) { pthread_kill(t, SIGUSR1); });
    EXPECT_TRUE(pending) << side.Name();
    EXPECT_EQ(handled.load(), 0) << side.Name();
    return e;
  });
}

TEST(SignalTest, PWaitDeliversAPendingSignalItsMaskUnblocks) {
  Handler h(SIGUSR1, CountSignal, false);
  OnBoth([](Side& side) {
    handled = 0;
    Blocked b(SIGUSR1);
    raise(SIGUSR1);  // pending before the call, blocked outside it
    const sigset_t open = ThreadMaskWithout(SIGUSR1);
    const auto start = steady_clock::now();
    const Ended e = side.PWait(5000, &open);
    EXPECT_LT(steady_clock::now() - start, milliseconds(2000)) << side.Name() << ": the signal was not lost";
    EXPECT_EQ(handled.load(), 1) << side.Name();
    EXPECT_FALSE(Pending(SIGUSR1)) << side.Name();
    return e;
  });
}

TEST(SignalTest, PWaitWithEventsReadyLeavesTheSignalPending) {
  Handler h(SIGUSR1, CountSignal, false);
  OnBoth([](Side& side) {
    handled = 0;
    Blocked b(SIGUSR1);
    raise(SIGUSR1);
    side.MakeReady();
    const sigset_t open = ThreadMaskWithout(SIGUSR1);
    const Ended e = side.PWait(5000, &open);
    EXPECT_EQ(handled.load(), 0) << side.Name();
    EXPECT_TRUE(Pending(SIGUSR1)) << side.Name();
    Discard(SIGUSR1);
    return e;
  });
}

TEST(SignalTest, APollWithAPendingSignalItsMaskUnblocksReturnsZero) {
  Handler h(SIGUSR1, CountSignal, false);
  OnBoth([](Side& side) {
    handled = 0;
    Blocked b(SIGUSR1);
    raise(SIGUSR1);
    const sigset_t open = ThreadMaskWithout(SIGUSR1);
    const Ended e = side.PWait(0, &open);
    EXPECT_TRUE(Pending(SIGUSR1)) << side.Name();
    Discard(SIGUSR1);
    return e;
  });
}

TEST(SignalTest, PWaitMaskBlocksASignalForTheWaitOnly) {
  Handler h(SIGUSR1, CountSignal, false);
  OnBoth([](Side& side) {
    handled = 0;
    const sigset_t closed = ThreadMaskWith(SIGUSR1);
    const Ended e = WaitInThread([&] { return side.PWait(300, &closed); },
                                 [](pthread_t t, pid_t) { pthread_kill(t, SIGUSR1); });
    EXPECT_EQ(handled.load(), 1) << side.Name() << ": delivered once the wait gave the thread its mask back";
    return e;
  });
}

TEST(SignalTest, AnEventFromAnotherThreadEndsTheWaitWithIt) {
  OnBoth([](Side& side) {
    return WaitInThread([&] { return side.Wait(5000); }, [&](pthread_t, pid_t) { side.MakeReady(); });
  });
}

TEST(PWait2Test, TimeoutsAreCheckedFirstAndKeptToTheNanosecond) {
  OnBoth([](Side& side) {
    const timespec bad_nsec{0, 1'000'000'000};
    const timespec negative{-1, 0};
    EXPECT_EQ(side.PWait2(&bad_nsec, nullptr), (Ended{-1, EINVAL})) << side.Name();
    EXPECT_EQ(side.PWait2(&negative, nullptr), (Ended{-1, EINVAL})) << side.Name();
    const timespec zero{0, 0};
    EXPECT_EQ(side.PWait2(&zero, nullptr), (Ended{0, 0})) << side.Name();
    const timespec short_wait{0, 1'500'000};
    const auto start = steady_clock::now();
    const Ended e = side.PWait2(&short_wait, nullptr);
    EXPECT_GE(steady_clock::now() - start, std::chrono::microseconds(1500)) << side.Name();
    return e;
  });
}

// A Wait that cannot make its sleeper fails with the kernel's errno and leaves the poll as it was; the next one works.
TEST(WaitSleeperTest, AFailureToMakeTheSleeperIsReturnedAndNothingChanges) {
  for (const testing::FaultPoint point :
       {testing::FaultPoint::kWaitEpollCreate, testing::FaultPoint::kWaitEventFd, testing::FaultPoint::kWaitEventFdAdd}) {
    EpollcrSide side;
    testing::SetFaultHook([point](const testing::FaultCall& call) {
      return call.point == point ? testing::Fault{EMFILE} : testing::Fault{};
    });
    EXPECT_EQ(side.Wait(10), (Ended{-1, EMFILE})) << testing::FaultPointName(point);
    testing::SetFaultHook({});
    EXPECT_EQ(side.poll().BlockedWaiters(), 0);
    EXPECT_EQ(side.Wait(10), (Ended{0, 0})) << testing::FaultPointName(point);
    side.MakeReady();
    EXPECT_EQ(side.Wait(10), (Ended{1, 0})) << testing::FaultPointName(point);
  }
}

// The argument checks of epoll_wait, epoll_pwait and epoll_pwait2, in every combination of a bad count, a bad
// timeout and an fd that is closed, not an epoll, or an epoll: the same errno as the kernel's, which checks them in
// its own order (epoll_pwait2's timeout first, then the fd, the count, the fd's kind). A null buffer is left out: the
// kernel faults only when it has an event to copy, epollcr at once (docs/engine.md, "Known differences").
TEST(WaitErrorsTest, EveryBadArgumentGivesTheKernelsErrnoInTheKernelsOrder) {
  UniqueFd kernel_ep(epoll_create1(EPOLL_CLOEXEC));
  UniqueFd kernel_efd(eventfd(0, EFD_CLOEXEC));
  FdTable fds;
  const int ep = sys::EpollCreate1(fds, 0).value();
  const int efd = sys::EventFd(fds, 0, false).value();
  constexpr int kClosed = 900;
  struct Target {
    const char* name;
    int kernel;
    int mine;
  };
  const Target targets[] = {{"closed", kClosed, kClosed}, {"eventfd", kernel_efd.get(), efd},
                            {"epoll", kernel_ep.get(), ep}};
  epoll_event kernel_events[2];
  Event events[2];
  const timespec bad{0, -1};
  const timespec zero{0, 0};
  int cases = 0;
  for (const Target& t : targets) {
    for (const int max : {-1, 0, 1, kMaxEvents + 1}) {
      for (const timespec* timeout : {&zero, &bad}) {
        const std::string what =
            std::string(t.name) + " max " + std::to_string(max) + (timeout == &bad ? " bad timeout" : "");
        if (timeout == &zero) {
          EXPECT_EQ(FromResult(sys::EpollWait(fds, t.mine, events, max, 0)),
                    FromKernel(epoll_wait(t.kernel, kernel_events, max, 0)))
              << "epoll_wait " << what;
          EXPECT_EQ(FromResult(sys::EpollPwait(fds, t.mine, events, max, 0, nullptr)),
                    FromKernel(epoll_pwait(t.kernel, kernel_events, max, 0, nullptr)))
              << "epoll_pwait " << what;
        }
        EXPECT_EQ(FromResult(sys::EpollPwait2(fds, t.mine, events, max, timeout, nullptr)),
                  FromKernel(epoll_pwait2(t.kernel, kernel_events, max, timeout, nullptr)))
            << "epoll_pwait2 " << what;
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 24);  // 3 fds x 4 counts x 2 timeouts
}

// Where the kernel has no epoll_pwait2 (before Linux 5.11, or under valgrind 3.19), a blocking Wait sleeps in
// epoll_pwait instead, never for less than its timeout. A child process makes epoll_pwait2 fail with ENOSYS (a seccomp
// filter) and waits there: a timeout of 30 ms, a timespec of 1.5 ms, and a wake-up from another thread.
TEST(EventPollSignalTest, WaitsWhereTheKernelHasNoEpollPwait2) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_epoll_pwait2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
      ::_exit(10);
    }
    const int probe = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event one{};
    const timespec zero{0, 0};
    if (::epoll_pwait2(probe, &one, 1, &zero, nullptr) != -1 || errno != ENOSYS) ::_exit(11);  // the filter works
    ::close(probe);
    auto poll = EventPoll::Create();
    auto efd = EventFd::Create(0, false);
    if (poll->AddEntry({efd.get(), 3}, EntryFlags::kNone, kEventIn, 3)) ::_exit(12);
    Event events[4];
    auto start = steady_clock::now();
    Result<int> n = poll->Wait(events, 4, 30);
    if (!n.ok() || n.value() != 0 || steady_clock::now() - start < milliseconds(30)) ::_exit(13);
    const timespec short_wait{0, 1'500'000};
    start = steady_clock::now();
    n = poll->PWait2(events, 4, &short_wait, nullptr);
    if (!n.ok() || n.value() != 0 || steady_clock::now() - start < std::chrono::microseconds(1'500)) ::_exit(14);
    std::thread writer([&] {
      std::this_thread::sleep_for(milliseconds(20));
      (void)efd->WriteValue(1);
    });
    n = poll->Wait(events, 4, -1);
    writer.join();
    if (!n.ok() || n.value() != 1 || events[0].events != kEventIn) ::_exit(15);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: seccomp refused; 11: epoll_pwait2 not refused; 12: AddEntry; 13: the "
                                       "30 ms Wait; 14: the 1.5 ms PWait2; 15: the wake-up";
}

}  // namespace
}  // namespace epollcr
