// epollcr convert IN OUT [--to FORMAT]: any supported form of a checkpoint to any other. IN's format is found from its
// bytes (input.h); OUT's comes from --to or OUT's extension (output.h). Images go through v1::Image; a Boost archive
// is made from, or read into, a World.
#pragma once

#include <ostream>
#include <string>

#include <CLI/CLI.hpp>

namespace epollcr::cli {

struct ConvertOptions {
  std::string in;
  std::string out;
  std::string to;  // empty: from OUT's extension
};

CLI::App* AddConvertCommand(CLI::App& app, ConvertOptions* options);

// Exit status 2 when the output format is neither given nor implied by OUT; 1 for an input that is unreadable or
// invalid, or an output that cannot be written (OUT is then left as it was).
int RunConvert(const ConvertOptions& options, std::ostream& err);

}  // namespace epollcr::cli
