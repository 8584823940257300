// What `epollcr ps` reads of a program under `epollcr run`: its epollcr polls as the interposer holds them, asked of
// the process on its inspection socket (preload/inspect_server.h; docs/interposer.md, "Looking inside: epollcr ps").
// The kernel shows such a program's epolls too (ps_proc.h), but they are the polls' kernel epolls: their data are the
// library's keys, and they show nothing the library alone knows. The process answers with its world as an epollcr
// image: each poll at the program's fd number, its entries with the program's data and events, disabled one-shot
// entries, each entry's rank in its file's wait queue, the ready list of in-memory entries, and for each entry the
// kernel holds (a host file's) the key and fd it is registered under in the poll's kernel epoll.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "command_status.h"
#include "commands/ps_proc.h"
#include "epollcr/v1/image.pb.h"

namespace epollcr::cli::ps {

struct Interposed {
  std::string socket;  // as /proc/PID/net/unix names it: "@epollcr-ps-1234"
  v1::Image image;
};

// The inspection socket among the process's fds, asked for its image. None when the process has none (it does not
// run under the interposer, or has made no poll yet). Errors, for "ps: PID": the process refused (with its reason:
// another user's process), its socket cannot be reached from here (another network namespace), or the answer is not
// a valid image.
Result<std::optional<Interposed>> ReadInterposed(const Snapshot& snapshot);

// The answer a server wrote (its first line, then the framed image), decoded and validated; the errors say what
// `socket` answered.
Result<v1::Image> ParseInspectAnswer(std::string_view answer, const std::string& socket);

// The name of the inspection socket among `net_unix` (the text of /proc/PID/net/unix) whose inode is one of the
// process's socket fds, as the file shows it ("@epollcr-ps-1234"); none if there is none.
std::optional<std::string> FindInspectSocket(const Snapshot& snapshot, std::string_view net_unix);

// For the text and JSON: the program's fd of each poll of the image whose kernel epoll is `fd` in the process.
std::optional<int> PollOfKernelFd(const Interposed& interposed, int fd);

}  // namespace epollcr::cli::ps
