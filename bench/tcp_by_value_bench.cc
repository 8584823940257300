// TCP connections by value (restore/tcp_image.h; BENCHMARKS.md "TCP connections by value"): N established loopback
// TCP connections, each a host file registered level-triggered for EPOLLIN in one EventPoll, moved by value round
// after round in one process. The peers' ends live in a child process, so that N = 10,000 stays under the fd limit.
//   BM_TcpByValue/connections:N  one round: TcpByValue::Save (each connection captured with TCP_REPAIR into the
//                                image, and the network lock installed: restore/network_lock.h), CloseAll (each
//                                closed in repair mode: the peer hears nothing), then restore::RestoreBytes with a
//                                TcpResolver into a new world (each connection rebuilt at its fd number, its
//                                registration made again, the lock removed); the next round moves that world.
//                                Counters per connection: save_ns, close_ns, restore_ns (wall, median of rounds).
//   BM_TcpRebuildFloor/steps:S    what the kernel itself takes to make N sockets, per socket, with no epollcr code:
//                                S = 1: socket(2) alone, the first step of any rebuild; S = 4: socket, TCP_REPAIR,
//                                bind and connect (in repair mode: no SYN), the least that puts a connection back
//                                under its addresses. The closes are not timed.
// The by-reference hand-off of as many registrations is BM_HandOffSave / BM_HandOffRestore (handoff_bench.cc), in
// the same run. Needs CAP_NET_ADMIN (TCP_REPAIR); without it the benchmark says so and is skipped.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint_world.h"
#include "epollcr/epollcr.h"
#include "restore/restorer.h"
#include "restore/tcp_image.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

using Clock = std::chrono::steady_clock;

double NsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
}

// N connections accepted from a child process that connects them and holds its ends until the fixture goes.
struct Connections {
  std::vector<int> fds;  // the server ends, non-blocking, owned by `world` once Build ran
  pid_t child = -1;
  int hold = -1;  // the child exits when this closes
  std::string error;

  explicit Connections(int n) {
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener, 4096) != 0 || ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      error = "a loopback listener could not be made";
      if (listener >= 0) ::close(listener);
      return;
    }
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
      error = "pipe2 failed";
      ::close(listener);
      return;
    }
    child = ::fork();
    if (child == 0) {
      ::close(pipe_fds[1]);
      std::vector<int> ends;
      for (int i = 0; i < n; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) ::_exit(1);
        ends.push_back(fd);
      }
      char byte;
      while (::read(pipe_fds[0], &byte, 1) > 0) {
      }
      ::_exit(0);
    }
    ::close(pipe_fds[0]);
    hold = pipe_fds[1];
    for (int i = 0; i < n && child > 0; ++i) {
      pollfd p{listener, POLLIN, 0};
      if (::poll(&p, 1, 10000) != 1) break;
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;
      fds.push_back(fd);
    }
    ::close(listener);
    if (static_cast<int>(fds.size()) != n) error = "only " + std::to_string(fds.size()) + " connections were made";
  }
  ~Connections() {
    for (int fd : fds) ::close(fd);
    if (hold >= 0) ::close(hold);
    if (child > 0) ::waitpid(child, nullptr, 0);
  }
  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;

  // A world over the fds: each a host file, registered for EPOLLIN in one poll. The world owns the fds from then on.
  std::string Build(World* world) {
    auto poll = EventPoll::Create();
    world->roots["poll"] = poll;
    for (int fd : fds) {
      Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
      if (!file.ok() || world->fds.InstallAt(fd, file.value()) ||
          poll->AddEntry({file.value().get(), fd}, EntryFlags::kNone, kEventIn, static_cast<std::uint64_t>(fd))) {
        return "building the connection world failed";
      }
    }
    fds.clear();
    return "";
  }
};

void BM_TcpByValue(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Connections connections(n);
  if (!connections.error.empty()) return state.SkipWithError(connections.error.c_str());
  auto world = std::make_unique<World>();
  if (std::string e = connections.Build(world.get()); !e.empty()) return state.SkipWithError(e.c_str());
  std::vector<double> save, close, restore;
  for (auto _ : state) {
    restore::TcpByValue by_value;
    Clock::time_point start = Clock::now();
    Result<std::string> image = by_value.Save(*world);
    save.push_back(NsSince(start));
    if (!image.ok()) return state.SkipWithError(StatusFailure("TcpByValue::Save", image.status()).c_str());
    start = Clock::now();
    by_value.CloseAll();
    close.push_back(NsSince(start));
    state.PauseTiming();
    world.reset();  // its host files gave their fds up in CloseAll
    auto next = std::make_unique<World>();
    restore::TcpResolver resolver;
    restore::Options options;
    options.resolvers = {&resolver};
    state.ResumeTiming();
    start = Clock::now();
    Status s = restore::RestoreBytes(image.value(), next.get(), options);
    restore.push_back(NsSince(start));
    if (!s.ok()) return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
    world = std::move(next);
  }
  auto median_per_connection = [n](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2] / n;
  };
  state.counters["save_ns"] = median_per_connection(save);
  state.counters["close_ns"] = median_per_connection(close);
  state.counters["restore_ns"] = median_per_connection(restore);
  CountWork(state, "per_connection", n);
}

void BM_TcpRebuildFloor(benchmark::State& state) {
  constexpr int kSockets = 10000;
  const bool whole = state.range(0) == 4;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  local.sin_port = htons(40999);
  std::vector<int> fds(kSockets, -1);
  const int on = 1;
  for (auto _ : state) {
    for (int i = 0; i < kSockets; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
      fds[i] = fd;
      if (fd < 0) return state.SkipWithError("socket failed");
      if (!whole) continue;
      sockaddr_in remote = local;
      remote.sin_port = htons(static_cast<std::uint16_t>(20000 + i));
      if (::setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof on) != 0) {
        return state.SkipWithError("TCP_REPAIR failed (needs CAP_NET_ADMIN)");
      }
      if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
          ::connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof remote) != 0) {
        return state.SkipWithError("bind or connect in repair mode failed");
      }
    }
    state.PauseTiming();
    for (int& fd : fds) {
      ::close(fd);  // in repair mode: silently
      fd = -1;
    }
    state.ResumeTiming();
  }
  CountWork(state, "per_socket", kSockets);
}

BENCHMARK(BM_TcpRebuildFloor)->ArgName("steps")->Arg(1)->Arg(4)->Iterations(10)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TcpByValue)->ArgName("connections")->Arg(1000)->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TcpByValue)->ArgName("connections")->Arg(10000)->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace epollcr::bench
