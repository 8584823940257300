#include "commands/run.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "command_status.h"
#include "epollcr/event_poll.h"
#include "preload/interposable.h"

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

// --raw-syscalls emulate (docs/interposer.md, "Raw system calls"): a seccomp filter, inherited by every process and
// program image the program becomes, under which an epoll system call or io_uring_setup raises SIGSYS unless it
// carries the library's tag (epollcr::kOwnSyscallTag in its first argument's upper half): the interposer's handler
// answers a program's raw epoll calls as its libc calls are answered, and refuses io_uring. Every other system call,
// and the 64-bit numbers a 32-bit one does not share, pass at the cost of the filter's few instructions.
std::error_code InstallRawSyscallTrap() {
  constexpr std::uint32_t kTrapped64[] = {SYS_epoll_create, SYS_epoll_create1, SYS_epoll_ctl,      SYS_epoll_wait,
                                          SYS_epoll_pwait,  SYS_epoll_pwait2,  SYS_io_uring_setup};
  // The same calls through the 32-bit entry (int 0x80, or a 32-bit program): trapped, tag or not.
  constexpr std::uint32_t kTrapped32[] = {254, 329, 255, 256, 319, 441, 425};
  constexpr std::uint32_t kN = std::size(kTrapped64);
  std::vector<sock_filter> program;
  auto at = [&] { return static_cast<std::uint32_t>(program.size()); };
  auto load = [&](std::uint32_t offset) { program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset)); };
  auto ret = [&](std::uint32_t action) { program.push_back(BPF_STMT(BPF_RET | BPF_K, action)); };
  // 0: the architecture; 64-bit goes on at 2, anything else jumps to the 32-bit part.
  load(offsetof(seccomp_data, arch));
  // The index of the 32-bit part: after this jump, the number's load, kN tests, allow, the tag's load and test, allow
  // and trap.
  const std::uint32_t to_32 = 2 + 1 + kN + 5;
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, static_cast<std::uint8_t>(to_32 - at() - 1)));
  load(offsetof(seccomp_data, nr));
  const std::uint32_t check_tag = at() + kN + 1;
  for (std::uint32_t nr : kTrapped64) {
    program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, static_cast<std::uint8_t>(check_tag - at() - 1), 0));
  }
  ret(SECCOMP_RET_ALLOW);
  load(offsetof(seccomp_data, args[0]) + 4);  // the upper half (little-endian)
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(kOwnSyscallTag >> 32), 0, 1));
  ret(SECCOMP_RET_ALLOW);
  ret(SECCOMP_RET_TRAP);
  if (at() != to_32) return std::make_error_code(std::errc::state_not_recoverable);
  load(offsetof(seccomp_data, nr));
  for (std::uint32_t nr : kTrapped32) {
    program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, static_cast<std::uint8_t>(kN - (at() - to_32 - 1)), 0));
  }
  ret(SECCOMP_RET_ALLOW);
  ret(SECCOMP_RET_TRAP);
  const sock_fprog fprog{.len = static_cast<unsigned short>(program.size()), .filter = program.data()};
  // Speculative-store-bypass mitigation is the program's business, not the filter's (SPEC_ALLOW). Without
  // CAP_SYS_ADMIN the kernel wants no_new_privs first (so a set-user-ID program it execs gains nothing).
  auto install = [&] {
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, &fprog) == 0) return 0;
    if (errno == EINVAL) return static_cast<int>(::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog));
    return -1;
  };
  if (install() == 0) return {};
  if (errno == EACCES && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && install() == 0) return {};
  return std::error_code(errno, std::generic_category());
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
    if (std::error_code error = InstallRawSyscallTrap()) {
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
