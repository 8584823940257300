// The interposer's inspection socket: how `epollcr ps PID` reads the polls of a program under `epollcr run`
// (docs/interposer.md, "Looking inside: epollcr ps").
//
// The kernel epolls of an interposed program hold the library's keys, not the program's data, and nothing of what
// only the library knows (wait-queue ranks, in-memory ready lists), so ps asks the process. Each process that has
// made a poll has a Unix datagram socket bound to the abstract name "epollcr-ps-PID" (PID as the process sees itself;
// a suffix if the name is taken); ps finds it among the process's own fds (/proc/PID/fd and /proc/PID/net/unix), so
// a process in another pid namespace is found too. A thread of the library, with every signal blocked (a signal for
// the process is never delivered to it), answers one request at a time with the world as an epollcr image. Nothing
// of the program changes: the image is a snapshot, which takes the polls' locks and reads; and the thread makes no fd
// after the socket (a blocked accept(2) would hold the lowest free fd number, which the program's next open would
// otherwise get: hence datagrams, answered to the sender's address, and credentials from SCM_CREDENTIALS).
//
// Who may read: the sender's uid (which the kernel attaches; a process can claim no other than its own) must be
// root's, or equal the process's real, effective and saved uids while the process is dumpable: the rule /proc
// applies before it shows the process's fds (ptrace access), so the socket shows no one what /proc would not.
// Anyone else gets a refusal line and nothing else.
//
// The protocol: the client, bound to an address of its own (autobind), sends one datagram ("epollcr-ps 1\n"); the
// server answers with a line in one datagram and then, for an image, its bytes in datagrams of at most 64 KiB:
//   "epollcr-ps 1 image N\n", then N bytes (the framed image, image/file.h)
//   "epollcr-ps 1 refused REASON\n"
//   "epollcr-ps 1 error REASON\n"  (the snapshot failed)
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "epollcr/result.h"

namespace epollcr::preload {

// What the server answers: the framed image of the process's world, or why not.
using InspectSnapshot = std::function<Result<std::string>()>;

// Starts the server if this process has none (the caller serializes the calls: the interposer holds its table's
// lock). Its socket goes at or above `fd_floor`, close-on-exec. Failures are silent: the program runs on, and ps says
// the process cannot be read. `snapshot` runs on the server's thread.
void StartInspectServer(int fd_floor, InspectSnapshot snapshot);

// In a forked child: the parent's socket and thread are the parent's; the child's copy of the socket is closed, and
// the child's first poll starts a server of its own.
void ForgetInspectServerAfterFork();

// Before the program closes the fds first..last (close, close_range, dup2 onto one, as a program that closes every fd
// does): if the server's socket is among them, the server stops (called outside the interposer's lock, which a
// snapshot in progress waits for), so the thread ends before the fd number can name another file of the program; the
// program's call then closes the socket. The next poll starts a server again.
void StopInspectServerIfIn(unsigned first, unsigned last);

// The socket name's prefix (in the abstract namespace: /proc/PID/net/unix shows it as "@epollcr-ps-...").
inline constexpr const char* kInspectSocketPrefix = "epollcr-ps-";

// *out is `name` in the abstract namespace (sun_path[0] == 0); returns the address's size, or 0 if it is too long.
inline socklen_t AbstractAddress(std::string_view name, sockaddr_un* out) {
  *out = sockaddr_un{};
  out->sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof out->sun_path) return 0;
  std::memcpy(out->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}
// The first line's words.
inline constexpr const char* kInspectMagic = "epollcr-ps 1";

}  // namespace epollcr::preload
