// An epollcr poll driven by another event loop: the program's own loop is a plain kernel epoll (it could be GLib,
// libuv's uv_poll or asio), and it watches EventPoll::Fd() next to its own fds. When Fd() is readable, the epollcr
// poll has events: the loop asks it for them with Wait(0). The poll holds an in-memory eventfd, a pipe and a real
// socket (a host file), and is watched level-triggered, then edge-triggered.
//
// Exits 0 when every event arrived through the outer loop, as it would through a nested kernel epoll.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <epollcr/epollcr.h>

#include <cstdio>
#include <string>

namespace {

using namespace epollcr;

// One turn of the outer loop: waits for the outer epoll (up to 200 ms), then drains the epollcr poll if it said so.
// Returns the data words the epollcr poll reported, as text ("" when the outer loop woke for nothing of it).
std::string Turn(int outer, EventPoll& poll) {
  epoll_event ready[4];
  const int n = epoll_wait(outer, ready, 4, 200);
  std::string got;
  for (int i = 0; i < n; ++i) {
    if (ready[i].data.u64 != 1) continue;  // the program's own fds would be handled here
    Event events[8];
    Result<int> m = poll.Wait(events, 8, 0);
    for (int k = 0; m.ok() && k < m.value(); ++k) got += (got.empty() ? "" : " ") + std::to_string(events[k].Data());
  }
  return got;
}

bool Expect(const std::string& what, const std::string& got, const std::string& want) {
  std::printf("%-62s %s\n", what.c_str(), got.empty() ? "(nothing)" : got.c_str());
  if (got == want) return true;
  std::fprintf(stderr, "foreign_loop: %s: got '%s', want '%s'\n", what.c_str(), got.c_str(), want.c_str());
  return false;
}

}  // namespace

int main() {
  auto poll = EventPoll::Create();
  auto counter = EventFd::Create();
  PipeEnds pipe = NewPipe();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 1;
  Result<std::shared_ptr<HostFile>> socket = HostFile::Create(sv[0]);
  if (!socket.ok()) return 1;
  if (poll->AddEntry({counter.get(), 3}, EntryFlags::kNone, kEventIn, 10) ||
      poll->AddEntry({pipe.read.get(), 4}, EntryFlags::kEdgeTriggered, kEventIn, 20) ||
      poll->AddEntry({socket.value().get(), sv[0]}, EntryFlags::kNone, kEventIn, 30)) {
    std::fprintf(stderr, "foreign_loop: AddEntry failed\n");
    return 1;
  }
  Result<int> fd = poll->Fd();
  if (!fd.ok()) {
    std::fprintf(stderr, "foreign_loop: Fd: %s\n", fd.error().message().c_str());
    return 1;
  }
  bool ok = true;
  for (const std::uint32_t mode : {0u, std::uint32_t{EPOLLET}}) {
    const std::string how = mode == 0 ? "level-triggered" : "edge-triggered";
    const int outer = epoll_create1(EPOLL_CLOEXEC);
    epoll_event watch{};
    watch.events = EPOLLIN | mode;
    watch.data.u64 = 1;
    if (epoll_ctl(outer, EPOLL_CTL_ADD, fd.value(), &watch) != 0) return 1;

    (void)counter->WriteValue(1);
    ok &= Expect(how + ": eventfd written", Turn(outer, *poll), "10");
    // The counter is still set, so the poll still has an event: a level-triggered outer loop sees it again; an
    // edge-triggered one only on the poll's next wake-up, as with a nested kernel epoll.
    ok &= Expect(how + ": eventfd not read yet", Turn(outer, *poll), mode == 0 ? "10" : "");
    (void)counter->WriteValue(1);
    ok &= Expect(how + ": eventfd written again", Turn(outer, *poll), "10");
    (void)counter->ReadValue();  // now nothing is ready: Fd() is not readable, the turn times out
    ok &= Expect(how + ": eventfd read", Turn(outer, *poll), "");

    (void)pipe.write->Write(std::as_bytes(std::span("x", 1)));
    (void)!write(sv[1], "y", 1);
    ok &= Expect(how + ": pipe (in memory) and socket (host) written", Turn(outer, *poll), "20 30");
    ok &= Expect(how + ": the pipe's edge is taken, the socket stays", Turn(outer, *poll), mode == 0 ? "30" : "");
    char buffer[8];
    (void)!read(sv[0], buffer, sizeof buffer);
    std::byte sink[8];
    (void)pipe.read->Read(sink);
    ok &= Expect(how + ": both read", Turn(outer, *poll), "");
    close(outer);
  }
  close(sv[1]);
  std::printf("foreign_loop: %s\n", ok ? "every event came through the outer loop" : "FAILED");
  return ok ? 0 : 1;
}
