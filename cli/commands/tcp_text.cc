#include "commands/tcp_text.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include "commands/image_text.h"
#include "epollcr/crc32c.h"

namespace epollcr::cli {
namespace {

std::string QueueText(const std::string& bytes) {
  return CountText(bytes.size(), "byte", "bytes") + (bytes.empty() ? "" : " (crc32c " + HexText(Crc32c(bytes)) + ")");
}

std::string FlagsText(const v1::TcpConnectionState& c) {
  std::string out;
  const auto add = [&](bool on, const std::string& name) {
    if (on) out += (out.empty() ? "" : "|") + name;
  };
  add(c.sack(), "sack");
  add(c.timestamps(), "timestamps");
  add(c.window_scaling(), "wscale " + std::to_string(c.send_window_scale()) + "/" +
                              std::to_string(c.receive_window_scale()));
  return out.empty() ? "none" : out;
}

}  // namespace

std::string SocketAddressText(const v1::SocketAddress& a) {
  const bool v4 = a.family() == v1::ADDRESS_FAMILY_IPV4;
  const bool v6 = a.family() == v1::ADDRESS_FAMILY_IPV6;
  if ((!v4 && !v6) || a.address().size() != (v4 ? 4u : 16u)) {
    return "family " + std::to_string(a.family()) + " with " + CountText(a.address().size(), "byte", "bytes") +
           ", port " + std::to_string(a.port());
  }
  char text[INET6_ADDRSTRLEN] = "";
  ::inet_ntop(v4 ? AF_INET : AF_INET6, a.address().data(), text, sizeof text);
  return v4 ? std::string(text) + ":" + std::to_string(a.port())
            : "[" + std::string(text) + "]:" + std::to_string(a.port());
}

Fields TcpFields(const v1::File& f) {
  if (f.has_tcp_connection()) {
    const v1::TcpConnectionState& c = f.tcp_connection();
    const v1::TcpWindow& w = c.window();
    return {
        {"fd", std::to_string(c.fd())},
        {"local", SocketAddressText(c.local())},
        {"remote", SocketAddressText(c.remote())},
        {"send seq", std::to_string(c.send_seq())},
        {"receive seq", std::to_string(c.receive_seq())},
        {"unacked", QueueText(c.unacked())},
        {"unsent", QueueText(c.unsent())},
        {"unread", QueueText(c.unread())},
        {"mss", std::to_string(c.mss())},
        {"options", FlagsText(c)},
        {"timestamp", std::to_string(c.timestamp())},
        {"window", "snd_wl1 " + std::to_string(w.snd_wl1()) + " snd_wnd " + std::to_string(w.snd_wnd()) +
                       " max_window " + std::to_string(w.max_window()) + " rcv_wnd " + std::to_string(w.rcv_wnd()) +
                       " rcv_wup " + std::to_string(w.rcv_wup())},
        {"nodelay", c.nodelay() ? "yes" : "no"},
        {"reuseaddr", c.reuse_address() ? "yes" : "no"},
        {"keepalive", std::string(c.keepalive() ? "on" : "off") + " (idle " + std::to_string(c.keepalive_idle()) +
                          " s, interval " + std::to_string(c.keepalive_interval()) + " s, count " +
                          std::to_string(c.keepalive_count()) + ")"},
        {"sndbuf", std::to_string(c.send_buffer())},
        {"rcvbuf", std::to_string(c.receive_buffer())},
        {"flags", HexText(c.file_flags())},
    };
  }
  if (f.has_tcp_listener()) {
    const v1::TcpListenerState& l = f.tcp_listener();
    return {
        {"fd", std::to_string(l.fd())},
        {"local", SocketAddressText(l.local())},
        {"backlog", std::to_string(l.backlog())},
        {"reuseaddr", l.reuse_address() ? "yes" : "no"},
        {"reuseport", l.reuse_port() ? "yes" : "no"},
        {"v6only", l.v6_only() ? "yes" : "no"},
        {"defer accept", std::to_string(l.defer_accept())},
        {"fastopen", std::to_string(l.fast_open())},
        {"flags", HexText(l.file_flags())},
    };
  }
  return {};
}

std::string TcpText(const v1::File& file) {
  std::string out;
  for (const auto& [name, value] : TcpFields(file)) out += (out.empty() ? "" : ", ") + name + " " + value;
  return out;
}

}  // namespace epollcr::cli
