#include "commands/ps_proc.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

#include "epollcr/unique_fd.h"

namespace epollcr::cli::ps {

// ---- reading /proc ----------------------------------------------------------------------------------------------

int ReadSmallFile(int dir, const std::string& name, std::string* text) {
  UniqueFd fd(::openat(dir, name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return 0;
    text->append(buffer, static_cast<std::size_t>(n));
  }
}

namespace {

// Whether the process behind `proc` (an fd of its /proc/PID directory, which stays tied to that process even if
// the pid is reused) has exited: /proc/PID/stat is gone, or its state is Z (zombie) or X (dead).
bool Exited(int proc) {
  std::string stat;
  if (ReadSmallFile(proc, "stat", &stat) != 0) return true;
  const std::size_t paren = stat.rfind(')');  // the command name in parentheses may hold anything
  if (paren == std::string::npos || paren + 2 >= stat.size()) return true;
  const char state = stat[paren + 2];
  return state == 'Z' || state == 'X';
}

template <typename T>
bool ParseNumber(std::string_view text, int base, T* out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out, base);
  return ec == std::errc() && ptr == end;
}

// The reason given when /proc/PID refuses us.
std::string PermissionReason(pid_t pid, int error) {
  return std::string(std::strerror(error)) + " (reading /proc/" + std::to_string(pid) +
         "/fdinfo needs ptrace access to the process: run ps as its user or as root)";
}

// Reads fd `name` of the process into *out; returns 0 or the errno of the step that failed.
int ReadFd(int proc, int fd_dir, const std::string& name, OpenFd* out) {
  std::string link(256, '\0');
  while (true) {
    const ssize_t n = ::readlinkat(fd_dir, name.c_str(), link.data(), link.size());
    if (n < 0) return errno;
    if (static_cast<std::size_t>(n) < link.size()) {
      link.resize(static_cast<std::size_t>(n));
      break;
    }
    link.resize(link.size() * 2);
  }
  struct stat st {};
  if (::fstatat(fd_dir, name.c_str(), &st, 0) != 0) return errno;  // follows the link to the open file
  std::string fdinfo;
  if (int error = ReadSmallFile(proc, "fdinfo/" + name, &fdinfo)) return error;
  out->link = std::move(link);
  out->st_dev = st.st_dev;
  out->st_ino = st.st_ino;
  out->file_type = st.st_mode & S_IFMT;
  out->epoll = out->link == "anon_inode:[eventpoll]";
  if (!ParseFdinfo(fdinfo, out)) return EBADMSG;
  if (!out->epoll) out->lines.clear();
  return 0;
}

// ---- telling files apart ----------------------------------------------------------------------------------------

enum class Same { kYes, kNo, kUnavailable };

Same KcmpResult(long r, int* unavailable_errno) {
  if (r == 0) return Same::kYes;
  if (r > 0) return Same::kNo;
  // EBADF / ENOENT: an fd or an entry went away while we looked; ESRCH: the process did (checked at the end).
  if (errno == EBADF || errno == ENOENT || errno == ESRCH) return Same::kNo;
  *unavailable_errno = errno;  // ENOSYS (no CONFIG_KCMP), EPERM (seccomp, ptrace), EINVAL (no KCMP_EPOLL_TFD)
  return Same::kUnavailable;
}

Same KcmpFiles(pid_t pid, int fd1, int fd2, int* unavailable_errno) {
  return KcmpResult(::syscall(SYS_kcmp, pid, pid, KCMP_FILE, fd1, fd2), unavailable_errno);
}

// Whether fd `fd` holds the file of the `toff`-th entry registered under `tfd` in the epoll at `efd`.
Same KcmpTarget(pid_t pid, int fd, int efd, const FdinfoEntry& e, int* unavailable_errno) {
  kcmp_epoll_slot slot{};
  slot.efd = static_cast<__u32>(efd);
  slot.tfd = static_cast<__u32>(e.tfd);
  slot.toff = static_cast<__u32>(e.toff);
  return KcmpResult(::syscall(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, reinterpret_cast<unsigned long>(&slot)),
                    unavailable_errno);
}

bool SameInode(const OpenFd& fd, const FdinfoEntry& e) { return fd.st_ino == e.ino && fd.st_dev == UserDev(e.sdev); }

// Groups the fds into files and finds each epoll entry's target. Returns false (with *unavailable_errno set) if kcmp
// was asked for and turned out to be unavailable; the snapshot is then half-built and must be rebuilt without it.
class Resolver {
 public:
  Resolver(Snapshot& s, bool use_kcmp) : s_(s), kcmp_(use_kcmp) {}

  bool Run(int* unavailable_errno) {
    s_.files.clear();
    for (std::size_t i = 0; i < s_.fds.size(); ++i) {
      std::optional<std::size_t> file;
      if (!FileOf(i, &file)) return Unavailable(unavailable_errno);
      if (!file) {
        file = s_.files.size();
        s_.files.emplace_back();
      }
      s_.fds[i].file = *file;
      s_.files[*file].fds.push_back(i);
    }
    for (OpenFile& f : s_.files) {
      const OpenFd& first = s_.FirstFd(f);
      if (!first.epoll) continue;
      std::set<std::pair<std::size_t, int>> keys;  // (file, tfd) taken in this epoll: the kernel's key is unique
      for (const FdinfoEntry& line : first.lines) {
        Entry entry{line, {}};
        if (!TargetOf(first.fd, line, &entry.target)) return Unavailable(unavailable_errno);
        if (entry.target.file && !keys.insert({*entry.target.file, line.tfd}).second) {
          // Only an unverified guess can collide with an earlier one: keep the first, and say this is not found.
          entry.target = {s_.FindFd(line.tfd) ? TargetState::kReused : TargetState::kClosed, std::nullopt};
        }
        f.entries.push_back(entry);
      }
      std::sort(f.entries.begin(), f.entries.end(), [](const Entry& a, const Entry& b) {
        return std::pair(a.line.tfd, a.line.toff) < std::pair(b.line.tfd, b.line.toff);
      });
    }
    return true;
  }

 private:
  bool Unavailable(int* unavailable_errno) {
    *unavailable_errno = errno_;
    return false;
  }

  // The file fd index `i` shares with an earlier fd, if any. False: kcmp unavailable.
  bool FileOf(std::size_t i, std::optional<std::size_t>* file) {
    const OpenFd& fd = s_.fds[i];
    for (std::size_t f = 0; f < s_.files.size(); ++f) {
      const OpenFd& other = s_.FirstFd(s_.files[f]);
      if (other.st_dev != fd.st_dev || other.st_ino != fd.st_ino || other.file_type != fd.file_type) continue;
      if (!kcmp_) {
        // A socket's inode has exactly one file (sock_alloc_file); any other inode may have several.
        if (fd.file_type != S_IFSOCK) continue;
        *file = f;
        return true;
      }
      const Same same = KcmpFiles(s_.pid, other.fd, fd.fd, &errno_);
      if (same == Same::kUnavailable) return false;
      if (same == Same::kYes) {
        *file = f;
        return true;
      }
    }
    return true;
  }

  // Whether file `f` holds the target of `line` in the epoll at `efd`. False in *same: kcmp unavailable.
  bool Holds(std::size_t f, int efd, const FdinfoEntry& line, Same* same) {
    const OpenFd& fd = s_.FirstFd(s_.files[f]);
    if (kcmp_) {
      *same = KcmpTarget(s_.pid, fd.fd, efd, line, &errno_);
      return *same != Same::kUnavailable;
    }
    *same = SameInode(fd, line) && fd.file_type == S_IFSOCK ? Same::kYes : Same::kNo;
    return true;
  }

  bool TargetOf(int efd, const FdinfoEntry& line, Target* target) {
    const std::optional<std::size_t> at_tfd = s_.FindFd(line.tfd);
    std::optional<std::size_t> checked;
    if (at_tfd) {
      const std::size_t f = s_.fds[*at_tfd].file;
      Same same = Same::kNo;
      if (kcmp_ || s_.fds[*at_tfd].file_type == S_IFSOCK) {
        if (!Holds(f, efd, line, &same)) return false;
        if (same == Same::kYes) {
          *target = {TargetState::kOpen, f};
          return true;
        }
      } else if (SameInode(s_.fds[*at_tfd], line)) {
        *target = {TargetState::kUnverified, f};
        return true;
      }
      checked = f;
    }
    *target = {at_tfd ? TargetState::kReused : TargetState::kClosed, std::nullopt};
    // Files on the entry's inode first; with kcmp, then every other file (a stacked filesystem such as overlayfs
    // may show another inode through /proc than the one the entry holds).
    for (int pass = 0; pass < (kcmp_ ? 2 : 1); ++pass) {
      for (std::size_t f = 0; f < s_.files.size(); ++f) {
        if (f == checked || SameInode(s_.FirstFd(s_.files[f]), line) != (pass == 0)) continue;
        Same same = Same::kNo;
        if (!Holds(f, efd, line, &same)) return false;
        if (same == Same::kYes) {
          target->file = f;
          return true;
        }
      }
    }
    return true;
  }

  Snapshot& s_;
  const bool kcmp_;
  int errno_ = 0;
};

}  // namespace

std::uint64_t UserDev(std::uint32_t sdev) { return makedev(sdev >> 20, sdev & 0xfffff); }

std::vector<std::pair<std::size_t, const Entry*>> Watchers(const Snapshot& s, std::size_t file) {
  std::vector<std::pair<std::size_t, const Entry*>> out;
  for (std::size_t f = 0; f < s.files.size(); ++f) {
    for (const Entry& e : s.files[f].entries) {
      if (e.target.file == file) out.emplace_back(f, &e);
    }
  }
  return out;
}

std::optional<std::size_t> Snapshot::FindFd(int fd) const {
  auto it = std::lower_bound(fds.begin(), fds.end(), fd, [](const OpenFd& a, int b) { return a.fd < b; });
  if (it == fds.end() || it->fd != fd) return std::nullopt;
  return static_cast<std::size_t>(it - fds.begin());
}

std::optional<pid_t> ParsePid(const std::string& text) {
  if (text.empty() || text.size() > 10 || !std::all_of(text.begin(), text.end(), [](char c) {
        return c >= '0' && c <= '9';
      })) {
    return std::nullopt;
  }
  long long value = 0;
  if (!ParseNumber(text, 10, &value) || value < 1 || value > INT_MAX) return std::nullopt;
  return static_cast<pid_t>(value);
}

bool ParseFdinfo(const std::string& text, OpenFd* fd) {
  std::istringstream in(text);
  bool have_flags = false;
  std::map<int, int> seen;  // tfd -> lines so far
  for (std::string line; std::getline(in, line);) {
    auto value = [&](std::string_view key) -> std::optional<std::string_view> {
      if (line.compare(0, key.size(), key) != 0) return std::nullopt;
      std::string_view rest = std::string_view(line).substr(key.size());
      while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
      return rest;
    };
    if (auto pos = value("pos:")) {
      if (!ParseNumber(*pos, 10, &fd->pos)) return false;
    } else if (auto flags = value("flags:")) {
      if (!ParseNumber(*flags, 8, &fd->flags)) return false;
      have_flags = true;
    } else if (value("tfd:")) {
      std::optional<FdinfoEntry> entry = ParseTfdLine(line);
      if (!entry) return false;
      entry->toff = seen[entry->tfd]++;
      fd->lines.push_back(*entry);
    }
  }
  return have_flags;
}

std::optional<FdinfoEntry> ParseTfdLine(const std::string& line) {
  // "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x": a key ends with ':' and its value follows,
  // after blanks or not. Unknown keys (a later kernel may add some) are skipped.
  std::map<std::string, std::string, std::less<>> fields;
  std::istringstream in(line);
  std::string pending;
  for (std::string token; in >> token;) {
    if (!pending.empty()) {
      fields[pending] = token;
      pending.clear();
      continue;
    }
    const std::size_t colon = token.find(':');
    if (colon == std::string::npos) return std::nullopt;
    if (colon + 1 == token.size()) {
      pending = token.substr(0, colon);
    } else {
      fields[token.substr(0, colon)] = token.substr(colon + 1);
    }
  }
  FdinfoEntry e;
  auto get = [&](const char* key, int base, auto* out) {
    auto it = fields.find(key);
    return it != fields.end() && ParseNumber(it->second, base, out);
  };
  if (!get("tfd", 10, &e.tfd) || !get("events", 16, &e.events) || !get("data", 16, &e.data) ||
      !get("ino", 16, &e.ino) || !get("sdev", 16, &e.sdev) || e.tfd < 0) {
    return std::nullopt;
  }
  if (!get("pos", 10, &e.pos)) e.pos = 0;  // older kernels print no pos
  return e;
}

Result<Snapshot> ReadSnapshot(pid_t pid) {
  const std::string what = "ps: " + std::to_string(pid);
  auto fail = [&](const std::string& reason) { return CommandError(what, reason); };
  const std::string gone = "the process exited while it was being read";

  Snapshot s;
  s.pid = pid;
  UniqueFd proc(::open(("/proc/" + std::to_string(pid)).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc.valid()) {
    if (errno == ENOENT) return fail("no such process");
    return fail("/proc/" + std::to_string(pid) + ": " + std::strerror(errno));
  }
  if (ReadSmallFile(proc.get(), "comm", &s.command) == 0) {
    while (!s.command.empty() && s.command.back() == '\n') s.command.pop_back();
  }
  if (Exited(proc.get())) return fail("no such process (it has exited)");

  UniqueFd fd_dir(::openat(proc.get(), "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_dir.valid()) {
    if (errno == EACCES || errno == EPERM) return fail(PermissionReason(pid, errno));
    if (Exited(proc.get())) return fail("no such process (it has exited)");
    return fail("/proc/" + std::to_string(pid) + "/fd: " + std::strerror(errno));
  }
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(::dup(fd_dir.get())), &::closedir);
  if (!dir) return fail("/proc/" + std::to_string(pid) + "/fd: " + std::strerror(errno));
  std::vector<int> numbers;
  errno = 0;
  while (const dirent* d = ::readdir(dir.get())) {
    int n = -1;
    if (ParseNumber(std::string_view(d->d_name), 10, &n)) numbers.push_back(n);
  }
  if (errno != 0) {
    if (Exited(proc.get())) return fail(gone);
    return fail("/proc/" + std::to_string(pid) + "/fd: " + std::strerror(errno));
  }
  std::sort(numbers.begin(), numbers.end());

  for (int n : numbers) {
    OpenFd fd;
    fd.fd = n;
    const int error = ReadFd(proc.get(), fd_dir.get(), std::to_string(n), &fd);
    if (error == 0) {
      s.fds.push_back(std::move(fd));
      continue;
    }
    if (Exited(proc.get())) return fail(gone);
    if (error == ENOENT) continue;  // closed since the directory was listed
    if (error == EACCES || error == EPERM) return fail(PermissionReason(pid, error));
    if (error == EBADMSG) {
      return fail("/proc/" + std::to_string(pid) + "/fdinfo/" + std::to_string(n) + ": unexpected format");
    }
    return fail("/proc/" + std::to_string(pid) + "/fd/" + std::to_string(n) + ": " + std::strerror(error));
  }

  int unavailable = 0;
  if (!Resolver(s, true).Run(&unavailable)) {
    s.kcmp = false;
    s.kcmp_unavailable = std::string("kcmp(2): ") + std::strerror(unavailable);
    Resolver(s, false).Run(&unavailable);  // cannot fail without kcmp
  }
  if (Exited(proc.get())) return fail(gone);
  return s;
}

}  // namespace epollcr::cli::ps
