// Whether a program can be interposed (libepollcr-preload.so reaches it through LD_PRELOAD), for `epollcr run`,
// which refuses one that cannot, and for the interposer's exec family, which reports an exec of one (under `epollcr
// run` its epoll system calls would end it with SIGSYS: docs/interposer.md, "Raw system calls").
#pragma once

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace epollcr::preload {

inline bool IsRegularFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// PROG as execvp would find it: a name with a slash as is, else the first executable file of that name in `path`
// ($PATH when null).
inline std::string FindProgram(const std::string& name, const char* path = nullptr) {
  if (name.find('/') != std::string::npos) return name;
  if (path == nullptr) path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string dir = dirs.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (IsRegularFile(candidate) && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// Why the executable file `path` cannot be interposed, or "" if it can: a static binary has no ELF interpreter
// (PT_INTERP), so no LD_PRELOAD reaches it; the loader ignores LD_PRELOAD for a set-user-ID or set-group-ID program run
// by another user. A script is "": its interpreter is what runs, and it is checked when it is executed.
inline std::string WhyNotInterposable(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::string("cannot stat it: ") + std::strerror(errno);
  if (((st.st_mode & S_ISUID) != 0 && st.st_uid != ::geteuid()) ||
      ((st.st_mode & S_ISGID) != 0 && st.st_gid != ::getegid())) {
    return "it is set-user-ID or set-group-ID: the loader ignores LD_PRELOAD for it";
  }
  Elf64_Ehdr header{};
  if (::pread(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header) ||
      std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
    return "";
  }
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_phentsize != sizeof(Elf64_Phdr)) {
    return "it is not a 64-bit ELF program";
  }
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr program{};
    const off_t at = static_cast<off_t>(header.e_phoff + static_cast<std::uint64_t>(i) * sizeof program);
    if (::pread(fd, &program, sizeof program, at) != static_cast<ssize_t>(sizeof program)) break;
    if (program.p_type == PT_INTERP) return "";
  }
  return "it is statically linked (no ELF interpreter): LD_PRELOAD cannot reach its epoll calls";
}

inline std::string WhyNotInterposable(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open it: ") + std::strerror(errno);
  std::string why = WhyNotInterposable(fd);
  ::close(fd);
  return why;
}

}  // namespace epollcr::preload
