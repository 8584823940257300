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
  std::chrono::steady_clock::duration save{}, write{}, hold{};
};

// Saves `world` by value into the image file `path` (written atomically and durably), then closes its TCP sockets in
// repair mode. Between the two it waits until `hold` has passed since the capture: the clients' tail-loss probes for
// the segments the held sockets dropped come in that time, while a socket still holds each connection, and not in the
// gap before the rebuild (docs/restore.md, "The gap between the close and the rebuild"). On failure every socket is as
// it was and the world serves on.
Status SaveByValueAndClose(World& world, const std::string& path, std::chrono::milliseconds hold, RepairSave* out);

// Restores the world of the image file `path` into the empty `world`: its TCP sockets rebuilt (restore/tcp_image.h
// TcpResolver) at their fd numbers, its other host files (the control pipe) found among the inherited fds.
Status RestoreByValue(const std::string& path, World* world, restore::Report* report);

}  // namespace epollcr::cli
