// Running a program under test as a child process: argv, a file on its stdin, stdout and stderr captured to files.
// Shared by the tests that run the epollcr program end to end (tests/cli).
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace epollcr::testing_support {

struct ProgramRun {
  int status = -1;  // exit status, or -1 if the program did not exit normally (a crash)
  int signal = 0;   // the signal that ended it, if one did
  std::string out;
  std::string err;
};

// The environment variable `name`, or "" (the tests' meson rows pass paths of built programs this way).
inline std::string EnvOrEmpty(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Where the child's stdin comes from and its output goes, and how it runs.
struct ChildSetup {
  std::string stdin_path;   // must exist
  std::string stdout_path;  // created or truncated
  std::string stderr_path;
  std::string cwd;          // empty: the test's own
  int as_uid = -1;          // >= 0: run as this user and group nobody (needs root)
};

// Runs `bin` with `args` and waits for it; the status, stdout and stderr it left.
inline ProgramRun RunProgram(const char* bin, const std::vector<std::string>& args, const ChildSetup& setup) {
  ProgramRun run;
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int in = ::open(setup.stdin_path.c_str(), O_RDONLY);
    const int out = ::open(setup.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(setup.stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0 || err < 0 || (!setup.cwd.empty() && ::chdir(setup.cwd.c_str()) != 0)) ::_exit(127);
    if (setup.as_uid >= 0 && (::setgid(65534) != 0 || ::setuid(static_cast<uid_t>(setup.as_uid)) != 0)) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(bin));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin, argv.data());
    ::_exit(127);
  }
  int wstatus = 0;
  EXPECT_EQ(::waitpid(pid, &wstatus, 0), pid);
  if (WIFEXITED(wstatus)) run.status = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) run.signal = WTERMSIG(wstatus);
  run.out = ReadWholeFile(setup.stdout_path);
  run.err = ReadWholeFile(setup.stderr_path);
  return run;
}

}  // namespace epollcr::testing_support
