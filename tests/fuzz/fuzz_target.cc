// One libFuzzer target of fuzz_entry_points.h, chosen when it is compiled: -DEPOLLCR_FUZZ_TARGET="trace_parser"
// builds fuzz_trace_parser. A broken check prints what broke and aborts, so libFuzzer saves the input as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fuzz_entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const epollcr::fuzz::Target* const target = epollcr::fuzz::FindTarget(EPOLLCR_FUZZ_TARGET);
  if (target == nullptr) {
    std::fprintf(stderr, "fuzz: no target named %s\n", EPOLLCR_FUZZ_TARGET);
    std::abort();
  }
  const epollcr::fuzz::Outcome outcome = target->run(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!outcome.ok()) {
    std::fprintf(stderr, "fuzz %s: %s\n", EPOLLCR_FUZZ_TARGET, outcome.violation.c_str());
    std::abort();
  }
  return 0;
}
