// The restorer (issue 5; BENCHMARKS.md "Restore"), beside what a kernel-based restorer (CRIU) pays: re-adding the
// same registrations to the kernel's epoll with epoll_ctl, in the same run.
//   BM_RestoreHostFds/registrations:10000   restore::RestoreBytes of a world of 10,000 real sockets (5,000 socket
//                              pairs, both ends), each a host file registered once in one EventPoll (level-triggered,
//                              edge-triggered and one-shot by k % 3, data = fd), through an InheritedFdResolver: every
//                              fd verified (statx, batched through io_uring: lib/src/syscall_batch.h), wrapped in a
//                              host file, the entries built and registered in the poll's kernel epoll (kernel
//                              entries: the kernel's ADD re-checks each one's readiness)
//   BM_KernelReAddHostFds/registrations:10000  epoll_create1 and epoll_ctl(ADD) of the same 10,000 fds, same events
//   BM_RestoreInMemory/entries:N            restore::RestoreBytes of checkpoint_world.h's in-memory world (eventfds),
//                              the kernel's side being BM_CheckpointKernelAdd/entries:N (checkpoint_bench.cc)
// Each reports per_entry (worlds.h CountWork) and the time of each restore stage per registration (read, validate,
// resolve, build, after_load: restore::Report) as counters <stage>_ns.
#include <benchmark/benchmark.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint_world.h"
#include "epollcr/host_file.h"
#include "image/codec.h"
#include "restore/resolvers.h"
#include "restore/restorer.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr int kHostRegistrations = 10000;

std::uint32_t HostEventsOf(int k) {
  return EPOLLIN | (k % 3 == 1 ? EPOLLET : 0u) | (k % 3 == 2 ? EPOLLONESHOT : 0u);
}

// 10,000 socket fds and the image of a world that watches them all, made for one benchmark run and closed after it
// (a process may open 20,000 fds here: the kernel benchmarks need theirs).
struct HostFixture {
  std::vector<int> fds;
  std::string image;  // framed image bytes
  std::string error;

  HostFixture() {
    for (int i = 0; i < kHostRegistrations / 2; ++i) {
      int pair[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
        error = "socketpair: " + std::string(std::strerror(errno)) + " (a process may open 20,000 fds here)";
        return;
      }
      fds.push_back(pair[0]);
      fds.push_back(pair[1]);
    }
    World world;
    auto poll = EventPoll::Create();
    world.roots["poll"] = poll;
    for (std::size_t k = 0; k < fds.size(); ++k) {
      Result<std::shared_ptr<HostFile>> file = HostFile::Create(fds[k]);
      const std::uint32_t events = HostEventsOf(static_cast<int>(k));
      if (!file.ok() || world.fds.InstallAt(fds[k], file.value()) ||
          poll->AddEntry({file.value().get(), fds[k]}, FlagsFromLinux(events), MaskFromLinux(events),
                         static_cast<std::uint64_t>(fds[k]))) {
        error = "building the host world failed";
        return;
      }
    }
    Result<std::string> bytes = image::SaveImage(world);
    if (!bytes.ok()) {
      error = StatusFailure("image::SaveImage", bytes.status());
      return;
    }
    image = std::move(bytes.value());
    HandOver(world);
  }

  ~HostFixture() {
    for (int fd : fds) close(fd);
  }
  HostFixture(const HostFixture&) = delete;
  HostFixture& operator=(const HostFixture&) = delete;

  // The host files give their fds back (they stay open for the next restore) and the world goes.
  static void HandOver(World& world) {
    for (const auto& [fd, file] : world.fds.Snapshot()) static_cast<HostFile*>(file.get())->ReleaseFd();
    world.roots.clear();
    world.fds.Clear();
  }
};

void BM_RestoreHostFds(benchmark::State& state) {
  HostFixture f;
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  restore::Report total;
  for (auto _ : state) {
    World world;
    restore::InheritedFdResolver inherited;
    restore::Options options;
    options.resolvers = {&inherited};
    restore::Report report;
    if (Status s = restore::RestoreBytes(f.image, &world, options, &report); !s.ok()) {
      return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
    }
    state.PauseTiming();
    if (report.entries != static_cast<std::uint64_t>(kHostRegistrations)) {
      return state.SkipWithError("the restored world lacks registrations");
    }
    AddStages(total, report);
    HostFixture::HandOver(world);
    state.ResumeTiming();
  }
  CountWork(state, "per_entry", kHostRegistrations);
  CountStages(state, total, kHostRegistrations);
}

void BM_KernelReAddHostFds(benchmark::State& state) {
  HostFixture f;
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  for (auto _ : state) {
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t k = 0; k < f.fds.size(); ++k) {
      epoll_event ev{};
      ev.events = HostEventsOf(static_cast<int>(k));
      ev.data.u64 = static_cast<std::uint64_t>(f.fds[k]);
      if (epoll_ctl(ep, EPOLL_CTL_ADD, f.fds[k], &ev) != 0) return state.SkipWithError("epoll_ctl ADD failed");
    }
    state.PauseTiming();
    close(ep);
    state.ResumeTiming();
  }
  CountWork(state, "per_entry", kHostRegistrations);
}

void BM_RestoreInMemory(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  CheckpointFixture& f = CheckpointFixtureFor(n);
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  static std::map<int, std::string> images;  // one image per size, made on first use
  std::string& bytes = images[n];
  if (bytes.empty()) {
    Result<std::string> saved = image::SaveImage(f.world.world);
    if (!saved.ok()) return state.SkipWithError(StatusFailure("image::SaveImage", saved.status()).c_str());
    bytes = std::move(saved.value());
  }
  restore::Report total;
  for (auto _ : state) {
    auto world = std::make_unique<World>();
    restore::Report report;
    if (Status s = restore::RestoreBytes(bytes, world.get(), {}, &report); !s.ok()) {
      return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
    }
    state.PauseTiming();
    AddStages(total, report);
    ReleaseWorld(*world, f.world.epfd);
    world.reset();
    state.ResumeTiming();
  }
  CountWork(state, "per_entry", n);
  CountStages(state, total, n);
}

BENCHMARK(BM_RestoreHostFds)->ArgName("registrations")->Arg(kHostRegistrations)->MinTime(kCheckpointMinTime)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KernelReAddHostFds)->ArgName("registrations")->Arg(kHostRegistrations)->MinTime(kCheckpointMinTime)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RestoreInMemory)->ArgName("entries")->Arg(1000)->Arg(100000)->MinTime(kCheckpointMinTime)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RestoreInMemory)->ArgName("entries")->Arg(1000000)->Iterations(1)
    ->Repetitions(kCheckpointLargeRepetitions)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace epollcr::bench
