// A worker process of `epollcr replay --checkpoint-mode exec` (replay/exec_protocol.h): it runs the userspace engine
// from where the state in its scratch directory says, one operation per request of the replay process, and at each
// checkpoint hands the run over to a new process, its successor:
//
//   0. ahead of the checkpoint, as soon as this worker runs, the successor is started (posix_spawn, then the exec of
//      /proc/self/exe: a new pid and a new program image); it loads, reads the trace and waits for its turn, so that
//      its process start overlaps this worker's work. A world of host files starts it at step 2 instead, once the
//      fds that cross its exec are known;
//   1. the world goes to the scratch directory's image file (image::WriteImage), and the state (the name -> fd map,
//      where the trace is) next to it;
//   2. the successor gets its turn and the socket to the replay process: it shares nothing with this process but the
//      image file, the state file, that socket and the hand-off socket pair between the two;
//   3. the successor reads the image back (image::ReadImage: unframe, decode, validate, restore), says so on the
//      hand-off socket, and carries on; the old worker exits as soon as it hears that. If the successor cannot take
//      over, the old one reports why (a failed exec, a bad image, a death) and exits 1.
#pragma once

#include "replay/exec_protocol.h"

namespace epollcr::replay::exec {

// main() of `epollcr __replay-worker DIR socket SOCKET_FD` and `... DIR handoff HANDOFF_FD`. Exit status 0 when the
// replay process ends the run (or a successor's turn never comes); 1 when the run cannot go on (reported on the
// socket); 2 for arguments that do not come from the replay process (reported on stderr).
int RunWorker(int argc, char** argv);

}  // namespace epollcr::replay::exec
