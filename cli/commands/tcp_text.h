// The by-value TCP records of an image (image.proto TcpConnectionState, TcpListenerState) as named fields, for
// inspect (which joins them on one line) and diff (which compares them one by one).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "epollcr/v1/image.pb.h"

namespace epollcr::cli {

// "127.0.0.1:8080", "[::1]:8080"; an address the image spells wrongly shows its family and length.
std::string SocketAddressText(const v1::SocketAddress& address);

// (name, value) in a fixed order: fd, addresses, sequence numbers, queues (byte count and CRC32C of their bytes, so
// that a change of content shows), handshake options, window, socket options. Empty for another kind of file.
using Fields = std::vector<std::pair<std::string, std::string>>;
Fields TcpFields(const v1::File& file);

// The fields as "name value, name value, ...".
std::string TcpText(const v1::File& file);

}  // namespace epollcr::cli
