// epollcr_bench: Google Benchmark's main, plus the kernel's epoll slab object sizes as context (read from
// /proc/slabinfo when it is readable; they are the kernel's declared object sizes, not something this binary measures).
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>
#include <string>

namespace {

void AddKernelSlabContext() {
  std::ifstream slabinfo("/proc/slabinfo");
  std::string line;
  while (std::getline(slabinfo, line)) {
    // name <active_objs> <num_objs> <objsize> ...
    std::istringstream fields(line);
    std::string name, active, total, objsize;
    if (!(fields >> name >> active >> total >> objsize)) continue;
    if (name == "eventpoll_epi" || name == "eventpoll_pwq") {
      benchmark::AddCustomContext("kernel_slab_objsize_" + name, objsize);
    }
  }
}

}  // namespace

// A binary whose benchmarks start this binary again as another program (BM_HandOffDemo: the demo's server and its
// successor) defines this: it runs that program and returns its exit status, or -1 when argv is not one of them.
extern "C" int EpollcrBenchSubprogram(int argc, char** argv) __attribute__((weak));

int main(int argc, char** argv) {
  if (EpollcrBenchSubprogram != nullptr) {
    if (const int status = EpollcrBenchSubprogram(argc, argv); status >= 0) return status;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  AddKernelSlabContext();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
