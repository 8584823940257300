// End-to-end tests of the epollcr program (path in EPOLLCR_BIN): exit statuses, stdout, and the stderr format
// "epollcr: <what>: <reason>".
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "epollcr/version.h"
#include "program_run.h"

namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

using epollcr::testing_support::ProgramRun;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "epollcr_program_test_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// Runs the program with `args`, `input` on its stdin; stdout and stderr go to files.
ProgramRun RunEpollcr(const std::vector<std::string>& args, const std::string& input = "") {
  const char* bin = std::getenv("EPOLLCR_BIN");
  EXPECT_NE(bin, nullptr) << "EPOLLCR_BIN must name the epollcr program";
  if (bin == nullptr) return {};
  return epollcr::testing_support::RunProgram(bin, args,
                                              {.stdin_path = WriteTemp("stdin", input),
                                               .stdout_path = ::testing::TempDir() + "epollcr_program_test_stdout",
                                               .stderr_path = ::testing::TempDir() + "epollcr_program_test_stderr",
                                               .cwd = "",
                                               .as_uid = -1});
}

constexpr const char* kGoodTrace =
    "# good\n"
    "epoll e\n"
    "pipe p\n"
    "add e p.r in 5\n"
    "write p.w 2\n"
    "wait e 4\n"
    "close p.r\n"
    "write p.w 1\n";

constexpr const char* kGoodOutput =
    "2 epoll ok\n"
    "3 pipe ok\n"
    "4 add ok\n"
    "5 write ok 2\n"
    "6 wait events 1 in@5\n"
    "7 close ok\n"
    "8 write err EPIPE\n";

TEST(EpollcrProgramTest, Version) {
  ProgramRun run = RunEpollcr({"--version"});
  EXPECT_EQ(run.status, 0);
  EXPECT_EQ(run.out, std::string("epollcr ") + epollcr::kVersion + "\n");
}

TEST(EpollcrProgramTest, Help) {
  ProgramRun run = RunEpollcr({"--help"});
  EXPECT_EQ(run.status, 0);
  EXPECT_THAT(run.out, HasSubstr("replay"));
  ProgramRun sub = RunEpollcr({"replay", "--help"});
  EXPECT_EQ(sub.status, 0);
  EXPECT_THAT(sub.out, HasSubstr("--engine"));
  EXPECT_THAT(sub.out, HasSubstr("--checkpoint-every"));
  EXPECT_THAT(sub.out, HasSubstr("--checkpoint-format"));
}

TEST(EpollcrProgramTest, KernelEngineRunsTraceAndSurvivesSigpipe) {
  std::string path = WriteTemp("good.trace", kGoodTrace);
  ProgramRun run = RunEpollcr({"replay", path, "--engine", "kernel"});
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, kGoodOutput);
  EXPECT_EQ(run.err, "");
}

TEST(EpollcrProgramTest, BothEnginesAgreeOnGoodTrace) {
  std::string path = WriteTemp("good.trace", kGoodTrace);
  ProgramRun run = RunEpollcr({"replay", "--engine", "both", path});
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, kGoodOutput);
}

TEST(EpollcrProgramTest, MalformedTraceExits2BeforeRunningAnything) {
  std::string path = WriteTemp("bad.trace", "epoll e\nwait e 1\nfrob e\n");
  for (const char* engine : {"kernel", "userspace", "both"}) {
    ProgramRun run = RunEpollcr({"replay", path, "--engine", engine});
    EXPECT_EQ(run.status, 2) << engine;
    EXPECT_EQ(run.out, "") << "nothing runs before the whole trace is validated";
    EXPECT_EQ(run.err, "epollcr: " + path + ":3: unknown verb 'frob'\n");
  }
}

TEST(EpollcrProgramTest, StdinTrace) {
  ProgramRun run = RunEpollcr({"replay", "-", "--engine", "kernel"}, kGoodTrace);
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, kGoodOutput);
  ProgramRun bad = RunEpollcr({"replay", "-"}, "epoll e\nepoll e\n");
  EXPECT_EQ(bad.status, 2);
  EXPECT_EQ(bad.err, "epollcr: <stdin>:2: name 'e' is already defined (line 1) and not closed\n");
}

TEST(EpollcrProgramTest, DefaultEngineIsUserspaceAndCheckpointsLikeTheKernel) {
  std::string path = WriteTemp("checkpoint.trace", "epoll e\neventfd f 1\nadd e f in 3\ncheckpoint\nwait e 1\n");
  const std::string expected = "1 epoll ok\n2 eventfd ok\n3 add ok\n4 checkpoint ok\n5 wait events 1 in@3\n";
  ProgramRun run = RunEpollcr({"replay", path});
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, expected);
  EXPECT_EQ(run.err, "");
  ProgramRun kernel = RunEpollcr({"replay", path, "--engine", "kernel"});
  EXPECT_EQ(kernel.status, 0) << kernel.err;
  EXPECT_EQ(kernel.out, expected);
}

TEST(EpollcrProgramTest, CheckpointEveryPrintsTheSameAsWithout) {
  const std::string corpus = std::getenv("EPOLLCR_TRACES_DIR") != nullptr ? std::getenv("EPOLLCR_TRACES_DIR") : "";
  ASSERT_FALSE(corpus.empty()) << "EPOLLCR_TRACES_DIR must name tests/traces";
  const std::string trace = corpus + "/checkpoint_between_steps.trace";
  ProgramRun plain = RunEpollcr({"replay", trace, "--engine", "both"});
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_EQ(plain.out, Slurp(corpus + "/checkpoint_between_steps.expected"));
  ProgramRun every = RunEpollcr(
      {"replay", "--checkpoint-every", "--checkpoint-format", "boost-xml", "--engine", "both", trace});
  EXPECT_EQ(every.status, 0) << every.err;
  EXPECT_EQ(every.out, plain.out);
  EXPECT_EQ(every.err, "");
  for (const char* format : {"proto", "boost-text", "boost-binary"}) {
    ProgramRun userspace = RunEpollcr({"replay", trace, "--checkpoint-every", "--checkpoint-format", format});
    EXPECT_EQ(userspace.status, 0) << format << ": " << userspace.err;
    EXPECT_EQ(userspace.out, plain.out) << format;
  }
  ProgramRun by_default = RunEpollcr({"replay", trace, "--checkpoint-every"});  // proto, in memory
  EXPECT_EQ(by_default.status, 0) << by_default.err;
  EXPECT_EQ(by_default.out, plain.out);
  ProgramRun through_file = RunEpollcr(
      {"replay", trace, "--checkpoint-every", "--checkpoint-store", "file", "--engine", "both"});  // an image file
  EXPECT_EQ(through_file.status, 0) << through_file.err;
  EXPECT_EQ(through_file.out, plain.out);
  ProgramRun boost_file = RunEpollcr(
      {"replay", trace, "--checkpoint-every", "--checkpoint-store", "file", "--checkpoint-format", "boost-text"});
  EXPECT_EQ(boost_file.status, 2) << "a Boost archive has no file store";
  EXPECT_THAT(boost_file.err, HasSubstr("--checkpoint-store file"));
  ProgramRun kernel = RunEpollcr({"replay", trace, "--engine", "kernel", "--checkpoint-every"});
  EXPECT_EQ(kernel.status, 0) << kernel.err;
  EXPECT_EQ(kernel.out, plain.out) << "the kernel has nothing to checkpoint";
}

TEST(EpollcrProgramTest, BadCheckpointFormatExits2) {
  std::string path = WriteTemp("good.trace", kGoodTrace);
  for (const char* format : {"protobuf", "boost", ""}) {
    ProgramRun run = RunEpollcr({"replay", path, "--checkpoint-format", format});
    EXPECT_EQ(run.status, 2) << format;
    EXPECT_THAT(run.err, StartsWith("epollcr: usage: ")) << format;
    EXPECT_THAT(run.err, HasSubstr("--checkpoint-format")) << format;
    EXPECT_EQ(run.out, "") << format;
  }
  ProgramRun missing = RunEpollcr({"replay", path, "--checkpoint-format"});
  EXPECT_EQ(missing.status, 2);
  EXPECT_THAT(missing.err, StartsWith("epollcr: "));
}

TEST(EpollcrProgramTest, UsageErrorsExit2) {
  ProgramRun none = RunEpollcr({});
  EXPECT_EQ(none.status, 2);
  EXPECT_THAT(none.err, StartsWith("epollcr: usage: "));
  ProgramRun no_trace = RunEpollcr({"replay"});
  EXPECT_EQ(no_trace.status, 2);
  EXPECT_THAT(no_trace.err, StartsWith("epollcr: usage: "));
  ProgramRun bad_engine = RunEpollcr({"replay", "x.trace", "--engine", "qemu"});
  EXPECT_EQ(bad_engine.status, 2);
  EXPECT_THAT(bad_engine.err, StartsWith("epollcr: usage: "));
  ProgramRun unknown = RunEpollcr({"frobnicate"});
  EXPECT_EQ(unknown.status, 2);
  EXPECT_THAT(unknown.err, StartsWith("epollcr: usage: "));
}

TEST(EpollcrProgramTest, UnreadableTraceExits2) {
  ProgramRun run = RunEpollcr({"replay", "/nonexistent/x.trace"});
  EXPECT_EQ(run.status, 2);
  EXPECT_EQ(run.err, "epollcr: /nonexistent/x.trace: No such file or directory\n");
  ProgramRun dir = RunEpollcr({"replay", "/"});
  EXPECT_EQ(dir.status, 2);
  EXPECT_EQ(dir.err, "epollcr: /: Is a directory\n");
  EXPECT_EQ(dir.out, "");
}

}  // namespace
