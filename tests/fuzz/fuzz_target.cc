// One libFuzzer target of fuzz_entry_points.h, chosen when it is compiled: -DEPOLLCR_FUZZ_TARGET="trace_parser"
// builds fuzz_trace_parser. A broken check prints what broke and aborts, so libFuzzer saves the input as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "fuzz_entry_points.h"

namespace {

// The library never logs: a line from protobuf's log (an image string it would not parse or serialize, say) is a bug
// the fuzzer reports like a crash.
[[noreturn]] void ProtobufLogged(google::protobuf::LogLevel, const char* file, int line, const std::string& message) {
  std::fprintf(stderr, "fuzz %s: libprotobuf logged (%s:%d): %s\n", EPOLLCR_FUZZ_TARGET, file, line, message.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const epollcr::fuzz::Target* const target = epollcr::fuzz::FindTarget(EPOLLCR_FUZZ_TARGET);
  static const bool log_handled = (google::protobuf::SetLogHandler(ProtobufLogged), true);
  (void)log_handled;
  if (target == nullptr) {
    std::fprintf(stderr, "fuzz: no target named %s\n", EPOLLCR_FUZZ_TARGET);
    std::abort();
  }
  const epollcr::fuzz::Verdict outcome = target->run(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!outcome.ok()) {
    std::fprintf(stderr, "fuzz %s: %s\n", EPOLLCR_FUZZ_TARGET, outcome.violation.c_str());
    std::abort();
  }
  return 0;
}
