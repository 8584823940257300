// The trace corpus (tests/traces): every NAME.trace runs on the kernel engine and on the userspace engine, and each
// output must equal NAME.expected, which the kernel produced (tests/traces/regenerate). A kernel failure means the
// running kernel's epoll differs from the one the files were made on; a userspace failure is an engine bug.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "line_diff.h"
#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"

namespace epollcr::replay {
namespace {

namespace fs = std::filesystem;

fs::path TracesDir() {
  const char* dir = std::getenv("EPOLLCR_TRACES_DIR");
  return dir != nullptr ? fs::path(dir) : fs::path("tests/traces");
}

std::vector<std::string> TraceNames() {
  std::vector<std::string> names;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(TracesDir(), error)) {
    if (entry.path().extension() == ".trace") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// tests/traces/known-userspace-divergences: trace name -> why the userspace engine differs today.
std::map<std::string, std::string> KnownDivergences() {
  std::map<std::string, std::string> known;
  std::istringstream lines(ReadFile(TracesDir() / "known-userspace-divergences"));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::size_t space = line.find_first_of(" \t");
    std::string name = line.substr(0, space);
    std::string why = space == std::string::npos ? "" : line.substr(line.find_first_not_of(" \t", space));
    known[name] = why;
  }
  return known;
}

TEST(TraceCorpusTest, IsThere) {
  std::vector<std::string> names = TraceNames();
  EXPECT_GE(names.size(), 40u) << "in " << TracesDir();
  for (const std::string& name : names) {
    EXPECT_TRUE(fs::exists(TracesDir() / (name + ".expected"))) << name << ".trace has no .expected file";
  }
}

class TraceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const fs::path base = TracesDir() / GetParam();
    std::string text = ReadFile(base.string() + ".trace");
    ASSERT_EQ(text.rfind("#", 0), 0u) << "a trace starts with a comment saying what it checks";
    ParseResult parsed = ParseTrace(text, GetParam() + ".trace");
    ASSERT_TRUE(parsed.ok()) << parsed.error->Message();
    trace_ = std::move(parsed.trace);
    expected_ = ReadFile(base.string() + ".expected");
    ASSERT_FALSE(expected_.empty()) << base << ".expected is missing or empty";
  }

  Trace trace_;
  std::string expected_;
};

TEST_P(TraceTest, KernelMatchesExpected) {
  KernelEngine kernel;
  std::ostringstream out;
  RunReport report = RunTrace(trace_, kernel, out);
  EXPECT_TRUE(report.ok()) << report.error;
  EXPECT_TRUE(out.str() == expected_) << "the kernel's output differs from the expected file; diff (- expected, "
                                      << "+ kernel):\n"
                                      << testing::LineDiff(expected_, out.str());
}

TEST_P(TraceTest, UserspaceMatchesExpected) {
  UserspaceEngine userspace;
  std::ostringstream out;
  RunReport report = RunTrace(trace_, userspace, out);
  if (!report.ok() && report.error.ends_with(": checkpoint: not supported yet")) {
    // Until the state model exists: everything before the checkpoint must match, and the test is skipped.
    EXPECT_EQ(expected_.rfind(out.str(), 0), 0u) << "userspace differs from the kernel before the checkpoint:\n"
                                                 << testing::LineDiff(expected_, out.str());
    GTEST_SKIP() << report.error;
  }
  const std::map<std::string, std::string> known = KnownDivergences();
  if (auto it = known.find(GetParam()); it != known.end()) {
    ASSERT_FALSE(report.ok() && out.str() == expected_)
        << GetParam() << " now matches the kernel: remove it from tests/traces/known-userspace-divergences";
    GTEST_SKIP() << "known divergence: " << it->second << "\ndiff (- kernel, + userspace):\n"
                 << testing::LineDiff(expected_, out.str());
  }
  EXPECT_TRUE(report.ok()) << report.error;
  EXPECT_TRUE(out.str() == expected_) << "userspace differs from the kernel; diff (- kernel, + userspace):\n"
                                      << testing::LineDiff(expected_, out.str());
}

INSTANTIATE_TEST_SUITE_P(Corpus, TraceTest, ::testing::ValuesIn(TraceNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace epollcr::replay
