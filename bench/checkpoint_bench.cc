// Checkpoint save and load (issue 3; BENCHMARKS.md "Checkpoint save and load"), beside what a kernel-based restorer
// pays per entry, in the same run:
//   BM_CheckpointSave/<format>/entries:N   - SaveWorld of a world with N registered entries
//   BM_CheckpointLoad/<format>/entries:N   - LoadWorld of that world's archive into an empty world. Loading includes
//                                            after_load: every entry back on its list and its waiter registered with
//                                            its file again (docs/state-model.md "Loading")
//   BM_CheckpointKernelAdd                 - epoll_ctl(EPOLL_CTL_ADD) of 10,000 entries of the same mix
//   BM_CheckpointMemory/<format>/entries:N - one save and one load under a HeapMeter (heap_meter.h): the highest heap in
//                                            use above the level at the start of each call; the world's heap; the
//                                            archive's size
// The timed ones report per_entry and units_per_iteration (worlds.h CountWork).
//
// The world is checkpoint_world.h's (data = fd).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "epollcr/state.h"
#include "epollcr/syscalls.h"
#include "checkpoint_world.h"
#include "heap_meter.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

// The kernel side: 1,000 eventfds with 10 fds each, all in one process (RLIMIT_NOFILE here: 20,000, hard).
constexpr int kKernelEntries = 10000;

static_assert(kEpollEdgeTriggered == EPOLLET && kEpollOneShot == EPOLLONESHOT && kEventIn == EPOLLIN);

// Each Boost archive of a fixture's world, saved once.
std::map<std::pair<int, ArchiveFormat>, StatusOr<std::string>>& Archives() {
  static std::map<std::pair<int, ArchiveFormat>, StatusOr<std::string>> archives;
  return archives;
}

// The archive of the world of `entries` entries, or null after SkipWithError.
const std::string* ArchiveFor(benchmark::State& state, ArchiveFormat format, int entries) {
  CheckpointFixture& f = CheckpointFixtureFor(entries);
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return nullptr;
  }
  auto it = Archives().find({entries, format});
  if (it == Archives().end()) it = Archives().emplace(std::pair{entries, format}, SaveWorld(f.world.world, format)).first;
  if (!it->second.ok()) {
    state.SkipWithError(StatusFailure("SaveWorld", it->second.status).c_str());
    return nullptr;
  }
  return &it->second.value;
}

// ---- time: save and load --------------------------------------------------------------------------------------------

void BM_CheckpointSave(benchmark::State& state, ArchiveFormat format) {
  const int n = static_cast<int>(state.range(0));
  CheckpointFixture& f = CheckpointFixtureFor(n);
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  for (auto _ : state) {
    StatusOr<std::string> saved = SaveWorld(f.world.world, format);  // freeing the archive, at the end, is timed too
    if (!saved.ok()) {
      state.SkipWithError(StatusFailure("SaveWorld", saved.status).c_str());
      break;
    }
    benchmark::DoNotOptimize(saved.value.data());
  }
  CountWork(state, "per_entry", n);
}

void BM_CheckpointLoad(benchmark::State& state, ArchiveFormat format) {
  const int n = static_cast<int>(state.range(0));
  const std::string* archive = ArchiveFor(state, format, n);
  if (archive == nullptr) return;
  const int epfd = CheckpointFixtureFor(n).world.epfd;
  for (auto _ : state) {
    auto loaded = std::make_unique<World>();
    if (Status s = LoadWorld(*archive, loaded.get())) {
      state.SkipWithError(StatusFailure("LoadWorld", s).c_str());
      break;
    }
    state.PauseTiming();
    ReleaseWorld(*loaded, epfd);
    loaded.reset();
    state.ResumeTiming();
  }
  CountWork(state, "per_entry", n);
}

// ---- memory: one save and one load under a HeapMeter ----------------------------------------------------------------

// Peaks are deterministic (the same calls allocate the same blocks), so one run of each call is the measurement. The
// loaded world is checked against the saved one: same fds, entries and ready list.
void BM_CheckpointMemory(benchmark::State& state, ArchiveFormat format) {
  const int n = static_cast<int>(state.range(0));
  const std::string* archive = ArchiveFor(state, format, n);
  if (archive == nullptr) return;
  const CheckpointFixture& f = CheckpointFixtureFor(n);
  for (auto _ : state) {
    StatusOr<std::string> saved;
    const HeapUse save = Metered([&] { saved = SaveWorld(f.world.world, format); });
    if (!saved.ok()) return state.SkipWithError(StatusFailure("SaveWorld", saved.status).c_str());
    if (saved.value != *archive) return state.SkipWithError("SaveWorld made different bytes for the same world");
    saved = {};

    World loaded;
    Status status;
    const HeapUse load = Metered([&] { status = LoadWorld(*archive, &loaded); });
    if (status) return state.SkipWithError(StatusFailure("LoadWorld", status).c_str());
    const bool same = SameShape(loaded, f, n);
    ReleaseWorld(loaded, f.world.epfd);
    if (!same) return state.SkipWithError("the loaded world lacks some of the saved world's fds, entries or ready list");

    CountHeap(state, "save", save);
    CountHeap(state, "load", load);
  }
  state.counters["world_heap_bytes"] = f.heap;
  state.counters["ready_entries"] = static_cast<double>(f.world.ready);
  state.counters["archive_bytes"] = static_cast<double>(archive->size());
  state.counters["entries"] = n;
}

// ---- the kernel: epoll_ctl(EPOLL_CTL_ADD) per entry -----------------------------------------------------------------

std::string AddAll(int epfd, const std::vector<OwnedFd>& fds) {
  for (std::size_t k = 0; k < fds.size(); ++k) {
    epoll_event event{};
    event.events = CheckpointEventsOf(static_cast<int>(k));
    event.data.u64 = k;
    if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fds[k].get(), &event) != 0) return Failure("epoll_ctl ADD", errno);
  }
  return {};
}

// The same mix as the userspace world: 1,000 eventfds (one in 10 with counter 1), each dup'd to 10 fds. Per iteration
// every fd is added to a new epoll instance; making it and closing the previous one (which removes its entries) is
// outside the timed region.
void BM_CheckpointKernelAdd(benchmark::State& state) {
  std::vector<OwnedFd> fds;
  fds.reserve(kKernelEntries);
  for (int f = 0; f < kCheckpointFiles; ++f) {
    OwnedFd efd(::eventfd(f % kCheckpointReadyEvery == 0 ? 1 : 0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!efd.valid()) return state.SkipWithError(Failure("eventfd", errno).c_str());
    const int first = efd.get();
    fds.push_back(std::move(efd));
    for (int j = 1; j < kKernelEntries / kCheckpointFiles; ++j) {
      OwnedFd dup(::fcntl(first, F_DUPFD_CLOEXEC, 0));
      if (!dup.valid()) return state.SkipWithError(Failure("fcntl F_DUPFD_CLOEXEC", errno).c_str());
      fds.push_back(std::move(dup));
    }
  }
  OwnedFd epoll;
  for (auto _ : state) {
    state.PauseTiming();
    epoll = OwnedFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll.valid()) {
      state.SkipWithError(Failure("epoll_create1", errno).c_str());
      break;
    }
    state.ResumeTiming();
    if (std::string err = AddAll(epoll.get(), fds); !err.empty()) {
      state.SkipWithError(err.c_str());
      break;
    }
  }
  state.counters["entries"] = kKernelEntries;
  CountWork(state, "per_entry", kKernelEntries);
}

BENCHMARK(BM_CheckpointKernelAdd)->Unit(benchmark::kMillisecond);

// Every format; registered in a loop (BENCHMARK cannot name a family after its argument). Memory runs once.
[[maybe_unused]] const bool registered = [] {
  using Function = void (*)(benchmark::State&, ArchiveFormat);
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary}) {
    const std::string name = ArchiveFormatName(format);
    for (auto [family, function] : {std::pair<std::string, Function>{"BM_CheckpointSave/", BM_CheckpointSave},
                                    std::pair<std::string, Function>{"BM_CheckpointLoad/", BM_CheckpointLoad}}) {
      benchmark::RegisterBenchmark((family + name).c_str(), function, format)
          ->ArgName("entries")->Arg(1000)->Arg(100000)->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((family + name).c_str(), function, format)
          ->ArgName("entries")->Arg(1000000)->Iterations(1)->Repetitions(kCheckpointLargeRepetitions)
          ->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark(("BM_CheckpointMemory/" + name).c_str(), BM_CheckpointMemory, format)
        ->ArgName("entries")->Arg(1000)->Arg(100000)->Arg(1000000)->Iterations(1)->Repetitions(1)
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
}  // namespace epollcr::bench
