// Tests of the trace shrinker (tests/common/trace_shrinker.h): delta debugging finds the minimal trace behind a
// failure, skips candidates that do not parse, stops at its budget; a shrunk trace is written out as a regression
// trace whose .expected is the kernel's output.
#include "trace_shrinker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "program_run.h"
#include "replay/forwarding_engine.h"
#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"
#include "temp_dir.h"
#include "trace_generator.h"

namespace epollcr::replay {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing_support::ReadWholeFile;
using testing_support::TempDir;

// A deliberately wrong engine: the userspace engine, except that an event with data 1000 is reported with data 1001.
// Only a trace that registers something with data 1000 and waits while it is ready can see it.
class MisreportingEngine final : public ForwardingEngine {
 public:
  MisreportingEngine() : ForwardingEngine(userspace_) {}
  std::string_view Name() const override { return "misreporting"; }
  Result<int> EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) override {
    Result<int> n = ForwardingEngine::EpollWait(epfd, buffer, max, timeout_ms);
    for (int i = 0; n.ok() && i < n.value(); ++i) {
      if (buffer[static_cast<std::size_t>(i)].Data() == 1000) buffer[static_cast<std::size_t>(i)].SetData(1001);
    }
    return n;
  }

 private:
  UserspaceEngine userspace_;
};

std::string Output(const Trace& trace, Engine& engine) {
  std::ostringstream out;
  (void)RunTrace(trace, engine, out);
  return out.str();
}

// The kernel and the misreporting engine print different lines.
bool EnginesDiffer(const std::string& /*text*/, const Trace& trace) {
  KernelEngine kernel;
  MisreportingEngine wrong;
  return Output(trace, kernel) != Output(trace, wrong);
}

// The four lines that make the misreport visible, planted among the lines of a generated trace (whose names are
// e0.., p0.. and so on, and whose data is never 1000).
const std::vector<std::string> kPlanted = {"epoll x_e", "eventfd x_f 1", "add x_e x_f in 1000", "wait x_e 8"};

std::string PlantedTrace(std::uint64_t seed) {
  std::vector<std::string> lines = OperationLines(GenerateTrace(seed));
  for (std::size_t i = 0; i < kPlanted.size(); ++i) {
    // Spread them out: before the first line, near a third, near two thirds, at the end.
    const std::size_t at = std::min(lines.size(), (lines.size() * i) / (kPlanted.size() - 1) + i);
    lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(at), kPlanted[i]);
  }
  std::string text = "# planted\n";
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

TEST(TraceShrinkerTest, OperationLinesDropCommentsAndBlankLines) {
  EXPECT_THAT(OperationLines("# c\n\nepoll e\r\n  # indented comment\n\twait e 1\n"),
              ElementsAre("epoll e", "\twait e 1"));
}

TEST(TraceShrinkerTest, FindsTheMinimalTraceBehindAMisreportingEngine) {
  for (std::uint64_t seed : {1u, 2u, 3u, 4u, 5u}) {
    const std::string text = PlantedTrace(seed);
    Result<Trace> parsed = ParseTrace(text, "planted.trace");
    ASSERT_TRUE(parsed.ok()) << parsed.status().message << "\n" << text;
    ASSERT_EQ(parsed.value().ops.size(), 54u);
    ASSERT_TRUE(EnginesDiffer(text, parsed.value())) << "the planted lines make the engines differ\n" << text;
    ShrinkResult result = ShrinkTrace(text, EnginesDiffer);
    EXPECT_EQ(result.lines, kPlanted) << "seed " << seed << ": " << result.tests << " tests\n" << result.Text();
    EXPECT_TRUE(result.minimal);
    EXPECT_GT(result.unparsable, 0u) << "some candidates lose a definition and are skipped";
    EXPECT_LT(result.tests, 1500u) << "delta debugging, not every subset";
  }
}

TEST(TraceShrinkerTest, NeverRunsACandidateThatDoesNotParse) {
  // The failure needs `write p.w 3` and `read p.r 2`; both need `pipe p`, which removing chunks often drops.
  const std::string text = "epoll e\npipe p\neventfd f\nwrite p.w 3\nwrite f 1\nread f\nread p.r 2\nwait e 1\n";
  std::size_t calls = 0;
  ShrinkResult result = ShrinkTrace(text, [&](const std::string& candidate, const Trace& trace) {
    ++calls;
    EXPECT_TRUE(ParseTrace(candidate, "c").ok()) << candidate;
    KernelEngine kernel;
    return Output(trace, kernel).find("read ok 2") != std::string::npos;
  });
  EXPECT_THAT(result.lines, ElementsAre("pipe p", "write p.w 3", "read p.r 2"));
  EXPECT_EQ(result.tests, calls);
  EXPECT_GT(result.unparsable, 0u);
  EXPECT_TRUE(result.minimal);
}

TEST(TraceShrinkerTest, StopsAtItsBudgetWithTheSmallestFailureSoFar) {
  const std::string text = PlantedTrace(7);
  ShrinkResult result = ShrinkTrace(text, EnginesDiffer, {.max_tests = 3});
  EXPECT_EQ(result.tests, 3u);
  EXPECT_FALSE(result.minimal);
  Result<Trace> parsed = ParseTrace(result.Text(), "t");
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(EnginesDiffer(result.Text(), parsed.value())) << "whatever it returns still fails";
}

TEST(TraceShrinkerTest, AnUnparsableTraceIsReturnedAsItIs) {
  ShrinkResult result = ShrinkTrace("wait e 1\n", [](const std::string&, const Trace&) { return true; });
  EXPECT_THAT(result.lines, ElementsAre("wait e 1"));
  EXPECT_EQ(result.tests, 0u);
}

TEST(TraceShrinkerTest, ARegressionTraceCarriesTheKernelsOutputAndStillShowsTheBug) {
  const std::string text = PlantedTrace(11);
  ShrinkResult result = ShrinkTrace(text, EnginesDiffer);
  std::string error;
  RegressionTrace regression =
      MakeRegressionTrace("misreport_data_1000", "found by the shrinker test", result.lines, &error);
  EXPECT_EQ(error, "");
  EXPECT_EQ(regression.trace, "# found by the shrinker test\nepoll x_e\neventfd x_f 1\nadd x_e x_f in 1000\nwait x_e 8\n");
  // Line numbers count the comment line, as in tests/traces.
  EXPECT_EQ(regression.expected, "2 epoll ok\n3 eventfd ok\n4 add ok\n5 wait events 1 in@1000\n");
  TempDir dir("shrinker-test");
  std::string reason;
  ASSERT_TRUE(WriteRegressionTrace(dir.File("out/divergences"), regression, &reason)) << reason;
  EXPECT_EQ(ReadWholeFile(dir.File("out/divergences/misreport_data_1000.trace")), regression.trace);
  EXPECT_EQ(ReadWholeFile(dir.File("out/divergences/misreport_data_1000.expected")), regression.expected);
  // What tests/cli/traces_test.cc will do with it: the kernel matches, the wrong engine does not.
  Result<Trace> parsed = ParseTrace(regression.trace, "misreport_data_1000.trace");
  ASSERT_TRUE(parsed.ok());
  KernelEngine kernel;
  MisreportingEngine wrong;
  EXPECT_EQ(Output(parsed.value(), kernel), regression.expected);
  EXPECT_THAT(Output(parsed.value(), wrong), HasSubstr("5 wait events 1 in@1001"));
  EXPECT_FALSE(WriteRegressionTrace("/proc/no-such-dir", regression, &reason));
  EXPECT_THAT(reason, HasSubstr("/proc/no-such-dir"));
}

}  // namespace
}  // namespace epollcr::replay
