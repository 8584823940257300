// The smallest embedder program: an EventPoll watching an eventfd and a pipe, in one process, no kernel epoll.
// Built in-tree by meson and out-of-tree by scripts/check-install with `pkg-config --cflags --libs epollcr`.
#include <epollcr/epollcr.h>

#include <cstdio>

int main() {
  using namespace epollcr;
  auto poll = EventPoll::Create();
  auto counter = EventFd::Create();
  PipeEnds pipe = NewPipe();

  if (poll->AddEntry({counter.get(), 3}, EntryFlags::kEdgeTriggered, kEventIn, 100) ||
      poll->AddEntry({pipe.read.get(), 4}, EntryFlags::kNone, kEventIn, 200)) {
    std::fprintf(stderr, "hello_poll: AddEntry failed\n");
    return 1;
  }
  (void)counter->WriteValue(7);
  const char msg[] = "hi";
  (void)pipe.write->Write(std::as_bytes(std::span(msg)));

  Event events[4];
  Result<int> n = poll->Wait(events, 4, 0);
  if (!n.ok()) {
    std::fprintf(stderr, "hello_poll: Wait: %s\n", n.error().message().c_str());
    return 1;
  }
  for (int i = 0; i < n.value(); ++i) {
    std::printf("event %s data %llu\n", FormatEventMask(events[i].events).c_str(),
                static_cast<unsigned long long>(events[i].Data()));
  }
  std::printf("epollcr %s: %d events\n", kVersion, n.value());
  return n.value() == 2 ? 0 : 1;
}
