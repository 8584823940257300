// `epollcr replay`: read and parse a trace, run it on the engines the options name, in the checkpoint mode they name
// (docs/trace-format.md). The command line itself is parsed in cli/main.cc (CLI11); this is what runs.
#pragma once

#include <ostream>
#include <string>

namespace epollcr::replay {

struct ReplayOptions {
  std::string path;                        // the trace file, or "-" for standard input
  std::string engine = "userspace";        // userspace | kernel | both
  int checkpoint_every = 0;                // RunOptions::checkpoint_every
  std::string checkpoint_format = "proto";  // proto | boost-text | boost-xml | boost-binary
  std::string checkpoint_mode = "memory";   // memory | exec
  std::string checkpoint_store = "memory";  // memory | file: where a proto checkpoint's image waits (memory mode)
  std::string files = "memory";             // memory | host (FileBacking)
};

// Runs the command; lines go to `out`, errors to `err` as "epollcr: <what>: <reason>". Returns the exit status:
// 0 success, 1 engines that differ or a runtime failure, 2 a usage error, an unreadable or a malformed trace.
int RunReplay(const ReplayOptions& options, std::ostream& out, std::ostream& err);

}  // namespace epollcr::replay
