// Validation of the by-value TCP records of an image (image.proto TcpConnectionState, TcpListenerState): the values a
// kernel could have given a capture (restore/tcp_repair.h), so that a rebuild is never asked for one it would refuse
// halfway or misread. Part of the image's validation (docs/image-format.md, "Validation").
#pragma once

#include <string>

#include "epollcr/v1/image.pb.h"

namespace epollcr::image {

// "" if the record is one a capture could have made, else what is wrong with it ("remote: port 0 is not 1..65535").
std::string CheckTcpConnection(const v1::TcpConnectionState& c);
std::string CheckTcpListener(const v1::TcpListenerState& l);

}  // namespace epollcr::image
