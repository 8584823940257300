// One-byte round trips over a host socket pair (BENCHMARKS.md "Host fds: round trip and echo server"), through the
// kernel's epoll and through an EventPoll over a HostFile, in the same run:
//   BM_HostRoundTrip/kernel/lt, /kernel/et    epoll_wait(ep, events, 8, -1) on a kernel epoll instance
//   BM_HostRoundTrip/epollcr/lt, /epollcr/et  EventPoll::Wait(events, 8, -1) on a poll whose one entry is the same
//                                             end as a HostFile (a kernel entry: docs/engine.md)
// The socket pair is AF_UNIX, SOCK_STREAM. A peer thread owns one end (blocking): per round it writes one byte and
// blocks reading the reply. The benchmark thread owns the other end (non-blocking), registered for EPOLLIN
// (level-triggered, or edge-triggered with EPOLLET) with data kKey: per iteration it waits with no timeout, checks
// that the one event is its end's EPOLLIN, reads the byte (one read(2)) and writes it back (one write(2)). The
// reads and writes are the same system calls on both engines; only the wait differs.
// Both threads are pinned to the CPU the benchmark thread was on (cpu_pinning.h: a wake-up across the VM's virtual
// CPUs costs about ten times one on the same CPU, and unpinned runs mix the two), so a round trip is two wake-ups
// and two context switches on one CPU; the counter `pinned` is 1 when the pin took.
// One iteration is one round trip. The peer thread's time is not on the benchmark thread's CPU clock, and the
// benchmark thread sleeps while the peer runs, so the wall clock (UseRealTime: it also sets the iteration count) is
// the round trip; the CPU clock is the benchmark thread's part of it (the wait, the read, the write). Each reports
// per_round_trip with units_per_iteration (worlds.h CountWork). Each repetition runs at least 0.25 s (MinTime), to
// keep scripts/bench short.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "cpu_pinning.h"
#include "epollcr/event_poll.h"
#include "epollcr/host_file.h"
#include "epollcr/unique_fd.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr std::uint64_t kKey = 0x5eed;  // the entry's data: each event must carry it
constexpr int kMaxEvents = 8;           // the events array of one wait, the same on both engines

enum class Engine { kKernel, kEpollcr };

// Per round: write one byte, block until the reply is read. Ends when the other end shuts down (or on any error).
// MSG_NOSIGNAL: a write after that shutdown fails with EPIPE instead of raising SIGPIPE.
void PeerLoop(int fd) {
  char byte = 'r';
  for (;;) {
    if (::send(fd, &byte, 1, MSG_NOSIGNAL) != 1) return;
    ssize_t got;
    do {
      got = ::recv(fd, &byte, 1, 0);
    } while (got < 0 && errno == EINTR);
    if (got != 1) return;
  }
}

// Starts the peer on `peer_fd` and, when destroyed, shuts `own_fd` down (the peer's recv returns 0) and joins it.
class Peer {
 public:
  Peer(int own_fd, int peer_fd) : own_fd_(own_fd), thread_(PeerLoop, peer_fd) {}
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() {
    ::shutdown(own_fd_, SHUT_RDWR);
    thread_.join();
  }

 private:
  int own_fd_;
  std::thread thread_;
};

// The benchmark thread's side of one round trip once its wait has reported the byte: read it, write it back.
bool Echo(benchmark::State& state, int fd) {
  char buf[16];
  const ssize_t got = ::read(fd, buf, sizeof buf);
  if (got != 1) {
    state.SkipWithError(got < 0 ? Failure("read", errno).c_str() : "read did not return the one byte sent");
    return false;
  }
  if (::write(fd, buf, 1) != 1) {
    state.SkipWithError(Failure("write", errno).c_str());
    return false;
  }
  return true;
}

void BM_HostRoundTrip(benchmark::State& state, Engine engine, bool edge_triggered) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return state.SkipWithError(Failure("socketpair", errno).c_str());
  }
  const int fd = pair[0];  // the benchmark thread's end; owned by `file` or `own` below
  UniqueFd peer_end(pair[1]);
  UniqueFd own;
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    ::close(fd);
    return state.SkipWithError(Failure("fcntl O_NONBLOCK", errno).c_str());
  }

  UniqueFd epoll;
  std::shared_ptr<EventPoll> poll;
  std::shared_ptr<HostFile> file;
  if (engine == Engine::kKernel) {
    own = UniqueFd(fd);
    epoll = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll.valid()) return state.SkipWithError(Failure("epoll_create1", errno).c_str());
    epoll_event ev{};
    ev.events = EPOLLIN | (edge_triggered ? EPOLLET : 0u);
    ev.data.u64 = kKey;
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return state.SkipWithError(Failure("epoll_ctl ADD", errno).c_str());
    }
  } else {
    Result<std::shared_ptr<HostFile>> wrapped = HostFile::Create(fd);
    if (!wrapped.ok()) {
      ::close(fd);
      return state.SkipWithError(Failure("HostFile::Create", wrapped.error().value()).c_str());
    }
    file = wrapped.value();
    poll = EventPoll::Create();
    if (std::error_code ec = poll->AddEntry(
            {file.get(), fd}, edge_triggered ? EntryFlags::kEdgeTriggered : EntryFlags::kNone, kEventIn, kKey)) {
      return state.SkipWithError(Failure("EventPoll::AddEntry", ec.value()).c_str());
    }
  }

  bool pinned = false;
  {
    const PinnedThread pin(CurrentCpu());  // the peer, started next, inherits it
    pinned = pin.pinned();
    Peer peer(fd, peer_end.get());
    if (engine == Engine::kKernel) {
      epoll_event events[kMaxEvents];
      for (auto _ : state) {
        const int got = ::epoll_wait(epoll.get(), events, kMaxEvents, -1);
        if (got != 1 || events[0].data.u64 != kKey || (events[0].events & EPOLLIN) == 0) {
          state.SkipWithError(got < 0 ? Failure("epoll_wait", errno).c_str()
                                      : "epoll_wait did not report exactly the socket's EPOLLIN");
          break;
        }
        if (!Echo(state, fd)) break;
      }
    } else {
      Event events[kMaxEvents];
      for (auto _ : state) {
        Result<int> got = poll->Wait(events, kMaxEvents, -1);
        if (!got.ok() || got.value() != 1 || events[0].Data() != kKey || (events[0].events & kEventIn) == 0) {
          state.SkipWithError(!got.ok() ? Failure("EventPoll::Wait", got.error().value()).c_str()
                                        : "EventPoll::Wait did not report exactly the socket's EPOLLIN");
          break;
        }
        if (!Echo(state, fd)) break;
      }
    }
  }  // the peer is joined here (the shutdown ends its recv), then the benchmark thread is unpinned
  if (poll) poll->Release();
  state.counters["pinned"] = pinned ? 1 : 0;
  CountWork(state, "per_round_trip", 1);
}

[[maybe_unused]] const bool registered = [] {
  for (auto [engine, engine_name] : {std::pair{Engine::kKernel, "kernel"}, std::pair{Engine::kEpollcr, "epollcr"}}) {
    for (auto [edge, trigger_name] : {std::pair{false, "lt"}, std::pair{true, "et"}}) {
      benchmark::RegisterBenchmark((std::string("BM_HostRoundTrip/") + engine_name + "/" + trigger_name).c_str(),
                                   BM_HostRoundTrip, engine, edge)
          ->UseRealTime()->MinTime(0.25);
    }
  }
  return true;
}();

}  // namespace
}  // namespace epollcr::bench
