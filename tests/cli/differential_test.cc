// Random differential test: generated traces (cli/replay/trace_generator.h) run on the kernel and on the userspace
// engine in lockstep; every line must agree. On a failure the seed, the trace and both lines are printed; rerun one
// trace with EPOLLCR_DIFF_SEED=<seed> EPOLLCR_DIFF_TRACES=1, or save it and use `epollcr replay --engine both`.
//
// Environment: EPOLLCR_DIFF_SEED (first seed, default 0x5eed), EPOLLCR_DIFF_TRACES (default 2000),
// EPOLLCR_DIFF_OPS (operations per trace, default 50), EPOLLCR_DIFF_EXCLUSIVE (0: no EPOLLEXCLUSIVE, default 1),
// EPOLLCR_DIFF_MAX_FAILURES (failing traces to report before stopping, default 1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_generator.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"

namespace epollcr::replay {
namespace {

std::uint64_t EnvNumber(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strtoull(value, nullptr, 0);
}

TEST(TraceGeneratorTest, SameSeedSameTrace) {
  EXPECT_EQ(GenerateTrace(42), GenerateTrace(42));
  EXPECT_NE(GenerateTrace(42), GenerateTrace(43));
}

TEST(TraceGeneratorTest, TracesParseAndCoverEveryVerb) {
  std::map<Verb, int> seen;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    ParseResult parsed = ParseTrace(GenerateTrace(seed), "generated");
    ASSERT_TRUE(parsed.ok()) << "seed " << seed << ": " << parsed.error->Message() << "\n" << GenerateTrace(seed);
    EXPECT_EQ(parsed.trace.ops.size(), 50u);
    for (const Op& op : parsed.trace.ops) ++seen[op.verb];
  }
  for (Verb verb : {Verb::kEpoll, Verb::kPipe, Verb::kEventFd, Verb::kSocketPair, Verb::kDup, Verb::kClose, Verb::kAdd,
                    Verb::kMod, Verb::kDel, Verb::kWrite, Verb::kRead, Verb::kShutdown, Verb::kWait}) {
    EXPECT_GT(seen[verb], 10) << VerbName(verb);
  }
  EXPECT_EQ(seen[Verb::kCheckpoint], 0) << "no checkpoint unless asked for";
  GeneratorOptions with_checkpoints;
  with_checkpoints.checkpoint_percent = 20;
  ParseResult parsed = ParseTrace(GenerateTrace(1, with_checkpoints), "generated");
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(std::any_of(parsed.trace.ops.begin(), parsed.trace.ops.end(),
                          [](const Op& op) { return op.verb == Verb::kCheckpoint; }));
}

TEST(DifferentialTest, KernelAndUserspaceAgreeOnRandomTraces) {
  const std::uint64_t first = EnvNumber("EPOLLCR_DIFF_SEED", 0x5eed);
  const std::uint64_t count = EnvNumber("EPOLLCR_DIFF_TRACES", 2000);
  GeneratorOptions options;
  options.ops = static_cast<int>(EnvNumber("EPOLLCR_DIFF_OPS", 50));
  options.exclusive = EnvNumber("EPOLLCR_DIFF_EXCLUSIVE", 1) != 0;
  const std::uint64_t max_failures = EnvNumber("EPOLLCR_DIFF_MAX_FAILURES", 1);
  std::uint64_t failures = 0;
  std::cout << "seeds " << first << " .. " << first + count - 1 << " (EPOLLCR_DIFF_SEED, EPOLLCR_DIFF_TRACES)\n";
  RecordProperty("first_seed", std::to_string(first));
  for (std::uint64_t seed = first; seed < first + count; ++seed) {
    std::string text = GenerateTrace(seed, options);
    ParseResult parsed = ParseTrace(text, "seed-" + std::to_string(seed) + ".trace");
    ASSERT_TRUE(parsed.ok()) << parsed.error->Message() << "\n" << text;
    KernelEngine kernel;
    UserspaceEngine userspace;
    std::ostringstream out;
    RunReport report = RunLockstep(parsed.trace, kernel, userspace, out);
    if (!report.ok()) {
      ADD_FAILURE() << "seed " << seed << " (EPOLLCR_DIFF_SEED=" << seed << " EPOLLCR_DIFF_TRACES=1): " << report.error
             << "\n--- trace ---\n"
             << text << "--- output ---\n"
             << out.str();
      if (++failures >= max_failures) return;
    }
  }
}

}  // namespace
}  // namespace epollcr::replay
