// Scratch directories of a replay ($TMPDIR/epollcr-{replay,exec,fifo}-XXXXXX: checkpoint images, the exec chain's
// files, FIFOs), which nothing may leave behind, whatever ends the replay (docs/trace-format.md).
//
// Their owners remove them when they are done (RemoveScratchDir). For every other end — SIGTERM, SIGHUP, SIGINT, a crash, SIGKILL, where
// no code of the process runs — a guard process removes them: forked with the first directory, it learns each
// directory made and removed over a pipe, and when the pipe closes (the replay process has ended, however it ended)
// it removes what is left and exits. It ignores the signals a terminal or `kill` sends to the process group, so that
// it outlives the replay process; it holds no other fd, and runs nothing but system calls that are safe after fork in
// a threaded process. A directory that a worker of the exec chain still uses while it is removed is retried
// for a few seconds (the worker sees the replay process's socket close and exits). Only SIGKILL sent to the whole
// process group (which kills the guard as well) can leave one.
#pragma once

#include <string>
#include <string_view>

#include "epollcr/result.h"

namespace epollcr::replay {

// Makes "$TMPDIR/<prefix>XXXXXX" (or under /tmp) with mkdtemp and tells the guard (started by the first call).
// Errors: mkdtemp's, with the path.
Result<std::string> MakeScratchDir(std::string_view prefix);

// Removes `dir`, made by MakeScratchDir, with everything in it, and tells the guard.
void RemoveScratchDir(const std::string& dir);

// Whether any scratch directory made by this process is still registered with the guard (for tests).
int ScratchDirsRegistered();

}  // namespace epollcr::replay
