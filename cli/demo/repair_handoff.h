// The demo server's hand-off by value (`epollcr demo --handoff repair`; restore/tcp_image.h): the old process records
// every TCP socket of its world in an image file by value, closes them in repair mode and starts a fresh process that
// restores the world from that file, the sockets rebuilt, with no socket inherited. Only the demo's own control pipe
// (a pipe, not a socket) goes by reference: the fresh process inherits it as the old one did.
#pragma once

#include <chrono>
#include <string>

#include "epollcr/state.h"
#include "restore/restorer.h"

namespace epollcr::cli {

struct RepairSave {
  std::size_t connections = 0, listeners = 0, image_bytes = 0;
  std::string lock;  // the network lock's nftables table
  std::chrono::steady_clock::duration save{}, write{}, hold{};  // hold: from the capture to the close
};

// Saves `world` by value into the image file `path` (written atomically and durably), then closes its TCP sockets in
// repair mode. The save installs the network lock (restore/network_lock.h), which drops the clients' segments from
// then until the fresh process has rebuilt the sockets, so the clients may read and write throughout. On failure
// every socket is as it was, no lock is left, and the world serves on.
Status SaveByValueAndClose(World& world, const std::string& path, RepairSave* out);

// Restores the world of the image file `path` into the empty `world`: its TCP sockets rebuilt (restore/tcp_image.h
// TcpResolver) at their fd numbers, its other host files (the control pipe) found among the inherited fds; then the
// network lock removed (its name in *lock). A lock that could not be removed fails it: the clients would hear
// nothing more.
Status RestoreByValue(const std::string& path, World* world, restore::Report* report, std::string* lock);

}  // namespace epollcr::cli
