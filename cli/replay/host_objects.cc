#include "replay/host_objects.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "epollcr/unique_fd.h"
#include "replay/scratch.h"
#include "replay/trace.h"

namespace epollcr::replay::host {
namespace {

std::error_code LastError() { return Errno(errno); }

constexpr std::uint64_t kNanosPerSecond = 1000000000;
// SO_LINGER of every TCP connection: its last close returns once the FIN is acknowledged (the peer has taken it and
// woken its watchers first), or after this long. Only the seconds of kSettleTimeoutMs.
constexpr int kLingerSeconds = kSettleTimeoutMs / 1000;

int SignalBase(SignalRange range) {
  return SIGRTMIN + (range == SignalRange::kKernel ? 0 : static_cast<int>(kTraceSignals));
}

sigset_t SignalSet(int first, int count) {
  sigset_t set;
  sigemptyset(&set);
  for (int i = 0; i < count; ++i) sigaddset(&set, first + i);
  return set;
}

timespec ToTimespec(std::uint64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / kNanosPerSecond);
  ts.tv_nsec = static_cast<long>(ns % kNanosPerSecond);
  return ts;
}

std::uint64_t MonotonicNow() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * kNanosPerSecond + static_cast<std::uint64_t>(now.tv_nsec);
}

sockaddr_in Loopback(std::uint16_t port_network_order) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = port_network_order;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

std::error_code SetLinger(int fd, int on, int seconds) {
  const linger value{on, seconds};
  if (::setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, sizeof(value)) != 0) return LastError();
  return {};
}

// A non-blocking, close-on-exec socket of `type` bound to 127.0.0.1, port 0.
Result<UniqueFd> BoundSocket(int type) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return LastError();
  const sockaddr_in addr = Loopback(0);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) return LastError();
  return fd;
}

bool LocalAddress(int fd, sockaddr_in* addr) {
  socklen_t len = sizeof(*addr);
  return ::getsockname(fd, reinterpret_cast<sockaddr*>(addr), &len) == 0 && len == sizeof(*addr) &&
         addr->sin_family == AF_INET;
}

bool PeerAddress(int fd, sockaddr_in* addr) {
  socklen_t len = sizeof(*addr);
  return ::getpeername(fd, reinterpret_cast<sockaddr*>(addr), &len) == 0 && len == sizeof(*addr) &&
         addr->sin_family == AF_INET;
}

bool SameAddress(const sockaddr_in& a, const sockaddr_in& b) {
  return a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr;
}

// getsockopt(TCP_INFO). For a connection the kernel takes the socket's lock for it (lock_sock_fast in tcp_get_info),
// which a softirq holds while it processes a segment for the socket, wake-ups included: the answer comes only after
// any such processing has ended.
bool TcpInfo(int fd, tcp_info* info) {
  socklen_t len = sizeof(*info);
  return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len) == 0;
}

// Sleeps a little longer each time, from 50 us to 2 ms: the kernel usually finishes within microseconds.
class Backoff {
 public:
  Backoff() : deadline_(std::chrono::steady_clock::now() + std::chrono::milliseconds(kSettleTimeoutMs)) {}
  // Sleeps; false once the deadline has passed.
  bool Sleep() {
    if (std::chrono::steady_clock::now() >= deadline_) return false;
    std::this_thread::sleep_for(step_);
    step_ = std::min(step_ * 2, std::chrono::microseconds(2000));
    return true;
  }

 private:
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::microseconds step_{50};
};

int SocketError(int fd) {
  int error = 0;
  socklen_t len = sizeof(error);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) return errno;
  return error;
}

}  // namespace

void BlockTraceSignals() {
  assert(SIGRTMIN + 2 * static_cast<int>(kTraceSignals) <= SIGRTMAX);
  const sigset_t set = SignalSet(SIGRTMIN + 1, 2 * static_cast<int>(kTraceSignals));
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

HostObjects::HostObjects(SignalRange range) : base_(SignalBase(range)) { BlockTraceSignals(); }

HostObjects::~HostObjects() {
  // A raised signal that no signalfd read stays pending for the thread: consume it, so that no later run sees it.
  const sigset_t set = SignalSet(base_ + 1, static_cast<int>(kTraceSignals));
  const timespec zero{};
  while (::sigtimedwait(&set, nullptr, &zero) > 0 || errno == EINTR) {
  }
  if (!scratch_dir_.empty()) RemoveScratchDir(scratch_dir_);  // its FIFOs too
}

Result<int> HostObjects::TimerFd() {
  const int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return LastError();
  return fd;
}

std::error_code HostObjects::TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns, bool absolute) {
  itimerspec spec{};
  spec.it_value = ToTimespec(value_ns);
  spec.it_interval = ToTimespec(interval_ns);
  if (::timerfd_settime(fd, absolute ? TFD_TIMER_ABSTIME : 0, &spec, nullptr) != 0) return LastError();
  if (absolute && value_ns != 0 && value_ns <= MonotonicNow()) {
    // Due: the timer fires from the timer interrupt, a moment later. Wait for it. timerfd_poll reads the count under
    // the lock of the timer's wait queue, which the expiry holds while it counts and wakes the watchers: once poll
    // sees it, the wake-ups are done.
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, kSettleTimeoutMs) < 0 && errno == EINTR) {
    }
  }
  return {};
}

Result<int> HostObjects::SignalFd(int signal) const {
  const sigset_t set = SignalSet(Signal(signal), 1);
  const int fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return LastError();
  return fd;
}

std::error_code HostObjects::Raise(int signal) const {
  // Blocked (BlockTraceSignals), so it stays pending for this thread, where its signalfds see it. The signalfds'
  // watchers are woken within the call (signalfd_notify).
  BlockTraceSignals();
  if (::syscall(SYS_tgkill, ::getpid(), ::gettid(), Signal(signal)) != 0) return LastError();
  return {};
}

int HostObjects::TraceSignal(int signo) const {
  const int k = signo - base_;
  return k >= 1 && k <= static_cast<int>(kTraceSignals) ? k : 0;
}

Result<int> HostObjects::Listen() {
  Result<UniqueFd> fd = BoundSocket(SOCK_STREAM);
  if (!fd.ok()) return fd.error();
  if (std::error_code e = SetLinger(fd.value().get(), 1, kLingerSeconds)) return e;
  if (::listen(fd.value().get(), kListenBacklog) != 0) return LastError();
  return fd.value().Release();
}

Result<int> HostObjects::Connect(int listener) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return LastError();
  if (addr.sin_family != AF_INET) return Errno(EAFNOSUPPORT);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return LastError();
  if (std::error_code e = SetLinger(fd.get(), 1, kLingerSeconds)) return e;
  // The handshake ends in a softirq: the client's ACK makes the listener queue the connection and wake its watchers.
  // Watch for that wake-up, or for an error of the client (a reset: nothing listens).
  WakeWatch watch;
  watch.Add(listener, EPOLLIN);
  const sockaddr_in to = Loopback(addr.sin_port);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0 && errno != EINPROGRESS) {
    return LastError();
  }
  watch.Add(fd.get(), EPOLLERR, /*drain=*/false);
  (void)watch.Await();
  tcp_info info{};
  (void)TcpInfo(fd.get(), &info);  // the client's own processing of the handshake has ended too
  if (const int error = SocketError(fd.get()); error != 0) return Errno(error);
  return fd.Release();
}

Result<int> HostObjects::Accept(int listener) {
  UniqueFd fd(::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd.valid()) return LastError();
  if (std::error_code e = SetLinger(fd.get(), 1, kLingerSeconds)) return e;
  return fd.Release();
}

std::error_code HostObjects::UdpPair(int out[2]) {
  Result<UniqueFd> a = BoundSocket(SOCK_DGRAM);
  if (!a.ok()) return a.error();
  Result<UniqueFd> b = BoundSocket(SOCK_DGRAM);
  if (!b.ok()) return b.error();
  sockaddr_in addr_a{};
  sockaddr_in addr_b{};
  if (!LocalAddress(a.value().get(), &addr_a) || !LocalAddress(b.value().get(), &addr_b)) return LastError();
  if (::connect(a.value().get(), reinterpret_cast<const sockaddr*>(&addr_b), sizeof(addr_b)) != 0 ||
      ::connect(b.value().get(), reinterpret_cast<const sockaddr*>(&addr_a), sizeof(addr_a)) != 0) {
    return LastError();
  }
  out[0] = a.value().Release();
  out[1] = b.value().Release();
  return {};
}

std::error_code HostObjects::Fifo(std::string_view name, bool read_end, bool write_end, int out[2]) {
  out[0] = out[1] = -1;
  if (scratch_dir_.empty()) {
    Result<std::string> dir = MakeScratchDir("epollcr-fifo-");
    if (!dir.ok()) return dir.error();
    scratch_dir_ = dir.value();
  }
  const std::string path = scratch_dir_ + "/" + std::string(name);
  if (std::find(fifos_.begin(), fifos_.end(), path) == fifos_.end()) {
    if (::mkfifo(path.c_str(), 0600) != 0) return LastError();
    fifos_.push_back(path);
  }
  UniqueFd reader;
  if (read_end) {
    reader.Reset(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!reader.valid()) return LastError();
  }
  UniqueFd writer;
  if (write_end) {
    writer.Reset(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!writer.valid()) return LastError();  // ENXIO: no reader
  }
  out[0] = reader.Release();
  out[1] = writer.Release();
  return {};
}

std::error_code HostObjects::LingerReset(int fd) { return SetLinger(fd, 1, 0); }

int FindPeer(int fd, std::span<const int> candidates) {
  sockaddr_in local{};
  sockaddr_in peer{};
  if (!LocalAddress(fd, &local) || !PeerAddress(fd, &peer)) return -1;
  for (int candidate : candidates) {
    sockaddr_in their_local{};
    sockaddr_in their_peer{};
    if (candidate == fd || !LocalAddress(candidate, &their_local) || !SameAddress(their_local, peer) ||
        !PeerAddress(candidate, &their_peer) || !SameAddress(their_peer, local)) {
      continue;
    }
    return candidate;
  }
  return -1;
}

void AwaitAcknowledged(int fd) {
  Backoff backoff;
  do {
    int queued = 0;
    tcp_info info{};
    // SIOCOUTQ of a connection: bytes (and FIN) sent and not acknowledged. TCP_INFO after it: the processing of the
    // ACK that emptied it has ended.
    if (::ioctl(fd, SIOCOUTQ, &queued) != 0 || !TcpInfo(fd, &info)) return;
    if (queued == 0 || info.tcpi_state == TCP_CLOSE || info.tcpi_state == TCP_LISTEN) return;
  } while (backoff.Sleep());
}

void AwaitClosed(int peer) {
  if (peer < 0) return;
  Backoff backoff;
  do {
    tcp_info info{};
    if (!TcpInfo(peer, &info) || info.tcpi_state == TCP_CLOSE) return;
  } while (backoff.Sleep());
}

WakeWatch::WakeWatch() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {}

WakeWatch::~WakeWatch() { Remove(); }

void WakeWatch::Add(int fd, std::uint32_t events, bool drain) {
  if (epoll_ < 0 || fd < 0) return;
  epoll_event event{};
  event.events = events | EPOLLET;
  event.data.fd = fd;
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0) return;
  fds_.push_back(fd);
  if (drain) {
    // What is ready now does not count: an edge-triggered entry is queued again only by a wake-up from here on.
    epoll_event ready[4];
    while (::epoll_wait(epoll_, ready, 4, 0) == 4) {
    }
  }
}

int WakeWatch::Await() {
  int fired = -1;
  if (epoll_ >= 0 && !fds_.empty()) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kSettleTimeoutMs);
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      epoll_event event{};
      const int n = ::epoll_wait(epoll_, &event, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
      if (n == 1) {
        fired = event.data.fd;
        break;
      }
      if (n == 0 || errno != EINTR) break;
    }
  }
  Remove();
  return fired;
}

void WakeWatch::Remove() {
  // EPOLL_CTL_DEL takes the lock of the file's wait queue, which a wake-up holds for its whole walk: a walk that woke
  // this epoll has ended, and has woken every other watcher of the file, when the DEL returns.
  for (int fd : fds_) (void)::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
  fds_.clear();
  if (epoll_ >= 0) ::close(epoll_);
  epoll_ = -1;
}

}  // namespace epollcr::replay::host
