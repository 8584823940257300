// Handing a live world — its EventPolls, in-memory files and host fds — to a new process.
//
// Exec hand-off: the running program checkpoints its world into an image file and keeps exactly the world's host fds
// open across exec (FD_CLOEXEC cleared on those, and only those); the new program image restores from the file with
// an InheritedFdResolver, which finds every host fd under its old number and verifies it.
//
// SCM_RIGHTS hand-off: the same to a process that is already running, over a connected AF_UNIX stream socket. The
// sender writes the image and then the host fds with their old numbers; the receiver gets new numbers, and the
// restore re-keys every entry and fd-table slot to them, so the new process updates and removes entries with its own
// fd numbers. Wire format (all integers little-endian):
//   header   "EPCRHOFF" | u32 version (1) | u32 host fd count | u64 image length
//   image    the framed image file bytes (image/file.h)
//   batches  ceil(count / 253) messages of 4 + 4 * 253 bytes: u32 n, then n i32 old fd numbers (the rest zero),
//            each carrying its n fds in one SCM_RIGHTS control message
// The receiver accepts a batch's fds in any number of control messages within the batch's bytes (a short recvmsg
// leaves the rest for the next), and closes every fd it received if anything fails.
//
// Every system call is a point of the fault-injection seam (lib/src/fault_injection.h: kHandoff*, and kImage* for the
// image file), where tests fail it, shorten it or change what it received. A failed call leaves no fd open or closed
// that was not, FD_CLOEXEC as it was on every fd, `out` empty and no host file watched that was not (the exceptions
// are said below).
#pragma once

#include <string>
#include <vector>

#include "epollcr/state.h"
#include "restore/restorer.h"

namespace epollcr::restore {

// The host fds a world holds: fd-table slots and roots whose file is a HostFile, and host files watched by its polls.
std::vector<int> HostFds(const World& world);

// Exec hand-off, old side: writes `world` as an image at `image_path` (atomically, mode 0600) and clears FD_CLOEXEC
// on the world's host fds, which it returns. The caller then execs; the world must not change in between. On failure
// every fd's FD_CLOEXEC is as it was, and so is the file at `image_path` unless the error says the new image is in
// place (only the directory's fsync after the rename failed: image/file.h).
Result<std::vector<int>> PrepareExec(const World& world, const std::string& image_path);
// Exec hand-off, new side: restores the image with an InheritedFdResolver placed before `options.resolvers`, then
// sets FD_CLOEXEC again on the host fds it restored. On failure `out` stays empty and the inherited fds stay open
// with their flags as they were.
Status RestoreAfterExec(const std::string& image_path, World* out, Options options = {}, Report* report = nullptr);

// SCM_RIGHTS hand-off over a connected AF_UNIX stream socket (blocking). The sender keeps its world and its fds. A
// failed send may have sent part of the hand-off: the socket is then of no more use for one.
Status SendWorld(int socket, const World& world);
// Receives and restores into `out` (empty), with an InheritedFdResolver over the received fds placed before
// `options.resolvers`. On failure every received fd is closed and `out` stays empty.
Status ReceiveWorld(int socket, World* out, Options options = {}, Report* report = nullptr);

}  // namespace epollcr::restore
