// libepollcr-preload.so and `epollcr run` against the kernel: tests/interposer/epoll_probe.cc, a program that knows
// nothing of epollcr, runs on the kernel's epoll and under `epollcr run`; the outputs must be identical (the kernel is
// the oracle), and the run's log must show that its epolls were epollcr's (so a silently missing interposer fails).
// Also: the fork decision (docs/interposer.md, "fork"), what `epollcr run` refuses, and `epollcr ps` on an interposed
// program (its polls as the kernel shows the same program's epolls, and who may ask).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
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
  // The probe under `epollcr run --log LOG [OPTIONS]`.
  ProgramRun Epollcr(const std::vector<std::string>& args, const std::vector<std::string>& options = {}) {
    std::vector<std::string> all = {"run", "--log", log_};
    all.insert(all.end(), options.begin(), options.end());
    all.insert(all.end(), {"--", probe_});
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

  // The raw epoll system calls the log says the processes made (each exit line's "raw R").
  long RawCalls() {
    std::istringstream lines(ReadAll(log_));
    long n = 0;
    for (std::string line; std::getline(lines, line);) {
      if (std::size_t at = line.find(" raw "); line.starts_with("exit ") && at != std::string::npos) {
        n += std::atol(line.c_str() + at + 5);
      }
    }
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

// Raw epoll system calls (docs/interposer.md, "Raw system calls"): `epollcr run` traps them (seccomp) and the
// interposer answers them as it answers libc's, so a program that makes them, alone or mixed with libc's calls on the
// same epolls, prints what it prints on the kernel.
TEST_F(InterposerTest, RawSystemCallsMatchTheKernel) {
  std::vector<std::vector<std::string>> runs = {{"raw"}, {"mixed"}};
  for (int seed = 1; seed <= 10; ++seed) runs.push_back({"raw", std::to_string(seed)});
  for (int seed = 1; seed <= 20; ++seed) runs.push_back({"mixed", std::to_string(seed)});
  for (const auto& args : runs) {
    SCOPED_TRACE(::testing::PrintToString(args));
    ProgramRun kernel = Kernel(args);
    ASSERT_EQ(kernel.status, 0) << kernel.err;
    ProgramRun epollcr = Epollcr(args);
    EXPECT_EQ(epollcr.status, 0) << epollcr.err;
    EXPECT_EQ(epollcr.out, kernel.out);
    EXPECT_EQ(epollcr.err, "");
  }
  EXPECT_GE(Creates(), 64) << "the raw epoll_create1 calls made no epollcr poll";
  EXPECT_GT(RawCalls(), 1000) << ReadAll(log_);
}

// Without the trap (--raw-syscalls kernel), a raw call on one of epollcr's epolls reaches the kernel epoll behind it,
// whose registrations are the library's: calls mixed on the same epolls go wrong. (This is why the trap is on.)
TEST_F(InterposerTest, WithoutTheTrapMixedCallsDiverge) {
  int differ = 0;
  for (int seed = 1; seed <= 5; ++seed) {
    ProgramRun kernel = Kernel({"mixed", std::to_string(seed)});
    ASSERT_EQ(kernel.status, 0) << kernel.err;
    ProgramRun epollcr = Epollcr({"mixed", std::to_string(seed)}, {"--raw-syscalls", "kernel"});
    differ += epollcr.out != kernel.out ? 1 : 0;
  }
  EXPECT_GE(differ, 3);
  EXPECT_EQ(RawCalls(), 0);
}

// io_uring's poll and epoll requests cannot be interposed: under `epollcr run` io_uring_setup fails with ENOSYS and
// says why; --raw-syscalls kernel lets it through.
TEST_F(InterposerTest, IoUringIsRefusedWithAReason) {
  ProgramRun kernel = Kernel({"io_uring"});
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  ASSERT_EQ(kernel.out, "io_uring_setup: ok\n") << "this kernel has no io_uring";
  ProgramRun epollcr = Epollcr({"io_uring"});
  EXPECT_EQ(epollcr.status, 0) << epollcr.err;
  EXPECT_EQ(epollcr.out, "io_uring_setup: ENOSYS\n");
  EXPECT_THAT(epollcr.err, HasSubstr("set up an io_uring (system call 425): its poll and epoll requests would bypass "
                                     "epollcr, so it is refused (ENOSYS)"));
  ProgramRun through = Epollcr({"io_uring"}, {"--raw-syscalls", "kernel"});
  EXPECT_EQ(through.out, "io_uring_setup: ok\n");
  EXPECT_EQ(through.err, "");
}

// A program the interposer cannot reach (here a static one) exec'd under `epollcr run`: the exec is reported, and its
// first epoll system call ends it with SIGSYS rather than run on the kernel's epoll unseen.
TEST_F(InterposerTest, AnExecOfAStaticProgramIsReportedAndItsEpollCallsEndIt) {
  const std::string static_program = Env("EPOLLCR_STATIC_PROBE");
  ProgramRun kernel = Kernel({"then", static_program});
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  ProgramRun epollcr = Epollcr({"then", static_program});
  EXPECT_EQ(epollcr.signal, SIGSYS) << epollcr.status << " " << epollcr.err;
  EXPECT_THAT(epollcr.err, HasSubstr("execs " + static_program + ", which epollcr cannot interpose (it is statically "
                                     "linked"));
  EXPECT_EQ(epollcr.out, "") << "the static program's first epoll call must end it";
  ProgramRun dynamic = Epollcr({"then", probe_});
  EXPECT_EQ(dynamic.status, 0) << dynamic.err;
  EXPECT_EQ(dynamic.out, kernel.out);
  EXPECT_EQ(dynamic.err, "");
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
// and takes each kernel epoll over as it is (a registered fd closed on exec leaves the poll, as in the kernel; one
// closed before the exec while a dup kept its file stays registered, a detached host file in the image, until the dup
// closes in the new image).
TEST_F(InterposerTest, AnEpollCrossesAnExecWithItsStateAsInTheKernel) {
  ProgramRun kernel = Kernel({"exec"});
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  EXPECT_THAT(kernel.out, HasSubstr("101 after the exec: the eventfd and the closed pipe (the edge was taken, the "
                                    "one-shot fired): 2 1@56 1@52\n"));
  EXPECT_THAT(kernel.out, HasSubstr("107 its registration is gone: 1 1@52\n"));
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

// A program started in the background (the probe in `hold` mode, on the kernel or under `epollcr run`), as user
// `as_uid` if it is >= 0; its pid once it printed "held PID". Its standard input is closed, and it is reaped, at the
// end.
class Held {
 public:
  Held(const std::vector<std::string>& argv, int as_uid) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return;
    child_ = ::fork();
    if (child_ == 0) {
      if (as_uid >= 0 && (::setgid(65534) != 0 || ::setuid(static_cast<uid_t>(as_uid)) != 0)) ::_exit(127);
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    std::string said;
    for (;;) {  // "held PID\n" within 10 s
      pollfd p{out[0], POLLIN, 0};
      char buffer[256];
      if (::poll(&p, 1, 10000) <= 0) break;
      const ssize_t n = ::read(out[0], buffer, sizeof buffer);
      if (n <= 0) break;
      said.append(buffer, static_cast<std::size_t>(n));
      if (said.find('\n') != std::string::npos) break;
    }
    ::close(out[0]);
    if (said.starts_with("held ")) pid_ = std::atoi(said.c_str() + 5);
  }
  ~Held() {
    if (stdin_ >= 0) ::close(stdin_);
    if (child_ > 0) {
      int status = 0;
      ::waitpid(child_, &status, 0);
    }
  }
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;

  int pid() const { return pid_; }

 private:
  pid_t child_ = -1;
  int stdin_ = -1;
  int pid_ = -1;
};

// Entry rows (tfd, events, data, armed or disabled) of each epoll table in ps's text whose heading starts with
// `heading` ("epoll fd" for the kernel's, "epollcr poll fd" for the interposer's), by the heading's first fd. The
// interposer's "kernel", "waiting" and "ready" lists are an armed entry (the kernel's fdinfo does not say which).
using Rows = std::map<int, std::set<std::tuple<std::string, std::string, std::string, std::string>>>;
Rows Tables(const std::string& text, const std::string& heading) {
  Rows rows;
  std::istringstream lines(text);
  int poll = -1;
  bool header = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with(heading + " ") || line.starts_with(heading + "s ")) {
      poll = std::atoi(line.c_str() + line.find(' ', heading.size()) + 1);
      rows[poll];
      header = true;
      continue;
    }
    if (poll < 0 || line.empty() || !line.starts_with("  ") || line.starts_with("  ready list")) {
      poll = -1;
      continue;
    }
    if (header) {  // the column names
      header = false;
      continue;
    }
    std::istringstream cells(line);
    std::string tfd, events, data, list;
    cells >> tfd >> events >> data >> list;
    if (list == "kernel" || list == "waiting" || list == "ready") list = "armed";
    rows[poll].insert({tfd, events, data, list});
  }
  return rows;
}

// The first line a process's inspection socket answers a peer of user `uid`.
std::string AskAs(int pid, int uid) {
  int result[2];
  if (::pipe2(result, O_CLOEXEC) != 0) return "pipe failed";
  const pid_t child = ::fork();
  if (child == 0) {
    if (uid > 0 && (::setgid(65534) != 0 || ::setuid(static_cast<uid_t>(uid)) != 0)) ::_exit(1);
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    const sa_family_t family = AF_UNIX;  // autobind: an address to be answered at
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::string name = "epollcr-ps-" + std::to_string(pid);
    std::memcpy(address.sun_path + 1, name.data(), name.size());
    const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    timeval limit{10, 0};
    std::string line = "no answer";
    char answer[512] = {0};
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&family), sizeof family) == 0 &&
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) == 0 &&
        ::connect(fd, reinterpret_cast<const sockaddr*>(&address), size) == 0 && ::send(fd, "epollcr-ps 1\n", 13, 0) == 13 &&
        ::recv(fd, answer, sizeof answer - 1, 0) > 0) {
      line = answer;
      line = line.substr(0, line.find('\n'));
    }
    (void)!::write(result[1], line.data(), line.size());
    ::_exit(0);
  }
  ::close(result[1]);
  std::string line;
  char buffer[512];
  for (ssize_t n; (n = ::read(result[0], buffer, sizeof buffer)) > 0;) line.append(buffer, static_cast<std::size_t>(n));
  ::close(result[0]);
  ::waitpid(child, nullptr, 0);
  return line;
}

class PsTest : public InterposerTest {
 protected:
  // The probe with `args` on the kernel and under `epollcr run`: ps shows the interposed program's polls as the kernel
  // shows the same program's epolls.
  void PsMatchesTheKernel(const std::vector<std::string>& args) {
    std::vector<std::string> direct = {probe_};
    direct.insert(direct.end(), args.begin(), args.end());
    std::vector<std::string> run = {bin_, "run", "--", probe_};
    run.insert(run.end(), args.begin(), args.end());
    Held kernel(direct, -1);
    ASSERT_GT(kernel.pid(), 0);
    ProgramRun on_kernel = Run(bin_, {"ps", std::to_string(kernel.pid())});
    ASSERT_EQ(on_kernel.status, 0) << on_kernel.err;
    const Rows expected = Tables(on_kernel.out, "epoll fd");
    ASSERT_EQ(expected.size(), 2u) << on_kernel.out;
    EXPECT_THAT(on_kernel.out, ::testing::Not(HasSubstr("epollcr poll"))) << "a program on the kernel has no socket";

    Held interposed(run, -1);
    ASSERT_GT(interposed.pid(), 0);
    ProgramRun ps = Run(bin_, {"ps", std::to_string(interposed.pid())});
    ASSERT_EQ(ps.status, 0) << ps.err;
    EXPECT_EQ(Tables(ps.out, "epollcr poll fd"), expected) << ps.out << "\n--- on the kernel ---\n" << on_kernel.out;
    EXPECT_THAT(ps.out, HasSubstr("; the kernel epoll of epollcr poll fd "));
    EXPECT_THAT(ps.out, HasSubstr("epollcr polls, as the interposer holds them (asked of the process on @epollcr-ps-"));

    ProgramRun json = Run(bin_, {"ps", "--json", std::to_string(interposed.pid())});
    ASSERT_EQ(json.status, 0) << json.err;
    EXPECT_THAT(json.out, HasSubstr("\"epollcr\": {\"socket\": \"@epollcr-ps-"));
    EXPECT_THAT(json.out, HasSubstr("\"eventpoll\""));
    const std::string image = dir_.File("ps.epcr");
    ProgramRun saved = Run(bin_, {"ps", "--image", image, std::to_string(interposed.pid())});
    ASSERT_EQ(saved.status, 0) << saved.err;
    ProgramRun inspect = Run(bin_, {"inspect", image});
    EXPECT_EQ(inspect.status, 0) << inspect.err;
    EXPECT_THAT(inspect.out, HasSubstr("eventpoll"));
  }
};

// `epollcr ps` on the probe under `epollcr run` shows its two polls with what the same program's epolls hold in the
// kernel, read by the same command from the kernel's fdinfo: every entry's fd, events, data, and the fired one-shot
// disabled. The kernel epolls of the interposed program are marked as the polls'.
TEST_F(PsTest, ShowsAnInterposedProgramsPollsAsTheKernelShowsItsEpolls) {
  // `close-all`: the program closed its first epoll and every fd from 3 up (the library's socket among them) first.
  for (const char* variant : {"", "close-all"}) {
    SCOPED_TRACE(variant);
    std::vector<std::string> args = {"hold"};
    if (*variant != '\0') args.push_back(variant);
    PsMatchesTheKernel(args);
  }
}

// The ready list of an interposed program's poll, which the kernel epoll holds and no system call reads without
// taking: ps reads it and puts it back (EventPoll::KernelReadyKeys). The oracle is the kernel: the order ps shows is
// the order the program's next wait returns, and that wait returns what the same program's wait returns on the
// kernel's epoll, where no ps looked (so ps changed nothing the program can see). Asked twice: the second ps shows
// what the first did.
TEST_F(PsTest, ShowsTheKernelHeldReadyListInOrderAndLeavesItAsItWas) {
  auto ready_list = [](const std::string& out) {
    const std::string heading = "ready list (kernel entries, front first, as the kernel epoll holds it):";
    const std::size_t at = out.find(heading);
    if (at == std::string::npos) return std::string("no ready list");
    std::istringstream words(out.substr(at + heading.size(), out.find('\n', at) - at - heading.size()));
    std::string list;
    for (std::string word; words >> word;) {
      if (word != "tfd") list += (list.empty() ? "" : " ") + word.substr(0, word.find(','));
    }
    return list;
  };
  const std::string on_kernel = dir_.File("kernel.order");
  { Held kernel({probe_, "order", on_kernel}, -1); ASSERT_GT(kernel.pid(), 0); }
  const std::string expected = ReadAll(on_kernel);
  ASSERT_EQ(std::count(expected.begin(), expected.end(), ' '), 3) << expected;  // four ready, the idle pipe not

  const std::string interposed_file = dir_.File("interposed.order");
  std::string shown[2];
  {
    Held interposed({bin_, "run", "--", probe_, "order", interposed_file}, -1);
    ASSERT_GT(interposed.pid(), 0);
    for (std::string& list : shown) {
      ProgramRun ps = Run(bin_, {"ps", std::to_string(interposed.pid())});
      ASSERT_EQ(ps.status, 0) << ps.err;
      list = ready_list(ps.out);
      EXPECT_THAT(ps.out, HasSubstr(" ready ")) << ps.out;
    }
  }
  EXPECT_EQ(ReadAll(interposed_file), expected);
  EXPECT_EQ(shown[0] + "\n", expected);
  EXPECT_EQ(shown[1], shown[0]);
}

// The socket answers root and the process's own user, and refuses anyone else, as /proc refuses them its fds.
TEST_F(InterposerTest, OnlyTheProcesssUserAndRootMayAskIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run the probe and the peers as other users";
  Held interposed({bin_, "run", "--", probe_, "hold"}, 65534);
  ASSERT_GT(interposed.pid(), 0) << "the probe did not start as user 65534";
  EXPECT_THAT(AskAs(interposed.pid(), 0), ::testing::StartsWith("epollcr-ps 1 image "));
  EXPECT_THAT(AskAs(interposed.pid(), 65534), ::testing::StartsWith("epollcr-ps 1 image "));
  EXPECT_THAT(AskAs(interposed.pid(), 65533), ::testing::StartsWith("epollcr-ps 1 refused uid 65533 is not"));
}

}  // namespace
