// The JSON document of `epollcr ps --json` (docs/cli.md, "ps", gives its shape).
#pragma once

#include <string>

#include "commands/ps_proc.h"

namespace epollcr::cli {

std::string PsJson(const ps::Snapshot& snapshot);

}  // namespace epollcr::cli
