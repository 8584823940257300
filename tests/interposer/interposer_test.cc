// libepollcr-preload.so and `epollcr run` against the kernel: tests/interposer/epoll_probe.cc, a program that knows
// nothing of epollcr, runs on the kernel's epoll and under `epollcr run`; the outputs must be identical (the kernel is
// the oracle), and the run's log must show that its epolls were epollcr's (so a silently missing interposer fails).
// Also: the fork decision (docs/interposer.md, "fork"), and what `epollcr run` refuses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "program_run.h"
#include "temp_dir.h"

namespace {

using ::testing::HasSubstr;
using epollcr::testing_support::ProgramRun;
using epollcr::testing_support::RunProgram;
using epollcr::testing_support::TempDir;

std::string Env(const char* name) { return epollcr::testing_support::EnvOrEmpty(name); }

std::string ReadAll(const std::string& path) { return epollcr::testing_support::ReadWholeFile(path); }

class InterposerTest : public ::testing::Test {
 protected:
  ProgramRun Run(const std::string& program, const std::vector<std::string>& args) {
    std::ofstream(dir_.File("stdin"));
    return RunProgram(program.c_str(), args,
                      {.stdin_path = dir_.File("stdin"), .stdout_path = dir_.File("stdout"),
                       .stderr_path = dir_.File("stderr"), .cwd = "", .as_uid = -1});
  }
  // The probe on the kernel.
  ProgramRun Kernel(const std::vector<std::string>& args) { return Run(probe_, args); }
  // The probe under `epollcr run --log LOG`.
  ProgramRun Epollcr(const std::vector<std::string>& args) {
    std::vector<std::string> all = {"run", "--log", log_, "--", probe_};
    all.insert(all.end(), args.begin(), args.end());
    return Run(bin_, all);
  }
  // How many epolls the log says epollcr made.
  int Creates() {
    std::istringstream lines(ReadAll(log_));
    int n = 0;
    for (std::string line; std::getline(lines, line);) n += line.starts_with("create ") ? 1 : 0;
    return n;
  }

  TempDir dir_{"interposer-test"};
  const std::string log_ = dir_.File("run.log");
  const std::string bin_ = Env("EPOLLCR_BIN");
  const std::string probe_ = Env("EPOLLCR_PROBE");
};

TEST_F(InterposerTest, FixedScenariosMatchTheKernel) {
  ProgramRun kernel = Kernel({});
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  ProgramRun epollcr = Epollcr({});
  EXPECT_EQ(epollcr.status, 0) << epollcr.err;
  EXPECT_EQ(epollcr.out, kernel.out);
  EXPECT_EQ(epollcr.err, "");
  EXPECT_GE(Creates(), 6) << ReadAll(log_);
}

TEST_F(InterposerTest, RandomSequencesMatchTheKernel) {
  for (int seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE(seed);
    ProgramRun kernel = Kernel({std::to_string(seed)});
    ASSERT_EQ(kernel.status, 0) << kernel.err;
    ProgramRun epollcr = Epollcr({std::to_string(seed)});
    EXPECT_EQ(epollcr.status, 0) << epollcr.err;
    EXPECT_EQ(epollcr.out, kernel.out);
  }
  EXPECT_EQ(Creates(), 80);
}

// The kernel shares an epoll between a parent and its child. Under epollcr the child gets its own table: a use of
// the parent's epoll in the child is refused with EINVAL and a report on stderr (never a silent divergence); the
// child may close it and make its own, and the parent's epoll is untouched.
TEST_F(InterposerTest, AChildCannotUseItsParentsEpoll) {
  ProgramRun kernel = Kernel({"fork"});
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  EXPECT_THAT(kernel.out, HasSubstr("child: wait on the parent's epoll: 1 1@5\n"));
  ProgramRun epollcr = Epollcr({"fork"});
  EXPECT_EQ(epollcr.status, 0) << epollcr.err;
  std::string expected = kernel.out;
  const std::string shared = "child: wait on the parent's epoll: 1 1@5\n";
  expected.replace(expected.find(shared), shared.size(), "child: wait on the parent's epoll: err EINVAL\n");
  EXPECT_EQ(epollcr.out, expected);
  EXPECT_THAT(epollcr.err, HasSubstr("that epoll was made before a fork and is the parent's"));
}

// An epoll without FD_CLOEXEC crosses an exec with every registration, taken edge, fired one-shot and ready entry, as
// in the kernel: the old program image saves its polls into a memfd, the new one restores them before it uses them
// and takes each kernel epoll over as it is (a registered fd closed on exec leaves the poll, as in the kernel).
TEST_F(InterposerTest, AnEpollCrossesAnExecWithItsStateAsInTheKernel) {
  ProgramRun kernel = Kernel({"exec"});
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  EXPECT_THAT(kernel.out, HasSubstr("101 after the exec: the eventfd only (the edge was taken, the one-shot fired): "
                                    "1 1@52\n"));
  ProgramRun epollcr = Epollcr({"exec"});
  EXPECT_EQ(epollcr.status, 0) << epollcr.err;
  EXPECT_EQ(epollcr.out, kernel.out);
  EXPECT_EQ(epollcr.err, "");
  EXPECT_THAT(ReadAll(log_), HasSubstr(" polls 1\n")) << "the new program image restored no poll";
  EXPECT_THAT(ReadAll(log_), ::testing::ContainsRegex("restore [0-9]+ polls 1"));
}

TEST_F(InterposerTest, RunRefusesWhatItCannotInterpose) {
  ProgramRun missing = Run(bin_, {"run", "--", "no-such-program-epollcr"});
  EXPECT_EQ(missing.status, 2);
  EXPECT_THAT(missing.err, HasSubstr("not found in PATH"));
  ProgramRun usage = Run(bin_, {"run"});
  EXPECT_EQ(usage.status, 2);
  const std::string static_program = Env("EPOLLCR_STATIC_PROBE");
  ProgramRun refused = Run(bin_, {"run", "--", static_program});
  EXPECT_EQ(refused.status, 2);
  EXPECT_THAT(refused.err, HasSubstr("statically linked"));
}

}  // namespace
