// epollcr demo: a live hand-off under traffic. An echo server (echo_server.h: an epollcr EventPoll over host files,
// nothing else) serves many clients streaming messages on 127.0.0.1; in the middle of the traffic it starts its
// successor (a new pid and program image) and, once that is ready, hands it the world in a short pause
// (restore/successor.h). Every client checks every echoed byte and times every message; the demo prints the stall
// clients saw across the hand-off beside the latency outside it, and exits 0 only if no message was lost or corrupted
// and the hand-off took place — or, with --fail-successor, if the successor failed at that stage and the old process
// resumed serving every connection. With --handoff repair the server moves by value instead: its TCP sockets go
// into an image file (TCP_REPAIR), it exits, and a fresh process that inherited no socket rebuilds them from the file
// (demo/repair_handoff.h).
#pragma once

#include <ostream>
#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

namespace epollcr::cli {

struct DemoOptions {
  int clients = 200;
  int messages = 200;     // per client
  int size = 64;          // bytes per message
  int window = 8;         // messages a client keeps in flight
  double checkpoint_at = 0.5;  // share of all messages echoed when the server is told to hand over
  int timeout_s = 30;
  double rate = 0;        // messages per second over all clients; 0: as fast as the window lets them
  std::string fail_successor;  // a stage of FailSuccessorStages(), or empty
  // "live" (a successor takes the live sockets over) or "repair" (the TCP sockets by value through an image file, to
  // a fresh process that inherited none: demo/repair_handoff.h).
  std::string handoff = "live";
};

// What a run measured, for a benchmark (bench/handoff_bench.cc). Times in ms; -1 where there was none.
// The most clients a process may run the demo with: its fd limit (raised to the hard limit) less what else the demo
// and the server keep open.
int MaxDemoClients();

struct DemoResult {
  bool handed_over = false;  // a new pid serves (or, with fail_successor, the old one resumed: resumed)
  bool resumed = false;
  std::uint64_t messages = 0, lost = 0, corrupt = 0, in_flight = 0;  // in_flight: messages across the pause
  double stall_max_ms = -1, stall_p99_ms = -1, outside_max_ms = -1, outside_p99_ms = -1;
  double pause_ms = -1, save_ms = -1, send_ms = -1, restore_ms = -1, go_ms = -1, successor_ready_ms = -1;
  std::uint64_t registrations = 0;
};

CLI::App* AddDemoCommand(CLI::App& app, DemoOptions* options);
int RunDemo(const DemoOptions& options, std::ostream& out, std::ostream& err, DemoResult* result = nullptr);

// The hidden `epollcr demo-server ...` the demo starts (and the server execs on hand-off).
inline constexpr const char* kDemoServerCommand = "demo-server";
int RunDemoServer(int argc, char** argv);

}  // namespace epollcr::cli
