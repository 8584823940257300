#include "restore/tcp_repair.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace epollcr::restore {
namespace {

Status Failed(const char* step) { return Status::Error(errno, std::string(step) + ": " + std::strerror(errno)); }

bool Set(int fd, int level, int name, int value) {
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

bool Get(int fd, int level, int name, int* value) {
  socklen_t size = sizeof *value;
  return ::getsockopt(fd, level, name, value, &size) == 0;
}

bool SelectQueue(int fd, int queue) { return Set(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue); }

// The bytes of the selected queue (repair mode: a peek reads the queue itself, the send queue included).
bool PeekQueue(int fd, std::size_t size, std::string* out) {
  out->assign(size, '\0');
  if (size == 0) return true;
  const ssize_t n = ::recv(fd, out->data(), size, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) return false;
  if (static_cast<std::size_t>(n) != size) {
    errno = EAGAIN;  // the queue changed under the capture
    return false;
  }
  return true;
}

// Writes `bytes` into the selected queue (repair mode: the receive queue as if they had arrived, the send queue as if
// they had been sent).
bool FillQueue(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) {
      if (n == 0) errno = ENOBUFS;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// TCP_INFO; EINVAL unless the connection is established (the kernel allows repair mode on an established or a closed
// socket only, and only an established connection is worth moving).
Status Established(int fd, tcp_info* info) {
  socklen_t size = sizeof *info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &size) != 0) return Failed("TCP_INFO");
  if (info->tcpi_state != TCP_ESTABLISHED) {
    return Status::Error(EINVAL, "the connection is not established (TCP state " + std::to_string(info->tcpi_state) +
                                     "): only established connections move by value");
  }
  return {};
}

Status ReadConnection(int fd, TcpConnection* c) {
  tcp_info info{};
  if (Status status = Established(fd, &info); !status.ok()) return status;  // again, in repair mode: nothing moves now
  socklen_t size = 0;
  c->sack = (info.tcpi_options & TCPI_OPT_SACK) != 0;
  c->timestamps = (info.tcpi_options & TCPI_OPT_TIMESTAMPS) != 0;
  c->window_scaling = (info.tcpi_options & TCPI_OPT_WSCALE) != 0;
  c->send_window_scale = info.tcpi_snd_wscale;
  c->receive_window_scale = info.tcpi_rcv_wscale;
  c->local_size = sizeof c->local;
  c->remote_size = sizeof c->remote;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&c->local), &c->local_size) != 0) return Failed("getsockname");
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&c->remote), &c->remote_size) != 0) return Failed("getpeername");
  c->family = c->local.ss_family;
  int mss = 0;
  if (!Get(fd, IPPROTO_TCP, TCP_MAXSEG, &mss)) return Failed("TCP_MAXSEG");
  c->mss = static_cast<std::uint32_t>(mss);
  int in_queue = 0, out_queue = 0, not_sent = 0;
  if (::ioctl(fd, SIOCINQ, &in_queue) != 0) return Failed("SIOCINQ");
  if (::ioctl(fd, SIOCOUTQ, &out_queue) != 0) return Failed("SIOCOUTQ");
  if (::ioctl(fd, SIOCOUTQNSD, &not_sent) != 0) return Failed("SIOCOUTQNSD");
  // Each queue is selected once, for its sequence number and then its bytes. The send queue stays selected: in repair
  // mode it means nothing until a queue is read or written again.
  int seq = 0;
  if (!SelectQueue(fd, TCP_RECV_QUEUE) || !Get(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &seq)) {
    return Failed("receive TCP_QUEUE_SEQ");
  }
  c->receive_seq = static_cast<std::uint32_t>(seq);
  if (!PeekQueue(fd, static_cast<std::size_t>(in_queue), &c->unread)) return Failed("reading the receive queue");
  if (!SelectQueue(fd, TCP_SEND_QUEUE) || !Get(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &seq)) {
    return Failed("send TCP_QUEUE_SEQ");
  }
  c->send_seq = static_cast<std::uint32_t>(seq);
  std::string send_queue;
  if (!PeekQueue(fd, static_cast<std::size_t>(out_queue), &send_queue)) return Failed("reading the send queue");
  const std::size_t sent = static_cast<std::size_t>(out_queue - not_sent);
  c->unacked = send_queue.substr(0, sent);
  c->unsent = send_queue.substr(sent);
  size = sizeof c->window;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &c->window, &size) != 0) return Failed("TCP_REPAIR_WINDOW");
  if (c->timestamps) {
    int stamp = 0;
    if (!Get(fd, IPPROTO_TCP, TCP_TIMESTAMP, &stamp)) return Failed("TCP_TIMESTAMP");
    c->timestamp = static_cast<std::uint32_t>(stamp);
  }
  int value = 0;
  if (!Get(fd, IPPROTO_TCP, TCP_NODELAY, &value)) return Failed("TCP_NODELAY");
  c->nodelay = value != 0;
  if (!Get(fd, SOL_SOCKET, SO_KEEPALIVE, &value)) return Failed("SO_KEEPALIVE");
  c->keepalive = value != 0;
  if (!Get(fd, IPPROTO_TCP, TCP_KEEPIDLE, &c->keepalive_idle) ||
      !Get(fd, IPPROTO_TCP, TCP_KEEPINTVL, &c->keepalive_interval) ||
      !Get(fd, IPPROTO_TCP, TCP_KEEPCNT, &c->keepalive_count)) {
    return Failed("TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT");
  }
  if (!Get(fd, SOL_SOCKET, SO_SNDBUF, &c->send_buffer) || !Get(fd, SOL_SOCKET, SO_RCVBUF, &c->receive_buffer)) {
    return Failed("SO_SNDBUF/SO_RCVBUF");
  }
  c->file_flags = ::fcntl(fd, F_GETFL);
  if (c->file_flags < 0) return Failed("F_GETFL");
  return {};
}

// Reads what the new socket `fd` has before anything is set on it.
Status ReadDefaults(int fd, TcpDefaults* d) {
  if (!Get(fd, SOL_SOCKET, SO_RCVBUF, &d->receive_buffer) || !Get(fd, IPPROTO_TCP, TCP_KEEPIDLE, &d->keepalive_idle) ||
      !Get(fd, IPPROTO_TCP, TCP_KEEPINTVL, &d->keepalive_interval) ||
      !Get(fd, IPPROTO_TCP, TCP_KEEPCNT, &d->keepalive_count)) {
    return Failed("reading a new socket's options");
  }
  d->known = true;
  return {};
}

// Makes the socket of `c` on `fd` (new, in repair mode, made with O_NONBLOCK if `c` had it); every step that can fail
// says which it was. An option whose value a new socket has already (`d`, read from it) is not set again.
Status Build(int fd, const TcpConnection& c, const TcpDefaults& d) {
  // Buffers first, at least as large as the old socket's were, and large enough for the queues: the kernel counts a
  // queue by its buffers' whole size (the rebuilt queue is cut into other, smaller pieces than the old one was: up
  // to about twice the bytes). The old sizes may have grown past what SO_SNDBUF may ask for (the kernel's autotuning
  // goes up to tcp_wmem's maximum, SO_SNDBUF stops at wmem_max), so they are forced (CAP_NET_ADMIN, which repair mode
  // needs anyway). The kernel doubles what is asked for, as getsockopt shows. The send buffer is always set: an
  // established connection's has grown with its MSS, which a socket made in repair mode never learns in time. The
  // receive buffer usually is what a new socket has.
  const auto at_least = [](int old_size, std::size_t queued) {
    return static_cast<int>(std::max<std::size_t>(static_cast<std::size_t>(std::max(old_size, 0)) / 2, 2 * queued));
  };
  const int receive_buffer = at_least(c.receive_buffer, c.unread.size());
  if (!Set(fd, SOL_SOCKET, SO_SNDBUFFORCE, at_least(c.send_buffer, c.unacked.size() + c.unsent.size())) ||
      (2 * receive_buffer != d.receive_buffer && !Set(fd, SOL_SOCKET, SO_RCVBUFFORCE, receive_buffer))) {
    return Failed("SO_SNDBUFFORCE/SO_RCVBUFFORCE");
  }
  // The sequence numbers must be set while the socket is still closed; each names its queue. The receive queue stays
  // selected for its bytes below.
  const std::uint32_t queued = static_cast<std::uint32_t>(c.unacked.size() + c.unsent.size());
  if (!SelectQueue(fd, TCP_SEND_QUEUE) ||
      !Set(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(c.send_seq - queued))) {
    return Failed("send TCP_QUEUE_SEQ");
  }
  const std::uint32_t unread = static_cast<std::uint32_t>(c.unread.size());
  if (!SelectQueue(fd, TCP_RECV_QUEUE) ||
      !Set(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(c.receive_seq - unread))) {
    return Failed("receive TCP_QUEUE_SEQ");
  }
  // In repair mode the bind may take the address of a listening socket, and the connect sends no SYN: the socket is
  // established at once.
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&c.local), c.local_size) != 0) return Failed("bind");
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&c.remote), c.remote_size) != 0) return Failed("connect");
  tcp_repair_opt options[4];
  unsigned n = 0;
  options[n++] = {TCPOPT_MAXSEG, c.mss};
  if (c.window_scaling) {
    options[n++] = {TCPOPT_WINDOW, c.send_window_scale | (static_cast<std::uint32_t>(c.receive_window_scale) << 16)};
  }
  if (c.sack) options[n++] = {TCPOPT_SACK_PERMITTED, 0};
  if (c.timestamps) options[n++] = {TCPOPT_TIMESTAMP, 0};
  if (::setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, options, n * sizeof options[0]) != 0) {
    return Failed("TCP_REPAIR_OPTIONS");
  }
  if (c.timestamps && !Set(fd, IPPROTO_TCP, TCP_TIMESTAMP, static_cast<int>(c.timestamp))) {
    return Failed("TCP_TIMESTAMP");
  }
  if (!c.unread.empty() && !FillQueue(fd, c.unread)) return Failed("filling the receive queue");
  if (!c.unacked.empty() && (!SelectQueue(fd, TCP_SEND_QUEUE) || !FillQueue(fd, c.unacked))) {
    return Failed("filling the send queue");
  }
  // The window last: the kernel checks it against the receive sequence the queue has just advanced.
  if (::setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &c.window, sizeof c.window) != 0) {
    return Failed("TCP_REPAIR_WINDOW");
  }
  // A new socket has TCP_NODELAY and SO_KEEPALIVE off and the namespace's keepalive timers: those need no call.
  if ((c.nodelay && !Set(fd, IPPROTO_TCP, TCP_NODELAY, 1)) || (c.keepalive && !Set(fd, SOL_SOCKET, SO_KEEPALIVE, 1)) ||
      (c.keepalive_idle != d.keepalive_idle && !Set(fd, IPPROTO_TCP, TCP_KEEPIDLE, c.keepalive_idle)) ||
      (c.keepalive_interval != d.keepalive_interval && !Set(fd, IPPROTO_TCP, TCP_KEEPINTVL, c.keepalive_interval)) ||
      (c.keepalive_count != d.keepalive_count && !Set(fd, IPPROTO_TCP, TCP_KEEPCNT, c.keepalive_count))) {
    return Failed("socket options");
  }
  // Out of repair mode (with a window probe, which tells the peer the connection is alive; the queue selected for
  // repair means nothing from then on), then the bytes that were queued but never sent go out as any write's would.
  // Leaving repair mode turns SO_REUSEADDR off, as a new socket has it.
  if (!Set(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF)) return Failed("leaving repair mode");
  if (c.reuse_address && !Set(fd, SOL_SOCKET, SO_REUSEADDR, 1)) return Failed("SO_REUSEADDR");
  std::size_t done = 0;
  while (done < c.unsent.size()) {
    const ssize_t sent = ::send(fd, c.unsent.data() + done, c.unsent.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent <= 0) {
      if (sent == 0) errno = ENOBUFS;
      return Failed("queueing the unsent bytes");
    }
    done += static_cast<std::size_t>(sent);
  }
  return {};
}

// From the capture on, the socket drops every segment it receives before TCP sees it: a socket in repair mode would
// otherwise take in and acknowledge the peer's bytes after its queues were read, and they would be lost. Dropped, they
// are the peer's to send again, to the rebuilt socket (or to this one, if the move is called off). A classic BPF
// program of one instruction: return 0 (keep nothing). A socket with a filter of its own is refused: the capture would
// have to replace it.
Status HoldIncoming(int fd, const DropFilter* filter) {
  socklen_t existing = 0;
  if (::getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, nullptr, &existing) == 0 && existing > 0) {
    return Status::Error(EBUSY, "the socket has a packet filter of its own (SO_ATTACH_FILTER): it cannot be held");
  }
  if (filter != nullptr && filter->fd() >= 0) {
    const int program = filter->fd();
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &program, sizeof program) == 0) return {};
  }
  sock_filter drop_all = BPF_STMT(BPF_RET | BPF_K, 0);
  const sock_fprog program{.len = 1, .filter = &drop_all};
  if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) != 0) {
    return Failed("attaching the filter that holds incoming segments");
  }
  return {};
}

}  // namespace

DropFilter::DropFilter() {
  // r0 = 0; exit: a socket filter's result is how many bytes of the packet to keep.
  const bpf_insn keep_nothing[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .src_reg = 0, .off = 0, .imm = 0},
      {.code = BPF_JMP | BPF_EXIT, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
  };
  static constexpr char kLicense[] = "GPL";
  bpf_attr attr{};
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insn_cnt = sizeof keep_nothing / sizeof keep_nothing[0];
  attr.insns = reinterpret_cast<std::uint64_t>(keep_nothing);
  attr.license = reinterpret_cast<std::uint64_t>(kLicense);
  attr.prog_flags = 0;
  const long fd = ::syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
  fd_ = fd < 0 ? -1 : static_cast<int>(fd);  // the kernel makes a program's fd close-on-exec
}

DropFilter::~DropFilter() {
  if (fd_ >= 0) ::close(fd_);
}

Result<TcpConnection> CaptureTcp(int fd, const DropFilter* filter) {
  int type = 0, protocol = 0;
  if (!Get(fd, SOL_SOCKET, SO_TYPE, &type) || !Get(fd, SOL_SOCKET, SO_PROTOCOL, &protocol)) {
    return Failed("not a socket");
  }
  if (type != SOCK_STREAM || protocol != IPPROTO_TCP) {
    return Status::Error(EOPNOTSUPP, "not a TCP socket: only TCP connections move by value");
  }
  tcp_info info{};
  if (Status status = Established(fd, &info); !status.ok()) return status;
  int reuse = 0;
  if (!Get(fd, SOL_SOCKET, SO_REUSEADDR, &reuse)) return Failed("SO_REUSEADDR");  // before repair mode changes it
  if (!Set(fd, IPPROTO_TCP, TCP_REPAIR, 1)) {
    return errno == EPERM ? Status::Error(EPERM, "TCP_REPAIR: needs CAP_NET_ADMIN") : Failed("TCP_REPAIR");
  }
  // What arrives before the filter is in place is in the queues read below; nothing after it gets in.
  if (Status status = HoldIncoming(fd, filter); !status.ok()) {
    (void)Set(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF);
    (void)Set(fd, SOL_SOCKET, SO_REUSEADDR, reuse);
    return status;
  }
  TcpConnection connection;
  connection.reuse_address = reuse != 0;
  if (Status status = ReadConnection(fd, &connection); !status.ok()) {
    (void)SelectQueue(fd, TCP_NO_QUEUE);
    (void)ResumeTcp(fd, connection);
    return status;
  }
  return connection;
}

std::error_code ResumeTcp(int fd) {
  if (!Set(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF)) return Errno(errno);
  return Set(fd, SOL_SOCKET, SO_DETACH_FILTER, 0) ? std::error_code{} : Errno(errno);  // the value is not read
}

std::error_code ResumeTcp(int fd, const TcpConnection& captured) {
  if (std::error_code e = ResumeTcp(fd); e) return e;
  return Set(fd, SOL_SOCKET, SO_REUSEADDR, captured.reuse_address ? 1 : 0) ? std::error_code{} : Errno(errno);
}

void CloseTcpSilently(int fd) {
  (void)Set(fd, IPPROTO_TCP, TCP_REPAIR, 1);
  ::close(fd);
}

Result<int> RebuildTcp(const TcpConnection& c, TcpDefaults* defaults) {
  if (c.family != AF_INET && c.family != AF_INET6) {
    return Status::Error(EAFNOSUPPORT, "address family " + std::to_string(c.family) + " is not TCP over IP");
  }
  // F_SETFL changes only these flags of a socket; made with O_NONBLOCK (or without), it needs no F_SETFL after.
  constexpr int kSettable = O_APPEND | O_ASYNC | O_DIRECT | O_NOATIME | O_NONBLOCK;
  const bool nonblocking = (c.file_flags & O_NONBLOCK) != 0;
  const int fd = ::socket(c.family, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), IPPROTO_TCP);
  if (fd < 0) return Failed("socket");
  TcpDefaults own;
  TcpDefaults& d = defaults != nullptr ? *defaults : own;
  if (!d.known) {
    if (Status status = ReadDefaults(fd, &d); !status.ok()) {
      ::close(fd);
      return status;
    }
  }
  if (!Set(fd, IPPROTO_TCP, TCP_REPAIR, 1)) {
    Status status = errno == EPERM ? Status::Error(EPERM, "TCP_REPAIR: needs CAP_NET_ADMIN") : Failed("TCP_REPAIR");
    ::close(fd);
    return status;
  }
  Status status = Build(fd, c, d);
  if (status.ok() && (c.file_flags & kSettable & ~O_NONBLOCK) != 0 && ::fcntl(fd, F_SETFL, c.file_flags) != 0) {
    status = Failed("F_SETFL");
  }
  if (!status.ok()) {
    CloseTcpSilently(fd);  // nothing of a half-made connection reaches the peer
    return status;
  }
  return fd;
}

Result<TcpListener> CaptureListener(int fd) {
  int type = 0, protocol = 0, listening = 0;
  if (!Get(fd, SOL_SOCKET, SO_TYPE, &type) || !Get(fd, SOL_SOCKET, SO_PROTOCOL, &protocol)) {
    return Failed("not a socket");
  }
  if (type != SOCK_STREAM || protocol != IPPROTO_TCP || !Get(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening) ||
      listening == 0) {
    return Status::Error(EINVAL, "not a listening TCP socket");
  }
  tcp_info info{};
  socklen_t size = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0) return Failed("TCP_INFO");
  if (info.tcpi_unacked > 0) {  // for a listener: its accept queue's length
    return Status::Error(EBUSY, std::to_string(info.tcpi_unacked) +
                                    " connection(s) wait in the listener's accept queue: accept them first");
  }
  TcpListener l;
  l.backlog = static_cast<int>(info.tcpi_sacked);  // for a listener: the backlog
  l.local_size = sizeof l.local;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&l.local), &l.local_size) != 0) return Failed("getsockname");
  l.family = l.local.ss_family;
  int value = 0;
  if (!Get(fd, SOL_SOCKET, SO_REUSEADDR, &value)) return Failed("SO_REUSEADDR");
  l.reuse_address = value != 0;
  if (!Get(fd, SOL_SOCKET, SO_REUSEPORT, &value)) return Failed("SO_REUSEPORT");
  l.reuse_port = value != 0;
  if (l.family == AF_INET6) {
    if (!Get(fd, IPPROTO_IPV6, IPV6_V6ONLY, &value)) return Failed("IPV6_V6ONLY");
    l.v6_only = value != 0;
  }
  if (!Get(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &l.defer_accept)) return Failed("TCP_DEFER_ACCEPT");
  if (!Get(fd, IPPROTO_TCP, TCP_FASTOPEN, &l.fast_open)) return Failed("TCP_FASTOPEN");
  l.file_flags = ::fcntl(fd, F_GETFL);
  if (l.file_flags < 0) return Failed("F_GETFL");
  return l;
}

Result<int> RebuildListener(const TcpListener& l) {
  if (l.family != AF_INET && l.family != AF_INET6) {
    return Status::Error(EAFNOSUPPORT, "address family " + std::to_string(l.family) + " is not TCP over IP");
  }
  const int fd = ::socket(l.family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return Failed("socket");
  Status status;
  if (!Set(fd, SOL_SOCKET, SO_REUSEADDR, l.reuse_address ? 1 : 0) ||
      !Set(fd, SOL_SOCKET, SO_REUSEPORT, l.reuse_port ? 1 : 0) ||
      (l.family == AF_INET6 && !Set(fd, IPPROTO_IPV6, IPV6_V6ONLY, l.v6_only ? 1 : 0)) ||
      !Set(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, l.defer_accept) ||
      (l.fast_open > 0 && !Set(fd, IPPROTO_TCP, TCP_FASTOPEN, l.fast_open))) {
    status = Failed("socket options");
  } else if (::bind(fd, reinterpret_cast<const sockaddr*>(&l.local), l.local_size) != 0) {
    status = Failed("bind");
  } else if (::listen(fd, l.backlog) != 0) {
    status = Failed("listen");
  } else if (::fcntl(fd, F_SETFL, l.file_flags) != 0) {
    status = Failed("F_SETFL");
  }
  if (!status.ok()) {
    ::close(fd);
    return status;
  }
  return fd;
}

}  // namespace epollcr::restore
