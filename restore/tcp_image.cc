#include "restore/tcp_image.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "restore/network_lock.h"

namespace epollcr::restore {
namespace {

void ToRecord(const sockaddr_storage& address, v1::SocketAddress* out) {
  if (address.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(address);
    out->set_family(v1::ADDRESS_FAMILY_IPV4);
    out->set_address(reinterpret_cast<const char*>(&in.sin_addr), sizeof in.sin_addr);
    out->set_port(ntohs(in.sin_port));
  } else if (address.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
    out->set_family(v1::ADDRESS_FAMILY_IPV6);
    out->set_address(reinterpret_cast<const char*>(&in6.sin6_addr), sizeof in6.sin6_addr);
    out->set_port(ntohs(in6.sin6_port));
    out->set_flow_info(in6.sin6_flowinfo);
    out->set_scope_id(in6.sin6_scope_id);
  }
}

// Preconditions: `record` was validated (its family and address length agree).
int FromRecord(const v1::SocketAddress& record, sockaddr_storage* out, socklen_t* size) {
  *out = {};
  if (record.family() == v1::ADDRESS_FAMILY_IPV4) {
    auto* in = reinterpret_cast<sockaddr_in*>(out);
    in->sin_family = AF_INET;
    std::memcpy(&in->sin_addr, record.address().data(), std::min(record.address().size(), sizeof in->sin_addr));
    in->sin_port = htons(static_cast<std::uint16_t>(record.port()));
    *size = sizeof *in;
    return AF_INET;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
  in6->sin6_family = AF_INET6;
  std::memcpy(&in6->sin6_addr, record.address().data(), std::min(record.address().size(), sizeof in6->sin6_addr));
  in6->sin6_port = htons(static_cast<std::uint16_t>(record.port()));
  in6->sin6_flowinfo = record.flow_info();
  in6->sin6_scope_id = record.scope_id();
  *size = sizeof *in6;
  return AF_INET6;
}

std::string AddressText(const v1::SocketAddress& a) {
  char text[INET6_ADDRSTRLEN] = "?";
  const int family = a.family() == v1::ADDRESS_FAMILY_IPV4 ? AF_INET : AF_INET6;
  ::inet_ntop(family, a.address().data(), text, sizeof text);
  return family == AF_INET6 ? "[" + std::string(text) + "]:" + std::to_string(a.port())
                            : std::string(text) + ":" + std::to_string(a.port());
}

int IntOption(int fd, int level, int name) {
  int value = -1;
  socklen_t size = sizeof value;
  return ::getsockopt(fd, level, name, &value, &size) == 0 ? value : -1;
}

// Why the socket `fd` cannot be recorded by value, before any capture is tried ("" if it may be).
std::string NotTcp(int fd) {
  const int domain = IntOption(fd, SOL_SOCKET, SO_DOMAIN);
  const int type = IntOption(fd, SOL_SOCKET, SO_TYPE);
  const int protocol = IntOption(fd, SOL_SOCKET, SO_PROTOCOL);
  if (domain == AF_UNIX) return "a UNIX socket: only TCP sockets over IPv4 or IPv6 move by value";
  if (domain != AF_INET && domain != AF_INET6) {
    return "a socket of address family " + std::to_string(domain) + ": only TCP over IPv4 or IPv6 moves by value";
  }
  if (type != SOCK_STREAM || protocol != IPPROTO_TCP) {
    return std::string(type == SOCK_DGRAM ? "a UDP" : "a non-TCP") + " socket: only TCP sockets move by value";
  }
  return "";
}

// Puts the socket `made` at fd number `fd` (close-on-exec) if that number is free here; the socket is then only
// there, or also under `made` if that was a free number below `fd`: that one goes into `plugs` instead of being closed,
// so that the next socket, made for a higher number, does not take it again (the caller closes the plugs once every
// socket is made). On failure it closes `made` (silently: `connection`) and says why.
Result<int> PlaceAt(int made, int fd, bool connection, std::vector<int>* plugs) {
  const auto give_up = [&](int also) {
    if (also >= 0) ::close(also);  // a second fd of the same socket: the socket itself stays open
    if (connection) {
      CloseTcpSilently(made);
    } else {
      ::close(made);
    }
  };
  if (made == fd) return fd;
  const int placed = ::fcntl(made, F_DUPFD_CLOEXEC, fd);
  if (placed != fd) {
    const int error = placed < 0 ? errno : EBUSY;
    give_up(placed);
    return Status::Error(error, "fd " + std::to_string(fd) + (error == EBUSY ? " is in use in this process"
                                                                              : std::string(": ") + std::strerror(error)));
  }
  if (made < fd) {
    plugs->push_back(made);
  } else {
    ::close(made);  // the socket stays open under `fd`
  }
  return fd;
}

}  // namespace

void ToRecord(const TcpConnection& c, int fd, v1::TcpConnectionState* out) {
  out->set_fd(fd);
  ToRecord(c.local, out->mutable_local());
  ToRecord(c.remote, out->mutable_remote());
  out->set_send_seq(c.send_seq);
  out->set_receive_seq(c.receive_seq);
  out->set_unacked(c.unacked);
  out->set_unsent(c.unsent);
  out->set_unread(c.unread);
  out->set_mss(c.mss);
  out->set_sack(c.sack);
  out->set_timestamps(c.timestamps);
  out->set_window_scaling(c.window_scaling);
  out->set_send_window_scale(c.send_window_scale);
  out->set_receive_window_scale(c.receive_window_scale);
  out->set_timestamp(c.timestamp);
  v1::TcpWindow* w = out->mutable_window();
  w->set_snd_wl1(c.window.snd_wl1);
  w->set_snd_wnd(c.window.snd_wnd);
  w->set_max_window(c.window.max_window);
  w->set_rcv_wnd(c.window.rcv_wnd);
  w->set_rcv_wup(c.window.rcv_wup);
  out->set_nodelay(c.nodelay);
  out->set_reuse_address(c.reuse_address);
  out->set_keepalive(c.keepalive);
  out->set_keepalive_idle(c.keepalive_idle);
  out->set_keepalive_interval(c.keepalive_interval);
  out->set_keepalive_count(c.keepalive_count);
  out->set_send_buffer(c.send_buffer);
  out->set_receive_buffer(c.receive_buffer);
  out->set_file_flags(static_cast<std::uint32_t>(c.file_flags));
}

void ToRecord(const TcpListener& l, int fd, v1::TcpListenerState* out) {
  out->set_fd(fd);
  ToRecord(l.local, out->mutable_local());
  out->set_backlog(l.backlog);
  out->set_reuse_address(l.reuse_address);
  out->set_reuse_port(l.reuse_port);
  out->set_v6_only(l.v6_only);
  out->set_defer_accept(l.defer_accept);
  out->set_fast_open(l.fast_open);
  out->set_file_flags(static_cast<std::uint32_t>(l.file_flags));
}

TcpConnection FromRecord(const v1::TcpConnectionState& r) {
  TcpConnection c;
  c.family = FromRecord(r.local(), &c.local, &c.local_size);
  FromRecord(r.remote(), &c.remote, &c.remote_size);
  c.send_seq = r.send_seq();
  c.receive_seq = r.receive_seq();
  c.unacked = r.unacked();
  c.unsent = r.unsent();
  c.unread = r.unread();
  c.mss = r.mss();
  c.sack = r.sack();
  c.timestamps = r.timestamps();
  c.window_scaling = r.window_scaling();
  c.send_window_scale = static_cast<std::uint8_t>(r.send_window_scale());
  c.receive_window_scale = static_cast<std::uint8_t>(r.receive_window_scale());
  c.timestamp = r.timestamp();
  c.window.snd_wl1 = r.window().snd_wl1();
  c.window.snd_wnd = r.window().snd_wnd();
  c.window.max_window = r.window().max_window();
  c.window.rcv_wnd = r.window().rcv_wnd();
  c.window.rcv_wup = r.window().rcv_wup();
  c.nodelay = r.nodelay();
  c.reuse_address = r.reuse_address();
  c.keepalive = r.keepalive();
  c.keepalive_idle = r.keepalive_idle();
  c.keepalive_interval = r.keepalive_interval();
  c.keepalive_count = r.keepalive_count();
  c.send_buffer = r.send_buffer();
  c.receive_buffer = r.receive_buffer();
  c.file_flags = static_cast<int>(r.file_flags());
  return c;
}

TcpListener FromRecord(const v1::TcpListenerState& r) {
  TcpListener l;
  l.family = FromRecord(r.local(), &l.local, &l.local_size);
  l.backlog = r.backlog();
  l.reuse_address = r.reuse_address();
  l.reuse_port = r.reuse_port();
  l.v6_only = r.v6_only();
  l.defer_accept = r.defer_accept();
  l.fast_open = r.fast_open();
  l.file_flags = static_cast<int>(r.file_flags());
  return l;
}

// ---- save ----------------------------------------------------------------------------------------------------------

Result<bool> TcpByValue::Record(HostFile& file, v1::File* out) {
  Result<HostFile::Identity> id = file.Identify(false);
  if (!id.ok()) return id.status();
  if (id.value().file_type != S_IFSOCK) return false;  // not a socket: a reference, as ever
  const int fd = file.fd();
  std::string why = NotTcp(fd);
  Status failed;
  if (why.empty()) {
    if (IntOption(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1) {
      Result<TcpListener> l = CaptureListener(fd);
      if (l.ok()) {
        ToRecord(l.value(), fd, out->mutable_tcp_listener());
        listeners_.push_back({std::static_pointer_cast<HostFile>(file.shared_from_this()), l.value()});
        return true;
      }
      failed = l.status();
    } else {
      Result<TcpConnection> c = CaptureTcp(fd, filter_);
      if (c.ok()) {
        ToRecord(c.value(), fd, out->mutable_tcp_connection());
        Held held{std::static_pointer_cast<HostFile>(file.shared_from_this()), std::move(c).value()};
        held.captured.unacked.clear();  // the image has the queues; only the addresses and options are kept
        held.captured.unsent.clear();
        held.captured.unread.clear();
        connections_.push_back(std::move(held));
        return true;
      }
      failed = c.status();
    }
  } else {
    failed = Status::Error(EOPNOTSUPP, why);
  }
  if (!options_.fallback_to_reference) return Status(failed.code, "cannot be recorded by value: " + failed.message);
  by_reference_.push_back({fd, failed.message});
  return false;
}

Status TcpByValue::Lock(v1::Image& image) {
  if (options_.lock_network && (!connections_.empty() || !listeners_.empty())) {
    std::vector<TcpConnection> connections;
    std::vector<TcpListener> listeners;
    connections.reserve(connections_.size());
    listeners.reserve(listeners_.size());
    for (const Held& c : connections_) connections.push_back(c.captured);
    for (const HeldListener& l : listeners_) listeners.push_back(l.captured);
    const std::string name = NewNetworkLockName();
    if (Status s = LockNetwork(name, connections, listeners); !s.ok()) return s;
    lock_ = name;
    lock_owned_ = true;
    image.mutable_network_lock()->set_nftables_table(lock_);
  }
  // A connection that completed its handshake between the listener's capture and the lock is in no fd and in no
  // record: closing the listener would reset it.
  for (const HeldListener& l : listeners_) {
    tcp_info info{};
    socklen_t size = sizeof info;
    if (::getsockopt(l.file->fd(), IPPROTO_TCP, TCP_INFO, &info, &size) == 0 && info.tcpi_unacked > 0) {
      return Status::Error(EBUSY, "listener at fd " + std::to_string(l.file->fd()) + ": " +
                                      std::to_string(info.tcpi_unacked) +
                                      " connection(s) arrived during the save: accept them and save again");
    }
  }
  return {};
}

TcpByValue::~TcpByValue() {
  if (pending_) (void)Resume();
}

Result<std::string> TcpByValue::Save(const World& world, image::SaveOptions options) {
  options.host_by_value = [this](HostFile& file, v1::File* out) { return Record(file, out); };
  options.after_capture = [this, next = std::move(options.after_capture)](v1::Image& image) {
    Status s = Lock(image);
    return s.ok() && next ? next(image) : s;
  };
  const DropFilter filter;  // one program that every captured connection holds its segments with
  filter_ = &filter;
  Result<std::string> bytes = image::SaveImage(world, options);
  filter_ = nullptr;
  if (!bytes.ok()) {
    (void)Resume();  // a failed save leaves every socket as it was, and no lock
  } else {
    pending_ = true;
  }
  return bytes;
}

void TcpByValue::CloseAll() {
  for (const Held& c : connections_) {
    if (const int fd = c.file->ReleaseFd(); fd >= 0) CloseTcpSilently(fd);
  }
  for (const HeldListener& l : listeners_) {
    if (const int fd = l.file->ReleaseFd(); fd >= 0) ::close(fd);
  }
  connections_.clear();
  listeners_.clear();
  pending_ = false;
  lock_owned_ = false;  // the restore's to remove now
}

std::error_code TcpByValue::Resume() {
  std::error_code first;
  for (const Held& c : connections_) {
    if (std::error_code e = ResumeTcp(c.file->fd(), c.captured); e && !first) first = e;
  }
  if (lock_owned_) {
    if (Status s = UnlockNetwork(lock_); !s.ok() && !first) first = s.code;
    lock_.clear();
    lock_owned_ = false;
  }
  connections_.clear();
  listeners_.clear();
  pending_ = false;
  return first;
}

// ---- restore -------------------------------------------------------------------------------------------------------

TcpResolver::~TcpResolver() { CloseMade(false); }

void TcpResolver::Rebuild(const FileReference& ref) {
  Made& m = made_[ref.id];
  m.connection = ref.tcp_connection != nullptr;
  const int fd = ref.RecordedFd();
  Result<int> made = m.connection ? RebuildTcp(FromRecord(*ref.tcp_connection), &defaults_)
                                  : RebuildListener(FromRecord(*ref.tcp_listener));
  if (made.ok()) made = PlaceAt(made.value(), fd, m.connection, &plugs_);
  if (made.ok()) {
    m.fd = made.value();
    return;
  }
  m.error = m.connection ? "TCP connection " + AddressText(ref.tcp_connection->local()) + " -> " +
                               AddressText(ref.tcp_connection->remote())
                         : "TCP listener " + AddressText(ref.tcp_listener->local());
  m.error += " at fd " + std::to_string(fd) + ": " + made.status().message;
}

// Listeners first: they bind whatever SO_REUSEADDR the connections have (tcp_image.h), and a client's SYN finds its
// listener again as early as possible. Each kind in the order of its fd numbers: a new socket takes the lowest free
// number, so where the recorded numbers are free (a process restoring what another gave up) each socket is made at
// its own number and needs no second fd to put it there, once the free numbers below them are plugged (PlaceAt).
void TcpResolver::Prepare(std::span<const FileReference> refs) {
  std::vector<const FileReference*> listeners, connections;
  for (const FileReference& ref : refs) {
    if (ref.network_lock != nullptr && lock_.empty()) lock_ = ref.network_lock->nftables_table();
    if (ref.tcp_listener != nullptr) listeners.push_back(&ref);
    if (ref.tcp_connection != nullptr) connections.push_back(&ref);
  }
  for (auto* kind : {&listeners, &connections}) {
    std::sort(kind->begin(), kind->end(),
              [](const FileReference* a, const FileReference* b) { return a->RecordedFd() < b->RecordedFd(); });
    for (const FileReference* ref : *kind) Rebuild(*ref);
  }
  for (int plug : plugs_) ::close(plug);  // second fds of sockets that stay open at their own numbers
  plugs_.clear();
}

Resolution TcpResolver::Resolve(const FileReference& ref) {
  auto it = made_.find(ref.id);
  if (it == made_.end()) return Resolution::NotMine();
  Made& m = it->second;
  if (m.fd < 0) return Resolution::Unresolved(m.error);
  Result<std::shared_ptr<HostFile>> file = HostFile::Wrap(m.fd, S_IFSOCK);
  if (!file.ok()) return Resolution::Unresolved("fd " + std::to_string(m.fd) + ": " + file.status().message);
  m.handed_out = true;
  Resolution r;
  r.outcome = Resolution::Outcome::kResolved;
  r.file = std::move(file).value();
  r.fd = m.fd;
  r.created = true;  // on failure the restorer gives the fd back, and Finished closes it
  return r;
}

void TcpResolver::Finished(bool restored) {
  CloseMade(!restored);
  Unlock();
}

// The lock goes once the sockets it guarded are rebuilt, or once they are closed again after a failure.
void TcpResolver::Unlock() {
  if (lock_.empty()) return;
  if (Status s = UnlockNetwork(lock_); s.code == std::errc::no_such_file_or_directory) {
    lock_elsewhere_ = true;
  } else if (!s.ok()) {
    unlock_error_ = std::move(s);
  }
}

// Closes the sockets this resolver made and no host file owns: all of them after a failed restore (the restorer gave
// the fds back), else those no host file took. Connections close in repair mode: the peer hears nothing.
void TcpResolver::CloseMade(bool all) {
  for (auto& [id, m] : made_) {
    if (m.fd < 0 || (m.handed_out && !all)) continue;
    if (m.connection) {
      CloseTcpSilently(m.fd);
    } else {
      ::close(m.fd);
    }
    m.fd = -1;
  }
  made_.clear();
}

}  // namespace epollcr::restore
