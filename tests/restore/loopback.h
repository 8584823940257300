// A loopback listener for the TCP-by-value tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace epollcr::restore {

// A listener on the loopback address of `family`, port chosen by the kernel; its address in *address. -1 on failure.
inline int Listen(int family, int backlog, sockaddr_storage* address, socklen_t* size) {
  const int listener = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *address = {};
  if (family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(address);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *size = sizeof *in;
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(address);
    in6->sin6_family = AF_INET6;
    in6->sin6_addr = in6addr_loopback;
    *size = sizeof *in6;
  }
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(address), *size) != 0 ||
      ::listen(listener, backlog) != 0 || ::getsockname(listener, reinterpret_cast<sockaddr*>(address), size) != 0) {
    if (listener >= 0) ::close(listener);
    return -1;
  }
  return listener;
}

}  // namespace epollcr::restore
