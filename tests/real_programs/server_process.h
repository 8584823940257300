// A long-running program under test (a server) as a child process in a process group of its own: started without
// waiting for it, stopped with a signal within a bounded time, and never left behind. Shared by the tests that run
// real servers (tests/real_programs); short-lived programs run through program_run.h.
//
// Why a process group: the server may be `epollcr run` that execs the server, or a wrapper that forks it, and the
// server may fork workers of its own (nginx). All of them stay in the group the child made, so the group is "the
// server and everything it started": what the test scans to know which processes ran, and what it kills if a stop
// fails. Why a subreaper: a process whose parent exits is reparented to the nearest subreaper instead of init, so a
// worker orphaned by its master becomes ours and is reaped here rather than left as a zombie of an init that may not
// reap (a container's pid 1).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "program_run.h"

namespace epollcr::testing_support {

// One process of a server's group, as /proc showed it.
struct GroupMember {
  pid_t pid = 0;
  pid_t ppid = 0;
  std::string exe;    // the target of /proc/PID/exe: the program image the process runs
  char state = '?';   // R, S, D, Z, ... as in ps
  std::string wchan;  // where in the kernel it sleeps (/proc/PID/wchan), for a process that hangs
};

class ServerProcess {
 public:
  // Starts argv[0] (an absolute path) with `argv`, stdin from /dev/null, stdout and stderr to the files `setup`
  // names (its stdin_path, cwd and as_uid are not used). The child dies with SIGKILL if the test process dies first
  // (a test killed by meson's timeout), so no server outlives a crashed test.
  ServerProcess(const std::vector<std::string>& argv, const ChildSetup& setup) : argv_(argv) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the test died before the prctl
      const int in = ::open("/dev/null", O_RDONLY);
      const int out = ::open(setup.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int err = ::open(setup.stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (in < 0 || out < 0 || err < 0) ::_exit(127);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    if (pid_ < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(errno);
      return;
    }
    // Both sides set the group, so that it exists before the parent signals or scans it.
    ::setpgid(pid_, pid_);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // A server still running here (a test that failed before its stop) is killed with its whole group, reaped, and
  // reported: every test must stop its server itself.
  ~ServerProcess() {
    if (pid_ <= 0) return;
    if (!status_.has_value()) {
      ADD_FAILURE() << "the server " << argv_[0] << " (pid " << pid_ << ") was still running at the end of the test";
      ::kill(-pid_, SIGKILL);
      Reap(std::chrono::seconds(5));
    }
    KillAndReapGroup();
  }

  pid_t pid() const { return pid_; }
  std::string Command() const {
    std::string s;
    for (const std::string& a : argv_) s += (s.empty() ? "" : " ") + a;
    return s;
  }

  // True once the direct child has exited (reaping it); its wait status is then in status().
  bool Exited() {
    if (!status_.has_value() && pid_ > 0) {
      int wstatus = 0;
      if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) status_ = wstatus;
    }
    return status_.has_value();
  }
  std::optional<int> status() const { return status_; }

  // The processes now in the server's group (the child and everything it started that did not leave the group).
  std::vector<GroupMember> GroupMembers() const {
    std::vector<GroupMember> members;
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) return members;
    while (const dirent* e = ::readdir(proc)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (pid <= 0 || *end != '\0') continue;
      // /proc/PID/stat: "pid (comm) state ppid pgrp ...", where comm may hold spaces and parentheses: the fields
      // after it start after the last ')'.
      const std::string stat = ReadWholeFile("/proc/" + std::string(e->d_name) + "/stat");
      const std::size_t close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream fields(stat.substr(close + 1));
      char state = '?';
      long ppid = 0, pgrp = 0;
      if (!(fields >> state >> ppid >> pgrp) || pgrp != pid_) continue;
      char exe[4096];
      const ssize_t n = ::readlink(("/proc/" + std::string(e->d_name) + "/exe").c_str(), exe, sizeof(exe) - 1);
      members.push_back({static_cast<pid_t>(pid), static_cast<pid_t>(ppid), n > 0 ? std::string(exe, n) : "", state,
                         ReadWholeFile("/proc/" + std::string(e->d_name) + "/wchan")});
    }
    ::closedir(proc);
    return members;
  }

  // The group's processes, one a line: "pid ppid state wchan exe".
  std::string DescribeGroup() const {
    std::ostringstream s;
    for (const GroupMember& m : GroupMembers()) {
      s << m.pid << " " << m.ppid << " " << m.state << " " << (m.wchan.empty() ? "-" : m.wchan) << " "
        << (m.exe.empty() ? "-" : m.exe) << "\n";
    }
    return s.str();
  }

  // Sends `sig` to the child and waits up to `timeout` for it and its whole group to be gone. False (with a test
  // failure saying what was left) if it had to kill them with SIGKILL.
  bool Stop(int sig, std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return false;
    if (!Exited()) ::kill(pid_, sig);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const bool exited = Reap(timeout);
    const bool group_gone = exited && WaitGroupGone(deadline);
    if (!exited) {
      ADD_FAILURE() << "the server " << Command() << " (pid " << pid_ << ") did not exit within " << timeout.count()
                    << " ms of signal " << sig << ": killed with SIGKILL. Its processes (pid ppid state wchan exe):\n"
                    << DescribeGroup();
    } else if (!group_gone) {
      ADD_FAILURE() << "the server " << Command() << " exited but left processes behind (killed with SIGKILL; pid "
                    << "ppid state wchan exe):\n" << DescribeGroup();
    }
    if (!exited || !group_gone) {
      ::kill(-pid_, SIGKILL);
      Reap(std::chrono::seconds(5));
    }
    KillAndReapGroup();
    return exited && group_gone;
  }

 private:
  // Waits up to `timeout` for the direct child to exit.
  bool Reap(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!Exited()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  // Reaps the group's members that were reparented to us, until none of the group is left or `deadline` passes.
  bool WaitGroupGone(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      while (::waitpid(-pid_, nullptr, WNOHANG) > 0) {
      }
      if (::kill(-pid_, 0) != 0 && errno == ESRCH) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // The last resort: whatever of the group is still there is killed and reaped (within a few seconds).
  void KillAndReapGroup() {
    if (::kill(-pid_, 0) != 0 && errno == ESRCH) return;
    ::kill(-pid_, SIGKILL);
    WaitGroupGone(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  }

  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace epollcr::testing_support
