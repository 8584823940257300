// A worker process of `epollcr replay --checkpoint-mode exec` (replay/exec_protocol.h): it runs the userspace engine
// from where the state in its scratch directory says, one operation per request of the replay process, and at each
// checkpoint hands the run over to a new process:
//
//   1. the world goes to the scratch directory's image file (image::WriteImage), and the state (the name -> fd map,
//      where the trace is) next to it;
//   2. fork; the child executes /proc/self/exe: a new pid and a new program image, which shares nothing with this
//      one but the image file, the state file, the socket to the replay process and the takeover pipe;
//   3. the new process reads the image back (image::ReadImage: unframe, decode, validate, restore), says so on the
//      takeover pipe, and carries on; the old one exits as soon as it hears that. If the new process cannot take
//      over, the old one reports why (a failed exec, a bad image, a death) and exits 1.
#pragma once

#include "replay/exec_protocol.h"

namespace epollcr::replay::exec {

// main() of `epollcr __replay-worker DIR SOCKET_FD TAKEOVER_FD`. Exit status 0 when the replay process ends the
// run; 1 when the run cannot go on (reported on the socket); 2 for arguments that do not come from the replay
// process (reported on stderr).
int RunWorker(int argc, char** argv);

}  // namespace epollcr::replay::exec
