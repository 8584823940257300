// By-value TCP records (image.proto TcpConnectionState, TcpListenerState) that validation accepts, made by hand, for
// tests that spoil them or show them: a connection 127.0.0.1:8080 -> 127.0.0.1:40000 at fd 5 with 3 unread and 2
// unsent bytes, and a listener on [::]:8080 at fd 4.
#pragma once

#include <fcntl.h>

#include <string>

#include "epollcr/v1/image.pb.h"

namespace epollcr::testing {

inline v1::TcpConnectionState ValidConnection() {
  v1::TcpConnectionState c;
  c.set_fd(5);
  for (v1::SocketAddress* a : {c.mutable_local(), c.mutable_remote()}) {
    a->set_family(v1::ADDRESS_FAMILY_IPV4);
    a->set_address(std::string("\x7f\0\0\x01", 4));
  }
  c.mutable_local()->set_port(8080);
  c.mutable_remote()->set_port(40000);
  c.set_send_seq(1000);
  c.set_receive_seq(5000);
  c.set_unread("abc");
  c.set_unsent("de");
  c.set_mss(1460);
  c.set_window_scaling(true);
  c.set_send_window_scale(7);
  c.set_receive_window_scale(7);
  c.mutable_window()->set_rcv_wnd(65535);
  c.mutable_window()->set_rcv_wup(4990);
  c.mutable_window()->set_snd_wl1(4990);
  c.set_keepalive_idle(7200);
  c.set_keepalive_interval(75);
  c.set_keepalive_count(9);
  c.set_send_buffer(16384);
  c.set_receive_buffer(131072);
  c.set_file_flags(O_RDWR | O_NONBLOCK);
  return c;
}

inline v1::TcpListenerState ValidListener() {
  v1::TcpListenerState l;
  l.set_fd(4);
  l.mutable_local()->set_family(v1::ADDRESS_FAMILY_IPV6);
  l.mutable_local()->set_address(std::string(16, '\0'));
  l.mutable_local()->set_port(8080);
  l.set_backlog(128);
  l.set_v6_only(true);
  l.set_file_flags(O_RDWR);
  return l;
}

}  // namespace epollcr::testing
