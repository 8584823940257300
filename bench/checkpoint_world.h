// The world every checkpoint benchmark saves and restores (checkpoint_bench.cc: Boost archives; image_bench.cc: the
// protobuf image), and the kernel's side of the comparison.
//
// The world: kFiles eventfds, each dup'd so that N fds reach them, and every one of those fds registered for EPOLLIN in
// one EventPoll (fd 0), so each (file, fd) is an entry of its own. Entry k is level-triggered, edge-triggered or
// one-shot by k % 3; one file in kReadyEvery has counter 1, so its entries are ready; one harvest of half the ready
// entries then moves edge-triggered ones to the waiting list and one-shot ones to the disabled list, so a checkpoint
// holds all three lists. Entry data is the entry's fd, or with DataKind::kPointer a pointer-like 64-bit value
// (0x7f..., 48 bytes apart, as heap pointers stored as epoll data are).
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "epollcr/event_poll.h"
#include "epollcr/state.h"
#include "restore/restorer.h"

namespace epollcr::bench {

inline constexpr int kCheckpointFiles = 1000;
inline constexpr int kCheckpointReadyEvery = 10;
// Run lengths, to keep scripts/bench to a few minutes: 1,000 and 100,000 entries take scripts/bench's repetitions with
// kCheckpointMinTime seconds of timed work each (Google Benchmark's default is 0.5); 1,000,000 entries run one
// iteration per repetition, kCheckpointLargeRepetitions times (a 1,000,000-entry call takes up to seconds, and the
// world must be torn down after each load), so that the report has a median and a cv for them too.
inline constexpr double kCheckpointMinTime = 0.2;
inline constexpr int kCheckpointLargeRepetitions = 3;

enum class DataKind { kFd, kPointer };

// The Linux events word of entry k, for both worlds.
std::uint32_t CheckpointEventsOf(int k);

std::string StatusFailure(const char* what, const Status& s);

// Restore stage times summed over a benchmark's iterations (AddStages), reported per registration as counters
// read_ns, validate_ns, resolve_ns, build_ns and after_load_ns (CountStages).
void AddStages(restore::Report& total, const restore::Report& one);
void CountStages(benchmark::State& state, const restore::Report& total, double registrations);

// Minor page faults of the calling thread so far (getrusage, RUSAGE_THREAD). Over a restore, the fresh memory it
// touched: reported per registration as the counter faults_per_entry (CountFaults), beside BENCHMARKS.md's "Machine"
// cost of a fault, so that the restore's cost on a machine whose faults cost another figure can be worked out. A fault
// that maps a whole huge page counts once.
std::int64_t ThreadFaults();
void CountFaults(benchmark::State& state, std::int64_t faults, double registrations);

// Before a save benchmark's first timed save of a world of n entries in this process: `save`, twice, untimed. A
// process's first saves of a size fault in memory that its later ones reuse: the cut's arrays (kept mappings,
// lib/src/big_buffer.h) at the first, and at the second the heap that malloc grows to the output's size (glibc serves
// a large block with a mapping of its own and, once it is freed, raises its threshold to that size, so the next one
// comes from the heap, which grows then and keeps it). Each fresh 4 KiB page is a fault (BENCHMARKS.md "Machine": up
// to 16 µs each on some VMs). An output above glibc's largest threshold (32 MiB: a Boost binary archive of a million
// entries, ~41 MB) is a mapping of its own at every save, so those saves keep faulting it in (faults_per_entry says
// how much). The timed saves are then a program's from its third on: one that checkpoints every so often. `warmed`:
// the sizes warmed up so far (the caller's static).
void WarmUpSaves(std::set<int>& warmed, int n, const std::function<void()>& save);

std::shared_ptr<EventPoll> PollAt(const World& world, int epfd);

// Empties a world quickly: the entries go before their files (either order is correct; this one is quicker).
void ReleaseWorld(World& world, int epfd);

struct CheckpointWorld {
  World world;
  int epfd = -1;
  std::size_t ready = 0;  // entries on the ready list once built

  CheckpointWorld() = default;
  CheckpointWorld(const CheckpointWorld&) = delete;
  CheckpointWorld& operator=(const CheckpointWorld&) = delete;
  ~CheckpointWorld() { ReleaseWorld(world, epfd); }

  // Returns an empty string, or what failed. `entries` is a multiple of kCheckpointFiles.
  std::string Build(int entries, DataKind data);
};

// The worlds are built once per (size, data kind), then shared by every benchmark that needs them, until the program
// exits (building the 1,000,000-entry world takes seconds). `heap` is mallinfo2 around building it: its files, fd
// table, poll and entries.
struct CheckpointFixture {
  CheckpointWorld world;
  std::string error;  // why building failed, or empty
  double heap = 0;
};
CheckpointFixture& CheckpointFixtureFor(int entries, DataKind data = DataKind::kFd);

// True if `loaded` has the fixture's fds, entries and ready list.
bool SameShape(const World& loaded, const CheckpointFixture& f, int entries);

// Heap use of one call: the HeapMeter's peak and net change (operator new/delete), and mallinfo2's net change.
struct HeapUse {
  std::int64_t peak = 0;
  std::int64_t net = 0;
  std::int64_t net_mallinfo = 0;
};
template <typename Call>
HeapUse Metered(Call call);
void CountHeap(benchmark::State& state, const char* call, const HeapUse& use);

// How long the saves of a benchmark's iterations held the consistent cut (SavePause), summed over its iterations:
// reported per unit of work as the counter locks_held_ns (wall clock, as the cut's pause is), to set beside the save's
// time per unit.
void CountLocksHeld(benchmark::State& state, std::chrono::nanoseconds total, double per_iteration);

}  // namespace epollcr::bench

#include "heap_meter.h"

template <typename Call>
epollcr::bench::HeapUse epollcr::bench::Metered(Call call) {
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
