// restore/tcp_repair.h across network namespaces: a connection moves from one "machine" to another, as a drained
// service would. The test makes three network namespaces of its own (names with its pid, removed at the end whatever
// happens): C holds the client, A and B are the two server machines, each linked to C by a veth pair. The service
// address 10.77.0.1 lives in A, and C routes to it through A. The server side is captured in A after the bytes it
// has just sent were dropped on their way to the client, so they were never acknowledged; then the address moves to
// B (C's route with it) and the connection is rebuilt in B. The oracle is the byte stream: the client reads every
// byte the server side ever wrote (the unacknowledged ones retransmitted by B), once and in order, and the rebuilt
// side every byte the client wrote; then a MiB crosses each way. Needs root (namespaces, CAP_NET_ADMIN) and ip(8) (iproute2).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "byte_stream.h"
#include "netns.h"
#include "restore/tcp_repair.h"

namespace epollcr::restore {
namespace {

TEST(TcpRepairNetnsTest, AConnectionMovesToAnotherMachineWithItsUnacknowledgedBytes) {
  Machines machines;
  ASSERT_TRUE(machines.ready()) << machines.error();
  int listener = -1, server = -1, client = -1;
  sockaddr_in service{};
  service.sin_family = AF_INET;
  service.sin_addr.s_addr = inet_addr("10.77.0.1");
  ASSERT_EQ(machines.On("a", [&]() -> std::string {
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t size = sizeof service;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&service), sizeof service) != 0 || ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&service), &size) != 0) {
      return std::string("listen in A: ") + std::strerror(errno);
    }
    return "";
  }), "");
  ASSERT_EQ(machines.On("c", [&]() -> std::string {
    client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(client, reinterpret_cast<sockaddr*>(&service), sizeof service) != 0) {
      return std::string("connect from C: ") + std::strerror(errno);
    }
    return "";
  }), "");
  server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(server, 0) << std::strerror(errno);
  ::close(listener);  // the service's listener stays behind; the connection moves

  std::uint64_t client_at = 0, server_at = 0;
  EXPECT_EQ(Stream(client, server, 'c', &client_at, 1 << 16), "");
  EXPECT_EQ(Stream(server, client, 's', &server_at, 1 << 16), "");
  ASSERT_EQ(SendAll(client, Pattern('c', client_at, 30000)), "");  // unread by the server side when it moves
  client_at += 30000;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::uint64_t client_has = server_at;  // the client has read the server side's stream up to here
  // The client's address leaves C for a moment: what the server side writes now leaves A and is dropped on arrival
  // at C (no longer its address, and C forwards nothing). Those bytes stay sent and unacknowledged at A, and only B's
  // retransmission after the move can bring them to the client.
  ASSERT_TRUE(machines.In("c", {"addr", "del", "10.77.1.2/24", "dev", "ca"})) << machines.error();
  const std::size_t unacked = 20000;
  ASSERT_EQ(SendAll(server, Pattern('s', server_at, unacked)), "");
  server_at += unacked;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));

  Result<TcpConnection> captured = CaptureTcp(server);
  ASSERT_TRUE(captured.ok()) << captured.status().message;
  EXPECT_EQ(captured.value().unread, Pattern('c', client_at - 30000, 30000));
  EXPECT_EQ(captured.value().unacked.size() + captured.value().unsent.size(), unacked);
  EXPECT_GT(captured.value().unacked.size(), 0u) << "nothing was in flight: the unacknowledged path is untested";
  CloseTcpSilently(server);

  ASSERT_TRUE(machines.In("c", {"addr", "add", "10.77.1.2/24", "dev", "ca"})) << machines.error();
  // The service address moves from A to B, and the client's route with it.
  ASSERT_TRUE(machines.In("a", {"addr", "del", "10.77.0.1/32", "dev", "lo"})) << machines.error();
  ASSERT_TRUE(machines.In("b", {"addr", "add", "10.77.0.1/32", "dev", "lo"})) << machines.error();
  ASSERT_TRUE(machines.In("c", {"route", "replace", "10.77.0.1/32", "via", "10.77.2.1"})) << machines.error();
  ASSERT_EQ(machines.On("b", [&]() -> std::string {
    Result<int> rebuilt = RebuildTcp(captured.value());
    if (!rebuilt.ok()) return "rebuild in B: " + rebuilt.status().message;
    server = rebuilt.value();
    return "";
  }), "");

  EXPECT_EQ(ReadExactly(client, 's', client_has, server_at - client_has), "") << "the bytes that were in flight";
  tcp_info moved{};
  socklen_t moved_size = sizeof moved;
  ASSERT_EQ(::getsockopt(server, IPPROTO_TCP, TCP_INFO, &moved, &moved_size), 0);
  EXPECT_GT(moved.tcpi_total_retrans, 0u) << "the client got the unacknowledged bytes without a retransmission";
  EXPECT_EQ(ReadExactly(server, 'c', client_at - 30000, 30000), "");
  EXPECT_EQ(Stream(client, server, 'c', &client_at, 1 << 20), "");
  EXPECT_EQ(Stream(server, client, 's', &server_at, 1 << 20), "");
  tcp_info info{};
  socklen_t size = sizeof info;
  ASSERT_EQ(::getsockopt(client, IPPROTO_TCP, TCP_INFO, &info, &size), 0);
  EXPECT_EQ(info.tcpi_state, TCP_ESTABLISHED);
  ::close(server);
  ::close(client);
}

}  // namespace
}  // namespace epollcr::restore
