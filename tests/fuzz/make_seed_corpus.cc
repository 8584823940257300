// Writes the seed corpus of the image reader fuzzer: valid images of small worlds (framed) and their payloads.
// usage: make_seed_corpus DIR   (tests/fuzz/corpus/image is generated with it and committed)
#include <cstdio>
#include <fstream>
#include <string>

#include "epollcr/epollcr.h"
#include "restore/image_codec.h"

namespace {

using namespace epollcr;

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seed_corpus DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (int variant = 0; variant < 4; ++variant) {
    World w;
    int ep = sys::EpollCreate1(w.fds, 0).value();
    int efd = sys::EventFd(w.fds, 1, variant % 2 == 1).value();
    Event e{kEventIn | (variant >= 2 ? kEpollEdgeTriggered : 0u), {}};
    e.SetData(7);
    (void)sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, efd, &e);
    if (variant >= 1) {
      int p[2];
      (void)sys::Pipe(w.fds, p);
      const std::byte b[3] = {};
      (void)sys::Write(w.fds, p[1], b);
      e.events = kEventIn;
      (void)sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, p[0], &e);
    }
    if (variant >= 2) {
      int s[2];
      (void)sys::SocketPair(w.fds, s);
      const std::byte b[5] = {};
      (void)sys::Write(w.fds, s[0], b);
      int inner = sys::EpollCreate1(w.fds, 0).value();
      e.events = kEventIn | kEventRdHup | kEpollOneShot;
      (void)sys::EpollCtl(w.fds, inner, sys::kEpollCtlAdd, s[1], &e);
      e.events = kEventIn;
      (void)sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, inner, &e);
      Event got[4];
      (void)sys::EpollWait(w.fds, inner, got, 4, 0);
    }
    StatusOr<std::string> framed = image::SaveImage(w);
    StatusOr<v1::Image> captured = image::Capture(w);
    if (!framed.ok() || !captured.ok()) return 1;
    Write(dir + "/framed-" + std::to_string(variant), framed.value);
    Write(dir + "/payload-" + std::to_string(variant), image::Encode(captured.value).value);
  }
  return 0;
}
