// epollcr ps PID [--json] [--image OUT]: the kernel epolls of a live process, read from /proc/PID/fd and
// /proc/PID/fdinfo (ps.snapshot.h): each epoll's entries with what they watch, their decoded masks and data, and
// the nesting; as text, as JSON, and as an epollcr image that inspect, verify, diff and convert read. docs/cli.md,
// "ps", shows the output and the JSON's shape.
#pragma once

#include <ostream>
#include <string>

#include <CLI/CLI.hpp>

#include "commands/ps.snapshot.h"
#include "epollcr/v1/image.pb.h"

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

// The text and the JSON document of a snapshot.
std::string PsText(const ps::Snapshot& snapshot);
std::string PsJson(const ps::Snapshot& snapshot);
// The image of a snapshot: each epoll a File with an EventPollState, every other file an epoll watches a File with
// a HostFileReference (file_type 0 for an anonymous inode; an EmbedderFileReference holding one for a target no fd
// holds whose type is unknown), the fd table the process's fds of those files. Not yet validated.
v1::Image PsImage(const ps::Snapshot& snapshot);

}  // namespace epollcr::cli
