// `epollcr replay --checkpoint-mode exec` end to end (the program in EPOLLCR_BIN): every checkpoint restores the
// userspace engine's world in a new process, which carries on with the rest of the trace. The output must be the
// kernel's, byte for byte, as in memory mode; the processes must really be new (a new pid and a new program image);
// failures (an exec that fails, a damaged image, a worker that dies) must say what happened, exit 1 and leave no
// file and no process behind.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "program_run.h"
#include "sanitized.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "temp_dir.h"

namespace {

namespace fs = std::filesystem;

using ::testing::HasSubstr;
using ::testing::StartsWith;

using epollcr::testing_support::ProgramRun;
using epollcr::testing_support::ReadWholeFile;
using epollcr::testing_support::TempDir;

std::string Env(const char* name) { return epollcr::testing_support::EnvOrEmpty(name); }

// Sets an environment variable for the programs a test runs, and puts the old value back at the end of the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

class ExecModeTest : public ::testing::Test {
 protected:
  // Runs epollcr with `args`; its scratch directories go to a TMPDIR of this test's own, checked afterwards.
  ProgramRun Run(const std::vector<std::string>& args, const std::string& input = "",
                 std::string bin = Env("EPOLLCR_BIN")) {
    EXPECT_FALSE(bin.empty()) << "EPOLLCR_BIN must name the epollcr program";
    std::ofstream(dir_.File("stdin"), std::ios::binary) << input;
    ScopedEnv tmpdir("TMPDIR", tmp_);
    return epollcr::testing_support::RunProgram(bin.c_str(), args,
                                                {.stdin_path = dir_.File("stdin"),
                                                 .stdout_path = dir_.File("stdout"),
                                                 .stderr_path = dir_.File("stderr"),
                                                 .cwd = "",
                                                 .as_uid = -1});
  }

  std::string WriteTrace(const std::string& name, const std::string& text) {
    const std::string path = dir_.File(name);
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  // What the runs left in their TMPDIR: nothing, if every scratch directory was removed.
  std::vector<std::string> Leftovers() const {
    std::vector<std::string> left;
    for (const fs::directory_entry& entry : fs::directory_iterator(tmp_)) left.push_back(entry.path().string());
    return left;
  }

  void SetUp() override { fs::create_directory(tmp_); }
  void TearDown() override { EXPECT_THAT(Leftovers(), ::testing::IsEmpty()) << "scratch files left behind"; }

  TempDir dir_{"exec-mode-test"};
  const std::string tmp_ = dir_.File("tmp");
};

// The exec-mode log (EPOLLCR_REPLAY_EXEC_LOG): the replay process, then each worker process, as pid and exec id.
struct ProcessLog {
  std::pair<long, std::string> replay{-1, ""};
  std::vector<std::pair<long, std::string>> workers;

  static ProcessLog Read(const std::string& path) {
    ProcessLog log;
    std::istringstream lines(ReadWholeFile(path));
    std::string role;
    long pid = 0;
    std::string id;
    while (lines >> role >> pid >> id) {
      if (role == "replay") log.replay = {pid, id};
      if (role == "worker") log.workers.emplace_back(pid, id);
    }
    return log;
  }
};

// Under AddressSanitizer a process start of epollcr costs about 0.3 s of CPU instead of 0.02 s: there the corpus runs
// with a new process after every 16th operation (and at every `checkpoint` line); the plain build covers every one.
// Over host files the plain build starts a new process after every other operation (the memory run covers every
// one; a host run costs the same per process, and CI's time is bounded).
#if EPOLLCR_TEST_SANITIZED
constexpr const char* kCorpusCheckpointEvery = "16";
constexpr const char* kCorpusHostCheckpointEvery = "16";
#else
constexpr const char* kCorpusCheckpointEvery = "1";
constexpr const char* kCorpusHostCheckpointEvery = "2";
#endif

bool ProcessExists(long pid) { return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH; }

// Whether a process's command line mentions `text` (the workers' name their scratch directory).
bool AnyProcessMentions(const std::string& text) {
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (ReadWholeFile(entry.path().string() + "/cmdline").find(text) != std::string::npos) return true;
  }
  return false;
}

constexpr const char* kTrace =
    "# five operations and a checkpoint line\n"
    "epoll e\n"
    "pipe p\n"
    "add e p.r in|et 5\n"
    "write p.w 3\n"
    "checkpoint\n"
    "wait e 4\n";

constexpr const char* kTraceOutput =
    "2 epoll ok\n"
    "3 pipe ok\n"
    "4 add ok\n"
    "5 write ok 3\n"
    "6 checkpoint ok\n"
    "7 wait events 1 in@5\n";

TEST_F(ExecModeTest, OutputIsTheKernelsInEveryMode) {
  const std::string trace = WriteTrace("t.trace", kTrace);
  ProgramRun kernel = Run({"replay", trace, "--engine", "kernel"});
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  ASSERT_EQ(kernel.out, kTraceOutput);
  for (std::vector<std::string> args : {std::vector<std::string>{"replay", trace, "--checkpoint-mode", "exec"},
                                        {"replay", trace, "--checkpoint-mode", "exec", "--checkpoint-every"},
                                        {"replay", trace, "--checkpoint-mode", "exec", "--checkpoint-every", "2"},
                                        {"replay", trace, "--checkpoint-mode", "exec", "--engine", "both"},
                                        {"replay", "--checkpoint-every", "1", "--checkpoint-mode", "exec", "--engine",
                                         "both", trace},
                                        {"replay", trace, "--checkpoint-mode", "exec", "--engine", "kernel"},
                                        {"replay", trace, "--checkpoint-mode", "memory", "--checkpoint-every", "3"}}) {
    ProgramRun run = Run(args);
    std::string command;
    for (const std::string& a : args) command += " " + a;
    EXPECT_EQ(run.status, 0) << command << ": " << run.err;
    EXPECT_EQ(run.out, kernel.out) << command;
    EXPECT_EQ(run.err, "") << command;
  }
  ProgramRun from_stdin = Run({"replay", "-", "--checkpoint-mode", "exec", "--checkpoint-every"}, kTrace);
  EXPECT_EQ(from_stdin.status, 0) << from_stdin.err;
  EXPECT_EQ(from_stdin.out, kernel.out);
}

TEST_F(ExecModeTest, EveryCheckpointContinuesInANewProcess) {
  const std::string trace = WriteTrace("t.trace", kTrace);
  const std::string log_path = dir_.File("processes.log");
  // The number of worker processes: the first, plus one per checkpoint (the `checkpoint` line is one).
  const std::map<std::string, std::size_t> expected = {{"", 2}, {"1", 1 + 6 + 1}, {"2", 1 + 3 + 1}, {"4", 1 + 1 + 1}};
  for (const auto& [every, workers] : expected) {
    std::remove(log_path.c_str());
    std::vector<std::string> args = {"replay", trace, "--checkpoint-mode", "exec"};
    if (!every.empty()) args.insert(args.end(), {"--checkpoint-every", every});
    ProgramRun run = [&] {
      ScopedEnv log("EPOLLCR_REPLAY_EXEC_LOG", log_path);
      return Run(args);
    }();
    ASSERT_EQ(run.status, 0) << run.err;
    EXPECT_EQ(run.out, kTraceOutput);
    const ProcessLog log = ProcessLog::Read(log_path);
    ASSERT_GT(log.replay.first, 0) << ReadWholeFile(log_path);
    ASSERT_EQ(log.workers.size(), workers) << "every " << every << "\n" << ReadWholeFile(log_path);
    std::set<long> pids = {log.replay.first};
    std::set<std::string> images = {log.replay.second};
    for (const auto& [pid, image] : log.workers) {
      EXPECT_TRUE(pids.insert(pid).second) << "pid " << pid << " twice: not a new process";
      // A fork keeps the kernel's AT_RANDOM bytes; only an exec gets new ones.
      EXPECT_TRUE(images.insert(image).second) << "exec id " << image << " twice: not a new program image";
      EXPECT_FALSE(ProcessExists(pid)) << "worker " << pid << " is still there after the run";
    }
    // Nor is a successor that was started ahead of a turn that never came.
    EXPECT_FALSE(AnyProcessMentions(tmp_)) << "every " << every << ": a worker process is still there";
  }
}

TEST_F(ExecModeTest, CorpusTracesMatchTheKernelWithACheckpointAfterEveryOperation) {
  // Every trace of tests/traces and the tour, restored in a new process after every operation (kCorpusCheckpointEvery):
  // about 1,900 processes; over host files after every other one, about 1,000 more.
  std::vector<fs::path> traces;
  for (const fs::directory_entry& entry : fs::directory_iterator(Env("EPOLLCR_TRACES_DIR"))) {
    if (entry.path().extension() == ".trace") traces.push_back(entry.path());
  }
  std::sort(traces.begin(), traces.end());
  ASSERT_GE(traces.size(), 40u);
  traces.push_back(fs::path(Env("EPOLLCR_EXAMPLE_TRACES_DIR")) / "tour.trace");
  std::set<std::string> known_divergences;
  std::istringstream known(ReadWholeFile(Env("EPOLLCR_TRACES_DIR") + "/known-userspace-divergences"));
  for (std::string line; std::getline(known, line);) {
    if (!line.empty() && line[0] != '#') known_divergences.insert(line.substr(0, line.find_first_of(" \t")));
  }
  for (const fs::path& trace : traces) {
    ProgramRun kernel = Run({"replay", trace.string(), "--engine", "kernel"});
    ASSERT_EQ(kernel.status, 0) << trace << ": " << kernel.err;
    auto parsed = epollcr::replay::ParseTrace(ReadWholeFile(trace.string()), trace.string());
    ASSERT_TRUE(parsed.ok()) << parsed.status().message;
    const bool not_carried = std::any_of(parsed.value().ops.begin(), parsed.value().ops.end(), [](const auto& op) {
      return op.verb == epollcr::replay::Verb::kSignalFd || op.verb == epollcr::replay::Verb::kFifo;
    });
    // In-memory files, then host files (real pipes, eventfds and socket pairs whose fds, with each poll's kernel
    // epoll, cross every exec).
    for (const char* files : {"memory", "host"}) {
      SCOPED_TRACE(files);
      std::string expected = kernel.out;
      if (files == std::string("memory") && known_divergences.contains(trace.stem().string())) {
        // The userspace engine differs from the kernel here today: the checkpoints must still be invisible.
        ProgramRun plain = Run({"replay", trace.string()});
        expected = plain.out;
      }
      const char* every = files == std::string("host") ? kCorpusHostCheckpointEvery : kCorpusCheckpointEvery;
      ProgramRun exec = Run({"replay", trace.string(), "--files", files, "--checkpoint-mode", "exec",
                             "--checkpoint-every", every});
      // A trace shorter than the interval (under a sanitizer: 16) and without a `checkpoint` line has no checkpoint.
      const auto& ops = parsed.value().ops;
      const bool checkpointed =
          ops.size() >= std::stoul(every) || std::any_of(ops.begin(), ops.end(), [](const auto& op) {
            return op.verb == epollcr::replay::Verb::kCheckpoint;
          });
      if (not_carried && checkpointed) {
        // A signalfd or a FIFO stops the run at the first checkpoint, which says why; without checkpoints the
        // worker runs the whole trace.
        EXPECT_EQ(exec.status, 1) << trace;
        EXPECT_THAT(exec.err, HasSubstr(std::string(epollcr::replay::kExecDoesNotCarry))) << trace;
        exec = Run({"replay", trace.string(), "--files", files, "--checkpoint-mode", "exec"});
      }
      EXPECT_EQ(exec.status, 0) << trace << ": " << exec.err;
      EXPECT_EQ(exec.out, expected) << trace;
      EXPECT_EQ(exec.err, "") << trace;
    }
  }
}

TEST_F(ExecModeTest, LockstepAgainstTheKernelAcrossProcesses) {
  // The kernel engine stays in the replay process and compares; the userspace engine moves at every checkpoint.
  const fs::path tour = fs::path(Env("EPOLLCR_EXAMPLE_TRACES_DIR")) / "tour.trace";
  ProgramRun run = Run({"replay", tour.string(), "--engine", "both", "--checkpoint-mode", "exec", "--checkpoint-every"});
  EXPECT_EQ(run.status, 0) << run.err;
  ProgramRun kernel = Run({"replay", tour.string(), "--engine", "kernel"});
  EXPECT_EQ(run.out, kernel.out);
  // A worker that misreports the first operation after the checkpoint line (a hidden fault): the comparison in the
  // replay process finds it, shows both lines and stops.
  const std::string trace = WriteTrace("t.trace", kTrace);
  ProgramRun lie = [&] {
    ScopedEnv env("EPOLLCR_REPLAY_EXEC_FAULT", "lie");
    return Run({"replay", trace, "--engine", "both", "--checkpoint-mode", "exec"});
  }();
  EXPECT_EQ(lie.status, 1);
  EXPECT_EQ(lie.out, std::string(kTraceOutput).substr(0, std::string(kTraceOutput).find("7 wait")) +
                         "kernel:    7 wait events 1 in@5\n"
                         "userspace: 7 wait events 1 in@5 (lie)\n");
  EXPECT_EQ(lie.err, "epollcr: " + trace + ":7: kernel and userspace engines differ\n");
}

TEST_F(ExecModeTest, AReplayProcessThatDiesLeavesNothingBehind) {
  // `| head -1`: the replay process dies of SIGPIPE at a later line (or, if head is slow, ends normally); either way
  // its workers see the socket close, remove the scratch directory and exit, on their own.
  const std::string tour = Env("EPOLLCR_EXAMPLE_TRACES_DIR") + "/tour.trace";
  ProgramRun run = Run({"-c", Env("EPOLLCR_BIN") + " replay " + tour + " --checkpoint-mode exec --checkpoint-every | head -1"},
                       "", "/bin/sh");
  EXPECT_EQ(run.out, "3 epoll ok\n");
  // They go asynchronously: wait for that, up to a bound.
  for (int i = 0; i < 500 && (!Leftovers().empty() || AnyProcessMentions(tmp_)); ++i) ::usleep(20000);
  EXPECT_THAT(Leftovers(), ::testing::IsEmpty());
  EXPECT_FALSE(AnyProcessMentions(tmp_)) << "a worker process is still there";
}

TEST_F(ExecModeTest, AWorkerBlockedInAWaitEndsWhenTheReplayProcessIsKilled) {
  // After the checkpoint line the run is in a new worker process, which gets `wait e 4 -1` with nothing ready: it
  // blocks forever, as epoll_wait would. Once the replay process has printed the checkpoint line it asks for the
  // wait at once; a fifth of a second later the worker is inside it. Then the replay process is killed.
  const std::string trace = WriteTrace("blocked.trace", "epoll e\npipe p\nadd e p.r in 5\ncheckpoint\nwait e 4 -1\n");
  const std::string out = dir_.File("replay.out");
  const std::string script =
      "\"$0\" replay \"$1\" --checkpoint-mode exec >\"$2\" 2>/dev/null & pid=$!\n"
      "i=0; while ! grep -q checkpoint \"$2\" && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done\n"
      "sleep 0.2\n"
      "kill -9 $pid; wait $pid; cat \"$2\"\n";
  ProgramRun run = Run({"-c", script, Env("EPOLLCR_BIN"), trace, out}, "", "/bin/sh");
  EXPECT_EQ(run.out, "1 epoll ok\n2 pipe ok\n3 add ok\n4 checkpoint ok\n");
  for (int i = 0; i < 500 && (!Leftovers().empty() || AnyProcessMentions(tmp_)); ++i) ::usleep(20000);
  EXPECT_THAT(Leftovers(), ::testing::IsEmpty());
  EXPECT_FALSE(AnyProcessMentions(tmp_)) << "the worker blocked in the wait is still there";
}

// The successor of a worker is started ahead of its turn and waits (docs/trace-format.md, "Checkpoint modes"). Here
// the worker after the first checkpoint blocks in a wait, with a second checkpoint ahead: its successor is there,
// waiting, beside it. When the replay process is killed, both go.
TEST_F(ExecModeTest, ASuccessorWaitsAheadOfItsTurnAndGoesWithTheRun) {
  const std::string trace =
      WriteTrace("blocked.trace", "epoll e\npipe p\nadd e p.r in 5\ncheckpoint\nwait e 4 -1\ncheckpoint\n");
  const std::string out = dir_.File("replay.out");
  const std::string pids = dir_.File("workers");
  // The workers name the scratch directory, and their part: "handoff" for every worker but the first. (The pattern
  // hand[o]ff does not match the script's own command line.)
  const std::string script =
      "\"$0\" replay \"$1\" --checkpoint-mode exec >\"$2\" 2>/dev/null & pid=$!\n"
      "i=0; while ! grep -q checkpoint \"$2\" && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done\n"
      "sleep 0.2\n"
      "grep -l -a -F \"$3\" /proc/[0-9]*/cmdline | xargs -r grep -l -a 'hand[o]ff' | wc -l >\"$4\"\n"
      "kill -9 $pid; wait $pid; cat \"$2\"\n";
  ProgramRun run = Run({"-c", script, Env("EPOLLCR_BIN"), trace, out, tmp_, pids}, "", "/bin/sh");
  EXPECT_EQ(run.out, "1 epoll ok\n2 pipe ok\n3 add ok\n4 checkpoint ok\n");
  EXPECT_EQ(ReadWholeFile(pids), "2\n") << "the worker in the wait and its successor";
  for (int i = 0; i < 500 && (!Leftovers().empty() || AnyProcessMentions(tmp_)); ++i) ::usleep(20000);
  EXPECT_THAT(Leftovers(), ::testing::IsEmpty());
  EXPECT_FALSE(AnyProcessMentions(tmp_)) << "a worker process is still there";
}

// Whatever ends the replay process, its scratch directories go: the exec chain's (exec mode) and the checkpoint
// images' (memory mode, proto, --checkpoint-store file), in the middle of a run with a checkpoint after every operation. SIGTERM and SIGHUP
// go to the replay's whole process group (as a terminal's ^C or hang-up does), so its workers die with it and cannot
// clean up; SIGKILL goes to the replay process alone (nothing of it runs). A guard process removes what is left once
// the replay process is gone (cli/replay/scratch.h).
TEST_F(ExecModeTest, NoSignalLeavesAScratchDirectoryBehind) {
  const std::string bin = Env("EPOLLCR_BIN");
  const std::string trace = Env("EPOLLCR_TRACES_DIR") + "/nested_wakeup_path_limit.trace";  // 1,510 operations
  for (const char* mode : {"exec", "memory"}) {
    for (const int signal : {SIGTERM, SIGHUP, SIGKILL}) {
      SCOPED_TRACE(std::string(mode) + " mode, " + ::sigabbrev_np(signal));
      ScopedEnv tmpdir("TMPDIR", tmp_);
      const pid_t replay = ::fork();
      if (replay == 0) {
        ::setpgid(0, 0);  // a process group of its own, as a shell's job
        // The signals as a shell's job gets them, whatever this test inherited (nohup ignores SIGHUP; the ignored
        // disposition would cross the exec).
        ::signal(SIGTERM, SIG_DFL);
        ::signal(SIGHUP, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        const int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, 1);
        ::dup2(null, 2);
        // Memory mode keeps its images in a scratch directory only with --checkpoint-store file.
        const bool memory = std::string(mode) == "memory";
        ::execl(bin.c_str(), bin.c_str(), "replay", trace.c_str(), "--engine", "userspace", "--checkpoint-mode", mode,
                "--checkpoint-every", "1", memory ? "--checkpoint-store" : static_cast<char*>(nullptr), "file",
                static_cast<char*>(nullptr));
        ::_exit(127);
      }
      ASSERT_GT(replay, 0);
      (void)::setpgid(replay, replay);
      for (int i = 0; i < 500 && Leftovers().empty(); ++i) ::usleep(10000);  // the run has made its directory
      ::usleep(300000);                                                        // and is well into the trace
      ASSERT_EQ(::kill(signal == SIGKILL ? replay : -replay, signal), 0);
      int status = 0;
      ASSERT_EQ(::waitpid(replay, &status, 0), replay);
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == signal) << "the run ended before the signal: " << status;
      for (int i = 0; i < 500 && (!Leftovers().empty() || AnyProcessMentions(tmp_)); ++i) ::usleep(20000);
      EXPECT_THAT(Leftovers(), ::testing::IsEmpty());
      EXPECT_FALSE(AnyProcessMentions(tmp_)) << "a worker is still there";
    }
  }
}

// The run stops at the failure, says where and why, exits 1, and leaves no scratch file and no process.
struct Fault {
  const char* name;
  const char* reason;  // part of the message
};

TEST_F(ExecModeTest, FailuresSayWhatHappenedAndLeaveNothingBehind) {
  const std::string trace = WriteTrace("t.trace", kTrace);
  const std::string log_path = dir_.File("processes.log");
  for (const Fault& fault : {Fault{"exec", "checkpoint: exec /nonexistent/epollcr-exec-fault: No such file or directory"},
                             Fault{"image", "checkpoint: "},
                             Fault{"die", "before it took over"},
                             Fault{"die-waiting", "was killed by signal 9 (Killed) before it took over"},
                             Fault{"die-later", "was killed by signal 9"}}) {
    for (const char* engine : {"userspace", "both"}) {
      std::remove(log_path.c_str());
      ProgramRun run = [&] {
        ScopedEnv env("EPOLLCR_REPLAY_EXEC_FAULT", fault.name);
        ScopedEnv log("EPOLLCR_REPLAY_EXEC_LOG", log_path);
        return Run({"replay", trace, "--checkpoint-mode", "exec", "--engine", engine});
      }();
      const std::string what = std::string(fault.name) + ", " + engine;
      EXPECT_EQ(run.status, 1) << what << ": " << run.err;
      // The `checkpoint` line (6) is where the run moves to a new process; die-later kills that process at its
      // first request, line 7.
      const std::string line = std::string(fault.name) == "die-later" ? "7" : "6";
      // As in memory mode, the engine is named when there are two.
      EXPECT_THAT(run.err, StartsWith("epollcr: " + trace + ":" + line + ": " +
                                      (std::string(engine) == "both" ? "userspace: " : "")))
          << what;
      EXPECT_THAT(run.err, HasSubstr(fault.reason)) << what;
      EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << what << ": one line\n" << run.err;
      const std::string output(kTraceOutput);
      EXPECT_EQ(run.out, output.substr(0, output.find(line == "7" ? "7 wait" : "6 checkpoint")))
          << what << ": the lines before the failure";
      const ProcessLog log = ProcessLog::Read(log_path);
      EXPECT_GE(log.workers.size(), 1u) << what;
      for (const auto& [pid, image] : log.workers) EXPECT_FALSE(ProcessExists(pid)) << what << ": worker " << pid;
      EXPECT_FALSE(AnyProcessMentions(tmp_)) << what << ": a worker process is still there";
    }
  }
  const std::string image_reason = [&] {
    ScopedEnv env("EPOLLCR_REPLAY_EXEC_FAULT", "image");
    return Run({"replay", trace, "--checkpoint-mode", "exec"}).err;
  }();
  EXPECT_THAT(image_reason, HasSubstr("checksum")) << "a damaged image is refused by ReadImage";
}

TEST_F(ExecModeTest, UsageErrors) {
  const std::string trace = WriteTrace("t.trace", kTrace);
  ProgramRun mode = Run({"replay", trace, "--checkpoint-mode", "fork"});
  EXPECT_EQ(mode.status, 2);
  EXPECT_THAT(mode.err, StartsWith("epollcr: usage: --checkpoint-mode: "));
  ProgramRun format = Run({"replay", trace, "--checkpoint-mode", "exec", "--checkpoint-format", "boost-text"});
  EXPECT_EQ(format.status, 2);
  EXPECT_THAT(format.err, StartsWith("epollcr: usage: --checkpoint-mode exec: "));
  EXPECT_EQ(format.out, "");
  for (const char* every : {"0", "-1", "x"}) {
    ProgramRun run = Run({"replay", trace, "--checkpoint-every", every});
    EXPECT_EQ(run.status, 2) << every;
    EXPECT_THAT(run.err, StartsWith("epollcr: usage: --checkpoint-every: ")) << every;
  }
  ProgramRun help = Run({"replay", "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_THAT(help.out, HasSubstr("--checkpoint-mode"));
  ProgramRun top_help = Run({"--help"});
  EXPECT_THAT(top_help.out, ::testing::Not(HasSubstr("__replay-worker"))) << "the worker is not a command";
  // The worker entry point, called by hand, refuses politely.
  for (std::vector<std::string> args : {std::vector<std::string>{"__replay-worker"},
                                        {"__replay-worker", "/nonexistent", "socket", "1"},
                                        {"__replay-worker", "/nonexistent", "handoff", "99"},
                                        {"__replay-worker", "/nonexistent", "x", "3"},
                                        {"__replay-worker", "/nonexistent", "socket", "3", "4"}}) {
    ProgramRun worker = Run(args);
    EXPECT_EQ(worker.status, 2);
    EXPECT_THAT(worker.err, StartsWith("epollcr: usage: __replay-worker is the worker process of"));
  }
}

}  // namespace
