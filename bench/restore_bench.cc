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
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint_world.h"
#include "epollcr/host_file.h"
#include "image/codec.h"
#include "restore/resolvers.h"
#include "restore/restorer.h"
#include "syscall_batch.h"
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
    error = OpenSocketPairs(kHostRegistrations, &fds);
    if (!error.empty()) return;
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

// The path each batch of system calls took in a restore (lib/src/syscall_batch.h): counters stat_ring and add_ring,
// the share of the restores whose identity checks (statx) and registrations (epoll_ctl ADD) went through a ring, and
// for a kind the library measured, its probe figures per item (<kind>_probe_single_ns, <kind>_probe_ring_ns).
struct BatchPaths {
  std::uint64_t restores = 0, stat_rings = 0, add_rings = 0;

  void Add(const sys::BatchCounts& before, const sys::BatchCounts& after, bool stat_batch, bool add_batch) {
    ++restores;
    std::uint64_t rings = after.ring_batches - before.ring_batches;
    // The statx batch runs first: with one ring between two batches, it is the statx batch's only if the ADD batch
    // went one call at a time in full, which the counts cannot tell apart; the library's choice can.
    if (stat_batch && rings > 0 && (!add_batch || rings == 2 || sys::ChoiceOf(sys::BatchKind::kStat).ring)) {
      ++stat_rings;
      --rings;
    }
    if (add_batch && rings > 0) ++add_rings;
  }
  void Count(benchmark::State& state) const {
    const double n = restores == 0 ? 1 : static_cast<double>(restores);
    state.counters["stat_ring"] = static_cast<double>(stat_rings) / n;
    state.counters["add_ring"] = static_cast<double>(add_rings) / n;
    for (auto [kind, name] : {std::pair{sys::BatchKind::kStat, "stat"}, std::pair{sys::BatchKind::kEpollAdd, "add"}}) {
      const sys::PathChoice c = sys::ChoiceOf(kind);
      if (!c.measured) continue;
      state.counters[std::string(name) + "_probe_single_ns"] = c.single_ns;
      state.counters[std::string(name) + "_probe_ring_ns"] = c.ring_ns;
    }
  }
};

// Restores whose fds are checked (statx) and whose kernel epoll is built afresh (epoll_ctl ADD of every fd), each
// batch on the path `mode` gives (kAuto: the library's choice).
void BM_RestoreHostFds(benchmark::State& state, sys::BatchMode mode) {
  HostFixture f;
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  sys::SetBatchMode(mode);
  restore::Report total;
  BatchPaths paths;
  std::int64_t faults = 0;
  for (auto _ : state) {
    World world;
    restore::InheritedFdResolver inherited;
    restore::Options options;
    options.resolvers = {&inherited};
    restore::Report report;
    const sys::BatchCounts before = sys::Counts();
    const std::int64_t faults_before = ThreadFaults();
    if (Status s = restore::RestoreBytes(f.image, &world, options, &report); !s.ok()) {
      sys::SetBatchMode(sys::BatchMode::kAuto);
      return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
    }
    faults += ThreadFaults() - faults_before;
    state.PauseTiming();
    paths.Add(before, sys::Counts(), true, true);
    if (report.entries != static_cast<std::uint64_t>(kHostRegistrations)) {
      sys::SetBatchMode(sys::BatchMode::kAuto);
      return state.SkipWithError("the restored world lacks registrations");
    }
    AddStages(total, report);
    HostFixture::HandOver(world);
    state.ResumeTiming();
  }
  sys::SetBatchMode(sys::BatchMode::kAuto);
  CountWork(state, "per_entry", kHostRegistrations);
  CountStages(state, total, kHostRegistrations);
  CountFaults(state, faults, kHostRegistrations);
  paths.Count(state);
}

// Restores that take the poll's kernel epoll over as it is (no epoll_ctl at all): `handed_over`, as a live hand-off's
// successor does (InheritedFdResolver::Trusted, AcceptHandedOver: no system call per fd); or not, as an exec hand-off
// does (AcceptInherited and a checking InheritedFdResolver: one statx per fd, and /proc/self/fdinfo read once to
// check the registrations). Between rounds the restored world gives its fds and kernel epoll up again, untimed.
void BM_RestoreHostFdsAdopted(benchmark::State& state, bool handed_over) {
  HostFixture f;
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  // The fixture's world was dropped with its kernel epoll: one restore, rebuilt, makes the kernel epoll every later
  // round adopts, and the image of that world.
  World first;
  restore::InheritedFdResolver inherited;
  restore::Options options;
  options.resolvers = {&inherited};
  if (Status s = restore::RestoreBytes(f.image, &first, options); !s.ok()) {
    return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
  }
  image::SaveOptions save;
  save.host_open_state = !handed_over;  // a successor shares the open files: its image does not read them
  Result<std::string> image = image::SaveImage(first, save);
  if (!image.ok()) return state.SkipWithError(StatusFailure("image::SaveImage", image.status()).c_str());
  std::vector<int> kernel = ReleaseHostResources(first);
  first.roots.clear();
  first.fds.Clear();
  std::map<int, int> same;
  for (int fd : f.fds) same.emplace(fd, fd);
  restore::Report total;
  BatchPaths paths;
  std::int64_t faults = 0;
  for (auto _ : state) {
    state.PauseTiming();
    (void)(handed_over ? AcceptHandedOver(kernel) : AcceptInherited(kernel));
    World world;
    restore::InheritedFdResolver resolver = handed_over ? restore::InheritedFdResolver::Trusted(same)
                                                        : restore::InheritedFdResolver();
    restore::Options with;
    with.resolvers = {&resolver};
    restore::Report report;
    const sys::BatchCounts before = sys::Counts();
    const std::int64_t faults_before = ThreadFaults();
    state.ResumeTiming();
    Status s = restore::RestoreBytes(image.value(), &world, with, &report);
    state.PauseTiming();
    faults += ThreadFaults() - faults_before;
    paths.Add(before, sys::Counts(), !handed_over, false);
    if (!s.ok()) {
      CloseUnadopted(kernel);
      return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
    }
    const int adopted = world.roots.at("poll")->KernelFd();
    if (adopted < 0 || std::find(kernel.begin(), kernel.end(), adopted) == kernel.end()) {
      CloseUnadopted(kernel);
      return state.SkipWithError("the restored poll did not take its kernel epoll over");
    }
    AddStages(total, report);
    kernel = ReleaseHostResources(world);
    world.roots.clear();
    world.fds.Clear();
    state.ResumeTiming();
  }
  CloseUnadopted(kernel);
  CountWork(state, "per_entry", kHostRegistrations);
  CountStages(state, total, kHostRegistrations);
  CountFaults(state, faults, kHostRegistrations);
  paths.Count(state);
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
  std::int64_t faults = 0;
  for (auto _ : state) {
    auto world = std::make_unique<World>();
    restore::Report report;
    const std::int64_t faults_before = ThreadFaults();
    if (Status s = restore::RestoreBytes(bytes, world.get(), {}, &report); !s.ok()) {
      return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
    }
    faults += ThreadFaults() - faults_before;
    state.PauseTiming();
    AddStages(total, report);
    ReleaseWorld(*world, f.world.epfd);
    world.reset();
    state.ResumeTiming();
  }
  CountWork(state, "per_entry", n);
  CountStages(state, total, n);
  CountFaults(state, faults, n);
}

BENCHMARK_CAPTURE(BM_RestoreHostFds, auto, sys::BatchMode::kAuto)->ArgName("registrations")->Arg(kHostRegistrations)
    ->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RestoreHostFds, ring, sys::BatchMode::kRing)->ArgName("registrations")->Arg(kHostRegistrations)
    ->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RestoreHostFds, single, sys::BatchMode::kSingle)->ArgName("registrations")
    ->Arg(kHostRegistrations)->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RestoreHostFdsAdopted, inherited, false)->ArgName("registrations")->Arg(kHostRegistrations)
    ->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RestoreHostFdsAdopted, handed_over, true)->ArgName("registrations")->Arg(kHostRegistrations)
    ->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KernelReAddHostFds)->ArgName("registrations")->Arg(kHostRegistrations)->MinTime(kCheckpointMinTime)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RestoreInMemory)->ArgName("entries")->Arg(1000)->Arg(100000)->MinTime(kCheckpointMinTime)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RestoreInMemory)->ArgName("entries")->Arg(1000000)->Iterations(1)
    ->Repetitions(kCheckpointLargeRepetitions)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace epollcr::bench
