// An echo server whose event loop is nothing but an epollcr EventPoll over host files (real sockets), and which can
// hand itself to a new process in the middle of its traffic (restore/successor.h): it starts its successor (a new
// program image) and serves on; once the successor is ready, it pauses, hands it the world (the poll, every
// connection, the listening socket, and the bytes it still owes each client, kept in an embedder file), and exits
// when the successor confirms it serves. If the successor fails at any stage, this process resumes serving.
// `epollcr demo` drives it with many clients (demo.h); examples/echo_server.cc runs it on its own.
//
// For comparison it can also run its loop on a kernel epoll (EchoServerOptions::kernel_epoll); everything else is the
// same code.
//
// Control: a byte on the control fd — 's' starts the successor (which then waits), 'c' hands over (starting the
// successor first if 's' did not, and pausing as soon as it is ready), 'q' quits. Status lines go to the status fd:
//   listening pid=P
//   successor pid=S started_ms=T                  (the successor said it is ready, T ms after 'c')
//   handoff pid=P to=S pause_start_ns=A pause_end_ns=B entries=.. host_fds=.. inherited=.. sent=.. stale=..
//           image_bytes=.. pause_ms=.. (save=.. send=.. restore=.. go=..)
//   restored pid=S registrations=N host_files=H ms=T (receive=.. place=.. read=.. validate=.. resolve=.. build=..
//           after_load=..)
//   resumed pid=P stage=STAGE reason=...          (the successor failed; this process serves on)
//   quit pid=P
#pragma once

#include <string>
#include <vector>

namespace epollcr::cli {

struct EchoServerOptions {
  int listen_fd = -1;         // a listening TCP socket (non-blocking is set)
  int control_fd = -1;        // read end of the control pipe
  int status_fd = -1;         // where status lines go (-1: nowhere)
  int handoff_fd = -1;        // >= 0: this process is a successor; take the world over on this channel
  // The program the successor runs, and the arguments before the server's own (e.g. {"/proc/self/exe",
  // "demo-server"}). The server appends --status-fd N [--fail-successor STAGE], and the hand-off --handoff-fd N.
  std::vector<std::string> exec_argv;
  // Make the successor fail at this stage (--fail-successor): "exec" (its program cannot be run), "start" (it is
  // killed before it says hello), "receive" (killed halfway through the image), "restore" (it refuses the world),
  // "confirm" (killed after restoring, before it says so), "timeout" (it never answers), "go" (killed when told
  // to go, before it confirms it serves). Empty: no failure.
  std::string fail_successor;
  int confirm_timeout_ms = 2000;  // how long the predecessor waits for each answer of the successor
  std::vector<int> keep_fds;      // fds outside the world the successor inherits too (the status fd is added)
  // Hand over by value instead (`epollcr demo --handoff repair`; demo/repair_handoff.h): on 'c' the server records
  // its world with every TCP socket by value in this image file, closes the sockets in repair mode, starts a fresh
  // process (exec_argv with --restore-image PATH) and exits. Status lines: "handoff pid=P mode=repair
  // pause_start_ns=A connections=C listeners=L image_bytes=B save_ms=.. write_ms=.. hold_ms=..", then the fresh
  // process's "restored pid=S pause_end_ns=B registrations=N host_files=H ms=T (read=.. validate=.. resolve=.. build=..
  // after_load=..)". A failed save: "resumed pid=P stage=save reason=...", and the server serves on.
  std::string repair_image;
  // This process is the fresh one: restore the world from this image file.
  std::string restore_image;
  // Run the same loop on a kernel epoll (epoll_create1, epoll_ctl, epoll_wait) instead of an EventPoll, over the
  // same host files: the baseline a benchmark compares the server with (bench/echo_server_bench.cc). A kernel epoll
  // cannot be checkpointed, so 'c' is refused (the server says so on stderr and carries on), as is handoff_fd.
  bool kernel_epoll = false;
};

// The stages --fail-successor names, in order.
const std::vector<std::string>& FailSuccessorStages();

// Runs the server until 'q' on the control fd (0), or an error (1, with the reason on stderr). Never returns after
// a hand-off in the old process (it exits 0 there).
int RunEchoServer(const EchoServerOptions& options);

}  // namespace epollcr::cli
