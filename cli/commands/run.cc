#include "commands/run.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "command_status.h"
#include "preload/interposable.h"
#include "preload/raw_syscall_trap.h"

#ifndef EPOLLCR_PRELOAD_INSTALLED
#define EPOLLCR_PRELOAD_INSTALLED ""
#endif

namespace epollcr::cli {
namespace {

std::string SelfDirectory() {
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "";
  std::string path(self, static_cast<std::size_t>(n));
  return path.substr(0, path.rfind('/'));
}

}  // namespace

CLI::App* AddRunCommand(CLI::App& app, RunOptions* options) {
  CLI::App* cmd = app.add_subcommand("run", "Run an unmodified program with its epolls on epollcr");
  cmd->footer(
      "Runs PROG with libepollcr-preload.so preloaded (LD_PRELOAD): every epoll instance it makes is an epollcr "
      "EventPoll over host files, with the kernel's semantics and errors. Statically linked and set-user-ID programs "
      "cannot be interposed and are refused. See docs/interposer.md.");
  cmd->add_option("--log", options->log,
                  "Append one line per epoll instance made (create PID FD) and per process at exit (exit PID polls N "
                  "waits W events E raw R) to FILE");
  cmd->add_option("--raw-syscalls", options->raw_syscalls,
                  "emulate (default): a seccomp filter traps the program's raw epoll system calls (not through libc) "
                  "and the interposer answers them as it answers libc's; io_uring_setup is refused (ENOSYS) with a "
                  "message. kernel: no filter; raw calls reach the kernel's epoll behind epollcr's (unsupported)")
      ->check(CLI::IsMember({"emulate", "kernel"}));
  cmd->add_option("command", options->command, "PROG [ARGS...] (after --)")->required()->expected(-1);
  cmd->positionals_at_end();
  return cmd;
}

std::string PreloadLibraryPath() {
  if (const char* env = std::getenv("EPOLLCR_PRELOAD"); env != nullptr && *env != '\0') {
    return preload::IsRegularFile(env) ? env : "";
  }
  const std::string self = SelfDirectory();
  if (!self.empty()) {
    std::string built = self + "/../preload/libepollcr-preload.so";
    if (preload::IsRegularFile(built)) {
      char real[PATH_MAX];
      return ::realpath(built.c_str(), real) != nullptr ? std::string(real) : built;
    }
  }
  const std::string installed = EPOLLCR_PRELOAD_INSTALLED;
  return !installed.empty() && preload::IsRegularFile(installed) ? installed : "";
}

int RunRun(const RunOptions& options, const char* argv0, std::ostream& err) {
  (void)argv0;
  const std::string& name = options.command.front();
  const std::string program = preload::FindProgram(name);
  if (program.empty()) {
    PrintError(err, CommandError("run", name + ": not found in PATH"));
    return kExitUsage;
  }
  if (std::string why = preload::WhyNotInterposable(program); !why.empty()) {
    PrintError(err, CommandError("run", program + " cannot run on epollcr: " + why));
    return kExitUsage;
  }
  const std::string library = PreloadLibraryPath();
  if (library.empty()) {
    PrintError(err, CommandError("run", "libepollcr-preload.so not found (set EPOLLCR_PRELOAD to its path)"));
    return kExitFailure;
  }
  std::string preload = library;
  if (const char* existing = std::getenv("LD_PRELOAD"); existing != nullptr && *existing != '\0') {
    preload += std::string(":") + existing;
  }
  ::setenv("LD_PRELOAD", preload.c_str(), 1);
  if (!options.log.empty()) {
    ::setenv("EPOLLCR_RUN_LOG", options.log.c_str(), 1);
  } else {
    ::unsetenv("EPOLLCR_RUN_LOG");
  }
  std::vector<char*> argv;
  for (const std::string& arg : options.command) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  if (options.raw_syscalls == "emulate") {
    if (std::error_code error = preload::InstallRawSyscallTrap()) {
      PrintError(err, CommandError("run", "cannot install the seccomp filter that traps raw epoll system calls (" +
                                              error.message() + "); --raw-syscalls kernel runs without it"));
      return kExitFailure;
    }
    ::setenv("EPOLLCR_RAW_SYSCALLS", "emulate", 1);
  } else {
    ::unsetenv("EPOLLCR_RAW_SYSCALLS");
  }
  ::execv(program.c_str(), argv.data());
  PrintError(err, CommandError("run", program + ": " + std::strerror(errno)));
  return kExitFailure;
}

}  // namespace epollcr::cli
