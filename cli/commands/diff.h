// epollcr diff A B: what differs between two images, one line per difference, in the order header, fd table, roots,
// files by id (each EventPoll's entries under it, matched by (file id, fd)), pipes, socket pairs. Objects are matched
// by their object ids as the images give them. docs/cli.md, "diff", lists the lines.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "epollcr/v1/image.pb.h"

namespace epollcr::cli {

struct DiffOptions {
  std::string a;
  std::string b;
};

CLI::App* AddDiffCommand(CLI::App& app, DiffOptions* options);

// Exit status 0 when the images are equal (nothing printed), 1 when they differ or an input is unreadable or
// invalid, 2 when both inputs are standard input.
int RunDiff(const DiffOptions& options, std::ostream& out, std::ostream& err);

// The differences from `a` to `b`, one line each (no newline); empty when equal.
std::vector<std::string> DiffImages(const v1::Image& a, const v1::Image& b);

}  // namespace epollcr::cli
