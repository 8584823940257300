#include "inspect_server.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <atomic>
#include <mutex>
#include <new>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

namespace epollcr::preload {
namespace {

// The server's own calls go around the interposer: close and fcntl are interposed, and these fds are none of the
// program's.
void RawClose(int fd) { (void)::syscall(SYS_close, fd); }

// The server's socket (-1 when this process has no server) and thread. Changed under `start_stop`, and in a forked
// child (ForgetInspectServerAfterFork runs in the child alone); read without it by the interposed closes.
std::mutex start_stop;
std::atomic<int> server_fd{-1};
pthread_t server_thread;
std::atomic<bool> stopping{false};

struct ServerArgs {
  int fd;
  InspectSnapshot snapshot;
};

// Whether a peer of user `uid` may see this process: root, or the process's own user while the process is dumpable
// (what /proc asks before it shows the process's fds). Empty when it may; else why not.
std::string Refusal(uid_t uid) {
  if (uid == 0) return {};
  uid_t real = 0, effective = 0, saved = 0;
  if (::getresuid(&real, &effective, &saved) != 0) return "this process's user ids cannot be read";
  if (uid != real || uid != effective || uid != saved) {
    return "uid " + std::to_string(uid) + " is not this process's user (only it and root may look inside)";
  }
  if (::prctl(PR_GET_DUMPABLE) != 1) return "this process is not dumpable: only root may look inside";
  return {};
}

// Sends `bytes` to `peer` in datagrams of at most kChunk bytes, in order (a Unix datagram socket neither loses nor
// reorders them). False if the peer went away or stopped reading for the socket's send timeout.
constexpr std::size_t kChunk = 1 << 16;
bool SendAll(int fd, const sockaddr_un& peer, socklen_t peer_size, std::string_view bytes) {
  do {
    const std::size_t n = std::min(bytes.size(), kChunk);
    ssize_t sent;
    do {
      sent = ::sendto(fd, bytes.data(), n, MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&peer), peer_size);
    } while (sent < 0 && errno == EINTR);
    if (sent != static_cast<ssize_t>(n)) return false;
    bytes.remove_prefix(n);
  } while (!bytes.empty());
  return true;
}

void Answer(int fd, const sockaddr_un& peer, socklen_t peer_size, uid_t uid, const InspectSnapshot& snapshot) {
  const std::string magic = kInspectMagic;
  if (const std::string refusal = Refusal(uid); !refusal.empty()) {
    (void)SendAll(fd, peer, peer_size, magic + " refused " + refusal + "\n");
    return;
  }
  Result<std::string> image = snapshot();
  if (!image.ok()) {
    (void)SendAll(fd, peer, peer_size, magic + " error " + image.status().message + "\n");
    return;
  }
  if (SendAll(fd, peer, peer_size, magic + " image " + std::to_string(image.value().size()) + "\n")) {
    (void)SendAll(fd, peer, peer_size, image.value());
  }
}

// One request at a time: a datagram with the sender's credentials (SO_PASSCRED: the kernel attaches them, and a
// process can claim no uid but its own), from a peer with an address to answer to. The control buffer holds the
// credentials alone, so an fd a peer sends along is never installed here (the kernel drops what does not fit).
void* Serve(void* raw) {
  ServerArgs* args = static_cast<ServerArgs*>(raw);
  for (;;) {
    char request[256];
    iovec io{request, sizeof request};
    sockaddr_un peer{};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    msghdr message{};
    message.msg_name = &peer;
    message.msg_namelen = sizeof peer;
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(args->fd, &message, 0);
    if (stopping.load(std::memory_order_acquire)) break;  // StopInspectServer shut the socket down
    if (n < 0) {
      if (errno == EINTR || errno == ENOMEM || errno == ENOBUFS) continue;
      break;  // the program closed the socket (EBADF, ENOTSOCK): the server ends
    }
    const cmsghdr* c = CMSG_FIRSTHDR(&message);
    if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS ||
        message.msg_namelen <= offsetof(sockaddr_un, sun_path)) {
      continue;  // no credentials, or no address to answer to
    }
    ucred credentials{};
    std::memcpy(&credentials, CMSG_DATA(c), sizeof credentials);
    Answer(args->fd, peer, message.msg_namelen, credentials.uid, args->snapshot);
  }
  delete args;
  return nullptr;
}

// Binds `fd` to "epollcr-ps-PID" in the abstract namespace, or "epollcr-ps-PID-N" if that is taken.
bool Bind(int fd) {
  const std::string base = std::string(kInspectSocketPrefix) + std::to_string(::getpid());
  for (int attempt = 0; attempt < 16; ++attempt) {
    const std::string name = attempt == 0 ? base : base + "-" + std::to_string(attempt);
    sockaddr_un address;
    const socklen_t size = AbstractAddress(name, &address);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), size) == 0) return true;
    if (errno != EADDRINUSE) return false;
  }
  return false;
}

}  // namespace

void StartInspectServer(int fd_floor, InspectSnapshot snapshot) {
  std::lock_guard lock(start_stop);
  if (server_fd.load() >= 0) return;
  const int made = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (made < 0) return;
  int fd = static_cast<int>(::syscall(SYS_fcntl, made, F_DUPFD_CLOEXEC, fd_floor));
  if (fd >= 0) {
    RawClose(made);
  } else {
    fd = made;
  }
  const int on = 1;
  timeval limit{5, 0};  // a peer that stops reading does not hold the server
  if (::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) != 0 || !Bind(fd)) {
    RawClose(fd);
    return;
  }
  auto* args = new ServerArgs{fd, std::move(snapshot)};
  // Every signal blocked in the thread from its first instruction: a signal for the process goes to the program's
  // threads, as it would without the interposer.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  stopping.store(false);
  const int error = pthread_create(&server_thread, nullptr, Serve, args);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (error != 0) {
    delete args;
    RawClose(fd);
    return;
  }
  server_fd.store(fd);
}

void StopInspectServerIfIn(unsigned first, unsigned last) {
  const auto in = [&](int fd) {
    return fd >= 0 && static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last;
  };
  if (!in(server_fd.load(std::memory_order_relaxed))) return;  // the common case: no lock
  pthread_t thread;
  {
    std::lock_guard lock(start_stop);
    const int fd = server_fd.load();
    if (!in(fd)) return;
    stopping.store(true, std::memory_order_release);
    (void)::shutdown(fd, SHUT_RDWR);  // a blocked recvmsg returns
    thread = server_thread;
    server_fd.store(-1);
  }
  // Outside the lock: the thread may be taking a snapshot, which waits for the interposer's lock, whose holder may be
  // starting a server.
  pthread_join(thread, nullptr);
}

void ForgetInspectServerAfterFork() {
  new (&start_stop) std::mutex();  // the parent's state of it is not the child's business
  const int fd = server_fd.load();
  if (fd >= 0) RawClose(fd);
  server_fd.store(-1);
}

}  // namespace epollcr::preload
