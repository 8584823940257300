// What touching fresh memory costs on this machine, which decides how a load allocates (lib/src/big_buffer.h):
//   BM_PageFault/huge:0  one write to each 4 KiB page of a fresh 64 MiB anonymous mapping (a page fault each)
//   BM_PageFault/huge:1  the same with madvise(MADV_HUGEPAGE) (one fault per 2 MiB where huge pages are granted)
//   BM_PageFault/huge:1/idle_s:5  the same after 5 s of sleep (outside the timed region): on a virtual machine whose
//                        host takes back the guest's free memory (virtio-balloon free page reporting, which reports
//                        free 2 MiB blocks after about 2 s), memory nobody used for seconds costs the host's faults too;
//                        the runs without idle_s reuse the pages the previous iteration just freed
// Reports per_page: time per 4 KiB of memory touched. Mapping, unmapping and sleeping are outside the timed region.
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr std::size_t kBytes = std::size_t{64} << 20;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kHuge = std::size_t{2} << 20;

void BM_PageFault(benchmark::State& state) {
  const bool huge = state.range(0) != 0;
  const unsigned idle_s = state.range(1) > 0 ? static_cast<unsigned>(state.range(1)) : 0;
  for (auto _ : state) {
    state.PauseTiming();
    if (idle_s > 0) ::sleep(idle_s);
    void* mapping = ::mmap(nullptr, kBytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping == MAP_FAILED) {
      state.SkipWithError("mmap failed");
      break;
    }
    auto* start = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(mapping) + kHuge - 1) & ~(kHuge - 1));
    if (huge) (void)::madvise(start, kBytes, MADV_HUGEPAGE);
    state.ResumeTiming();
    for (std::size_t at = 0; at < kBytes; at += kPage) start[at] = 1;
    benchmark::ClobberMemory();
    state.PauseTiming();
    ::munmap(mapping, kBytes + kHuge);
    state.ResumeTiming();
  }
  CountWork(state, "per_page", static_cast<double>(kBytes / kPage));
}

BENCHMARK(BM_PageFault)->ArgNames({"huge", "idle_s"})->Args({0, 0})->Args({1, 0})->Iterations(5)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PageFault)->ArgNames({"huge", "idle_s"})->Args({1, 5})->Iterations(2)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace epollcr::bench
