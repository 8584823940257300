// What `epollcr ps` reads of a live process (the command is ps.h; its text, JSON and image are ps_text.h, ps_json.h
// and ps_image.h): its open fds (/proc/PID/fd), what each points at and its fdinfo
// (/proc/PID/fdinfo), the file descriptions behind them, and for each kernel epoll its entries with the file each
// entry watches. docs/cli.md, "ps", explains how targets are found and what is shown when they cannot be.
//
// Linux facts this relies on (proc(5), kcmp(2), fs/eventpoll.c):
// - An eventpoll's fdinfo has one line per entry, "tfd: %8d events: %8x data: %16llx pos:%lli ino:%lx sdev:%x",
//   in the order of its red-black tree (by file, then fd). `tfd` is the fd number the entry was registered under:
//   it may since have been closed (the entry stays while the file is open elsewhere) or reused by another file.
//   `events` holds the EPOLLERR|EPOLLHUP that epoll_ctl(2) adds to every armed entry; a one-shot entry after
//   delivery keeps only its flag bits (ep_item_poll's "disabled" test). `sdev` is the kernel's dev_t encoding
//   (major << 20 | minor), not st_dev's.
// - Anonymous-inode files (eventfd, eventpoll, timerfd, signalfd, ...) share one inode, so `ino` and `sdev` do not
//   tell them apart. kcmp(KCMP_FILE) compares two fds' file descriptions; kcmp(KCMP_EPOLL_TFD) compares an fd's file
//   with the target of the `toff`-th entry registered under `tfd` in an epoll. Both need the ptrace access that
//   reading fdinfo needs; seccomp profiles (containers) often refuse kcmp (EPERM), and kernels without CONFIG_KCMP
//   lack it (ENOSYS). Without it, files are told apart by inode only where an inode has one file (sockets).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "command_status.h"
#include "epollcr/events.h"

namespace epollcr::cli::ps {

// One "tfd:" line of an eventpoll's fdinfo.
struct FdinfoEntry {
  int tfd = -1;
  std::uint32_t events = 0;  // as the kernel holds it (EPOLLERR|EPOLLHUP included while armed)
  std::uint64_t data = 0;
  std::int64_t pos = 0;      // the target file's position
  std::uint64_t ino = 0;
  std::uint32_t sdev = 0;    // kernel dev_t encoding
  int toff = 0;              // how many lines before it in the same fdinfo have the same tfd (kcmp's toff)
};

// How an entry's registration fd relates to the file it watches.
enum class TargetState {
  kOpen,        // fd tfd is open and holds the target (checked with kcmp, or by a socket's inode)
  kUnverified,  // no kcmp: fd tfd is open on the target's inode, which other files may share
  kClosed,      // fd tfd is closed; the file lives on (in `file` when it was found)
  kReused,      // fd tfd is open but holds another file; the target is `file` when it was found
};

struct Target {
  TargetState state = TargetState::kOpen;
  std::optional<std::size_t> file;  // index into Snapshot::files; none: not found among the process's fds
};

struct Entry {
  FdinfoEntry line;
  Target target;
};

// One open fd of the process.
struct OpenFd {
  int fd = -1;
  std::string link;          // readlink(/proc/PID/fd/N): "pipe:[123]", "anon_inode:[eventfd]", a path
  std::uint64_t st_dev = 0;  // stat(2) through the link: the file's device, inode and type
  std::uint64_t st_ino = 0;
  std::uint32_t file_type = 0;  // S_IFMT bits; 0 for an anonymous inode
  std::uint32_t flags = 0;      // fdinfo "flags:" (octal in the file), O_CLOEXEC included for a close-on-exec fd
  std::uint64_t pos = 0;        // fdinfo "pos:"
  bool epoll = false;           // the link is anon_inode:[eventpoll]
  std::vector<FdinfoEntry> lines;  // an epoll's "tfd:" lines, in fdinfo order
  std::size_t file = 0;            // index into Snapshot::files
};

// One open file description, with every fd of the process that holds it.
struct OpenFile {
  std::vector<std::size_t> fds;  // indexes into Snapshot::fds, ascending by fd; never empty
  std::vector<Entry> entries;    // an epoll's entries, sorted by (tfd, toff)
};

struct Snapshot {
  pid_t pid = 0;
  std::string command;           // /proc/PID/comm, or empty
  bool kcmp = true;              // files were told apart with kcmp(2)
  std::string kcmp_unavailable;  // why not, when kcmp is false ("Operation not permitted")
  std::vector<OpenFd> fds;       // ascending by fd
  std::vector<OpenFile> files;   // in the order of their lowest fd

  const OpenFd& FirstFd(const OpenFile& f) const { return fds[f.fds.front()]; }
  bool IsEpoll(std::size_t file) const { return FirstFd(files[file]).epoll; }
  // The index of the fd numbered `fd`, if it is open.
  std::optional<std::size_t> FindFd(int fd) const;
};

// epoll_ctl(2) adds EPOLLERR|EPOLLHUP to every armed entry's events (fs/eventpoll.c); the text and the image leave
// them out.
inline constexpr std::uint32_t kAlwaysReported = kEventErr | kEventHup;

// ep_item_poll: an entry whose events hold only flag bits is disabled (a one-shot entry after delivery).
inline bool Disabled(std::uint32_t events) { return (events & ~kEpollPrivateBits) == 0; }

// The epolls that watch file `file` of the snapshot: (the watching epoll's file, the entry).
std::vector<std::pair<std::size_t, const Entry*>> Watchers(const Snapshot& s, std::size_t file);

// st_dev of a file whose fdinfo says `sdev` (the kernel's dev_t encoding: major << 20 | minor).
std::uint64_t UserDev(std::uint32_t sdev);

// Parses a PID argument: a decimal number from 1 to the largest pid_t, nothing else.
std::optional<pid_t> ParsePid(const std::string& text);

// The whole of a small /proc file, opened relative to `dir` (AT_FDCWD for an absolute path). On failure returns the
// errno.
int ReadSmallFile(int dir, const std::string& name, std::string* text);

// Reads the process. Errors are for "ps: PID": no such process, permission denied (with what to do), the process
// exited while being read. An fd closed while it is being read is left out.
Result<Snapshot> ReadSnapshot(pid_t pid);

// Parses the fdinfo text of one fd into *fd: "pos:", "flags:" and an epoll's "tfd:" lines (with toff). False if a
// field ps uses is malformed or "flags:" is missing.
bool ParseFdinfo(const std::string& text, OpenFd* fd);

// Parses one "tfd:" line of an eventpoll's fdinfo (without toff); none if it is not one.
std::optional<FdinfoEntry> ParseTfdLine(const std::string& line);

}  // namespace epollcr::cli::ps
