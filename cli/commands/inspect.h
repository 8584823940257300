// epollcr inspect IMAGE [--json | --dot]: what an image holds, for people (text), for programs (protobuf's JSON
// mapping) and as a picture (Graphviz). docs/cli.md, "inspect", shows the output.
#pragma once

#include <ostream>
#include <string>

#include <CLI/CLI.hpp>

#include "epollcr/v1/image.pb.h"

namespace epollcr::cli {

struct InspectOptions {
  std::string path;
  bool json = false;
  bool dot = false;
};

// Adds the inspect subcommand to `app`, filling `*options` when it is parsed.
CLI::App* AddInspectCommand(CLI::App& app, InspectOptions* options);

// Reads and decodes the image and prints it. An image that decodes but is invalid is printed all the same, then
// reported on `err`, with exit status 1.
int RunInspect(const InspectOptions& options, std::ostream& out, std::ostream& err);

// The text summary: header, fd table, roots, files, shared state, and a table of each EventPoll's entries.
std::string InspectText(const v1::Image& image);
// A Graphviz digraph: one node per EventPoll and per file an EventPoll watches, one edge per entry.
std::string InspectDot(const v1::Image& image);

}  // namespace epollcr::cli
