// Heap bytes per registered entry in the userspace engine: glibc's mallinfo2() before and after registering 100000
// eventfds that already exist, so only what registration allocates (entries, the entries map's buckets) is counted.
#include <benchmark/benchmark.h>

#include <cstddef>

#include "heap_meter.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr int kEntries = 100000;

void BM_MemoryPerEntry_Userspace(benchmark::State& state) {
  for (auto _ : state) {
    UserWorld world;
    world.CreateFiles(kEntries, 0);
    const std::size_t before = HeapInUse();
    if (std::string err = world.RegisterAll(); !err.empty()) {
      state.SkipWithError(err.c_str());
      break;
    }
    const std::size_t after = HeapInUse();
    if (after < before) {
      state.SkipWithError("the heap shrank while entries were added: the measurement is meaningless");
      break;
    }
    state.counters["bytes_per_entry"] = static_cast<double>(after - before) / kEntries;
    state.counters["entries"] = kEntries;
  }
}

// One pass is the measurement (the timing is only that of building the world); repetitions repeat it.
BENCHMARK(BM_MemoryPerEntry_Userspace)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace epollcr::bench
