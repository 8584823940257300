// epollcr demo: the restore-into-a-new-process demo (issue 5). An echo server (echo_server.h: an
// epollcr EventPoll over host files, nothing else) serves many clients streaming messages on 127.0.0.1; in the
// middle of the traffic it checkpoints and execs a new process (fork + exec: a new pid and a new program image)
// that restores the world from the image and the inherited fds and carries on. Every client checks every echoed
// byte. The demo prints what happened and exits 0 only if no message was lost or corrupted and the hand-off took
// place.
#pragma once

#include <ostream>

#include <CLI/CLI.hpp>

namespace epollcr::cli {

struct DemoOptions {
  int clients = 200;
  int messages = 200;     // per client
  int size = 64;          // bytes per message
  int window = 8;         // messages a client keeps in flight
  double checkpoint_at = 0.5;  // share of all messages echoed when the server is told to hand over
  int timeout_s = 30;
};

CLI::App* AddDemoCommand(CLI::App& app, DemoOptions* options);
int RunDemo(const DemoOptions& options, std::ostream& out, std::ostream& err);

// The hidden `epollcr demo-server ...` the demo starts (and the server execs on hand-off).
inline constexpr const char* kDemoServerCommand = "demo-server";
int RunDemoServer(int argc, char** argv);

}  // namespace epollcr::cli
