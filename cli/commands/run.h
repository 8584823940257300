// epollcr run [--log FILE] [--] PROG [ARGS...]: runs an unmodified, dynamically linked program with
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
};

CLI::App* AddRunCommand(CLI::App& app, RunOptions* options);

// Returns only on a failure: 2 for a program that cannot be interposed (statically linked, set-user-ID, not found:
// the reason is printed), 1 when the library is missing or the exec fails.
int RunRun(const RunOptions& options, const char* argv0, std::ostream& err);

// Where libepollcr-preload.so is: $EPOLLCR_PRELOAD if set, else next to this program's build tree
// (BUILD/preload/ for BUILD/cli/epollcr), else the installed library. Empty if none exists.
std::string PreloadLibraryPath();

// Why `path` (an executable file) cannot be interposed, or "" if it can: a static binary has no ELF interpreter
// (PT_INTERP), so no LD_PRELOAD reaches it; the loader ignores LD_PRELOAD for a set-user-ID or set-group-ID program run
// by another user.
std::string WhyNotInterposable(const std::string& path);

}  // namespace epollcr::cli
