// Checkpoint save and load (issue 3; BENCHMARKS.md "Checkpoint save and load"), beside what a kernel-based restorer
// pays per entry, in the same run:
//   BM_CheckpointSave/<format>/entries:N   - SaveWorld of a world with N registered entries; the counter locks_held_ns
//                                            is how long each save held the consistent cut, per entry (SavePause), and
//                                            faults_per_entry the page faults each took (freeing the archive
//                                            included); after two untimed saves (checkpoint_world.h WarmUpSaves)
//   BM_CheckpointLoad/<format>/entries:N   - LoadWorld of that world's archive into an empty world. Loading includes
//                                            after_load: every entry back on its list and its waiter registered with
//                                            its file again (docs/state-model.md "Loading")
//   BM_CheckpointKernelAdd/entries:N       - epoll_ctl(EPOLL_CTL_ADD) of N entries of the same mix into one epoll
//                                            instance (N = 10,000 too: the baseline before N was matched)
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
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "epollcr/state.h"
#include "epollcr/syscalls.h"
#include "checkpoint_world.h"
#include "heap_meter.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

static_assert(kEpollEdgeTriggered == EPOLLET && kEpollOneShot == EPOLLONESHOT && kEventIn == EPOLLIN);

// Each Boost archive of a fixture's world, saved once.
std::map<std::pair<int, ArchiveFormat>, Result<std::string>>& Archives() {
  static std::map<std::pair<int, ArchiveFormat>, Result<std::string>> archives;
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
    state.SkipWithError(StatusFailure("SaveWorld", it->second.status()).c_str());
    return nullptr;
  }
  return &it->second.value();
}

// ---- time: save and load --------------------------------------------------------------------------------------------

void BM_CheckpointSave(benchmark::State& state, ArchiveFormat format) {
  const int n = static_cast<int>(state.range(0));
  CheckpointFixture& f = CheckpointFixtureFor(n);
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  static std::map<ArchiveFormat, std::set<int>> warmed;
  WarmUpSaves(warmed[format], n, [&] { benchmark::DoNotOptimize(SaveWorld(f.world.world, format).ok()); });
  std::chrono::nanoseconds held{0};
  std::int64_t faults = 0;
  for (auto _ : state) {
    SavePause pause;
    const std::int64_t faults_before = ThreadFaults();
    {
      // Freeing the archive, at the end, is timed too.
      Result<std::string> saved = SaveWorld(f.world.world, format, &pause);
      if (!saved.ok()) {
        state.SkipWithError(StatusFailure("SaveWorld", saved.status()).c_str());
        break;
      }
      benchmark::DoNotOptimize(saved.value().data());
    }
    faults += ThreadFaults() - faults_before;
    held += pause.locks_held;
  }
  CountWork(state, "per_entry", n);
  CountLocksHeld(state, held, n);
  CountFaults(state, faults, n);
}

void BM_CheckpointLoad(benchmark::State& state, ArchiveFormat format) {
  const int n = static_cast<int>(state.range(0));
  const std::string* archive = ArchiveFor(state, format, n);
  if (archive == nullptr) return;
  const int epfd = CheckpointFixtureFor(n).world.epfd;
  for (auto _ : state) {
    auto loaded = std::make_unique<World>();
    if (Status s = LoadWorld(*archive, loaded.get()); !s.ok()) {
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
    std::optional<Result<std::string>> saved;
    const HeapUse save = Metered([&] { saved.emplace(SaveWorld(f.world.world, format)); });
    if (!saved->ok()) return state.SkipWithError(StatusFailure("SaveWorld", saved->status()).c_str());
    if (saved->value() != *archive) return state.SkipWithError("SaveWorld made different bytes for the same world");
    saved.reset();

    World loaded;
    Status status;
    const HeapUse load = Metered([&] { status = LoadWorld(*archive, &loaded); });
    if (!status.ok()) return state.SkipWithError(StatusFailure("LoadWorld", status).c_str());
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

// The kernel holding N registrations of the userspace world's shape: 1,000 eventfds (one in 10 with counter 1), each
// registered under N / 1,000 fd numbers, all in one epoll instance, entry k with CheckpointEventsOf(k). A process may
// open 20,000 fds here, so at N > kRoundFds the fd numbers are reused in rounds: a round points kRoundFds fd numbers
// at files with dup3 (outside the timed region), then adds them all. A registration outlives its fd number moving to
// another file, because the file stays open through its first fd (epoll(7), Q6: an entry goes when the last fd of its
// file closes). Round r points fd number i of the round at file (i + r) % 1,000, so every (file, fd) pair is new while
// r < 1,000. Making the instance and closing it (which removes its N entries) are outside the timed region.
constexpr int kRoundFds = 10000;

void BM_CheckpointKernelAdd(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int round_fds = std::min(n, kRoundFds);
  const int rounds = n / round_fds;
  if (n % round_fds != 0 || rounds > kCheckpointFiles) return state.SkipWithError("N must be a multiple of 10,000");
  std::vector<UniqueFd> files;
  for (int f = 0; f < kCheckpointFiles; ++f) {
    files.emplace_back(::eventfd(f % kCheckpointReadyEvery == 0 ? 1 : 0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!files.back().valid()) return state.SkipWithError(Failure("eventfd", errno).c_str());
  }
  std::vector<UniqueFd> slots;  // the fd numbers of a round
  for (int i = 0; i < round_fds; ++i) {
    slots.emplace_back(::fcntl(files[0].get(), F_DUPFD_CLOEXEC, 0));
    if (!slots.back().valid()) return state.SkipWithError(Failure("fcntl F_DUPFD_CLOEXEC", errno).c_str());
  }
  auto point = [&](int round) -> std::string {
    for (int i = 0; i < round_fds; ++i) {
      const int file = files[static_cast<std::size_t>((i + round) % kCheckpointFiles)].get();
      if (::dup3(file, slots[static_cast<std::size_t>(i)].get(), O_CLOEXEC) < 0) return Failure("dup3", errno);
    }
    return {};
  };
  for (auto _ : state) {
    state.PauseTiming();
    UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll.valid()) return state.SkipWithError(Failure("epoll_create1", errno).c_str());
    int k = 0;
    for (int round = 0; round < rounds; ++round) {
      if (round > 0) state.PauseTiming();
      if (std::string err = point(round); !err.empty()) return state.SkipWithError(err.c_str());
      state.ResumeTiming();
      for (const UniqueFd& slot : slots) {
        epoll_event event{};
        event.events = CheckpointEventsOf(k);
        event.data.u64 = static_cast<std::uint64_t>(k++);
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, slot.get(), &event) != 0) {
          return state.SkipWithError(Failure("epoll_ctl ADD", errno).c_str());
        }
      }
    }
    state.PauseTiming();
    epoll = UniqueFd();  // removes the N entries
    state.ResumeTiming();
  }
  state.counters["entries"] = n;
  CountWork(state, "per_entry", n);
}

BENCHMARK(BM_CheckpointKernelAdd)->ArgName("entries")->Arg(1000)->Arg(10000)->Arg(100000)
    ->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CheckpointKernelAdd)->ArgName("entries")->Arg(1000000)->Iterations(1)
    ->Repetitions(kCheckpointLargeRepetitions)->Unit(benchmark::kMillisecond);

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
