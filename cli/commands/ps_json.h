// The JSON document of `epollcr ps --json` (docs/cli.md, "ps", gives its shape).
#pragma once

#include <string>

#include "commands/ps_interposed.h"
#include "commands/ps_proc.h"

namespace epollcr::cli {

// With `interposed` (a program under `epollcr run`), the document has an "epollcr" member too: {"socket": the
// process's inspection socket, "image": the image it answered, in protobuf's JSON mapping (inspect --json's)}.
std::string PsJson(const ps::Snapshot& snapshot, const ps::Interposed* interposed = nullptr);

}  // namespace epollcr::cli
