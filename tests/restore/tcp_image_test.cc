// restore/tcp_image.h: TCP sockets by value through a whole image. A world of a loopback connection and a listener in
// an EventPoll is saved by value, the old sockets close silently, and a forked child that closed every fd it inherited
// (nothing of the old sockets reaches it) restores the image. The oracles: the byte streams (each side writes a known
// pattern and the reader checks every byte: none lost, none repeated) and the kernel's epoll, which the child asks
// about the same fds with the same registrations. Also what cannot be saved by value (with and without the fallback
// to references), a restore whose rebuild fails, and records validation refuses. Runs as root (CAP_NET_ADMIN).
#include "restore/tcp_image.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "byte_stream.h"
#include "epollcr/epollcr.h"
#include "image/codec.h"
#include "loopback.h"
#include "open_fds.h"
#include "tcp_records.h"

namespace epollcr::restore {
namespace {

using epollcr::testing::OpenFds;
using epollcr::testing::ValidConnection;
using epollcr::testing::ValidListener;

int IntOption(int fd, int level, int name) {
  int value = -1;
  socklen_t size = sizeof value;
  return ::getsockopt(fd, level, name, &value, &size) == 0 ? value : -1;
}

// A listener, a client connected to it and the server side it accepted; a world holding the listener and the server
// side (as host files at their own fd numbers) in an EventPoll: server IN|OUT|RDHUP (data 1), listener IN (data 2).
struct Service {
  sockaddr_storage address{};
  socklen_t size = 0;
  int listener = -1, client = -1, server = -1;
  World world;
  std::shared_ptr<EventPoll> poll;

  bool Open(int family) {
    listener = Listen(family, 8, &address, &size);
    if (listener < 0) return false;
    int on = 1;  // as servers do: a rebuilt listener may bind while a connection it accepted still has the port
    if (::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0) return false;
    if (::fcntl(listener, F_SETFL, O_NONBLOCK) != 0) return false;
    client = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(client, reinterpret_cast<sockaddr*>(&address), size) != 0) return false;
    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return false;
    server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (server < 0) return false;
    poll = EventPoll::Create();
    for (int fd : {listener, server}) {
      Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
      if (!file.ok() || world.fds.InstallAt(fd, file.value())) return false;
    }
    if (!world.fds.Install(poll).ok()) return false;
    return !poll->AddEntry({world.fds.Get(server).get(), server}, EntryFlags{}, kEventIn | kEventOut | kEventRdHup, 1) &&
           !poll->AddEntry({world.fds.Get(listener).get(), listener}, EntryFlags{}, kEventIn, 2);
  }
  ~Service() {
    world.roots.clear();
    world.fds.Clear();  // closes what the host files still own
    if (client >= 0) ::close(client);
  }
};

// Writes stream `tag` from `*at` into the non-blocking `fd` until the kernel takes no more; returns how many it took.
std::size_t WriteUntilFull(int fd, char tag, std::uint64_t* at) {
  std::size_t total = 0;
  for (;;) {
    const std::string chunk = Pattern(tag, *at, 16384);
    const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) return total;
    *at += static_cast<std::uint64_t>(n);
    total += static_cast<std::size_t>(n);
  }
}

// What a wait reports, as sorted "data:events" words, so two pollers' answers compare whatever their order.
std::set<std::string> Reported(const std::vector<std::pair<std::uint64_t, std::uint32_t>>& events) {
  std::set<std::string> out;
  for (const auto& [data, bits] : events) out.insert(std::to_string(data) + ":" + std::to_string(bits));
  return out;
}

std::set<std::string> WaitWorld(EventPoll& poll) {
  Event events[8];
  Result<int> n = poll.Wait(events, 8, 0);
  std::vector<std::pair<std::uint64_t, std::uint32_t>> got;
  for (int i = 0; n.ok() && i < n.value(); ++i) got.emplace_back(events[i].Data(), events[i].events);
  return Reported(got);
}

std::set<std::string> WaitKernel(int epoll) {
  epoll_event events[8];
  const int n = ::epoll_wait(epoll, events, 8, 0);
  std::vector<std::pair<std::uint64_t, std::uint32_t>> got;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t data = events[i].data.u64;  // epoll_event is packed: copied, not bound
    const std::uint32_t bits = events[i].events;
    got.emplace_back(data, bits);
  }
  return Reported(got);
}

std::string Text(const std::set<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += w + " ";
  return out;
}

// The new process's side: restores the image from `image_fd` alone, then serves the connection and compares its
// poll with a kernel epoll over the same fds. "" or what went wrong.
std::string RestoreAndServe(int image_fd, int old_server, int old_listener, std::size_t unread, std::uint64_t client_at,
                            std::uint64_t server_at) {
  std::string bytes(static_cast<std::size_t>(::lseek(image_fd, 0, SEEK_END)), '\0');
  if (::pread(image_fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) return "reading the image";
  ::close(image_fd);
  if (OpenFds() != 3) return std::to_string(OpenFds()) + " fds open before the restore: something was inherited";
  World world;
  TcpResolver tcp;
  Options options;
  options.resolvers = {&tcp};
  Report report;
  if (Status s = RestoreBytes(bytes, &world, options, &report); !s.ok()) return "restore: " + s.message;
  ::kill(::getppid(), SIGUSR1);  // the client may read again (docs/restore.md, "The gap between the close and ...")
  if (report.host_files != 2) return "restored " + std::to_string(report.host_files) + " sockets, not 2";
  std::shared_ptr<EventPoll> poll;
  int server = -1, listener = -1;
  for (int fd = 0; fd < 64; ++fd) {
    std::shared_ptr<File> f = world.fds.Get(fd);
    if (!f) continue;
    if (f->builtin() == File::Builtin::kEventPoll) poll = std::static_pointer_cast<EventPoll>(f);
    if (f->builtin() == File::Builtin::kHost) (IntOption(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1 ? listener : server) = fd;
  }
  if (!poll || server < 0 || listener < 0) return "the restored world lacks its poll or a socket";
  if (server != old_server || listener != old_listener) return "the sockets are not at their old fd numbers";
  // The registrations the old process made, under the sockets' own fd numbers.
  std::set<std::string> registered;
  for (const EntryInfo& e : poll->Entries()) {
    registered.insert(std::to_string(e.fd) + ":" + std::to_string(e.events) + ":" + std::to_string(e.data));
  }
  const std::set<std::string> made = {
      std::to_string(server) + ":" + std::to_string(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLERR | EPOLLHUP) + ":1",
      std::to_string(listener) + ":" + std::to_string(EPOLLIN | EPOLLERR | EPOLLHUP) + ":2"};
  if (registered != made) return "registrations " + Text(registered) + "instead of " + Text(made);
  // The oracle: a kernel epoll with the same registrations as the restored poll's entries.
  const int kernel = ::epoll_create1(EPOLL_CLOEXEC);
  for (const EntryInfo& e : poll->Entries()) {
    epoll_event ev{};
    ev.events = e.events;
    ev.data.u64 = e.data;
    if (::epoll_ctl(kernel, EPOLL_CTL_ADD, e.fd, &ev) != 0) return "epoll_ctl " + std::string(std::strerror(errno));
  }
  std::string error;
  auto same = [&](const char* when) {
    const std::set<std::string> ours = WaitWorld(*poll), theirs = WaitKernel(kernel);
    if (ours != theirs && error.empty()) error = std::string(when) + ": epollcr " + Text(ours) + "kernel " + Text(theirs);
    return ours;
  };
  if (same("after the restore").count("1:" + std::to_string(EPOLLIN | EPOLLOUT)) == 0 && error.empty()) {
    error = "the unread bytes do not show as EPOLLIN";
  }
  // Every byte the client sent: the ones the old socket had queued, then the ones it dropped after the capture.
  if (std::string e = ReadExactly(server, 'c', 0, unread); !e.empty()) return "upstream: " + e;
  same("after reading");
  // A MiB each way at once.
  std::string down;
  std::thread writer([&] { down = SendAll(server, Pattern('s', server_at, 1 << 20)); });
  std::string up = ReadExactly(server, 'c', client_at, 1 << 20);
  writer.join();
  if (!up.empty() || !down.empty()) return "stream: " + up + down;
  char extra;
  if (::recv(server, &extra, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN) return "a byte more than was sent";
  same("after the streams");
  // The rebuilt listener accepts: the client's second connection shows on both.
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return "no second connection";
  if (same("with a connection to accept").count("2:" + std::to_string(EPOLLIN)) == 0 && error.empty()) {
    error = "the listener's connection does not show";
  }
  const int second = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (second < 0) return "accept: " + std::string(std::strerror(errno));
  ::close(second);
  ::shutdown(server, SHUT_WR);  // the client sees an orderly end
  ::close(kernel);
  return error;
}

class TcpImageTest : public ::testing::TestWithParam<int> {};

TEST_P(TcpImageTest, ConnectionsMoveByValueToAProcessThatInheritedNothing) {
  Service s;
  ASSERT_TRUE(s.Open(GetParam())) << std::strerror(errno);
  int on = 1;
  ASSERT_EQ(::setsockopt(s.server, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on), 0);
  std::uint64_t client_at = 0, server_at = 0;
  ASSERT_EQ(SendAll(s.client, Pattern('c', 0, 40000)), "");  // the server reads none before the move
  client_at = 40000;
  const std::size_t downstream = WriteUntilFull(s.server, 's', &server_at);  // the client reads none before it
  ASSERT_GT(downstream, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // nothing in flight on loopback after this

  TcpByValue saver;
  Result<std::string> image = saver.Save(s.world);
  ASSERT_TRUE(image.ok()) << image.status().message;
  EXPECT_EQ(saver.connections(), 1u);
  EXPECT_EQ(saver.listeners(), 1u);
  EXPECT_TRUE(saver.by_reference().empty());
  // The client does not stop for the move: the old socket drops these, and the client sends them again to the new.
  ASSERT_EQ(SendAll(s.client, Pattern('c', client_at, 3000)), "");
  client_at += 3000;
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // past the client's tail loss probe
  const int image_fd = ::memfd_create("tcp-image", MFD_CLOEXEC);
  ASSERT_EQ(::write(image_fd, image.value().data(), image.value().size()), static_cast<ssize_t>(image.value().size()));
  // Until the child has restored, no socket holds the connection: the client must not read meanwhile, or its window
  // update would meet a reset. The child says so with SIGUSR1 (no fd: it inherits none).
  sigset_t restored, before;
  sigemptyset(&restored);
  sigaddset(&restored, SIGUSR1);
  ASSERT_EQ(::sigprocmask(SIG_BLOCK, &restored, &before), 0);
  saver.CloseAll();
  const pid_t child = ::fork();
  if (child == 0) {
    // Nothing inherited but the image (and the standard streams, for the report).
    ::close_range(3, static_cast<unsigned>(image_fd) - 1, 0);
    ::close_range(static_cast<unsigned>(image_fd) + 1, ~0u, 0);
    const std::string error = RestoreAndServe(image_fd, s.server, s.listener, 43000, client_at, server_at);
    if (!error.empty()) std::fprintf(stderr, "child: %s\n", error.c_str());
    ::_exit(error.empty() ? 0 : 1);
  }
  ::close(image_fd);
  const timespec limit{20, 0};
  const int signal = ::sigtimedwait(&restored, nullptr, &limit);
  ::sigprocmask(SIG_SETMASK, &before, nullptr);
  EXPECT_EQ(signal, SIGUSR1) << "the child did not restore within 20 s";
  EXPECT_EQ(ReadExactly(s.client, 's', 0, downstream), "");
  std::string up;
  std::thread writer([&] { up = SendAll(s.client, Pattern('c', client_at, 1 << 20)); });
  EXPECT_EQ(ReadExactly(s.client, 's', server_at, 1 << 20), "");
  writer.join();
  EXPECT_EQ(up, "");
  const int second = ::socket(GetParam(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(::connect(second, reinterpret_cast<sockaddr*>(&s.address), s.size), 0) << std::strerror(errno);
  char byte;
  pollfd p{s.client, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 20000), 1);
  EXPECT_EQ(::recv(s.client, &byte, 1, 0), 0) << "not an orderly end: " << std::strerror(errno);
  ::close(second);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the restored side failed (its stderr says why)";
}

INSTANTIATE_TEST_SUITE_P(Families, TcpImageTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == AF_INET ? std::string("IPv4") : std::string("IPv6");
                         });

// The connection goes on after a failed or called-off save: out of repair mode, no filter, bytes flow both ways.
std::string StillWorks(const Service& s) {
  if (IntOption(s.server, IPPROTO_TCP, TCP_REPAIR) != 0) return "left in repair mode";
  if (IntOption(s.server, SOL_SOCKET, SO_REUSEADDR) != 1) return "SO_REUSEADDR lost";
  socklen_t blocks = 0;
  if (::getsockopt(s.server, SOL_SOCKET, SO_GET_FILTER, nullptr, &blocks) != 0 || blocks != 0) return "filter left on";
  std::uint64_t at = 0;
  std::string e = SendAll(s.client, Pattern('c', 0, 1000));
  e += ReadExactly(s.server, 'c', 0, 1000);
  if (!e.empty()) return e;
  return Stream(s.server, s.client, 's', &at, 4096);
}

// A UNIX socket and a UDP socket cannot move by value: the save fails naming the fd, and the connection it had
// captured before them is left as it was. With the fallback, they stay references and the connection moves.
TEST(TcpImageRefusalTest, UnixAndUdpSocketsFailTheSaveUnlessTheyMayStayReferences) {
  Service s;
  ASSERT_TRUE(s.Open(AF_INET));
  int unix_pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, unix_pair), 0);
  const int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GT(unix_pair[0], s.server);  // after the connection in fd order: captured first, then resumed
  for (int fd : {unix_pair[0], udp}) {
    Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
    ASSERT_TRUE(file.ok());
    ASSERT_FALSE(s.world.fds.InstallAt(fd, file.value()));
  }
  const int before = OpenFds();
  TcpByValue strict;
  Result<std::string> refused = strict.Save(s.world);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error(), std::errc::operation_not_supported);
  EXPECT_NE(refused.status().message.find("host fd " + std::to_string(unix_pair[0]) + "): cannot be recorded by value: a UNIX socket"),
            std::string::npos)
      << refused.status().message;
  EXPECT_EQ(OpenFds(), before);
  EXPECT_EQ(StillWorks(s), "");

  TcpByValue lenient(true);
  Result<std::string> saved = lenient.Save(s.world);
  ASSERT_TRUE(saved.ok()) << saved.status().message;
  ASSERT_EQ(lenient.by_reference().size(), 2u);
  EXPECT_EQ(lenient.by_reference()[0].fd, unix_pair[0]);
  EXPECT_NE(lenient.by_reference()[0].reason.find("UNIX"), std::string::npos);
  EXPECT_EQ(lenient.by_reference()[1].fd, udp);
  EXPECT_NE(lenient.by_reference()[1].reason.find("UDP"), std::string::npos);
  Result<v1::Image> decoded = image::Decode(std::string_view(saved.value()).substr(32));
  ASSERT_TRUE(decoded.ok());
  int by_value = 0, by_reference = 0;
  for (const v1::File& f : decoded.value().files()) {
    by_value += f.has_tcp_connection() || f.has_tcp_listener();
    by_reference += f.has_host();
  }
  EXPECT_EQ(by_value, 2);
  EXPECT_EQ(by_reference, 2);
  EXPECT_FALSE(lenient.Resume());  // called off: the connection carries on
  EXPECT_EQ(StillWorks(s), "");
  ::close(unix_pair[1]);
}

// A connection mid-close (the peer sent its FIN: CLOSE_WAIT) cannot move: the save fails naming the fd, or with the
// fallback leaves it a reference.
TEST(TcpImageRefusalTest, AConnectionMidCloseFailsTheSaveUnlessItMayStayAReference) {
  Service s;
  ASSERT_TRUE(s.Open(AF_INET));
  ASSERT_EQ(::shutdown(s.client, SHUT_WR), 0);
  pollfd p{s.server, POLLRDHUP, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  TcpByValue strict;
  Result<std::string> refused = strict.Save(s.world);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error(), std::errc::invalid_argument);
  EXPECT_NE(refused.status().message.find("host fd " + std::to_string(s.server) +
                                          "): cannot be recorded by value: the connection is not established"),
            std::string::npos)
      << refused.status().message;
  TcpByValue lenient(true);
  ASSERT_TRUE(lenient.Save(s.world).ok());
  ASSERT_EQ(lenient.by_reference().size(), 1u);
  EXPECT_EQ(lenient.by_reference()[0].fd, s.server);
  EXPECT_EQ(lenient.listeners(), 1u);
  EXPECT_FALSE(lenient.Resume());
}

// Without CAP_NET_ADMIN (a child that became nobody) the save fails with EPERM naming the fd, and the connection
// still works; with the fallback the image holds it by reference.
TEST(TcpImageRefusalTest, WithoutCapNetAdminTheSaveFailsUnlessItMayStayAReference) {
  Service s;
  ASSERT_TRUE(s.Open(AF_INET));
  const pid_t child = ::fork();
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    TcpByValue strict;
    Result<std::string> refused = strict.Save(s.world);
    if (refused.ok() || refused.error() != std::errc::operation_not_permitted) ::_exit(11);
    if (refused.status().message.find("CAP_NET_ADMIN") == std::string::npos) ::_exit(12);
    if (refused.status().message.find("host fd " + std::to_string(s.server)) == std::string::npos) ::_exit(13);
    TcpByValue lenient(true);
    Result<std::string> saved = lenient.Save(s.world);
    if (!saved.ok() || lenient.by_reference().size() != 1 || lenient.by_reference()[0].fd != s.server) ::_exit(14);
    if (lenient.connections() != 0 || lenient.listeners() != 1) ::_exit(15);
    ::_exit(StillWorks(s).empty() ? 0 : 16);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A restore whose rebuild fails leaves no fd and no socket, and says which connection and why; the image can then be
// restored again. In turn: the old listener still holds its address; the old connection still holds its addresses;
// the connection's fd number is taken here (its rebuilt socket goes again, in repair mode: the peer hears nothing);
// and at last nothing is in the way.
TEST(TcpImageRestoreTest, AFailedRebuildLeavesNothingAndSaysWhich) {
  Service s;
  ASSERT_TRUE(s.Open(AF_INET));
  TcpByValue saver;
  Result<std::string> image = saver.Save(s.world);
  ASSERT_TRUE(image.ok()) << image.status().message;
  ASSERT_FALSE(saver.Resume());  // the old sockets stay for now
  const auto restore = [&](World* world) {
    TcpResolver tcp;
    Options options;
    options.resolvers = {&tcp};
    return RestoreBytes(image.value(), world, options);
  };

  int fds = OpenFds();
  const std::size_t wrapped = HostFile::WrappedFds();
  World world;
  Status failed = restore(&world);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message.find("TCP listener 127.0.0.1:"), std::string::npos) << failed.message;
  EXPECT_NE(failed.message.find("at fd " + std::to_string(s.listener) + ": bind: Address already in use"),
            std::string::npos)
      << failed.message;
  EXPECT_EQ(OpenFds(), fds);
  EXPECT_EQ(HostFile::WrappedFds(), wrapped);
  EXPECT_EQ(world.fds.Count(), 0);

  ASSERT_FALSE(s.world.fds.Close(s.listener));  // its host file closes it
  fds = OpenFds();
  failed = restore(&world);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message.find("TCP connection 127.0.0.1:"), std::string::npos) << failed.message;
  EXPECT_NE(failed.message.find("at fd " + std::to_string(s.server) + ": connect"), std::string::npos) << failed.message;
  EXPECT_EQ(OpenFds(), fds);
  EXPECT_EQ(world.fds.Count(), 0);
  const int rebind = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;  // the old connection keeps the port: only a listener there would refuse this bind
  ::setsockopt(rebind, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  EXPECT_EQ(::bind(rebind, reinterpret_cast<sockaddr*>(&s.address), s.size), 0) << "the rebuilt listener was left open";
  ::close(rebind);

  auto old = std::static_pointer_cast<HostFile>(s.world.fds.Get(s.server));
  const int server = old->ReleaseFd();
  CloseTcpSilently(server);
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_EQ(::fcntl(null, F_DUPFD_CLOEXEC, server), server);  // the connection's number, nothing else
  ::close(null);
  fds = OpenFds();
  failed = restore(&world);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message.find("at fd " + std::to_string(server) + ": fd " + std::to_string(server) +
                                " is in use in this process"),
            std::string::npos)
      << failed.message;
  EXPECT_EQ(OpenFds(), fds);
  tcp_info info{};
  socklen_t size = sizeof info;
  ASSERT_EQ(::getsockopt(s.client, IPPROTO_TCP, TCP_INFO, &info, &size), 0);
  EXPECT_EQ(info.tcpi_state, TCP_ESTABLISHED) << "the peer heard a close";

  ::close(server);  // /dev/null's
  Report report;
  TcpResolver tcp;
  Options options;
  options.resolvers = {&tcp};
  ASSERT_TRUE(RestoreBytes(image.value(), &world, options, &report).ok());
  EXPECT_EQ(report.host_files, 2u);
  std::uint64_t up = 0, down = 0;
  EXPECT_EQ(Stream(s.client, server, 'c', &up, 1 << 16), "");
  EXPECT_EQ(Stream(server, s.client, 's', &down, 1 << 16), "");
  world.fds.Clear();
}

// Each bad value is refused by validation, with the file and what is wrong, and a restore creates nothing.
TEST(TcpImageValidationTest, BadRecordsAreRefusedWithTheReason) {
  World empty;
  Result<v1::Image> base = image::Capture(empty);
  ASSERT_TRUE(base.ok());
  v1::File* connection = base.value().add_files();
  connection->set_id(1);
  *connection->mutable_tcp_connection() = ValidConnection();
  v1::File* listener = base.value().add_files();
  listener->set_id(2);
  *listener->mutable_tcp_listener() = ValidListener();
  ASSERT_TRUE(image::Validate(base.value()).ok()) << image::Validate(base.value()).message;

  struct Case {
    const char* expected;
    std::function<void(v1::TcpConnectionState&, v1::TcpListenerState&)> spoil;
  };
  const Case cases[] = {
      {"file 1: TCP connection: fd -1 is negative", [](auto& c, auto&) { c.set_fd(-1); }},
      {"local: address family 3 is not IPv4 or IPv6", [](auto& c, auto&) { c.mutable_local()->set_family(static_cast<v1::AddressFamily>(3)); }},
      {"remote: 5 address bytes (4 for its family)", [](auto& c, auto&) { c.mutable_remote()->set_address("12345"); }},
      {"remote: port 0 is not 1..65535", [](auto& c, auto&) { c.mutable_remote()->set_port(0); }},
      {"local: port 70000 is not 1..65535", [](auto& c, auto&) { c.mutable_local()->set_port(70000); }},
      {"local and remote addresses of different families", [](auto& c, auto&) {
         c.mutable_remote()->set_family(v1::ADDRESS_FAMILY_IPV6);
         c.mutable_remote()->set_address(std::string(15, '\0') + "\x01");
       }},
      {"the unspecified address", [](auto& c, auto&) { c.mutable_remote()->set_address(std::string(4, '\0')); }},
      {"an IPv4 address with an IPv6 flow label", [](auto& c, auto&) { c.mutable_local()->set_scope_id(2); }},
      {"the receive queue's 131073 bytes exceed its buffer of 131072",
       [](auto& c, auto&) { c.set_unread(std::string(131073, 'x')); }},
      {"the send queue's 16385 bytes exceed its buffer of 16384", [](auto& c, auto&) { c.set_unacked(std::string(16383, 'x')); }},
      {"a buffer size that is not positive", [](auto& c, auto&) { c.set_receive_buffer(0); }},
      {"MSS 0 is not 1..65535", [](auto& c, auto&) { c.set_mss(0); }},
      {"a window scale above 14", [](auto& c, auto&) { c.set_receive_window_scale(15); }},
      {"window scales without window scaling", [](auto& c, auto&) { c.set_window_scaling(false); }},
      {"a timestamp clock without timestamps", [](auto& c, auto&) { c.set_timestamp(9); }},
      {"rcv_wup is after the receive sequence", [](auto& c, auto&) { c.mutable_window()->set_rcv_wup(5001); }},
      {"snd_wl1 is after the receive window's end", [](auto& c, auto&) { c.mutable_window()->set_snd_wl1(5000 + 65536); }},
      {"keepalive timers outside Linux's limits", [](auto& c, auto&) { c.set_keepalive_count(128); }},
      {"file flags 0x1 are not a socket's", [](auto& c, auto&) { c.set_file_flags(O_WRONLY); }},
      {"file 2: TCP listener: fd 5 is another by-value socket's too", [](auto&, auto& l) { l.set_fd(5); }},
      {"file 2: TCP listener: a negative backlog", [](auto&, auto& l) { l.set_backlog(-1); }},
      {"IPV6_V6ONLY on an IPv4 listener", [](auto&, auto& l) {
         l.mutable_local()->set_family(v1::ADDRESS_FAMILY_IPV4);
         l.mutable_local()->set_address(std::string(4, '\0'));
       }},
      {"file 2: TCP listener: local: port 0", [](auto&, auto& l) { l.mutable_local()->set_port(0); }},
  };
  const int fds = OpenFds();
  for (const Case& c : cases) {
    v1::Image bad = base.value();
    c.spoil(*bad.mutable_files(0)->mutable_tcp_connection(), *bad.mutable_files(1)->mutable_tcp_listener());
    Status s = image::Validate(bad);
    EXPECT_EQ(s.code, std::errc::invalid_argument) << c.expected;
    EXPECT_NE(s.message.find(c.expected), std::string::npos) << s.message;
    World world;
    TcpResolver tcp;
    Options options;
    options.resolvers = {&tcp};
    EXPECT_FALSE(Restore(bad, &world, options).ok());
    EXPECT_EQ(OpenFds(), fds) << c.expected;
  }
  // An image restored without the resolver names what it lacks.
  World world;
  Status unresolved = Restore(base.value(), &world);
  EXPECT_NE(unresolved.message.find("file 1 (TCP connection at fd 5): no resolver has it"), std::string::npos)
      << unresolved.message;
}

}  // namespace
}  // namespace epollcr::restore
