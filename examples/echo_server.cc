// A real echo server whose event loop is an epollcr EventPoll over host files (cli/demo/echo_server.h, the server
// `epollcr demo` runs), and which hands itself to a new process on SIGUSR1 (restore/successor.h: the successor is
// started, the world handed over in a short pause, the old process exits once the new one serves) — its clients notice
// nothing. SIGINT or SIGTERM stops it. Status lines go to stderr.
//   echo_server [PORT]          listen on 127.0.0.1:PORT (default 7007)
//   echo_server --kernel-epoll [PORT]   the same server with its loop on a kernel epoll (no hand-off): the baseline
//                                       bench/echo_server_bench.cc measures it against
// Try it: `echo_server 7007 & nc 127.0.0.1 7007`, type, `kill -USR1 %1`, type again: the same connection echoes,
// served by a new pid.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "demo/echo_server.h"

namespace {

int control_write = -1;

void OnSignal(int signal) {
  const char command = signal == SIGUSR1 ? 'c' : 'q';
  (void)!write(control_write, &command, 1);
}

}  // namespace

int main(int argc, char** argv) {
  epollcr::cli::EchoServerOptions options;
  options.status_fd = 2;
  options.exec_argv = {"/proc/self/exe"};
  int port = 7007;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--handoff-fd" && i + 1 < argc) {  // how the server starts its successor (restore/successor.h)
      options.handoff_fd = std::atoi(argv[++i]);
    } else if (arg == "--status-fd" && i + 1 < argc) {
      options.status_fd = std::atoi(argv[++i]);
    } else if (arg == "--control-write-fd" && i + 1 < argc) {
      control_write = std::atoi(argv[++i]);
    } else if (arg == "--kernel-epoll") {
      options.kernel_epoll = true;
    } else {
      port = std::atoi(arg.c_str());
    }
  }
  if (options.handoff_fd < 0) {
    options.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    setsockopt(options.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (bind(options.listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(options.listen_fd, 1024) != 0) {
      std::fprintf(stderr, "echo_server: 127.0.0.1:%d: %s\n", port, std::strerror(errno));
      return 1;
    }
    int control[2];
    if (pipe(control) != 0) return 1;  // no FD_CLOEXEC on the write end: the new process signals through it too
    options.control_fd = control[0];
    control_write = control[1];
  }
  const std::string write_fd = std::to_string(control_write);
  options.exec_argv.insert(options.exec_argv.end(), {"--control-write-fd", write_fd});
  options.keep_fds = {control_write};  // the successor's signal handler writes to it too
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return epollcr::cli::RunEchoServer(options);
}
