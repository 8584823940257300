// The epollcr image of `epollcr ps --image` (docs/cli.md, "ps"): what the kernel epolls of a process hold, for
// inspect, verify, diff and convert.
#pragma once

#include "commands/ps_proc.h"
#include "epollcr/v1/image.pb.h"

namespace epollcr::cli {

// The image of a snapshot: each epoll a File with an EventPollState, every other file an epoll watches a File with
// a HostFileReference (file_type 0 for an anonymous inode; an EmbedderFileReference holding one for a target no fd
// holds whose type is unknown), the fd table the process's fds of those files. Not yet validated.
v1::Image PsImage(const ps::Snapshot& snapshot);

}  // namespace epollcr::cli
