#include "image/tcp_records.h"

#include <fcntl.h>

#include <cstdint>
#include <cstdio>
#include <string_view>

namespace epollcr::image {
namespace {

// The flags F_GETFL may show for a socket, and the access mode it always has (net/socket.c: sock_alloc_file opens
// O_RDWR; F_SETFL may add the others).
constexpr std::uint32_t kKnownFileFlags = O_ACCMODE | O_NONBLOCK | O_APPEND | O_ASYNC | O_DIRECT | O_NOATIME | O_LARGEFILE;

std::string CheckAddress(const char* what, const v1::SocketAddress& a) {
  const std::string at = std::string(what) + ": ";
  std::size_t size = 0;
  if (a.family() == v1::ADDRESS_FAMILY_IPV4) {
    size = 4;
    if (a.flow_info() != 0 || a.scope_id() != 0) return at + "an IPv4 address with an IPv6 flow label or scope";
  } else if (a.family() == v1::ADDRESS_FAMILY_IPV6) {
    size = 16;
  } else {
    return at + "address family " + std::to_string(a.family()) + " is not IPv4 or IPv6";
  }
  if (a.address().size() != size) {
    return at + std::to_string(a.address().size()) + " address bytes (" + std::to_string(size) + " for its family)";
  }
  if (a.port() == 0 || a.port() > 65535) return at + "port " + std::to_string(a.port()) + " is not 1..65535";
  return "";
}

bool Unspecified(const v1::SocketAddress& a) { return a.address().find_first_not_of('\0') == std::string::npos; }

std::string CheckFileFlags(std::uint32_t flags) {
  if ((flags & ~kKnownFileFlags) != 0 || (flags & O_ACCMODE) != O_RDWR) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%x", flags);
    return std::string("file flags ") + hex + " are not a socket's (O_RDWR and F_SETFL's flags)";
  }
  return "";
}

// a after b in sequence space (RFC 793's modular comparison, Linux's after()).
bool After(std::uint32_t a, std::uint32_t b) { return static_cast<std::int32_t>(b - a) < 0; }

}  // namespace

std::string CheckTcpConnection(const v1::TcpConnectionState& c) {
  if (c.fd() < 0) return "fd " + std::to_string(c.fd()) + " is negative";
  if (std::string bad = CheckAddress("local", c.local()); !bad.empty()) return bad;
  if (std::string bad = CheckAddress("remote", c.remote()); !bad.empty()) return bad;
  if (c.local().family() != c.remote().family()) return "local and remote addresses of different families";
  if (Unspecified(c.local()) || Unspecified(c.remote())) return "a connection's address is the unspecified address";
  if (c.send_buffer() <= 0 || c.receive_buffer() <= 0) return "a buffer size that is not positive";
  const std::uint64_t queued = c.unacked().size() + c.unsent().size();
  if (queued > static_cast<std::uint64_t>(c.send_buffer())) {
    return "the send queue's " + std::to_string(queued) + " bytes exceed its buffer of " +
           std::to_string(c.send_buffer());
  }
  if (c.unread().size() > static_cast<std::uint64_t>(c.receive_buffer())) {
    return "the receive queue's " + std::to_string(c.unread().size()) + " bytes exceed its buffer of " +
           std::to_string(c.receive_buffer());
  }
  if (c.mss() == 0 || c.mss() > 65535) return "MSS " + std::to_string(c.mss()) + " is not 1..65535";
  if (c.send_window_scale() > 14 || c.receive_window_scale() > 14) return "a window scale above 14 (RFC 7323)";
  if (!c.window_scaling() && (c.send_window_scale() != 0 || c.receive_window_scale() != 0)) {
    return "window scales without window scaling";
  }
  if (!c.timestamps() && c.timestamp() != 0) return "a timestamp clock without timestamps";
  // The kernel's own check of TCP_REPAIR_WINDOW (net/ipv4/tcp.c, tcp_repair_set_window).
  if (After(c.window().rcv_wup(), c.receive_seq())) return "the window's rcv_wup is after the receive sequence";
  if (After(c.window().snd_wl1(), c.receive_seq() + c.window().rcv_wnd())) {
    return "the window's snd_wl1 is after the receive window's end";
  }
  if (c.keepalive_idle() < 1 || c.keepalive_idle() > 32767 || c.keepalive_interval() < 1 ||
      c.keepalive_interval() > 32767 || c.keepalive_count() < 1 || c.keepalive_count() > 127) {
    return "keepalive timers outside Linux's limits (idle and interval 1..32767, count 1..127)";
  }
  return CheckFileFlags(c.file_flags());
}

std::string CheckTcpListener(const v1::TcpListenerState& l) {
  if (l.fd() < 0) return "fd " + std::to_string(l.fd()) + " is negative";
  if (std::string bad = CheckAddress("local", l.local()); !bad.empty()) return bad;
  if (l.backlog() < 0 || l.defer_accept() < 0 || l.fast_open() < 0) {
    return "a negative backlog, TCP_DEFER_ACCEPT or TCP_FASTOPEN";
  }
  if (l.v6_only() && l.local().family() != v1::ADDRESS_FAMILY_IPV6) return "IPV6_V6ONLY on an IPv4 listener";
  return CheckFileFlags(l.file_flags());
}

bool IsNetworkLockName(std::string_view table) {
  constexpr std::string_view kPrefix = "epollcr_lock_";
  return table.size() == kPrefix.size() + 16 && table.substr(0, kPrefix.size()) == kPrefix &&
         table.find_first_not_of("0123456789abcdef", kPrefix.size()) == std::string_view::npos;
}

std::string CheckNetworkLock(const v1::NetworkLock& lock) {
  if (IsNetworkLockName(lock.nftables_table())) return "";
  return "nftables table '" + lock.nftables_table() + "' is not a network lock's name (epollcr_lock_ and 16 hex digits)";
}

}  // namespace epollcr::image
