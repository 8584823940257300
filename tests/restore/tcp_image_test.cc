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
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/select.h>
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
#include "fault_injection.h"
#include "image/codec.h"
#include "loopback.h"
#include "open_fds.h"
#include "tcp_records.h"
#include "restore/network_lock.h"

namespace epollcr::restore {
namespace {

using epollcr::testing::OpenFds;

// The tests run in a network namespace of their own (its loopback up): their locks and connections touch nothing of
// the machine's, and whatever a failed test leaves goes with the namespace when the process ends.
class PrivateNetwork : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq lo{};
    std::strcpy(lo.ifr_name, "lo");
    ASSERT_EQ(::ioctl(fd, SIOCGIFFLAGS, &lo), 0);
    lo.ifr_flags = static_cast<short>(lo.ifr_flags | IFF_UP);
    ASSERT_EQ(::ioctl(fd, SIOCSIFFLAGS, &lo), 0) << std::strerror(errno);
    ::close(fd);
  }
};
[[maybe_unused]] ::testing::Environment* const kPrivateNetwork =
    ::testing::AddGlobalTestEnvironment(new PrivateNetwork);
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
  if (tcp.network_lock_elsewhere() || !tcp.unlock_error().ok()) {
    return "the network lock " + tcp.network_lock() + " was not removed: " + tcp.unlock_error().message;
  }
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

// A move under traffic, from the client's side: the old side saves by value (network lock or not), closes, and a
// forked child that closed every fd it inherited restores after `gap` (the close -> rebuild gap made long on purpose:
// the client's retransmissions, window updates and new bytes certainly arrive in it). The client does not stop for
// the move: from the close on it reads what the old side had queued and streams a MiB each way at once.
struct MoveResult {
  std::string client;    // "" or what the client's reader and writer saw go wrong (a reset shows here)
  bool child_ok = false;  // the restored side served every byte and saw its lock go (its stderr says why not)
  std::string lock;       // the network lock the save installed ("" without)
  bool lock_was_installed = false;  // the lock's table was in the namespace between the save and the close
  std::uint32_t retransmissions = 0;  // the client's, over the move
};

MoveResult MoveUnderTraffic(int family, bool lock, std::chrono::milliseconds gap) {
  MoveResult out;
  Service s;
  if (!s.Open(family)) {
    out.client = std::string("setting up: ") + std::strerror(errno);
    return out;
  }
  int on = 1;
  ::setsockopt(s.server, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  std::uint64_t client_at = 0, server_at = 0;
  if (std::string e = SendAll(s.client, Pattern('c', 0, 40000)); !e.empty()) {  // the server reads none before the move
    out.client = e;
    return out;
  }
  client_at = 40000;
  const std::size_t downstream = WriteUntilFull(s.server, 's', &server_at);  // the client reads none before it
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // nothing in flight on loopback after this

  TcpByValue saver({.lock_network = lock});
  Result<std::string> image = saver.Save(s.world);
  if (!image.ok() || saver.connections() != 1 || saver.listeners() != 1 || downstream == 0) {
    out.client = "save: " + (image.ok() ? std::string("not one connection and one listener") : image.status().message);
    return out;
  }
  out.lock = saver.network_lock();
  if (Result<std::vector<std::string>> locks = NetworkLocks(); locks.ok()) {
    out.lock_was_installed = std::count(locks.value().begin(), locks.value().end(), out.lock) == 1;
  }
  // The client does not stop for the move: the old socket drops these, and the client sends them again to the new.
  if (std::string e = SendAll(s.client, Pattern('c', client_at, 3000)); !e.empty()) {
    out.client = e;
    return out;
  }
  client_at += 3000;
  const int image_fd = ::memfd_create("tcp-image", MFD_CLOEXEC);
  if (::write(image_fd, image.value().data(), image.value().size()) != static_cast<ssize_t>(image.value().size())) {
    out.client = "writing the image";
    return out;
  }
  saver.CloseAll();
  const pid_t child = ::fork();
  if (child == 0) {
    // Nothing inherited but the image (and the standard streams, for the report).
    ::close_range(3, static_cast<unsigned>(image_fd) - 1, 0);
    ::close_range(static_cast<unsigned>(image_fd) + 1, ~0u, 0);
    std::this_thread::sleep_for(gap);
    const std::string error = RestoreAndServe(image_fd, s.server, s.listener, 43000, client_at, server_at);
    if (!error.empty()) std::fprintf(stderr, "child: %s\n", error.c_str());
    ::_exit(error.empty() ? 0 : 1);
  }
  ::close(image_fd);
  std::string up;
  std::thread writer([&] { up = SendAll(s.client, Pattern('c', client_at, 1 << 20)); });
  out.client = ReadExactly(s.client, 's', 0, downstream);
  if (out.client.empty()) out.client = ReadExactly(s.client, 's', server_at, 1 << 20);
  if (!out.client.empty()) ::shutdown(s.client, SHUT_RDWR);  // the writer stops too
  writer.join();
  // A reset is reported once, to whichever of the reader and the writer calls first: both are kept.
  if (!up.empty()) out.client += (out.client.empty() ? "" : "; writer: ") + up;
  if (out.client.empty()) {  // the rebuilt listener accepts, and the end reaches the client as an orderly close
    const int second = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(second, reinterpret_cast<sockaddr*>(&s.address), s.size) != 0) {
      out.client = std::string("second connection: ") + std::strerror(errno);
    }
    char byte;
    pollfd p{s.client, POLLIN, 0};
    if (out.client.empty() && (::poll(&p, 1, 20000) != 1 || ::recv(s.client, &byte, 1, 0) != 0)) {
      out.client = std::string("not an orderly end: ") + std::strerror(errno);
    }
    ::close(second);
  }
  tcp_info info{};
  socklen_t size = sizeof info;
  if (::getsockopt(s.client, IPPROTO_TCP, TCP_INFO, &info, &size) == 0) out.retransmissions = info.tcpi_total_retrans;
  if (!out.client.empty()) ::kill(child, SIGKILL);  // its connection is gone: it need not wait for its timeouts
  int status = 0;
  out.child_ok = ::waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return out;
}

bool LockInstalled(const std::string& name) {
  Result<std::vector<std::string>> locks = NetworkLocks();
  return !locks.ok() || std::count(locks.value().begin(), locks.value().end(), name) > 0;
}

struct MoveCase {
  int family;
  int gap_ms;
  const char* name;
};

class TcpImageTest : public ::testing::TestWithParam<MoveCase> {};

// The peer sees no reset, no lost and no repeated byte, also when the gap lasts longer than its retransmission
// timeout; the lock was there from the save and is gone after the restore.
TEST_P(TcpImageTest, ConnectionsMoveByValueToAProcessThatInheritedNothing) {
  const MoveResult r = MoveUnderTraffic(GetParam().family, true, std::chrono::milliseconds(GetParam().gap_ms));
  EXPECT_EQ(r.client, "");
  EXPECT_TRUE(r.child_ok) << "the restored side failed (its stderr says why)";
  EXPECT_TRUE(r.lock_was_installed) << r.lock;
  EXPECT_FALSE(LockInstalled(r.lock)) << "the lock " << r.lock << " was left behind";
  // A retransmission storm would be hundreds: the client resends only what the gap dropped, with its usual backoff.
  EXPECT_LT(r.retransmissions, 64u);
  std::printf("client retransmissions over the move: %u\n", r.retransmissions);
}

INSTANTIATE_TEST_SUITE_P(Families, TcpImageTest,
                         ::testing::Values(MoveCase{AF_INET, 0, "IPv4"}, MoveCase{AF_INET6, 0, "IPv6"},
                                           MoveCase{AF_INET, 400, "IPv4_gap_400ms"},
                                           MoveCase{AF_INET6, 400, "IPv6_gap_400ms"}),
                         [](const ::testing::TestParamInfo<MoveCase>& info) { return std::string(info.param.name); });

// The same move with the lock turned off: the client's segments in the gap meet a reset. This is what the lock
// prevents, so the tests above prove it does the work.
TEST(TcpImageLockTest, WithoutTheLockTheGapResetsTheConnection) {
  const MoveResult r = MoveUnderTraffic(AF_INET, false, std::chrono::milliseconds(400));
  EXPECT_TRUE(r.lock.empty());
  EXPECT_NE(r.client.find(std::strerror(ECONNRESET)), std::string::npos) << "the client saw: '" << r.client << "'";
}

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

  TcpByValue lenient({.fallback_to_reference = true});
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
  TcpByValue lenient({.fallback_to_reference = true});
  ASSERT_TRUE(lenient.Save(s.world).ok());
  ASSERT_EQ(lenient.by_reference().size(), 1u);
  EXPECT_EQ(lenient.by_reference()[0].fd, s.server);
  EXPECT_EQ(lenient.listeners(), 1u);
  EXPECT_FALSE(lenient.Resume());
}

// Without CAP_NET_ADMIN (a child that became nobody) the save fails with EPERM naming the fd, and the connection
// still works; with the fallback the image holds it by reference, once the network lock (which needs CAP_NET_ADMIN
// too) is turned off.
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
    // The listener could be captured, but not locked: the save fails with the lock's reason and changes nothing.
    TcpByValue locked({.fallback_to_reference = true});
    Result<std::string> unlocked = locked.Save(s.world);
    if (unlocked.ok() || unlocked.error() != std::errc::operation_not_permitted) ::_exit(17);
    if (unlocked.status().message.find("network lock: nftables needs CAP_NET_ADMIN") == std::string::npos) ::_exit(18);
    TcpByValue lenient({.fallback_to_reference = true, .lock_network = false});
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

// The lock's own refusals change nothing: a name that is not a lock's, a table of that name already there (left as
// it was), no CAP_NET_ADMIN; removing a lock that is not there says so.
TEST(TcpImageLockTest, LockRefusalsAreClearAndChangeNothing) {
  const std::vector<std::string> before = NetworkLocks().value();
  Status bad = LockNetwork("filter", {}, {});
  EXPECT_EQ(bad.code, std::errc::invalid_argument) << bad.message;
  const std::string name = NewNetworkLockName();
  ASSERT_TRUE(LockNetwork(name, {}, {}).ok());
  Status twice = LockNetwork(name, {}, {});
  EXPECT_EQ(twice.code, std::errc::file_exists) << twice.message;
  EXPECT_TRUE(LockInstalled(name));
  const pid_t child = ::fork();
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    Status unprivileged = LockNetwork(NewNetworkLockName(), {}, {});
    if (unprivileged.code != std::errc::operation_not_permitted) ::_exit(11);
    if (unprivileged.message.find("CAP_NET_ADMIN") == std::string::npos) ::_exit(12);
    ::_exit(UnlockNetwork(name).code == std::errc::operation_not_permitted ? 0 : 13);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exit " << WEXITSTATUS(status);
  EXPECT_TRUE(LockInstalled(name));
  EXPECT_TRUE(UnlockNetwork(name).ok());
  Status gone = UnlockNetwork(name);
  EXPECT_EQ(gone.code, std::errc::no_such_file_or_directory) << gone.message;
  EXPECT_EQ(NetworkLocks().value(), before);
}

// libnftables waits with select(2), which cannot watch an fd numbered 1024 or more: with that many fds open the lock
// runs nftables in a child, and works as ever (a process with more connections than that is what it is for).
TEST(TcpImageLockTest, TheLockWorksWithMoreThanFdSetSizeFdsOpen) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  const rlimit before_limit = limit;
  limit.rlim_cur = std::max<rlim_t>(limit.rlim_cur, 4096);
  limit.rlim_max = std::max(limit.rlim_max, limit.rlim_cur);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0) << std::strerror(errno);
  const int fds = OpenFds();
  std::vector<int> filler;
  while (OpenFds() < FD_SETSIZE + 64) filler.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_GT(filler.back(), FD_SETSIZE);
  const std::string name = NewNetworkLockName();
  Status locked = LockNetwork(name, {}, {});
  EXPECT_TRUE(locked.ok()) << locked.message;
  EXPECT_TRUE(LockInstalled(name));
  Status unlocked = UnlockNetwork(name);
  EXPECT_TRUE(unlocked.ok()) << unlocked.message;
  EXPECT_FALSE(LockInstalled(name));
  EXPECT_EQ(UnlockNetwork(name).code, std::errc::no_such_file_or_directory);
  for (int fd : filler) ::close(fd);
  EXPECT_EQ(OpenFds(), fds);
  ::setrlimit(RLIMIT_NOFILE, &before_limit);
}

// A kernel without nf_tables (its netlink socket refused, by the fault seam): the save says so and changes nothing.
TEST(TcpImageLockTest, WithoutNftablesTheSaveFailsAndChangesNothing) {
  Service s;
  ASSERT_TRUE(s.Open(AF_INET));
  const int fds = OpenFds();
  testing::SetFaultHook([](const testing::FaultCall& call) {
    return call.point == testing::FaultPoint::kNetworkLockNetlink ? testing::Fault{EPROTONOSUPPORT} : testing::Fault{};
  });
  TcpByValue saver;
  Result<std::string> refused = saver.Save(s.world);
  testing::SetFaultHook(nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error(), std::errc::protocol_not_supported);
  EXPECT_NE(refused.status().message.find("network lock: nftables is unavailable"), std::string::npos)
      << refused.status().message;
  EXPECT_EQ(OpenFds(), fds);
  EXPECT_EQ(NetworkLocks().value(), std::vector<std::string>{});
  EXPECT_EQ(StillWorks(s), "");
}

// A save that fails after its lock was installed (here a later after_capture step refuses), and a save that is called
// off, leave no lock, and the connection carries on. The lock holds a new client's SYN off meanwhile: its connect
// neither completes on the held listener nor is refused.
TEST(TcpImageLockTest, AFailedOrCalledOffSaveLeavesNoLock) {
  Service s;
  ASSERT_TRUE(s.Open(AF_INET));
  const std::vector<std::string> before = NetworkLocks().value();
  std::string seen;
  TcpByValue failing;
  image::SaveOptions options;
  options.after_capture = [&](v1::Image& image) {
    seen = image.network_lock().nftables_table();
    return Status::Error(EIO, "refused after the lock");
  };
  Result<std::string> refused = failing.Save(s.world, options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message, "refused after the lock");
  EXPECT_FALSE(seen.empty()) << "the lock was not recorded in the image";
  EXPECT_FALSE(LockInstalled(seen));
  EXPECT_EQ(NetworkLocks().value(), before);
  EXPECT_EQ(StillWorks(s), "");

  TcpByValue saver;
  ASSERT_TRUE(saver.Save(s.world).ok());
  ASSERT_TRUE(LockInstalled(saver.network_lock()));
  const int late = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  ASSERT_NE(::connect(late, reinterpret_cast<sockaddr*>(&s.address), s.size), 0);
  ASSERT_EQ(errno, EINPROGRESS);
  pollfd p{late, POLLOUT, 0};
  EXPECT_EQ(::poll(&p, 1, 200), 0) << "the SYN got through the lock";
  EXPECT_FALSE(saver.Resume());
  EXPECT_FALSE(LockInstalled(saver.network_lock()));
  EXPECT_EQ(StillWorks(s), "");
  // The client's SYN is sent again (after its 1 s timeout) and reaches the listener, which carried on.
  EXPECT_EQ(::poll(&p, 1, 5000), 1);
  int error = -1;
  socklen_t size = sizeof error;
  ::getsockopt(late, SOL_SOCKET, SO_ERROR, &error, &size);
  EXPECT_EQ(error, 0) << std::strerror(error);
  ::close(late);
}

// A restore that fails removes the lock too, once it has closed the sockets it made; nothing is left.
TEST(TcpImageLockTest, AFailedRestoreRemovesTheLock) {
  Service s;
  ASSERT_TRUE(s.Open(AF_INET));
  TcpByValue saver;
  Result<std::string> image = saver.Save(s.world);
  ASSERT_TRUE(image.ok()) << image.status().message;
  const std::string lock = saver.network_lock();
  saver.CloseAll();
  ASSERT_TRUE(LockInstalled(lock)) << "CloseAll took the lock away";
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_EQ(::fcntl(null, F_DUPFD_CLOEXEC, s.server), s.server);  // the connection's number is taken
  ::close(null);
  const int fds = OpenFds();
  World world;
  TcpResolver tcp;
  Options options;
  options.resolvers = {&tcp};
  Status failed = RestoreBytes(image.value(), &world, options);
  EXPECT_FALSE(failed.ok());
  EXPECT_NE(failed.message.find("is in use in this process"), std::string::npos) << failed.message;
  EXPECT_EQ(OpenFds(), fds);
  EXPECT_EQ(tcp.network_lock(), lock);
  EXPECT_TRUE(tcp.unlock_error().ok()) << tcp.unlock_error().message;
  EXPECT_FALSE(LockInstalled(lock)) << "the failed restore left its lock";
  ::close(s.server);
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
  // A network lock's name: only one the lock could have made, so an image never makes a restore remove another table.
  for (const char* name : {"filter", "epollcr_lock_0123456789abcdeF", "epollcr_lock_0123"}) {
    v1::Image bad = base.value();
    bad.mutable_network_lock()->set_nftables_table(name);
    Status s = image::Validate(bad);
    EXPECT_NE(s.message.find("network lock: nftables table '" + std::string(name) + "' is not a network lock's name"),
              std::string::npos)
        << s.message;
  }
  v1::Image locked = base.value();
  locked.mutable_network_lock()->set_nftables_table(NewNetworkLockName());
  EXPECT_TRUE(image::Validate(locked).ok()) << image::Validate(locked).message;
  // An image restored without the resolver names what it lacks.
  World world;
  Status unresolved = Restore(base.value(), &world);
  EXPECT_NE(unresolved.message.find("file 1 (TCP connection at fd 5): no resolver has it"), std::string::npos)
      << unresolved.message;
}

}  // namespace
}  // namespace epollcr::restore
