// EventPoll::Fd(): the poll as a file descriptor for other event loops. Each test runs random operations on an
// EventPoll over epollcr's in-memory files (and, in one, host files) and on a kernel twin, a real epoll over real
// files of the same kinds, and after every step compares what the kernel says of both fds:
//   - poll(2) and select(2) on Fd() against poll(2) on the twin's epoll fd (readable exactly when there is an event);
//   - an outer kernel epoll watching Fd() against an outer kernel epoll watching the twin's epoll, level-triggered
//     and edge-triggered: the same reports, so the same edges (a nested epoll's watcher is woken on every wake-up of
//     an inner entry, ep_poll_callback).
// The kernel is the oracle; a mismatch names the seed and the step.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <csignal>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "epollcr/epollcr.h"

namespace epollcr {
namespace {

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

bool SelectReadable(int fd) {
  fd_set set;
  FD_ZERO(&set);
  FD_SET(fd, &set);
  timeval zero{};
  return ::select(fd + 1, &set, nullptr, nullptr, &zero) == 1 && FD_ISSET(fd, &set);
}

// The watched files of one side: a pipe's read end, a pipe's write end, an eventfd, a semaphore eventfd, two socket
// ends.
constexpr int kFiles = 6;

// The real files of one side: fd[i] is watched, feed[i] is written to make fd[i] readable or read to make it
// writable (the same fd for an eventfd).
struct RawFiles {
  int fd[kFiles];
  int feed[kFiles];
};

RawFiles OpenRaw() {
  RawFiles r;
  int p[2];
  EXPECT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  r.fd[0] = p[0], r.feed[0] = p[1];  // pipe read end
  EXPECT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  r.fd[1] = p[1], r.feed[1] = p[0];  // pipe write end: "feed" drains it
  r.fd[2] = r.feed[2] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  r.fd[3] = r.feed[3] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
  for (int i : {4, 5}) {
    int s[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s), 0);
    r.fd[i] = s[0], r.feed[i] = s[1];
  }
  return r;
}

struct KernelSide : RawFiles {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  KernelSide() : RawFiles(OpenRaw()) {}
  ~KernelSide() {
    close(ep);
    for (int i = 0; i < kFiles; ++i) {
      close(fd[i]);
      if (feed[i] != fd[i]) close(feed[i]);
    }
  }
};

// epollcr's side: in-memory files, or (host = true) real ones wrapped as host files.
struct EpollcrSide {
  std::shared_ptr<EventPoll> poll = EventPoll::Create();
  std::shared_ptr<File> fd[kFiles];
  std::shared_ptr<File> feed[kFiles];
  explicit EpollcrSide(bool host) {
    if (host) {  // the host files own the fds
      const RawFiles raw = OpenRaw();
      for (int i = 0; i < kFiles; ++i) {
        fd[i] = HostFile::Create(raw.fd[i]).value();
        feed[i] = raw.feed[i] == raw.fd[i] ? fd[i] : std::shared_ptr<File>(HostFile::Create(raw.feed[i]).value());
      }
      return;
    }
    PipeEnds a = NewPipe();
    fd[0] = a.read, feed[0] = a.write;
    PipeEnds b = NewPipe();
    fd[1] = b.write, feed[1] = b.read;
    fd[2] = feed[2] = EventFd::Create(0, false);
    fd[3] = feed[3] = EventFd::Create(0, true);
    auto [s0, s1] = NewSocketPair();
    fd[4] = s0, feed[4] = s1;
    auto [t0, t1] = NewSocketPair();
    fd[5] = t0, feed[5] = t1;
  }
};

std::string Describe(const epoll_event* ev, int n) {
  std::string s = std::to_string(n) + ":";
  for (int i = 0; i < n; ++i) s += " " + std::to_string(ev[i].events) + "@" + std::to_string(ev[i].data.u64);
  return s;
}
std::string Describe(const Event* ev, int n) {
  std::string s = std::to_string(n) + ":";
  for (int i = 0; i < n; ++i) s += " " + std::to_string(ev[i].events) + "@" + std::to_string(ev[i].Data());
  return s;
}

// Runs `steps` random operations on both sides; after each, compares Fd()'s readability (poll and select) with the
// twin's, and each outer epoll's report (outer_flags: 0 for level-triggered, EPOLLET). Returns the steps at which
// Fd() was readable (so a test can check that both states were seen).
int RunRandom(std::uint32_t seed, int steps, bool host, std::uint32_t outer_flags) {
  SCOPED_TRACE("seed " + std::to_string(seed) + (host ? ", host files" : ", in-memory files") +
               (outer_flags != 0 ? ", outer ET" : ", outer LT"));
  std::mt19937 rng(seed);
  KernelSide k;
  EpollcrSide e(host);
  Result<int> fd = e.poll->Fd();
  EXPECT_TRUE(fd.ok());
  if (!fd.ok()) return 0;
  EXPECT_EQ(e.poll->Fd().value(), fd.value()) << "one fd for the poll's life";
  const int outer_k = epoll_create1(EPOLL_CLOEXEC);
  const int outer_e = epoll_create1(EPOLL_CLOEXEC);
  epoll_event watch{};
  watch.events = EPOLLIN | outer_flags;
  EXPECT_EQ(epoll_ctl(outer_k, EPOLL_CTL_ADD, k.ep, &watch), 0);
  EXPECT_EQ(epoll_ctl(outer_e, EPOLL_CTL_ADD, fd.value(), &watch), 0);
  static constexpr std::uint32_t kMasks[] = {EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLOUT, EPOLLIN | EPOLLRDHUP, EPOLLPRI};
  static constexpr std::uint32_t kFlags[] = {0, 0, EPOLLET, EPOLLONESHOT, EPOLLET | EPOLLONESHOT};
  std::vector<std::byte> buffer(70000, std::byte{1});
  int readable = 0;
  for (int step = 0; step < steps && !::testing::Test::HasFailure(); ++step) {
    const int i = static_cast<int>(rng() % kFiles);
    std::string what;
    switch (rng() % 8) {
      case 0:
      case 1: {  // ADD or MOD, whichever the kernel accepts
        const std::uint32_t events = kMasks[rng() % 5] | kFlags[rng() % 5];
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = static_cast<std::uint64_t>(i);
        int op = EPOLL_CTL_ADD;
        int r = epoll_ctl(k.ep, op, k.fd[i], &ev);
        if (r != 0 && errno == EEXIST) r = epoll_ctl(k.ep, op = EPOLL_CTL_MOD, k.fd[i], &ev);
        const std::error_code mine =
            op == EPOLL_CTL_ADD
                ? e.poll->AddEntry({e.fd[i].get(), i}, FlagsFromLinux(events), MaskFromLinux(events), ev.data.u64)
                : e.poll->UpdateEntry({e.fd[i].get(), i}, FlagsFromLinux(events), MaskFromLinux(events), ev.data.u64);
        EXPECT_EQ(r == 0, !mine) << "step " << step << ": ctl " << op << " of file " << i;
        what = "ctl " + std::to_string(op) + " file " + std::to_string(i) + " events " + std::to_string(events);
        break;
      }
      case 2: {
        const int r = epoll_ctl(k.ep, EPOLL_CTL_DEL, k.fd[i], nullptr);
        EXPECT_EQ(r == 0, !e.poll->RemoveEntry({e.fd[i].get(), i})) << "step " << step << ": del of file " << i;
        what = "del file " + std::to_string(i);
        break;
      }
      case 3:
      case 4: {  // feed: data into a read side, or an eventfd count
        std::size_t n = i == 2 || i == 3 ? 8 : 1 + rng() % (i == 1 ? 65536 : 300);
        if (i == 1) {  // fill the write end's pipe from the write end itself
          const ssize_t kr = write(k.fd[i], buffer.data(), n);
          Result<std::size_t> er = e.fd[i]->Write(std::span<const std::byte>(buffer.data(), n));
          EXPECT_EQ(kr >= 0, er.ok()) << "step " << step;
        } else {
          const std::uint64_t one = 1;
          const void* data = (i == 2 || i == 3) ? static_cast<const void*>(&one) : buffer.data();
          const ssize_t kr = write(k.feed[i], data, n);
          Result<std::size_t> er = e.feed[i]->Write(std::span<const std::byte>(static_cast<const std::byte*>(data), n));
          EXPECT_EQ(kr >= 0, er.ok()) << "step " << step;
        }
        what = "feed file " + std::to_string(i) + " " + std::to_string(n);
        break;
      }
      case 5: {  // drain: read from the watched read side (or, for the pipe write end, from its pipe)
        const std::size_t n = i == 2 || i == 3 ? 8 : 1 + rng() % 70000;
        const int kfd = i == 1 ? k.feed[i] : k.fd[i];
        File& efile = i == 1 ? *e.feed[i] : *e.fd[i];
        const ssize_t kr = read(kfd, buffer.data(), n);
        Result<std::size_t> er = efile.Read(std::span<std::byte>(buffer.data(), n));
        EXPECT_EQ(kr >= 0, er.ok()) << "step " << step;
        if (kr >= 0 && er.ok()) {
          EXPECT_EQ(static_cast<std::size_t>(kr), er.value()) << "step " << step;
        }
        what = "drain file " + std::to_string(i);
        break;
      }
      case 6: {  // a harvest on both inner polls
        const int max = 1 + static_cast<int>(rng() % 4);
        epoll_event kev[8];
        Event eev[8];
        const int kn = epoll_wait(k.ep, kev, max, 0);
        Result<int> en = e.poll->Wait(eev, max, 0);
        EXPECT_TRUE(en.ok());
        EXPECT_EQ(Describe(kev, kn), Describe(eev, en.ok() ? en.value() : -1)) << "step " << step << ": inner wait max " << max;
        what = "inner wait " + std::to_string(max);
        break;
      }
      default: {  // a shutdown of a socket's peer (RDHUP/HUP), rarely
        if ((i == 4 || i == 5) && rng() % 4 == 0) {
          const int how = static_cast<int>(rng() % 3);
          EXPECT_EQ(shutdown(k.feed[i], how) == 0, !e.feed[i]->Shutdown(how)) << "step " << step;
          what = "shutdown peer of file " + std::to_string(i);
        }
        break;
      }
    }
    // The outer epolls' reports first (they must not depend on whether poll(2) looked at the inner fds before).
    epoll_event ko[2], eo[2];
    const int kn = epoll_wait(outer_k, ko, 2, 0);
    const int en = epoll_wait(outer_e, eo, 2, 0);
    EXPECT_EQ(kn, en) << "step " << step << " (" << what << "): the outer epoll watching the poll";
    const bool kr = Readable(k.ep);
    EXPECT_EQ(Readable(fd.value()), kr) << "step " << step << " (" << what << "): poll(2) on Fd()";
    EXPECT_EQ(SelectReadable(fd.value()), kr) << "step " << step << " (" << what << "): select(2) on Fd()";
    readable += kr ? 1 : 0;
  }
  close(outer_k);
  close(outer_e);
  return readable;
}

class EventPollFdTest : public ::testing::TestWithParam<std::tuple<bool, std::uint32_t>> {
 protected:
  void SetUp() override { std::signal(SIGPIPE, SIG_IGN); }
};

TEST_P(EventPollFdTest, ReadableExactlyWhenThereIsAnEventAndNestsLikeAnEpoll) {
  const auto [host, outer_flags] = GetParam();
  int readable = 0;
  int steps = 0;
  for (std::uint32_t seed = 1; seed <= 300 && !HasFailure(); ++seed) {
    readable += RunRandom(seed, 150, host, outer_flags);
    steps += 150;
  }
  EXPECT_GT(readable, steps / 20) << "the runs hardly ever made the poll readable: they test little";
  EXPECT_LT(readable, steps - steps / 20) << "the runs hardly ever made the poll unreadable: they test little";
}

INSTANTIATE_TEST_SUITE_P(Modes, EventPollFdTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(0u, std::uint32_t{EPOLLET})),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "Host" : "InMemory") +
                                  (std::get<1>(info.param) != 0 ? "OuterEt" : "OuterLt");
                         });

// The fd stays the same whatever the poll holds, and goes with the poll.
TEST(EventPollFdLifeTest, OneFdForThePollsLifeClosedWithIt) {
  int fd = -1;
  {
    auto poll = EventPoll::Create();
    fd = poll->Fd().value();
    auto efd = EventFd::Create(1);
    ASSERT_FALSE(poll->AddEntry({efd.get(), 3}, EntryFlags::kNone, kEventIn, 3));
    EXPECT_EQ(poll->Fd().value(), fd);
    EXPECT_TRUE(Readable(fd));
    ASSERT_FALSE(poll->RemoveEntry({efd.get(), 3}));
    EXPECT_FALSE(Readable(fd)) << "nothing left to report";
    EXPECT_EQ(poll->Fd().value(), fd);
    EXPECT_NE(fcntl(fd, F_GETFD), -1);
  }
  EXPECT_EQ(fcntl(fd, F_GETFD), -1) << "closed with the poll";
}

// A poll with a blocked waiter keeps working once it is visible: Fd() is the epoll the waiter sleeps in.
TEST(EventPollFdLifeTest, AWaiterBlockedBeforeFdWakesAfterIt) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create(0);
  ASSERT_FALSE(poll->AddEntry({efd.get(), 3}, EntryFlags::kNone, kEventIn, 3));
  std::thread waiter([&] {
    Event ev[1];
    Result<int> n = poll->Wait(ev, 1, 10000);
    EXPECT_TRUE(n.ok());
    EXPECT_EQ(n.value(), 1);
  });
  while (poll->BlockedWaiters() == 0) std::this_thread::yield();
  const int fd = poll->Fd().value();
  EXPECT_FALSE(Readable(fd));
  ASSERT_FALSE(efd->WriteValue(1));
  waiter.join();
}

}  // namespace
}  // namespace epollcr
