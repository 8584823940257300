// epollcr verify IMAGE...: the full check of each image file (docs/image-format.md: framing, then decoding, then
// "Validation"); "PATH: ok" on stdout for a valid one, "epollcr: PATH: <error>" on stderr for any other.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace epollcr::cli {

struct VerifyOptions {
  std::vector<std::string> paths;
};

CLI::App* AddVerifyCommand(CLI::App& app, VerifyOptions* options);

// Checks every path, even after a failure; exit status 0 only if all are valid.
int RunVerify(const VerifyOptions& options, std::ostream& out, std::ostream& err);

}  // namespace epollcr::cli
