// restore/tcp_repair.h: an established TCP connection moved by value over loopback. The oracle is the byte stream
// itself: each side writes a known pattern, and after the move the peer must read every byte of it, in order, once,
// with no reset, while the moved side reads every byte the peer had sent. Also: a move called off, what cannot move
// (and why), and a rebuild that fails leaving nothing behind. Runs as root (CAP_NET_ADMIN), as CI does.
#include "restore/tcp_repair.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "byte_stream.h"
#include "loopback.h"
#include "open_fds.h"

namespace epollcr::restore {
namespace {

// A connected pair over loopback: `client` and the `server` side the listener accepted.
struct Pair {
  int client = -1;
  int server = -1;
  ~Pair() {
    if (client >= 0) ::close(client);
    if (server >= 0) ::close(server);
  }
};

bool Connect(int family, Pair* pair) {
  sockaddr_storage address{};
  socklen_t size = 0;
  const int listener = Listen(family, 1, &address, &size);
  if (listener < 0) return false;
  pair->client = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool connected = ::connect(pair->client, reinterpret_cast<sockaddr*>(&address), size) == 0;
  pair->server = connected ? ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
  ::close(listener);  // the connection outlives it, and a rebuild must not need it
  return pair->server >= 0;
}

// Writes stream `tag` from byte `*at` until the kernel takes no more (non-blocking); returns how many it took.
std::size_t WriteUntilFull(int fd, char tag, std::uint64_t* at) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  std::size_t total = 0;
  for (;;) {
    const std::string chunk = Pattern(tag, *at, 16384);
    const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n <= 0) break;
    *at += static_cast<std::uint64_t>(n);
    total += static_cast<std::size_t>(n);
  }
  ::fcntl(fd, F_SETFL, flags);
  return total;
}

int TcpState(int fd) {
  tcp_info info{};
  socklen_t size = sizeof info;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) == 0 ? info.tcpi_state : -1;
}

int IntOption(int fd, int level, int name) {
  int value = -1;
  socklen_t size = sizeof value;
  return ::getsockopt(fd, level, name, &value, &size) == 0 ? value : -1;
}

class TcpRepairTest : public ::testing::TestWithParam<int> {};

// The server side has unread bytes from the client and a full send queue the client has not read; it is captured,
// closed in repair mode and rebuilt as a new socket. Every byte of both queues reaches its reader exactly once, the
// options come back, and the connection then carries a MiB each way with no reset.
TEST_P(TcpRepairTest, AConnectionMovesByValueWithEveryQueuedByte) {
  Pair pair;
  ASSERT_TRUE(Connect(GetParam(), &pair)) << std::strerror(errno);
  int on = 1;
  ASSERT_EQ(::setsockopt(pair.server, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on), 0);
  ASSERT_EQ(::setsockopt(pair.server, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on), 0);
  std::uint64_t client_at = 0, server_at = 0;
  const std::string upstream = Pattern('c', 0, 50000);  // the client's bytes the server has not read
  ASSERT_EQ(::send(pair.client, upstream.data(), upstream.size(), MSG_NOSIGNAL), 50000);
  client_at = 50000;
  const std::size_t downstream = WriteUntilFull(pair.server, 's', &server_at);  // the client reads none yet
  ASSERT_GT(downstream, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // nothing in flight on loopback after this

  Result<TcpConnection> captured = CaptureTcp(pair.server);
  ASSERT_TRUE(captured.ok()) << captured.status().message;
  const TcpConnection& c = captured.value();
  EXPECT_EQ(c.unread, upstream);
  EXPECT_GT(c.unsent.size() + c.unacked.size(), 0u) << "the client's full window left nothing queued";
  EXPECT_TRUE(c.nodelay);
  EXPECT_TRUE(c.keepalive);
  // The client does not stop for the move: these bytes reach the old socket after its queues were read. It must drop
  // them unacknowledged, so that the client sends them again to the rebuilt socket.
  const std::string during = Pattern('c', client_at, 3000);
  ASSERT_EQ(::send(pair.client, during.data(), during.size(), MSG_NOSIGNAL), 3000);
  client_at += 3000;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CloseTcpSilently(pair.server);
  pair.server = -1;
  Result<int> rebuilt = RebuildTcp(c);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().message;
  pair.server = rebuilt.value();

  EXPECT_EQ(ReadExactly(pair.client, 's', 0, downstream), "");
  EXPECT_EQ(ReadExactly(pair.server, 'c', 0, upstream.size() + during.size()), "");
  EXPECT_EQ(Stream(pair.client, pair.server, 'c', &client_at, 1 << 20), "");
  EXPECT_EQ(Stream(pair.server, pair.client, 's', &server_at, 1 << 20), "");
  EXPECT_EQ(TcpState(pair.client), TCP_ESTABLISHED);
  EXPECT_EQ(TcpState(pair.server), TCP_ESTABLISHED);
  EXPECT_EQ(IntOption(pair.server, IPPROTO_TCP, TCP_NODELAY), 1);
  EXPECT_EQ(IntOption(pair.server, SOL_SOCKET, SO_KEEPALIVE), 1);
  // The options the rebuilt socket holds, as the kernel reports them to a second capture.
  Result<TcpConnection> again = CaptureTcp(pair.server);
  ASSERT_TRUE(again.ok()) << again.status().message;
  ASSERT_FALSE(ResumeTcp(pair.server));
  EXPECT_EQ(again.value().mss, c.mss);
  EXPECT_EQ(again.value().sack, c.sack);
  EXPECT_EQ(again.value().timestamps, c.timestamps);
  EXPECT_EQ(again.value().window_scaling, c.window_scaling);
  EXPECT_EQ(again.value().send_window_scale, c.send_window_scale);
  EXPECT_EQ(again.value().receive_window_scale, c.receive_window_scale);
  EXPECT_TRUE(c.sack && c.timestamps && c.window_scaling) << "loopback negotiates them all: none was tested";
  // The end of the stream reaches the peer as an orderly close, not a reset.
  ::shutdown(pair.server, SHUT_WR);
  char byte;
  pollfd p{pair.client, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  EXPECT_EQ(::recv(pair.client, &byte, 1, 0), 0) << std::strerror(errno);
}

// A rebuild sets only the options a new socket would not have anyway (TcpDefaults). Two connections rebuilt with one
// TcpDefaults: one with every option as a new socket has it, one with each changed (keepalive timers, buffers,
// SO_REUSEADDR, TCP_NODELAY, blocking). A second capture of each rebuilt socket reads back what the first captured.
TEST_P(TcpRepairTest, ARebuildGivesBackEveryOptionWhetherItSetsItOrNot) {
  Pair plain, tuned;
  ASSERT_TRUE(Connect(GetParam(), &plain)) << std::strerror(errno);
  ASSERT_TRUE(Connect(GetParam(), &tuned)) << std::strerror(errno);
  const auto set = [](int fd, int level, int name, int value) {
    return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
  };
  ASSERT_TRUE(set(tuned.server, IPPROTO_TCP, TCP_KEEPIDLE, 77) && set(tuned.server, IPPROTO_TCP, TCP_KEEPINTVL, 13) &&
              set(tuned.server, IPPROTO_TCP, TCP_KEEPCNT, 4) && set(tuned.server, SOL_SOCKET, SO_RCVBUF, 40000) &&
              set(tuned.server, SOL_SOCKET, SO_REUSEADDR, 1) && set(tuned.server, IPPROTO_TCP, TCP_NODELAY, 1))
      << std::strerror(errno);
  ASSERT_EQ(::fcntl(tuned.server, F_SETFL, ::fcntl(tuned.server, F_GETFL) & ~O_NONBLOCK), 0);
  TcpDefaults defaults;
  for (Pair* pair : {&plain, &tuned}) {
    Result<TcpConnection> captured = CaptureTcp(pair->server);
    ASSERT_TRUE(captured.ok()) << captured.status().message;
    const TcpConnection& c = captured.value();
    CloseTcpSilently(pair->server);
    pair->server = -1;
    Result<int> rebuilt = RebuildTcp(c, &defaults);
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().message;
    pair->server = rebuilt.value();
    ASSERT_TRUE(defaults.known);
    Result<TcpConnection> again = CaptureTcp(pair->server);
    ASSERT_TRUE(again.ok()) << again.status().message;
    ASSERT_FALSE(ResumeTcp(pair->server, again.value()));
    const TcpConnection& a = again.value();
    EXPECT_EQ(a.keepalive_idle, c.keepalive_idle);
    EXPECT_EQ(a.keepalive_interval, c.keepalive_interval);
    EXPECT_EQ(a.keepalive_count, c.keepalive_count);
    EXPECT_EQ(a.nodelay, c.nodelay);
    EXPECT_EQ(a.reuse_address, c.reuse_address);
    EXPECT_EQ(a.file_flags & O_NONBLOCK, c.file_flags & O_NONBLOCK);
    EXPECT_EQ(a.receive_buffer, c.receive_buffer);
    EXPECT_GE(a.send_buffer, c.send_buffer);
    std::uint64_t at = 0;
    EXPECT_EQ(Stream(pair->server, pair->client, 's', &at, 65536), "");
  }
  EXPECT_EQ(defaults.keepalive_idle, IntOption(plain.server, IPPROTO_TCP, TCP_KEEPIDLE));
  EXPECT_NE(IntOption(tuned.server, IPPROTO_TCP, TCP_KEEPIDLE), IntOption(plain.server, IPPROTO_TCP, TCP_KEEPIDLE));
  EXPECT_EQ(IntOption(tuned.server, SOL_SOCKET, SO_REUSEADDR), 1);
  EXPECT_EQ(IntOption(plain.server, SOL_SOCKET, SO_REUSEADDR), 0);
}

// A capture called off: the socket leaves repair mode and carries on, its queues untouched, and the bytes the client
// sent meanwhile arrive (sent again: the socket held them out while the move was on).
// Both ways of holding: a classic filter of each socket's own, and the eBPF program a DropFilter shares.
void CallOffAMove(int family, const DropFilter* filter) {
  Pair pair;
  ASSERT_TRUE(Connect(family, &pair));
  std::uint64_t client_at = 0, server_at = 0;
  const std::string upstream = Pattern('c', 0, 1000);
  ASSERT_EQ(::send(pair.client, upstream.data(), upstream.size(), MSG_NOSIGNAL), 1000);
  client_at = 1000;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  Result<TcpConnection> captured = CaptureTcp(pair.server, filter);
  ASSERT_TRUE(captured.ok()) << captured.status().message;
  EXPECT_EQ(captured.value().unread, upstream);
  ASSERT_EQ(SendAll(pair.client, Pattern('c', client_at, 500)), "");  // held while the move is on, sent again after
  client_at += 500;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  int queued = -1;
  ASSERT_EQ(::ioctl(pair.server, SIOCINQ, &queued), 0);
  EXPECT_EQ(queued, 1000) << "the socket took in what arrived while it was held";
  ASSERT_FALSE(ResumeTcp(pair.server));
  EXPECT_EQ(ReadExactly(pair.server, 'c', 0, 1500), "");
  EXPECT_EQ(Stream(pair.client, pair.server, 'c', &client_at, 1 << 18), "");
  EXPECT_EQ(Stream(pair.server, pair.client, 's', &server_at, 1 << 18), "");
}

TEST_P(TcpRepairTest, AMoveCalledOffLeavesTheConnectionAsItWas) { CallOffAMove(GetParam(), nullptr); }

TEST_P(TcpRepairTest, AMoveCalledOffLeavesTheConnectionAsItWasWithASharedFilter) {
  const DropFilter filter;
  ASSERT_GE(filter.fd(), 0) << "the eBPF program did not load (the tests run as root): " << std::strerror(errno);
  CallOffAMove(GetParam(), &filter);
}

INSTANTIATE_TEST_SUITE_P(Families, TcpRepairTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == AF_INET ? std::string("IPv4") : std::string("IPv6");
                         });

// What cannot move by value is refused with the reason, and the socket is left as it was.
TEST(TcpRepairRefusalTest, WhatCannotMoveSaysWhyAndIsLeftAsItWas) {
  sockaddr_storage address{};
  socklen_t size = 0;
  const int listener = Listen(AF_INET, 1, &address, &size);
  ASSERT_GE(listener, 0);
  Result<TcpConnection> listening = CaptureTcp(listener);
  ASSERT_FALSE(listening.ok());
  EXPECT_EQ(listening.error(), std::errc::invalid_argument);
  EXPECT_NE(listening.status().message.find("not established"), std::string::npos) << listening.status().message;
  EXPECT_EQ(IntOption(listener, IPPROTO_TCP, TCP_REPAIR), 0) << "left in repair mode";
  ::close(listener);

  Pair filtered;
  ASSERT_TRUE(Connect(AF_INET, &filtered));
  sock_filter keep_all = BPF_STMT(BPF_RET | BPF_K, 0xffff);
  const sock_fprog program{.len = 1, .filter = &keep_all};
  ASSERT_EQ(::setsockopt(filtered.server, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program), 0);
  Result<TcpConnection> with_filter = CaptureTcp(filtered.server);
  ASSERT_FALSE(with_filter.ok());
  EXPECT_EQ(with_filter.error(), std::errc::device_or_resource_busy);
  EXPECT_NE(with_filter.status().message.find("packet filter of its own"), std::string::npos);
  socklen_t blocks = 0;
  ASSERT_EQ(::getsockopt(filtered.server, SOL_SOCKET, SO_GET_FILTER, nullptr, &blocks), 0);
  EXPECT_EQ(blocks, 1u) << "the program's own filter was replaced";
  EXPECT_EQ(IntOption(filtered.server, IPPROTO_TCP, TCP_REPAIR), 0);

  const int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  Result<TcpConnection> datagram = CaptureTcp(udp);
  ASSERT_FALSE(datagram.ok());
  EXPECT_EQ(datagram.error(), std::errc::operation_not_supported);
  ::close(udp);
  int unix_pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, unix_pair), 0);
  EXPECT_EQ(CaptureTcp(unix_pair[0]).error(), std::errc::operation_not_supported);
  ::close(unix_pair[0]);
  ::close(unix_pair[1]);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  EXPECT_EQ(CaptureTcp(pipe_fds[0]).error(), std::errc::not_a_socket);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

// Without CAP_NET_ADMIN (a child that became nobody): EPERM, saying so, and the connection still works.
TEST(TcpRepairRefusalTest, WithoutCapNetAdminTheCaptureIsRefused) {
  Pair pair;
  ASSERT_TRUE(Connect(AF_INET, &pair));
  const pid_t child = ::fork();
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    Result<TcpConnection> captured = CaptureTcp(pair.server);
    if (captured.ok()) ::_exit(11);
    if (captured.error() != std::errc::operation_not_permitted) ::_exit(12);
    if (captured.status().message.find("CAP_NET_ADMIN") == std::string::npos) ::_exit(13);
    if (::send(pair.server, "x", 1, MSG_NOSIGNAL) != 1) ::_exit(14);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(ReadExactly(pair.client, 'x', 0, 1), "");
}

// A rebuild that cannot be done (an address this host does not have) fails at its step and leaves no socket.
TEST(TcpRepairRefusalTest, AFailedRebuildLeavesNothingBehind) {
  Pair pair;
  ASSERT_TRUE(Connect(AF_INET, &pair));
  Result<TcpConnection> captured = CaptureTcp(pair.server);
  ASSERT_TRUE(captured.ok()) << captured.status().message;
  TcpConnection elsewhere = captured.value();
  ASSERT_FALSE(ResumeTcp(pair.server));
  reinterpret_cast<sockaddr_in*>(&elsewhere.local)->sin_addr.s_addr = inet_addr("192.0.2.1");  // TEST-NET-1
  const int before = epollcr::testing::OpenFds();
  Result<int> rebuilt = RebuildTcp(elsewhere);
  ASSERT_FALSE(rebuilt.ok());
  EXPECT_NE(rebuilt.status().message.find("bind"), std::string::npos) << rebuilt.status().message;
  EXPECT_EQ(epollcr::testing::OpenFds(), before);
  elsewhere.family = AF_UNIX;
  EXPECT_EQ(RebuildTcp(elsewhere).error(), std::errc::address_family_not_supported);
  // The original is untouched by either.
  std::uint64_t at = 0;
  EXPECT_EQ(Stream(pair.server, pair.client, 's', &at, 4096), "");
}

// A listener by value: the same address, backlog and options, and it accepts; it moves beside a connection it had
// accepted (the connection's rebuild shares the listener's port, as in the old process).
TEST(TcpListenerTest, AListenerMovesByValueWithItsOptionsBesideItsConnection) {
  const int listener = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int on = 1, defer = 5, fast_open = 16;
  ASSERT_EQ(::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on), 0);
  ASSERT_EQ(::setsockopt(listener, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on), 0);
  ASSERT_EQ(::setsockopt(listener, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer), 0);
  ASSERT_EQ(::setsockopt(listener, IPPROTO_TCP, TCP_FASTOPEN, &fast_open, sizeof fast_open), 0);
  sockaddr_in6 address{};
  address.sin6_family = AF_INET6;
  address.sin6_addr = in6addr_loopback;
  socklen_t size = sizeof address;
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 7), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size), 0);
  const int client = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(SendAll(client, Pattern('c', 0, 100)), "");  // TCP_DEFER_ACCEPT: accepted once data came
  pollfd p{listener, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  const int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(server, 0);
  const int before = IntOption(listener, IPPROTO_TCP, TCP_DEFER_ACCEPT);

  Result<TcpListener> l = CaptureListener(listener);
  ASSERT_TRUE(l.ok()) << l.status().message;
  EXPECT_EQ(l.value().backlog, 7);
  EXPECT_TRUE(l.value().reuse_address);
  EXPECT_TRUE(l.value().v6_only);
  EXPECT_EQ(l.value().fast_open, 16);
  EXPECT_NE(l.value().file_flags & O_NONBLOCK, 0);
  Result<TcpConnection> c = CaptureTcp(server);
  ASSERT_TRUE(c.ok()) << c.status().message;
  ::close(listener);
  CloseTcpSilently(server);
  Result<int> relistener = RebuildListener(l.value());
  ASSERT_TRUE(relistener.ok()) << relistener.status().message;
  Result<int> reserver = RebuildTcp(c.value());
  ASSERT_TRUE(reserver.ok()) << reserver.status().message;

  sockaddr_in6 now{};
  size = sizeof now;
  ASSERT_EQ(::getsockname(relistener.value(), reinterpret_cast<sockaddr*>(&now), &size), 0);
  EXPECT_EQ(now.sin6_port, address.sin6_port);
  EXPECT_EQ(IntOption(relistener.value(), SOL_SOCKET, SO_REUSEADDR), 1);
  EXPECT_EQ(IntOption(relistener.value(), IPPROTO_IPV6, IPV6_V6ONLY), 1);
  EXPECT_EQ(IntOption(relistener.value(), IPPROTO_TCP, TCP_DEFER_ACCEPT), before);
  EXPECT_EQ(IntOption(relistener.value(), IPPROTO_TCP, TCP_FASTOPEN), 16);
  EXPECT_NE(::fcntl(relistener.value(), F_GETFL) & O_NONBLOCK, 0);
  tcp_info info{};
  size = sizeof info;
  ASSERT_EQ(::getsockopt(relistener.value(), IPPROTO_TCP, TCP_INFO, &info, &size), 0);
  EXPECT_EQ(info.tcpi_sacked, 7u) << "the backlog";
  // The moved connection carries on, and the rebuilt listener accepts a new one.
  EXPECT_EQ(ReadExactly(reserver.value(), 'c', 0, 100), "");
  std::uint64_t at = 100;
  EXPECT_EQ(Stream(client, reserver.value(), 'c', &at, 1 << 16), "");
  const int second = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(second, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(SendAll(second, "x"), "");
  p = {relistener.value(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  const int accepted = ::accept4(relistener.value(), nullptr, nullptr, SOCK_CLOEXEC);
  EXPECT_GE(accepted, 0) << std::strerror(errno);
  for (int fd : {accepted, second, reserver.value(), relistener.value(), client}) ::close(fd);
}

// A listener with a connection no one accepted yet cannot move (that connection is in no fd); nor can a connected
// socket move as a listener.
TEST(TcpListenerTest, WhatCannotMoveAsAListenerSaysWhy) {
  Pair pair;
  ASSERT_TRUE(Connect(AF_INET, &pair));
  EXPECT_EQ(CaptureListener(pair.server).error(), std::errc::invalid_argument);
  sockaddr_storage address{};
  socklen_t size = 0;
  const int listener = Listen(AF_INET, 4, &address, &size);
  ASSERT_GE(listener, 0);
  const int waiting = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(waiting, reinterpret_cast<sockaddr*>(&address), size), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  Result<TcpListener> busy = CaptureListener(listener);
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error(), std::errc::device_or_resource_busy);
  EXPECT_NE(busy.status().message.find("1 connection(s) wait"), std::string::npos) << busy.status().message;
  ::close(waiting);
  ::close(listener);
}

}  // namespace
}  // namespace epollcr::restore
