// The trace corpus (tests/traces): every NAME.trace runs on the kernel engine, on the userspace engine, and on the
// userspace engine with a checkpoint after every operation in each archive format (--checkpoint-every); each output
// must equal NAME.expected, which the kernel produced (tests/traces/regenerate). A kernel failure means the running
// kernel's epoll differs from the one the files were made on; a userspace failure is an engine bug; a failure with
// checkpoints only is a state-model bug (a checkpoint must be invisible). A trace with kernel-only objects (timerfd,
// signalfd, TCP, UDP, FIFO) is not checkpointed by replay yet: the checkpoint tests skip it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "epollcr/state.h"
#include "line_diff.h"
#include "replay/host_objects.h"
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

// The trace signals are blocked before anything runs, as `epollcr replay` does: a `raise` leaves its signal pending.
class BlockTraceSignals : public ::testing::Environment {
 public:
  void SetUp() override { host::BlockTraceSignals(); }
};
[[maybe_unused]] ::testing::Environment* const kBlockTraceSignals =
    ::testing::AddGlobalTestEnvironment(new BlockTraceSignals);

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
    Result<Trace> parsed = ParseTrace(text, GetParam() + ".trace");
    ASSERT_TRUE(parsed.ok()) << parsed.status().message;
    trace_ = std::move(parsed.value());
    expected_ = ReadFile(base.string() + ".expected");
    ASSERT_FALSE(expected_.empty()) << base << ".expected is missing or empty";
  }

  int CheckpointLines() const {
    return static_cast<int>(std::count_if(trace_.ops.begin(), trace_.ops.end(),
                                          [](const Op& op) { return op.verb == Verb::kCheckpoint; }));
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

// The same over host files (`replay --files host`): every pipe, eventfd and socket pair a real kernel object, so every
// entry is a kernel entry and the kernel does the poll's queueing (docs/engine.md, "Kernel entries"). No known
// divergence applies: the kernel itself carries these entries. Straight through, and with a checkpoint after every
// operation, restored in this process, where each poll takes its kernel epoll over as it is (docs/restore.md).
TEST_P(TraceTest, HostFilesMatchExpected) {
  for (const bool checkpoints : {false, true}) {
    UserspaceEngine userspace(CheckpointFormat::kProto, ImageStore::kFile, FileBacking::kHost);
    std::ostringstream out;
    RunReport report = RunTrace(trace_, userspace, out, {.checkpoint_every = checkpoints ? 1 : 0});
    const char* how = checkpoints ? "--files host --checkpoint-every 1" : "--files host";
    EXPECT_TRUE(report.ok()) << how << ": " << report.error;
    EXPECT_TRUE(out.str() == expected_) << how << " differs from the kernel; diff (- kernel, + host files):\n"
                                        << testing::LineDiff(expected_, out.str());
    if (checkpoints) {
      EXPECT_EQ(userspace.checkpoints(), static_cast<int>(trace_.ops.size()) + CheckpointLines()) << how;
    }
  }
}

// The same with a checkpoint (save -> load into a fresh world) after every operation, in each archive format. A
// known userspace divergence is compared with the userspace output instead: the checkpoint must still be invisible.
// A trace with kernel-only objects holds host files, which only the proto format carries.
TEST_P(TraceTest, UserspaceWithACheckpointAfterEveryOperationMatchesExpected) {
  std::string reference = expected_;
  if (KnownDivergences().count(GetParam()) != 0) {
    UserspaceEngine straight;
    std::ostringstream out;
    (void)RunTrace(trace_, straight, out);
    reference = out.str();
  }
  for (CheckpointFormat format : kAllCheckpointFormats) {
    if (trace_.host_objects && format != CheckpointFormat::kProto) continue;
    SCOPED_TRACE(CheckpointFormatName(format));
    UserspaceEngine userspace(format);
    std::ostringstream out;
    RunReport report = RunTrace(trace_, userspace, out, {.checkpoint_every = true});
    EXPECT_TRUE(report.ok()) << report.error;
    EXPECT_TRUE(out.str() == reference)
        << "with --checkpoint-every --checkpoint-format " << CheckpointFormatName(format)
        << ", userspace differs from the kernel; diff (- kernel, + userspace):\n"
        << testing::LineDiff(reference, out.str());
    EXPECT_EQ(userspace.checkpoints(), static_cast<int>(trace_.ops.size()) + CheckpointLines())
        << "one checkpoint after every operation, and one for each checkpoint line";
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, TraceTest, ::testing::ValuesIn(TraceNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace epollcr::replay
