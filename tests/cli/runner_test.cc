// Tests of the runner and the engines' contracts: output of one engine, lockstep divergence reports, runtime failures
// (checkpoint), --checkpoint-every, the userspace engine's checkpoint, fds closed at the end, SIGPIPE, and fds the
// kernel engine does not own.
#include "replay/runner.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "epollcr/host_file.h"
#include "epollcr/unique_fd.h"
#include "replay/formatter.h"
#include "replay/forwarding_engine.h"
#include "replay/host_objects.h"
#include "replay/kernel_engine.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"
#include "temp_dir.h"

namespace epollcr::replay {
namespace {

using ::testing::HasSubstr;
using testing_support::TempDir;

Trace Parse(std::string_view text) {
  Result<Trace> result = ParseTrace(text, "t.trace");
  EXPECT_TRUE(result.ok()) << result.status().message;
  return result.value();
}

int OpenFdCount() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  // the directory's own fd
}

// Reads report one byte less than they got.
class ShortReadEngine final : public ForwardingEngine {
 public:
  using ForwardingEngine::ForwardingEngine;
  std::string_view Name() const override { return "shortread"; }
  Result<std::size_t> Read(int fd, std::span<std::byte> buffer) override {
    Result<std::size_t> n = ForwardingEngine::Read(fd, buffer);
    if (n.ok() && n.value() > 0) return n.value() - 1;
    return n;
  }
};

class NoCheckpointEngine final : public ForwardingEngine {
 public:
  using ForwardingEngine::ForwardingEngine;
  Status Checkpoint() override { return Halt("checkpoint: not supported yet"); }
};

constexpr std::string_view kSmallTrace =
    "# a comment\n"
    "epoll e\n"
    "pipe p\n"
    "add e p.r in|rdnorm 7\n"
    "write p.w 3\n"
    "wait e 4\n"
    "read p.r\n"
    "read p.r\n"
    "close p.w\n"
    "wait e 4\n";

constexpr std::string_view kSmallTraceOutput =
    "2 epoll ok\n"
    "3 pipe ok\n"
    "4 add ok\n"
    "5 write ok 3\n"
    "6 wait events 1 in|rdnorm@7\n"
    "7 read ok 3\n"
    "8 read err EAGAIN\n"
    "9 close ok\n"
    "10 wait events 1 hup@7\n";

TEST(RunnerTest, KernelEngineOutput) {
  Trace trace = Parse(kSmallTrace);
  KernelEngine kernel;
  std::ostringstream out;
  RunReport report = RunTrace(trace, kernel, out);
  EXPECT_TRUE(report.ok()) << report.error;
  EXPECT_EQ(report.exit_status, 0);
  EXPECT_EQ(out.str(), kSmallTraceOutput);
}

TEST(RunnerTest, LockstepOfAgreeingEnginesPrintsEachLineOnce) {
  Trace trace = Parse(kSmallTrace);
  KernelEngine a;
  KernelEngine b;
  std::ostringstream out;
  RunReport report = RunLockstep(trace, a, b, out);
  EXPECT_TRUE(report.ok()) << report.error;
  EXPECT_EQ(out.str(), kSmallTraceOutput);
}

TEST(RunnerTest, LockstepStopsAtFirstDifferenceAndShowsBothLines) {
  Trace trace = Parse(kSmallTrace);
  KernelEngine a;
  KernelEngine inner;
  ShortReadEngine b(inner);
  std::ostringstream out;
  RunReport report = RunLockstep(trace, a, b, out);
  EXPECT_EQ(report.exit_status, 1);
  EXPECT_EQ(report.error, "t.trace:7: kernel and shortread engines differ");
  EXPECT_EQ(out.str(),
            "2 epoll ok\n"
            "3 pipe ok\n"
            "4 add ok\n"
            "5 write ok 3\n"
            "6 wait events 1 in|rdnorm@7\n"
            "kernel:    7 read ok 3\n"
            "shortread: 7 read ok 2\n");
}

TEST(RunnerTest, CheckpointFailureStopsTheRun) {
  Trace trace = Parse("epoll e\neventfd f\ncheckpoint\nwait e 1\n");
  KernelEngine inner;
  NoCheckpointEngine engine(inner);
  std::ostringstream out;
  RunReport report = RunTrace(trace, engine, out);
  EXPECT_EQ(report.exit_status, 1);
  EXPECT_EQ(report.error, "t.trace:3: checkpoint: not supported yet");
  EXPECT_EQ(out.str(), "1 epoll ok\n2 eventfd ok\n");
}

TEST(RunnerTest, CheckpointFailureInLockstepNamesTheEngine) {
  Trace trace = Parse("epoll e\ncheckpoint\n");
  KernelEngine a;
  KernelEngine inner;
  NoCheckpointEngine b(inner);
  std::ostringstream out;
  RunReport report = RunLockstep(trace, a, b, out);
  EXPECT_EQ(report.exit_status, 1);
  EXPECT_EQ(report.error, "t.trace:2: forwarding: checkpoint: not supported yet");
  EXPECT_EQ(out.str(), "1 epoll ok\n");
}

TEST(RunnerTest, KernelCheckpointIsOk) {
  Trace trace = Parse("checkpoint\n");
  KernelEngine kernel;
  std::ostringstream out;
  EXPECT_TRUE(RunTrace(trace, kernel, out).ok());
  EXPECT_EQ(out.str(), "1 checkpoint ok\n");
}

// Counts checkpoints; the output of the inner engine is unchanged.
class CountingEngine final : public ForwardingEngine {
 public:
  using ForwardingEngine::ForwardingEngine;
  Status Checkpoint() override {
    ++checkpoints;
    return ForwardingEngine::Checkpoint();
  }
  int checkpoints = 0;
};

TEST(RunnerTest, CheckpointEveryRunsOneAfterEachOperationAndPrintsNothing) {
  Trace trace = Parse(kSmallTrace);
  KernelEngine kernel;
  CountingEngine engine(kernel);
  std::ostringstream out;
  EXPECT_TRUE(RunTrace(trace, engine, out, {.checkpoint_every = true}).ok());
  EXPECT_EQ(out.str(), kSmallTraceOutput);
  EXPECT_EQ(engine.checkpoints, static_cast<int>(trace.ops.size()));
}

TEST(RunnerTest, CheckpointEveryFailureStopsAfterTheLineItFollows) {
  Trace trace = Parse("epoll e\neventfd f\n");
  KernelEngine inner;
  NoCheckpointEngine engine(inner);
  std::ostringstream out;
  RunReport report = RunTrace(trace, engine, out, {.checkpoint_every = true});
  EXPECT_EQ(report.exit_status, 1);
  EXPECT_EQ(report.error, "t.trace:1: checkpoint: not supported yet");
  EXPECT_EQ(out.str(), "1 epoll ok\n") << "the operation ran and is printed; the checkpoint after it failed";
}

TEST(RunnerTest, CheckpointEveryInLockstepCheckpointsBothAndNamesTheOneThatFails) {
  Trace trace = Parse(kSmallTrace);
  KernelEngine a_inner;
  KernelEngine b_inner;
  CountingEngine a(a_inner);
  CountingEngine b(b_inner);
  std::ostringstream out;
  EXPECT_TRUE(RunLockstep(trace, a, b, out, {.checkpoint_every = true}).ok());
  EXPECT_EQ(out.str(), kSmallTraceOutput);
  EXPECT_EQ(a.checkpoints, static_cast<int>(trace.ops.size()));
  EXPECT_EQ(b.checkpoints, static_cast<int>(trace.ops.size()));

  KernelEngine kernel;
  KernelEngine inner;
  NoCheckpointEngine failing(inner);
  std::ostringstream out2;
  RunReport report = RunLockstep(Parse("epoll e\nwait e 1\n"), kernel, failing, out2, {.checkpoint_every = true});
  EXPECT_EQ(report.exit_status, 1);
  EXPECT_EQ(report.error, "t.trace:1: forwarding: checkpoint: not supported yet");
  EXPECT_EQ(out2.str(), "1 epoll ok\n");
}

TEST(RunnerTest, CheckpointEveryNCheckpointsAfterEveryNthOperation) {
  Trace trace = Parse(kSmallTrace);  // 9 operations
  for (int every : {1, 2, 3, 4, 9, 10}) {
    KernelEngine kernel;
    CountingEngine engine(kernel);
    std::ostringstream out;
    EXPECT_TRUE(RunTrace(trace, engine, out, {.checkpoint_every = every}).ok());
    EXPECT_EQ(out.str(), kSmallTraceOutput) << every;
    EXPECT_EQ(engine.checkpoints, 9 / every) << every;
    for (std::size_t i = 0; i < trace.ops.size(); ++i) {
      EXPECT_EQ(CheckpointDue({.checkpoint_every = every}, i), (i + 1) % static_cast<std::size_t>(every) == 0);
    }
  }
  EXPECT_FALSE(CheckpointDue({}, 0)) << "0: never";
}

TEST(RunnerTest, ExecutionFdsCanBeCarriedToAnotherExecution) {
  // What --checkpoint-mode exec does between processes: the name -> fd map goes along with the world.
  Trace trace = Parse("eventfd f 7\ncheckpoint\nread f\n");
  UserspaceEngine first(CheckpointFormat::kProto, ImageStore::kMemory);
  Execution one(trace, first);
  OpOutcome outcome;
  ASSERT_TRUE(one.Step(trace.ops[0], &outcome).ok());
  TempDir dir("runner-test");
  ASSERT_TRUE(first.SaveImageFile(dir.File("w.epcr")).ok());
  UserspaceEngine second;
  ASSERT_TRUE(second.RestoreImageFile(dir.File("w.epcr")).ok());
  EXPECT_EQ(second.checkpoints(), 1);
  Execution two(trace, second);
  EXPECT_FALSE(two.SetFds({1, 2})) << "the wrong size";
  ASSERT_TRUE(two.SetFds(one.fds()));
  ASSERT_TRUE(two.Step(trace.ops[2], &outcome).ok());
  EXPECT_EQ(FormatLine(trace.ops[2], outcome), "3 read ok 7");
  EXPECT_FALSE(second.RestoreImageFile(dir.File("missing.epcr")).ok());
  EXPECT_EQ(second.fds().Count(), 1) << "a failed restore keeps the world";
}

TEST(UserspaceEngineTest, InMemoryProtoCheckpointsUseNoFile) {
  UserspaceEngine userspace(CheckpointFormat::kProto, ImageStore::kMemory);
  std::ostringstream out;
  EXPECT_TRUE(RunTrace(Parse("epoll e\neventfd f\nadd e f in|et 9\nwrite f 1\ncheckpoint\nwait e 4\nwait e 4\n"),
                       userspace, out, {.checkpoint_every = 1})
                  .ok());
  EXPECT_THAT(out.str(), HasSubstr("5 checkpoint ok\n6 wait events 1 in@9\n7 wait events 0\n"));
  EXPECT_EQ(userspace.checkpoints(), 8);
  EXPECT_EQ(userspace.image_path(), "") << "no image file";
}

TEST(UserspaceEngineTest, ProtoCheckpointsGoThroughAnImageFileThatGoesWithTheEngine) {
  std::string dir;
  {
    UserspaceEngine userspace;
    EXPECT_EQ(userspace.format(), CheckpointFormat::kProto) << "proto is the default";
    EXPECT_EQ(userspace.image_path(), "");
    std::ostringstream out;
    EXPECT_TRUE(RunTrace(Parse("epoll e\neventfd f\nadd e f in|et 9\nwrite f 1\ncheckpoint\nwait e 4\nwait e 4\n"),
                         userspace, out)
                    .ok());
    EXPECT_THAT(out.str(), HasSubstr("5 checkpoint ok\n6 wait events 1 in@9\n7 wait events 0\n"))
        << "the pending edge-triggered event is delivered once after the restore";
    const std::string path = userspace.image_path();
    ASSERT_NE(path, "");
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    std::ifstream in(path, std::ios::binary);
    std::string magic(8, '\0');
    in.read(magic.data(), 8);
    EXPECT_EQ(magic, std::string("EPCRIMG\0", 8)) << "an image file (docs/image-format.md)";
    dir = path.substr(0, path.rfind('/'));
  }
  struct stat st {};
  EXPECT_NE(::stat(dir.c_str(), &st), 0) << dir << ": the scratch directory outlives the engine";
}

TEST(UserspaceEngineTest, ProtoCheckpointThatCannotWriteItsImageFailsAndKeepsTheWorld) {
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("TMPDIR", "/nonexistent-epollcr-dir", 1);
  UserspaceEngine userspace;
  std::ostringstream out;
  RunReport report = RunTrace(Parse("epoll e\ncheckpoint\nwait e 1\n"), userspace, out);
  if (old != nullptr) ::setenv("TMPDIR", saved.c_str(), 1); else ::unsetenv("TMPDIR");
  EXPECT_FALSE(report.ok());
  EXPECT_THAT(report.error, HasSubstr("checkpoint: mkdtemp /nonexistent-epollcr-dir/epollcr-replay-"));
  EXPECT_EQ(userspace.checkpoints(), 0);
  EXPECT_EQ(userspace.fds().Count(), 1u) << "the old world is kept";
}

TEST(UserspaceEngineTest, CheckpointLoadsAFreshWorldWithTheSameFds) {
  UserspaceEngine userspace(CheckpointFormat::kBoostXml);
  EXPECT_EQ(userspace.format(), CheckpointFormat::kBoostXml);
  Trace trace = Parse("epoll e\npipe p\neventfd f\nadd e p.r in 5\nwrite p.w 3\ncheckpoint\nwait e 4\nread p.r\n");
  const World* before = &userspace.world();
  std::ostringstream out;
  EXPECT_TRUE(RunTrace(trace, userspace, out).ok());
  EXPECT_NE(&userspace.world(), before) << "the trace goes on in the loaded world";
  EXPECT_EQ(userspace.checkpoints(), 1);
  EXPECT_THAT(out.str(), HasSubstr("6 checkpoint ok\n7 wait events 1 in@5\n8 read ok 3\n"));
  std::vector<int> fds;
  for (const auto& [fd, file] : userspace.fds().Snapshot()) fds.push_back(fd);
  EXPECT_EQ(fds, (std::vector<int>{0, 1, 2, 3}));
}

TEST(UserspaceEngineTest, CheckpointReleasesTheOldWorld) {
  const long before = File::LiveFiles();
  {
    UserspaceEngine userspace;
    std::ostringstream out;
    EXPECT_TRUE(RunTrace(Parse("epoll e\nsocketpair s\nadd e s.a in\n"), userspace, out).ok());
    const long live = File::LiveFiles() - before;
    EXPECT_TRUE(userspace.Checkpoint().ok());
    EXPECT_EQ(File::LiveFiles() - before, live) << "the old world's files are gone, the new world's are there";
  }
  EXPECT_EQ(File::LiveFiles(), before);
}

// A file the state model cannot save: the checkpoint fails, names why, and the engine keeps its world.
class UnsavableFile final : public File {
 public:
  EventMask Readiness(EventMask) override { return 0; }
  std::string_view TypeName() const override { return "unsavable"; }
};

TEST(UserspaceEngineTest, CheckpointFailureSaysWhyAndKeepsTheWorld) {
  UserspaceEngine userspace;
  ASSERT_TRUE(userspace.EpollCreate().ok());
  ASSERT_TRUE(userspace.world().fds.Install(MakeFile<UnsavableFile>()).ok());
  const World* before = &userspace.world();
  Status status = userspace.Checkpoint();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message, ::testing::StartsWith("checkpoint: "));
  EXPECT_THAT(status.message, HasSubstr("unsavable"));
  EXPECT_EQ(&userspace.world(), before);
  EXPECT_EQ(userspace.fds().Count(), 2);
  EXPECT_EQ(userspace.checkpoints(), 0);
}

TEST(KernelEngineTest, ClosesEveryFdAtTheEndEvenAfterAFailure) {
  const int before = OpenFdCount();
  ASSERT_GT(before, 0);
  {
    Trace trace = Parse("epoll e\npipe p\nsocketpair s\neventfd f\ndup e e2\nadd e p.r in\ncheckpoint\nepoll never\n");
    KernelEngine kernel;
    NoCheckpointEngine engine(kernel);
    std::ostringstream out;
    EXPECT_EQ(RunTrace(trace, engine, out).exit_status, 1);
    EXPECT_EQ(kernel.OpenCount(), 7u);
    EXPECT_EQ(OpenFdCount(), before + 7);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST(KernelEngineTest, CloseReleasesTheFd) {
  const int before = OpenFdCount();
  KernelEngine kernel;
  Result<int> fd = kernel.EventFd(0, false);
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(OpenFdCount(), before + 1);
  EXPECT_FALSE(kernel.Close(fd.value()));
  EXPECT_EQ(OpenFdCount(), before);
  EXPECT_EQ(kernel.Close(fd.value()), Errno(EBADF));
}

TEST(KernelEngineTest, FdsAreCloexecAndNonBlocking) {
  KernelEngine kernel;
  int pair[2];
  ASSERT_FALSE(kernel.Pipe(pair));
  Result<int> dup = kernel.Dup(pair[0]);
  ASSERT_TRUE(dup.ok());
  for (int fd : {pair[0], pair[1], dup.value()}) {
    EXPECT_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC) << fd;
    EXPECT_EQ(fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK) << fd;
  }
}

TEST(KernelEngineTest, NeverTouchesFdsItDoesNotOwn) {
  UniqueFd own(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(own.valid());
  KernelEngine kernel;
  EXPECT_EQ(kernel.Close(own.get()), Errno(EBADF));
  std::byte b[1];
  EXPECT_EQ(kernel.Read(own.get(), b).error(), Errno(EBADF));
  EXPECT_EQ(kernel.Dup(own.get()).error(), Errno(EBADF));
  EXPECT_GE(fcntl(own.get(), F_GETFD), 0) << "the test's fd must still be open";
}

TEST(KernelEngineTest, WriteToBrokenPipeIsEpipeAndLeavesNoSignal) {
  KernelEngine kernel;
  int pair[2];
  ASSERT_FALSE(kernel.Pipe(pair));
  ASSERT_FALSE(kernel.Close(pair[0]));
  std::byte b[1] = {};
  EXPECT_EQ(kernel.Write(pair[1], b).error(), Errno(EPIPE));
  sigset_t pending;
  sigemptyset(&pending);
  ASSERT_EQ(sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 0);
  sigset_t mask;
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, nullptr, &mask), 0);
  EXPECT_EQ(sigismember(&mask, SIGPIPE), 0) << "the signal mask is restored";
}

TEST(UserspaceEngineTest, FdsLiveInItsOwnTable) {
  Trace trace = Parse("epoll e\npipe p\neventfd f\nadd e p.r in\n");
  UserspaceEngine userspace;
  std::ostringstream out;
  EXPECT_TRUE(RunTrace(trace, userspace, out).ok());
  EXPECT_EQ(userspace.fds().Count(), 4);
}

TEST(RunnerTest, WaitBufferIsSizedByRegistrationsNotMax) {
  // MAX is passed as is; EP_MAX_EVENTS would be a 2 GiB buffer if it were allocated.
  Trace trace = Parse("epoll e\neventfd a\neventfd b\nadd e a out 1\nadd e b out 2\nwait e 178956970\n");
  KernelEngine kernel;
  std::ostringstream out;
  EXPECT_TRUE(RunTrace(trace, kernel, out).ok());
  EXPECT_THAT(out.str(), HasSubstr("6 wait events 2 out@1 out@2\n"));
}

// ---- Kernel-only kinds (replay/host_objects.h) ----

// One of each kernel-only kind, and a use of each.
constexpr const char* kKernelOnlyTrace =
    "timerfd t\n"
    "settime t 1 abs\n"
    "signalfd s 1\n"
    "raise 1\n"
    "listen l\n"
    "connect c l\n"
    "accept a l\n"
    "write c 3\n"
    "udp u\n"
    "write u.a 2\n"
    "fifo f\n"
    "write f.w 1\n";

constexpr const char* kKernelOnlyOutput =
    "1 timerfd ok\n2 settime ok\n3 signalfd ok\n4 raise ok\n5 listen ok\n6 connect ok\n7 accept ok\n8 write ok 3\n"
    "9 udp ok\n10 write ok 2\n11 fifo ok\n12 write ok 1\n";

// TMPDIR pointed at a directory of the test's own while it lives (the engines' FIFOs go there).
class ScopedTmpDir {
 public:
  explicit ScopedTmpDir(const std::string& dir) {
    const char* old = std::getenv("TMPDIR");
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv("TMPDIR", dir.c_str(), 1);
  }
  ~ScopedTmpDir() {
    if (had_) {
      setenv("TMPDIR", old_.c_str(), 1);
    } else {
      unsetenv("TMPDIR");
    }
  }

 private:
  bool had_ = false;
  std::string old_;
};

bool DirectoryIsEmpty(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return false;
  bool empty = true;
  while (dirent* entry = readdir(dir)) {
    if (std::string(entry->d_name) != "." && std::string(entry->d_name) != "..") empty = false;
  }
  closedir(dir);
  return empty;
}

bool Pending(int signo) {
  sigset_t pending;
  sigemptyset(&pending);
  return sigpending(&pending) == 0 && sigismember(&pending, signo) == 1;
}

TEST(KernelOnlyKindsTest, BothEnginesRunThemAndLeaveNothingBehind) {
  TempDir tmp("kernel-only");
  ScopedTmpDir scoped(tmp.path());
  Trace trace = Parse(kKernelOnlyTrace);
  EXPECT_TRUE(trace.host_objects);
  const int before = OpenFdCount();
  const std::size_t wrapped = HostFile::WrappedFds();
  for (FileBacking files : {FileBacking::kMemory, FileBacking::kHost}) {
    SCOPED_TRACE(FileBackingName(files));
    {
      KernelEngine kernel;
      UserspaceEngine userspace(CheckpointFormat::kProto, ImageStore::kFile, files);
      std::ostringstream out;
      RunReport report = RunLockstep(trace, kernel, userspace, out);
      EXPECT_TRUE(report.ok()) << report.error;
      EXPECT_EQ(out.str(), kKernelOnlyOutput);
      EXPECT_EQ(kernel.OpenCount(), 9u);
      EXPECT_EQ(userspace.fds().Count(), 9);
      EXPECT_EQ(HostFile::WrappedFds(), wrapped + 9) << "every kernel-only object is a host file, in either backing";
      for (int fd : kernel.KernelFds()) {
        EXPECT_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC) << fd;
        EXPECT_EQ(fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK) << fd;
      }
      EXPECT_TRUE(Pending(SIGRTMIN + 1)) << "the kernel engine's trace signal 1 was raised, and not read";
      EXPECT_TRUE(Pending(SIGRTMIN + 9)) << "and the userspace engine's";
    }
    EXPECT_EQ(OpenFdCount(), before);
    EXPECT_EQ(HostFile::WrappedFds(), wrapped);
    EXPECT_FALSE(Pending(SIGRTMIN + 1)) << "an engine consumes its raised signals when it ends";
    EXPECT_FALSE(Pending(SIGRTMIN + 9));
    EXPECT_TRUE(DirectoryIsEmpty(tmp.path())) << "the FIFOs' scratch directories are removed";
  }
}

TEST(KernelOnlyKindsTest, OneEnginesRaiseNeverReachesTheOthersSignalfd) {
  Trace trace = Parse("epoll e\nsignalfd s 4\nadd e s in 1\nraise 4\nwait e 2\nread s\n");
  KernelEngine kernel;
  UserspaceEngine userspace;
  // Each engine raises its own signal 4; each signalfd sees one, not two.
  std::ostringstream out;
  RunReport report = RunLockstep(trace, kernel, userspace, out);
  EXPECT_TRUE(report.ok()) << report.error;
  EXPECT_THAT(out.str(), HasSubstr("5 wait events 1 in@1\n6 read ok 4\n"));
  EXPECT_EQ(kernel.TraceSignal(SIGRTMIN + 4), 4);
  EXPECT_EQ(kernel.TraceSignal(SIGRTMIN + 12), 0);
  EXPECT_EQ(userspace.TraceSignal(SIGRTMIN + 12), 4);
  EXPECT_EQ(userspace.TraceSignal(SIGRTMIN + 4), 0);
}

// A world with kernel-only objects is checkpointed as a world of host files (either backing): a proto image, restored
// through the restorer in this process, each poll taking its kernel epoll over. A Boost archive cannot hold a host
// file: the first checkpoint stops the run and says so.
TEST(KernelOnlyKindsTest, AreCheckpointedAsHostFilesInProtoOnly) {
  Trace trace = Parse(
      "epoll e\nfifo f\nudp u\nadd e f.r in|et 1\nadd e u.b in 2\nwrite f.w 3\ncheckpoint\nwrite u.a 5\n"
      "wait e 4\nwait e 4\n");
  for (FileBacking files : {FileBacking::kMemory, FileBacking::kHost}) {
    SCOPED_TRACE(FileBackingName(files));
    KernelEngine kernel;
    UserspaceEngine userspace(CheckpointFormat::kProto, ImageStore::kFile, files);
    std::ostringstream out;
    RunReport report = RunLockstep(trace, kernel, userspace, out, {.checkpoint_every = 1});
    EXPECT_TRUE(report.ok()) << report.error;
    EXPECT_THAT(out.str(), HasSubstr("9 wait events 2 in@1 in@2\n10 wait events 1 in@2\n"));
    EXPECT_EQ(userspace.checkpoints(), 11);
  }
  UserspaceEngine boost(CheckpointFormat::kBoostText);
  std::ostringstream out;
  RunReport report = RunTrace(trace, boost, out);
  EXPECT_EQ(report.exit_status, 1);
  EXPECT_EQ(report.error,
            "t.trace:7: checkpoint: a world of host files is checkpointed only as a proto image, not boost-text");
}

TEST(KernelOnlyKindsTest, FifoWriteWithoutReaderIsEpipeAndLeavesNoSignal) {
  Trace trace = Parse("fifo f\nclose f.r\nwrite f.w 1\n");
  for (FileBacking files : {FileBacking::kMemory, FileBacking::kHost}) {
    KernelEngine kernel;
    UserspaceEngine userspace(CheckpointFormat::kProto, ImageStore::kFile, files);
    std::ostringstream out;
    EXPECT_TRUE(RunLockstep(trace, kernel, userspace, out).ok());
    EXPECT_THAT(out.str(), HasSubstr("3 write err EPIPE\n"));
    EXPECT_FALSE(Pending(SIGPIPE));
  }
}

TEST(KernelOnlyKindsTest, PeersAreFoundByAddress) {
  KernelEngine kernel;
  Result<int> listener = kernel.Listen();
  ASSERT_TRUE(listener.ok());
  Result<int> client = kernel.Connect(listener.value());
  ASSERT_TRUE(client.ok()) << client.error().message();
  Result<int> accepted = kernel.Accept(listener.value());
  ASSERT_TRUE(accepted.ok()) << accepted.error().message();
  int udp[2];
  ASSERT_FALSE(kernel.UdpPair(udp));
  const std::vector<int> fds = kernel.KernelFds();
  EXPECT_EQ(host::FindPeer(client.value(), fds), accepted.value());
  EXPECT_EQ(host::FindPeer(accepted.value(), fds), client.value());
  EXPECT_EQ(host::FindPeer(udp[0], fds), udp[1]);
  EXPECT_EQ(host::FindPeer(udp[1], fds), udp[0]);
  EXPECT_EQ(host::FindPeer(listener.value(), fds), -1);
  EXPECT_EQ(host::FindPeer(-1, fds), -1);
}

}  // namespace
}  // namespace epollcr::replay
