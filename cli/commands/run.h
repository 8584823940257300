// epollcr run [--log FILE] [--raw-syscalls emulate|kernel] [--] PROG [ARGS...]: runs an unmodified, dynamically linked program with
// libepollcr-preload.so preloaded, so that every epoll instance it makes is an epollcr EventPoll over host files
// (docs/interposer.md). The program replaces epollcr (execvp): its exit status and signals are its own.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace epollcr::cli {

struct RunOptions {
  std::vector<std::string> command;  // PROG and its arguments
  std::string log;                   // EPOLLCR_RUN_LOG for the program: "create PID FD" and "exit PID ..." lines
  std::string raw_syscalls = "emulate";  // or "kernel": no seccomp filter for raw epoll system calls
};

CLI::App* AddRunCommand(CLI::App& app, RunOptions* options);

// Returns only on a failure: 2 for a program that cannot be interposed (statically linked, set-user-ID, not found:
// the reason is printed), 1 when the library is missing or the exec fails.
int RunRun(const RunOptions& options, const char* argv0, std::ostream& err);

// Where libepollcr-preload.so is: $EPOLLCR_PRELOAD if set, else next to this program's build tree
// (BUILD/preload/ for BUILD/cli/epollcr), else the installed library. Empty if none exists.
std::string PreloadLibraryPath();

}  // namespace epollcr::cli
