// An established TCP connection by value: what Linux's TCP repair mode (tcp(7), TCP_REPAIR; needs CAP_NET_ADMIN)
// lets a process read out of a socket, and what a new socket needs to carry the connection on, in this process or
// another, with nothing inherited. The peer sees no reset and no lost or repeated byte: the new socket starts with the
// old one's sequence numbers, options, window and queues.
//
// The life of a connection moved by value:
//   1. CaptureTcp(fd) puts the socket in repair mode (it sends nothing from then on), makes it drop what it receives
//      (a socket filter), and reads its state;
//   2. either the move goes ahead: CloseTcpSilently(fd) closes it while still in repair mode, so no FIN or RST goes
//      out, and RebuildTcp(state) makes the new socket (after the close: both cannot hold the same address pair);
//   3. or it is called off: ResumeTcp(fd) leaves repair mode, takes the filter off, and the socket carries on.
// A segment the peer sends after the capture is dropped unacknowledged (a socket in repair mode would take it in after
// its queues were read, and it would be lost): the peer sends it again, after its retransmission timeout (200 ms at
// the least on Linux), to whichever socket then holds the connection. While no socket holds it (between the close and
// the rebuild) the kernel would answer with a reset: restore/network_lock.h guards the connection meanwhile.
//
// The order of operations and the kernel's checks follow Linux's tcp_repair code (net/ipv4/tcp.c: TCP_QUEUE_SEQ,
// TCP_REPAIR_OPTIONS, TCP_REPAIR_WINDOW) and CRIU's description of it; the code is epollcr's.
#pragma once

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "epollcr/result.h"

namespace epollcr::restore {

struct TcpConnection {
  int family = 0;  // AF_INET or AF_INET6
  sockaddr_storage local{};
  socklen_t local_size = 0;
  sockaddr_storage remote{};
  socklen_t remote_size = 0;

  // Sequence numbers: the one after the last byte queued to send (the kernel's write_seq) and the next one expected
  // from the peer (rcv_nxt).
  std::uint32_t send_seq = 0;
  std::uint32_t receive_seq = 0;
  // The send queue: bytes sent and not yet acknowledged, then bytes not yet sent. The receive queue: bytes the
  // program has not read yet (acknowledged to the peer).
  std::string unacked;
  std::string unsent;
  std::string unread;

  // Options agreed at the handshake (TCP_INFO, TCP_MAXSEG) and the timestamp clock (TCP_TIMESTAMP).
  std::uint32_t mss = 0;
  bool sack = false;
  bool timestamps = false;
  bool window_scaling = false;
  std::uint8_t send_window_scale = 0;
  std::uint8_t receive_window_scale = 0;
  std::uint32_t timestamp = 0;
  // The window state (TCP_REPAIR_WINDOW).
  tcp_repair_window window{};

  // Socket and file options the program set or relies on.
  bool nodelay = false;
  // SO_REUSEADDR. Repair mode clears it (leaving repair mode sets the socket's sk_reuse to SK_NO_REUSE: net/ipv4/tcp.c,
  // TCP_REPAIR), so it is read before and set again after: a listener rebound on the port of a connection that has
  // none would be refused (EADDRINUSE).
  bool reuse_address = false;
  bool keepalive = false;
  int keepalive_idle = 0;
  int keepalive_interval = 0;
  int keepalive_count = 0;
  // SO_SNDBUF and SO_RCVBUF as getsockopt gives them (twice what is asked for). The rebuilt socket gets at least these
  // sizes (more if its queues need it), fixed: the kernel's autotuning, which may have grown the old ones, no longer
  // changes them.
  int send_buffer = 0;
  int receive_buffer = 0;
  int file_flags = 0;      // F_GETFL (O_NONBLOCK)
};

// The socket filter that holds a captured socket's incoming segments (it keeps nothing), loaded once for many captures.
// A classic filter (SO_ATTACH_FILTER) is a program the kernel allocates and checks for each socket; this is one eBPF
// program (BPF_PROG_TYPE_SOCKET_FILTER) that every socket of a save attaches by reference (SO_ATTACH_BPF), which
// makes the hold about as cheap as any setsockopt. Where the program cannot be loaded (no CAP_BPF or CAP_SYS_ADMIN, a
// kernel without eBPF) fd() is -1 and each capture attaches a classic filter instead. It holds one fd, close-on-exec,
// until it goes; the sockets keep the program as long as they hold it.
class DropFilter {
 public:
  DropFilter();
  ~DropFilter();
  DropFilter(const DropFilter&) = delete;
  DropFilter& operator=(const DropFilter&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// Holds `fd`'s incoming segments (with `filter`'s program if it has one), puts it in repair mode and reads its
// connection. On failure the socket is left as it was (out of repair mode, no filter) and the error says why: EPERM
// without CAP_NET_ADMIN, ENOTSOCK/EOPNOTSUPP for another kind of socket, EINVAL for a connection that is not
// established (mid-handshake or mid-close), EBUSY for a socket with a packet filter of its own.
Result<TcpConnection> CaptureTcp(int fd, const DropFilter* filter = nullptr);

// Takes `fd` out of repair mode and lets its segments in again: the move was called off and the connection goes on
// here (what the peer sent meanwhile arrives with its retransmission).
std::error_code ResumeTcp(int fd);
// The same, and gives the socket back the SO_REUSEADDR that `captured` (its capture) found.
std::error_code ResumeTcp(int fd, const TcpConnection& captured);

// Closes `fd` in repair mode: the kernel forgets the connection and sends the peer nothing.
void CloseTcpSilently(int fd);

// What a new TCP socket of this network namespace has before anything is set on it: its receive buffer and its
// keepalive timers (the sysctls tcp_rmem, tcp_keepalive_*). A rebuild leaves an option alone where the connection had
// what a new socket has anyway, so that the common connection costs fewer system calls (on a VM where one costs a
// microsecond, each is a tenth of a rebuild). Read once, from the first socket a rebuild makes.
struct TcpDefaults {
  bool known = false;
  int receive_buffer = 0;
  int keepalive_idle = 0;
  int keepalive_interval = 0;
  int keepalive_count = 0;
};

// A new socket carrying `connection` on (close-on-exec; non-blocking if the old one was). Nothing is sent to the peer
// but a window probe when the socket leaves repair mode and then the bytes that were never sent. On failure no socket
// is left behind and the error says which step failed. `defaults`, if given, is filled by the first rebuild and
// spares the later ones the options a new socket has already (rebuilds of one restore share it).
Result<int> RebuildTcp(const TcpConnection& connection, TcpDefaults* defaults = nullptr);

// A listening TCP socket by value: its address and what a new one needs to accept as it did.
struct TcpListener {
  int family = 0;
  sockaddr_storage local{};
  socklen_t local_size = 0;
  int backlog = 0;       // listen(2)'s backlog as the kernel holds it (TCP_INFO's tcpi_sacked for a listener)
  bool reuse_address = false;
  bool reuse_port = false;
  bool v6_only = false;  // AF_INET6 only
  int defer_accept = 0;  // TCP_DEFER_ACCEPT, seconds
  int fast_open = 0;     // TCP_FASTOPEN's queue length
  int file_flags = 0;    // F_GETFL (O_NONBLOCK)
};

// Reads the listener `fd` (nothing changes for it). EINVAL if it is not a listening TCP socket; EBUSY if connections
// wait in its accept queue (established connections no program has accepted yet: accept them first, and they move
// as connections).
Result<TcpListener> CaptureListener(int fd);

// A new listening socket (close-on-exec) as `listener` describes. Bound to the same address: the old one must be
// closed first unless both allow SO_REUSEPORT. On failure no socket is left behind and the error names the step.
Result<int> RebuildListener(const TcpListener& listener);

}  // namespace epollcr::restore
