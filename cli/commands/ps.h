// epollcr ps PID [--json] [--image OUT]: the kernel epolls of a live process, read from /proc/PID/fd and
// /proc/PID/fdinfo (ps_proc.h): each epoll's entries with what they watch, their decoded masks and data, and the
// nesting; as text (ps_text.h), as JSON (ps_json.h), and as an epollcr image that inspect, verify, diff and convert
// read (ps_image.h). docs/cli.md, "ps", shows the output and the JSON's shape.
#pragma once

#include <ostream>
#include <string>

#include <CLI/CLI.hpp>

namespace epollcr::cli {

struct PsOptions {
  std::string pid;
  bool json = false;
  std::string image;  // empty: no image; "-": the framed image on standard output instead of the text
};

// Adds the ps subcommand to `app`, filling `*options` when it is parsed.
CLI::App* AddPsCommand(CLI::App& app, PsOptions* options);

// Exit status 0 when the process was read (and the image written), 1 when it could not be (no such process,
// permission denied, it exited meanwhile, the image could not be written), 2 for a PID that is not a number.
int RunPs(const PsOptions& options, std::ostream& out, std::ostream& err);

}  // namespace epollcr::cli
