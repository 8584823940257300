#include "commands/run.h"

#include <elf.h>
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
#include "epollcr/unique_fd.h"

#ifndef EPOLLCR_PRELOAD_INSTALLED
#define EPOLLCR_PRELOAD_INSTALLED ""
#endif

namespace epollcr::cli {
namespace {

bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string SelfDirectory() {
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "";
  std::string path(self, static_cast<std::size_t>(n));
  return path.substr(0, path.rfind('/'));
}

// PROG as execvp would find it: a name with a slash as is, else the first executable file of that name in $PATH.
std::string FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string dir = dirs.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (IsFile(candidate) && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
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
                  "waits W events E) to FILE");
  cmd->add_option("command", options->command, "PROG [ARGS...] (after --)")->required()->expected(-1);
  cmd->positionals_at_end();
  return cmd;
}

std::string PreloadLibraryPath() {
  if (const char* env = std::getenv("EPOLLCR_PRELOAD"); env != nullptr && *env != '\0') {
    return IsFile(env) ? env : "";
  }
  const std::string self = SelfDirectory();
  if (!self.empty()) {
    std::string built = self + "/../preload/libepollcr-preload.so";
    if (IsFile(built)) {
      char real[PATH_MAX];
      return ::realpath(built.c_str(), real) != nullptr ? std::string(real) : built;
    }
  }
  const std::string installed = EPOLLCR_PRELOAD_INSTALLED;
  return !installed.empty() && IsFile(installed) ? installed : "";
}

std::string WhyNotInterposable(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::string("cannot open it: ") + std::strerror(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return std::string("cannot stat it: ") + std::strerror(errno);
  if (((st.st_mode & S_ISUID) != 0 && st.st_uid != ::geteuid()) ||
      ((st.st_mode & S_ISGID) != 0 && st.st_gid != ::getegid())) {
    return "it is set-user-ID or set-group-ID: the loader ignores LD_PRELOAD for it";
  }
  Elf64_Ehdr header{};
  if (::pread(fd.get(), &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header) ||
      std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
    return "";  // a script: its interpreter is what runs, and it is checked when it is executed
  }
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_phentsize != sizeof(Elf64_Phdr)) {
    return "it is not a 64-bit ELF program";
  }
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr program{};
    const off_t at = static_cast<off_t>(header.e_phoff + static_cast<std::uint64_t>(i) * sizeof program);
    if (::pread(fd.get(), &program, sizeof program, at) != static_cast<ssize_t>(sizeof program)) break;
    if (program.p_type == PT_INTERP) return "";
  }
  return "it is statically linked (no ELF interpreter): LD_PRELOAD cannot reach its epoll calls";
}

int RunRun(const RunOptions& options, const char* argv0, std::ostream& err) {
  (void)argv0;
  const std::string& name = options.command.front();
  const std::string program = FindProgram(name);
  if (program.empty()) {
    PrintError(err, CommandError("run", name + ": not found in PATH"));
    return kExitUsage;
  }
  if (std::string why = WhyNotInterposable(program); !why.empty()) {
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
  ::execv(program.c_str(), argv.data());
  PrintError(err, CommandError("run", program + ": " + std::strerror(errno)));
  return kExitFailure;
}

}  // namespace epollcr::cli
