// An echo server whose event loop is nothing but an epollcr EventPoll over host files (real sockets), and which can
// hand itself to a new process in the middle of its traffic: it checkpoints its world (the poll, every connection,
// the listening socket, and the bytes it still owes each client, kept in an embedder file), forks, and the child
// execs a new program image that restores the world from the image and the inherited fds and carries on. The old
// process exits without touching a socket again. `epollcr demo` drives it with many clients (demo.h);
// examples/echo_server.cc runs it on its own.
//
// For comparison it can also run its loop on a kernel epoll (EchoServerOptions::kernel_epoll); everything else is the
// same code.
//
// Control: a byte on the control fd — 'c' checkpoints and hands over, 'q' quits. Status lines go to the status fd:
//   listening pid=P
//   checkpoint pid=P registrations=N image_bytes=B ms=T
//   restored pid=P registrations=N host_files=H ms=T (read=.. validate=.. resolve=.. build=.. after_load=..)
//   quit pid=P
#pragma once

#include <string>
#include <vector>

namespace epollcr::cli {

struct EchoServerOptions {
  int listen_fd = -1;         // a listening TCP socket (non-blocking is set)
  int control_fd = -1;        // read end of the control pipe
  int status_fd = -1;         // where status lines go (-1: nowhere)
  std::string restore_image;  // non-empty: this process is the new one; restore from this image
  std::string image_dir;      // where checkpoints are written (default: $TMPDIR or /tmp)
  // The program the new process runs, and the arguments before the server's own (e.g. {"/proc/self/exe",
  // "demo-server"}). The server appends --restore IMAGE --status-fd N.
  std::vector<std::string> exec_argv;
  // Run the same loop on a kernel epoll (epoll_create1, epoll_ctl, epoll_wait) instead of an EventPoll, over the
  // same host files: the baseline a benchmark compares the server with (bench/echo_server_bench.cc). A kernel epoll
  // cannot be checkpointed, so 'c' is refused (the server says so on stderr and carries on), as is restore_image.
  bool kernel_epoll = false;
};

// Runs the server until 'q' on the control fd (0), or an error (1, with the reason on stderr). Never returns after
// a hand-off in the old process (it exits 0 there).
int RunEchoServer(const EchoServerOptions& options);

}  // namespace epollcr::cli
