// The kinds only the kernel has (docs/trace-format.md, "Kernel-only kinds"): timerfds, signalfds, TCP sockets on
// loopback, UDP pairs and FIFOs. Both engines make them as real kernel objects, here, with the same system calls; the
// userspace engine then wraps each fd as a HostFile. The settling that makes them deterministic is here too: a call
// whose effect the kernel finishes later (in a softirq, or a timer interrupt) does not return before it has finished,
// including the wake-up walks of the wait queues that epolls watch (bounded by kSettleTimeoutMs).
//
// Every function takes and returns kernel fds; -1 makes the first system call fail with EBADF, as for the kernel
// engine's dead names.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "epollcr/result.h"

namespace epollcr::replay::host {

// The longest any settling waits for the kernel. Loopback delivery and timer expiry take microseconds; a delayed ACK
// takes up to 200 ms.
inline constexpr int kSettleTimeoutMs = 2000;
// listen(2)'s backlog: at most this many connections may wait to be accepted.
inline constexpr int kListenBacklog = 128;

// Which real-time signals an engine's trace signals are: trace signal k (1..8) is SIGRTMIN+k for the kernel engine
// and SIGRTMIN+8+k for the userspace engine, so one engine's `raise` never reaches the other's signalfds.
enum class SignalRange : std::uint8_t { kKernel, kUserspace };

// Blocks the real-time signals of both ranges in the calling thread (threads and processes started later inherit
// it). The replay process does it first of all; each engine's constructor does it again for its thread.
void BlockTraceSignals();

// The kernel objects of one engine: its signal range, and the scratch directory of its FIFOs.
class HostObjects {
 public:
  explicit HostObjects(SignalRange range);
  HostObjects(const HostObjects&) = delete;
  HostObjects& operator=(const HostObjects&) = delete;
  // Consumes the range's signals still pending for the calling thread (and the process), and removes the FIFOs and
  // their directory.
  ~HostObjects();

  // timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC).
  static Result<int> TimerFd();
  // timerfd_settime: `value_ns` relative, or with `absolute` an absolute CLOCK_MONOTONIC time (TFD_TIMER_ABSTIME). An
  // absolute time that has passed returns only once the timer has fired (its wake-up done).
  static std::error_code TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns, bool absolute);

  // signalfd(-1, {the engine's signal for `signal`}, SFD_NONBLOCK | SFD_CLOEXEC).
  Result<int> SignalFd(int signal) const;
  // tgkill(2) of the engine's signal for `signal` to the calling thread (where it stays pending: it is blocked).
  std::error_code Raise(int signal) const;
  // The trace signal that the real signal `signo` stands for in this engine, or 0.
  int TraceSignal(int signo) const;

  // A TCP socket bound to 127.0.0.1, port 0, listening (kListenBacklog), non-blocking, close-on-exec.
  static Result<int> Listen();
  // A non-blocking TCP socket connected to `listener`'s address. Returns once the handshake is done and the
  // connection waits in the listener's accept queue (its wake-up of the listener's watchers done), or with the error
  // the connection got (the socket is then closed).
  static Result<int> Connect(int listener);
  // accept4(listener, SOCK_NONBLOCK | SOCK_CLOEXEC).
  static Result<int> Accept(int listener);
  // Two UDP sockets on 127.0.0.1, each connected to the other.
  static std::error_code UdpPair(int out[2]);
  // The FIFO `name` in the engine's scratch directory (made by the first call, mkdtemp under $TMPDIR or /tmp), made
  // if it is not there (mkfifo 0600), then opened: the read end first (O_RDONLY | O_NONBLOCK) if `read_end`, the write
  // end (O_WRONLY | O_NONBLOCK) if `write_end`. out[0] and out[1] get the ends, -1 for an end not asked for. If an
  // open fails, no end stays open.
  std::error_code Fifo(std::string_view name, bool read_end, bool write_end, int out[2]);

  // SO_LINGER {on, 0}: the socket's last close sends a reset (`close NAME rst`).
  static std::error_code LingerReset(int fd);

 private:
  int Signal(int trace_signal) const { return base_ + trace_signal; }

  int base_;                         // trace signal k is base_ + k
  std::string scratch_dir_;          // empty until the first FIFO
  std::vector<std::string> fifos_;   // paths made in scratch_dir_
};

// ---- Settling the verbs every engine has, on kernel-only kinds (replay/runner.cc calls these). ----

// The connected socket among `candidates` whose local and peer addresses are `fd`'s peer and local addresses (the
// other end of a TCP connection or of a UDP pair), or -1.
int FindPeer(int fd, std::span<const int> candidates);

// After a write or shutdown of a TCP socket: returns once every byte (and FIN) sent is acknowledged, which the peer
// does only after it has queued them and woken its watchers, or the connection is closed.
void AwaitAcknowledged(int fd);

// After a reset sent to `peer` (-1: nothing): returns once the peer has taken it (its state is TCP_CLOSE).
void AwaitClosed(int peer);

// Wake-ups of files' wait queues, watched through a private epoll (one edge-triggered entry per file) from Add on.
// Await returns once a wake-up came after which its file is ready for the entry's events, and the whole walk of the
// wait queue that brought it has ended, so that every other watcher of the file (the trace's epolls) has been woken
// too. For a datagram that reaches `fd` (EPOLLIN), an error it gets (EPOLLERR), a connection a listener queues.
class WakeWatch {
 public:
  WakeWatch();
  WakeWatch(const WakeWatch&) = delete;
  WakeWatch& operator=(const WakeWatch&) = delete;
  ~WakeWatch();

  // Watches `fd` (-1: nothing) for `events`. With `drain`, what is ready at once does not count, only a later wake-up.
  void Add(int fd, std::uint32_t events, bool drain = true);
  // The fd whose wake-up came first, within kSettleTimeoutMs, or -1. The watch ends there.
  int Await();

 private:
  void Remove();

  int epoll_;
  std::vector<int> fds_;
};

}  // namespace epollcr::replay::host
