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
// The world: kFiles eventfds, each dup'd so that N fds reach them, and every one of those fds registered for EPOLLIN in
// one EventPoll (fd 0), so each (file, fd) is an entry of its own. Entry k is level-triggered, edge-triggered or
// one-shot by k % 3; one file in kReadyEvery has counter 1, so its entries are ready; one harvest of half the ready
// entries then moves edge-triggered ones to the waiting list and one-shot ones to the disabled list, so the archive
// holds all three lists.
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
#include "heap_meter.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr int kFiles = 1000;
constexpr int kReadyEvery = 10;
// The kernel side: 1,000 eventfds with 10 fds each, all in one process (RLIMIT_NOFILE here: 20,000, hard).
constexpr int kKernelEntries = 10000;
// Run lengths, to keep scripts/bench to a few minutes: 1,000 and 100,000 entries take scripts/bench's repetitions with
// kMinTime seconds of timed work each (Google Benchmark's default is 0.5); 1,000,000 entries run one iteration, once
// (a 1,000,000-entry call takes seconds, and the world must be torn down after each load).
constexpr double kMinTime = 0.2;
constexpr int kLargeRepetitions = 1;

static_assert(kEpollEdgeTriggered == EPOLLET && kEpollOneShot == EPOLLONESHOT && kEventIn == EPOLLIN);

// The Linux events word of entry k, for both worlds.
std::uint32_t EventsOf(int k) {
  switch (k % 3) {
    case 0: return kEventIn;
    case 1: return kEventIn | kEpollEdgeTriggered;
    default: return kEventIn | kEpollOneShot;
  }
}

std::string StatusFailure(const char* what, const Status& s) { return std::string(what) + ": " + s.message; }

std::shared_ptr<EventPoll> PollAt(const World& world, int epfd) {
  return std::dynamic_pointer_cast<EventPoll>(world.fds.Get(epfd));
}

// Empties a world quickly: the entries go before their files (either order is correct; this one is quicker).
void ReleaseWorld(World& world, int epfd) {
  if (std::shared_ptr<EventPoll> poll = PollAt(world, epfd)) poll->Release();
  world.roots.clear();
  world.fds.Clear();
}

struct CheckpointWorld {
  World world;
  int epfd = -1;
  std::size_t ready = 0;  // entries on the ready list once built

  CheckpointWorld() = default;
  CheckpointWorld(const CheckpointWorld&) = delete;
  CheckpointWorld& operator=(const CheckpointWorld&) = delete;
  ~CheckpointWorld() { ReleaseWorld(world, epfd); }

  // Returns an empty string, or what failed. `entries` is a multiple of kFiles.
  std::string Build(int entries) {
    Result<int> ep = sys::EpollCreate1(world.fds, 0);
    if (!ep.ok()) return Failure("sys::EpollCreate1", ep.error().value());
    epfd = ep.value();
    int k = 0;
    for (int f = 0; f < kFiles; ++f) {
      const Result<int> efd = sys::EventFd(world.fds, f % kReadyEvery == 0 ? 1 : 0, false);
      if (!efd.ok()) return Failure("sys::EventFd", efd.error().value());
      for (int j = 0; j < entries / kFiles; ++j, ++k) {
        const Result<int> fd = j == 0 ? efd : sys::Dup(world.fds, efd.value());
        if (!fd.ok()) return Failure("sys::Dup", fd.error().value());
        Event event;
        event.events = EventsOf(k);
        event.SetData(static_cast<std::uint64_t>(fd.value()));
        if (std::error_code ec = sys::EpollCtl(world.fds, epfd, sys::kEpollCtlAdd, fd.value(), &event)) {
          return Failure("sys::EpollCtl ADD", ec.value());
        }
      }
    }
    std::shared_ptr<EventPoll> poll = PollAt(world, epfd);
    std::vector<Event> events(poll->ReadyList().size() / 2 + 1);
    const Result<int> got = sys::EpollWait(world.fds, epfd, events.data(), static_cast<int>(events.size()), 0);
    if (!got.ok() || got.value() != static_cast<int>(events.size())) return "the harvest did not fill its buffer";
    ready = poll->ReadyList().size();
    return {};
  }
};

// The worlds are built once per size and their archives saved once per format, then shared by every benchmark that
// needs them, until the program exits (building the 1,000,000-entry world and saving it take seconds).
struct Fixture {
  CheckpointWorld world;
  std::string error;  // why building failed, or empty
  double heap = 0;    // mallinfo2 around building the world: its files, fd table, poll and entries
  std::map<ArchiveFormat, StatusOr<std::string>> archives;
};

Fixture& FixtureFor(int entries) {
  static std::map<int, std::unique_ptr<Fixture>> fixtures;  // by size; only the benchmark thread touches it
  std::unique_ptr<Fixture>& f = fixtures[entries];
  if (!f) {
    const std::size_t before = HeapInUse();
    f = std::make_unique<Fixture>();
    f->error = f->world.Build(entries);
    f->heap = static_cast<double>(HeapInUse() - before);
  }
  return *f;
}

// The archive of the world of `entries` entries, or null after SkipWithError.
const std::string* ArchiveFor(benchmark::State& state, ArchiveFormat format, int entries) {
  Fixture& f = FixtureFor(entries);
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return nullptr;
  }
  auto it = f.archives.find(format);
  if (it == f.archives.end()) it = f.archives.emplace(format, SaveWorld(f.world.world, format)).first;
  if (!it->second.ok()) {
    state.SkipWithError(StatusFailure("SaveWorld", it->second.status).c_str());
    return nullptr;
  }
  return &it->second.value;
}

// ---- time: save and load --------------------------------------------------------------------------------------------

void BM_CheckpointSave(benchmark::State& state, ArchiveFormat format) {
  const int n = static_cast<int>(state.range(0));
  Fixture& f = FixtureFor(n);
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
  const int epfd = FixtureFor(n).world.epfd;
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

// Heap use of one call: the HeapMeter's peak and net change (operator new/delete), and mallinfo2's net change.
struct HeapUse {
  std::int64_t peak = 0;
  std::int64_t net = 0;
  std::int64_t net_mallinfo = 0;
};

template <typename Call>
HeapUse Metered(Call call) {
  const std::size_t before = HeapInUse();
  HeapUse use;
  {
    HeapMeter meter;
    call();
    use.peak = meter.Peak();
    use.net = meter.Net();
  }
  use.net_mallinfo = static_cast<std::int64_t>(HeapInUse()) - static_cast<std::int64_t>(before);
  return use;
}

void CountHeap(benchmark::State& state, const char* call, const HeapUse& use) {
  const std::string prefix = call;
  state.counters[prefix + "_peak_heap_bytes"] = static_cast<double>(use.peak);
  state.counters[prefix + "_net_heap_bytes"] = static_cast<double>(use.net);
  state.counters[prefix + "_net_heap_bytes_mallinfo"] = static_cast<double>(use.net_mallinfo);
}

// Peaks are deterministic (the same calls allocate the same blocks), so one run of each call is the measurement. The
// loaded world is checked against the saved one: same fds, entries and ready list.
void BM_CheckpointMemory(benchmark::State& state, ArchiveFormat format) {
  const int n = static_cast<int>(state.range(0));
  const std::string* archive = ArchiveFor(state, format, n);
  if (archive == nullptr) return;
  const Fixture& f = FixtureFor(n);
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
    const std::shared_ptr<EventPoll> poll = PollAt(loaded, f.world.epfd);
    const bool same = loaded.fds.Count() == n + 1 && poll && poll->EntryCount() == static_cast<std::size_t>(n) &&
                      poll->ReadyList().size() == f.world.ready;
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
    event.events = EventsOf(static_cast<int>(k));
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
  for (int f = 0; f < kFiles; ++f) {
    OwnedFd efd(::eventfd(f % kReadyEvery == 0 ? 1 : 0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!efd.valid()) return state.SkipWithError(Failure("eventfd", errno).c_str());
    const int first = efd.get();
    fds.push_back(std::move(efd));
    for (int j = 1; j < kKernelEntries / kFiles; ++j) {
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
          ->ArgName("entries")->Arg(1000)->Arg(100000)->MinTime(kMinTime)->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((family + name).c_str(), function, format)
          ->ArgName("entries")->Arg(1000000)->Iterations(1)->Repetitions(kLargeRepetitions)
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
