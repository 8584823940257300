// The two paths of a host-fd restore's system-call batches (lib/src/syscall_batch.h; BENCHMARKS.md "System-call
// paths"), each measured on its own over 10,000 real sockets (5,000 socket pairs, both ends), so that a reader can
// tell which one this machine makes cheaper and check the path the library chose:
//   BM_StatPath/<path>      sys::StatMany of the 10,000 fds (the identity check of InheritedFdResolver)
//   BM_EpollAddPath/<path>  epoll_create1 and sys::EpollAddMany of the same fds, EPOLLIN (the registrations of a
//                           rebuilt kernel epoll); closing the instance is outside the timed region
// <path>: ring (one io_uring per batch), single (one system call per fd), auto (what the library chooses here,
// timing both on the first items of its first batch of each kind). The CPU clock is the whole process's
// (MeasureProcessCPUTime): a statx on io_uring runs on a kernel worker thread of this process, which the benchmark
// thread's own clock would not count. Counters: per_fd, and those of CountPath.
#include <benchmark/benchmark.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "syscall_batch.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr int kPathFds = 10000;

enum Path : int { kRing, kSingle, kAuto };

sys::BatchMode ModeOf(int path) {
  return path == kRing ? sys::BatchMode::kRing : path == kSingle ? sys::BatchMode::kSingle : sys::BatchMode::kAuto;
}

// kPathFds socket fds, closed at the end of the benchmark.
struct Sockets {
  std::vector<int> fds;
  std::string error;
  Sockets() : error(OpenSocketPairs(kPathFds, &fds)) {}
  ~Sockets() {
    for (int fd : fds) close(fd);
  }
  Sockets(const Sockets&) = delete;
  Sockets& operator=(const Sockets&) = delete;
};

// Forces a path for one benchmark, then gives the library its own choice back.
class ModeFor {
 public:
  explicit ModeFor(int path) { sys::SetBatchMode(ModeOf(path)); }
  ~ModeFor() { sys::SetBatchMode(sys::BatchMode::kAuto); }
  ModeFor(const ModeFor&) = delete;
  ModeFor& operator=(const ModeFor&) = delete;
};

// Counters: ring, the share of batches that took a ring; and, for auto, what the library measured of this kind
// (chosen_ring 1 or 0, probe_single_ns and probe_ring_ns per item).
void CountPath(benchmark::State& state, sys::BatchKind kind, const sys::BatchCounts& before, std::uint64_t batches) {
  const sys::BatchCounts after = sys::Counts();
  state.counters["ring"] = batches == 0 ? 0 : static_cast<double>(after.ring_batches - before.ring_batches) / batches;
  const sys::PathChoice choice = sys::ChoiceOf(kind);
  if (choice.measured) {
    state.counters["chosen_ring"] = choice.ring ? 1 : 0;
    state.counters["probe_single_ns"] = choice.single_ns;
    state.counters["probe_ring_ns"] = choice.ring_ns;
  }
  CountWork(state, "per_fd", kPathFds);
}

void BM_StatPath(benchmark::State& state, int path) {
  Sockets s;
  if (!s.error.empty()) return state.SkipWithError(s.error.c_str());
  ModeFor mode(path);
  std::vector<sys::FileIdentity> ids(s.fds.size());
  std::vector<int> errors(s.fds.size());
  const sys::BatchCounts before = sys::Counts();
  std::uint64_t batches = 0;
  for (auto _ : state) {
    sys::StatMany(s.fds, ids, errors);
    ++batches;
    for (int e : errors) {
      if (e != 0) return state.SkipWithError("statx of an open socket failed");
    }
  }
  CountPath(state, sys::BatchKind::kStat, before, batches);
}

void BM_EpollAddPath(benchmark::State& state, int path) {
  Sockets s;
  if (!s.error.empty()) return state.SkipWithError(s.error.c_str());
  ModeFor mode(path);
  std::vector<epoll_event> events(s.fds.size());
  std::vector<int> errors(s.fds.size());
  const sys::BatchCounts before = sys::Counts();
  std::uint64_t batches = 0;
  for (auto _ : state) {
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < events.size(); ++i) {
      events[i].events = EPOLLIN;
      events[i].data.u64 = i;
    }
    sys::EpollAddMany(ep, s.fds, events, errors);
    ++batches;
    state.PauseTiming();
    close(ep);
    for (int e : errors) {
      if (e != 0) return state.SkipWithError("epoll_ctl ADD of an open socket failed");
    }
    state.ResumeTiming();
  }
  CountPath(state, sys::BatchKind::kEpollAdd, before, batches);
}

[[maybe_unused]] const bool registered = [] {
  for (auto [path, name] : {std::pair<int, const char*>{kRing, "ring"}, std::pair<int, const char*>{kSingle, "single"},
                            std::pair<int, const char*>{kAuto, "auto"}}) {
    using Function = void (*)(benchmark::State&, int);
    for (auto [what, function] : {std::pair<const char*, Function>{"BM_StatPath/", BM_StatPath},
                                  std::pair<const char*, Function>{"BM_EpollAddPath/", BM_EpollAddPath}}) {
      benchmark::RegisterBenchmark((std::string(what) + name).c_str(), function, path)
          ->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace epollcr::bench
