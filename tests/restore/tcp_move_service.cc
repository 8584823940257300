// The service process of tcp_move_netns_test: an echo service whose whole state is an epollcr world (a listener and
// its accepted connections as host files, registered in an EventPoll), started by the test in a network namespace.
//
//   tcp_move_service serve IMAGE N [nolock]
//                                      listens on 10.77.0.1:7777, prints "ready", accepts N connections and echoes;
//                                      on a byte from stdin saves the world by value into the image file IMAGE (with
//                                      no network lock if `nolock`), closes its sockets in repair mode, prints
//                                      "saved LOCK" and exits
//   tcp_move_service restore IMAGE     restores the world from IMAGE alone (it inherits no fd), prints
//                                      "restored LOCK elsewhere=0|1", and echoes until every connection has ended
//
// Each read is echoed in full before the next, so the service owes nothing when it saves. Errors go to stderr and
// exit 1; the whole life is bounded by an alarm.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "epollcr/epollcr.h"
#include "image/codec.h"
#include "image/file.h"
#include "restore/tcp_image.h"

namespace {

using namespace epollcr;

int Fail(const std::string& what) {
  std::fprintf(stderr, "tcp_move_service: %s\n", what.c_str());
  return 1;
}

void Say(const std::string& line) {
  const std::string text = line + "\n";
  (void)!::write(1, text.data(), text.size());
}

// Writes all of `bytes` to the non-blocking socket `fd`, waiting for room. False if the connection failed.
bool WriteAll(int fd, const char* bytes, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, bytes, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    if (w <= 0) return false;
    bytes += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

struct Service {
  World world;
  std::shared_ptr<EventPoll> poll;
  int listener = -1;
  int open_connections = 0;

  bool Watch(int fd, std::uint64_t data) {
    Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
    return file.ok() && !world.fds.InstallAt(fd, file.value()) &&
           !poll->AddEntry({world.fds.Get(fd).get(), fd}, EntryFlags{}, kEventIn, data);
  }

  // One round of the loop: accepts and echoes what is ready. False on a broken connection.
  bool Serve(int timeout_ms) {
    Event events[16];
    Result<int> n = poll->Wait(events, 16, timeout_ms);
    if (!n.ok()) return false;
    for (int i = 0; i < n.value(); ++i) {
      const int fd = static_cast<int>(events[i].Data());
      if (fd == listener) {
        for (int c; (c = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          if (!Watch(c, static_cast<std::uint64_t>(c))) return false;
          ++open_connections;
        }
        continue;
      }
      char buffer[16384];
      const ssize_t r = ::recv(fd, buffer, sizeof buffer, 0);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) {
        if (r < 0) std::fprintf(stderr, "tcp_move_service: recv on fd %d: %s\n", fd, std::strerror(errno));
        (void)poll->RemoveEntry({world.fds.Get(fd).get(), fd});
        (void)world.fds.Close(fd);
        --open_connections;
        if (r < 0) return false;
        continue;
      }
      if (!WriteAll(fd, buffer, static_cast<std::size_t>(r))) return false;
    }
    return true;
  }
};

int Serve(const std::string& image, int connections, bool lock) {
  Service s;
  s.poll = EventPoll::Create();
  if (!s.world.fds.Install(s.poll).ok()) return Fail("installing the poll");
  s.listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int on = 1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = inet_addr("10.77.0.1");
  address.sin_port = htons(7777);
  if (::setsockopt(s.listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      ::bind(s.listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(s.listener, 16) != 0) {
    return Fail(std::string("listen on 10.77.0.1:7777: ") + std::strerror(errno));
  }
  if (!s.Watch(s.listener, static_cast<std::uint64_t>(s.listener))) return Fail("watching the listener");
  Say("ready");
  for (;;) {
    if (!s.Serve(10)) return Fail("serving");
    pollfd control{0, POLLIN, 0};
    if (::poll(&control, 1, 0) == 1 && s.open_connections == connections) break;
  }
  restore::TcpByValue saver({.lock_network = lock});
  Result<std::string> bytes = saver.Save(s.world);
  if (!bytes.ok()) return Fail("save: " + bytes.status().message);
  const Status written = image::WriteImageFile(image, std::string_view(bytes.value()).substr(image::kHeaderSize));
  if (!written.ok()) {
    (void)saver.Resume();
    return Fail("write " + image + ": " + written.message);
  }
  saver.CloseAll();
  Say("saved " + saver.network_lock());
  return 0;
}

int Restore(const std::string& image) {
  ::close_range(3, ~0u, 0);  // nothing inherited: the image file is all it has
  Service s;
  restore::TcpResolver tcp;
  restore::Options options;
  options.resolvers = {&tcp};
  restore::Report report;
  if (Status st = restore::RestoreFile(image, &s.world, options, &report); !st.ok()) return Fail("restore: " + st.message);
  if (!tcp.unlock_error().ok()) return Fail("removing the lock: " + tcp.unlock_error().message);
  Say("restored " + tcp.network_lock() + " elsewhere=" + (tcp.network_lock_elsewhere() ? "1" : "0"));
  for (int fd = 0; fd < 1024; ++fd) {
    std::shared_ptr<File> f = s.world.fds.Get(fd);
    if (!f) continue;
    if (f->builtin() == File::Builtin::kEventPoll) s.poll = std::static_pointer_cast<EventPoll>(f);
    if (f->builtin() != File::Builtin::kHost) continue;
    int listening = 0;
    socklen_t size = sizeof listening;
    ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size);
    if (listening) {
      s.listener = fd;
    } else {
      ++s.open_connections;
    }
  }
  if (!s.poll || s.listener < 0) return Fail("the restored world lacks its poll or its listener");
  while (s.open_connections > 0) {
    if (!s.Serve(100)) return Fail("serving after the restore");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::alarm(60);
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve" && (argc == 4 || argc == 5)) {
    return Serve(argv[2], std::atoi(argv[3]), argc == 4 || std::string(argv[4]) != "nolock");
  }
  if (mode == "restore" && argc == 3) return Restore(argv[2]);
  return Fail("usage: tcp_move_service serve IMAGE N [nolock] | restore IMAGE");
}
