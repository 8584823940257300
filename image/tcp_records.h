// Validation of the by-value TCP records of an image (image.proto TcpConnectionState, TcpListenerState): the values a
// kernel could have given a capture (restore/tcp_repair.h), so that a rebuild is never asked for one it would refuse
// halfway or misread. Part of the image's validation (docs/image-format.md, "Validation").
#pragma once

#include <string>
#include <string_view>

#include "epollcr/v1/image.pb.h"

namespace epollcr::image {

// "" if the record is one a capture could have made, else what is wrong with it ("remote: port 0 is not 1..65535").
std::string CheckTcpConnection(const v1::TcpConnectionState& c);
std::string CheckTcpListener(const v1::TcpListenerState& l);
// The same for the image's network lock: only a name the lock could have made ("epollcr_lock_" and 16 hex digits), so
// that an image never makes a restore remove a table of another's.
std::string CheckNetworkLock(const v1::NetworkLock& lock);
bool IsNetworkLockName(std::string_view table);

}  // namespace epollcr::image
