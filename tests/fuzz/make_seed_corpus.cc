// Writes the seed corpora of the fuzz targets (fuzz_entry_points.h) from real worlds and traces:
//   image_reader/       framed images and bare payloads of four small hand-built worlds
//   trace_parser/       the traces given, as they are
//   boost_text_loader/  Boost text archives (without the envelope) of the four worlds, and of the world of each trace
//   boost_xml_loader/   the same in Boost xml
//   trace_checkpoints/  the traces given, as they are
//   image_restorer/     a policy byte and a framed image: of the four worlds, and of worlds of host files over real
//                       fds 3..7 (the target's fixture: a pipe, an eventfd, a socket pair)
//   handoff_receive/    what SendWorld sends for the four worlds and the host eventfd's world, as peer messages
//   fdinfo_parser/      /proc/self/fdinfo of kernel epolls with entries, of an empty one, of a pipe and an eventfd
// The world of a trace is the userspace engine's world at the step where the most fds are open (the first such).
// usage: make_seed_corpus SEEDS_DIR TRACE...   (tests/fuzz/seeds is generated with it and committed: see
// docs/testing.md, "Fuzzing")
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "epollcr/epollcr.h"
#include "fuzz_entry_points.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"
#include "epollcr/host_file.h"
#include "epollcr/unique_fd.h"
#include "restore/handoff.h"
#include "image/codec.h"

namespace {

using namespace epollcr;
namespace fs = std::filesystem;

constexpr std::size_t kEnvelopeSize = 24;  // SaveWorld's header before the Boost archive (lib/src/archive/world_api.cc)

bool Write(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  return static_cast<bool>(out);
}

// Variant 0: an eventfd in a poll; 1: and a pipe with bytes in it, a semaphore eventfd; 2, 3: and edge-triggered,
// a socket pair with bytes, a nested poll holding a one-shot entry already delivered.
void BuildWorld(World& w, int variant) {
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
}

// The Boost archives of `world` into the two loaders' corpora, as NAME.
bool WriteArchives(const World& world, const fs::path& corpus, const std::string& name) {
  for (auto [format, dir] : {std::pair{ArchiveFormat::kBoostText, "boost_text_loader"},
                             std::pair{ArchiveFormat::kBoostXml, "boost_xml_loader"}}) {
    Result<std::string> saved = SaveWorld(world, format);
    if (!saved.ok() || !Write(corpus / dir / name, saved.value().substr(kEnvelopeSize))) return false;
  }
  return true;
}

// Runs the trace step by step and returns the archive seeds of its fullest world.
bool WriteTraceWorld(const replay::Trace& trace, const fs::path& corpus, const std::string& name) {
  replay::UserspaceEngine engine(replay::CheckpointFormat::kBoostBinary);
  replay::Execution execution(trace, engine);
  int most = -1;
  for (const replay::Op& op : trace.ops) {
    replay::OpOutcome outcome;
    if (!execution.Step(op, &outcome).ok()) return false;
    const int open = engine.fds().Count();
    if (open > most) {
      most = open;
      if (!WriteArchives(engine.world(), corpus, name)) return false;
    }
  }
  return true;
}

// Opens a pipe, an eventfd and a socket pair as fds 3..7 (the fixture of the image_restorer target) and makes host
// files of those `hosted` says (by index 0..4), installed under their own numbers, with a kernel-backed poll
// watching them; false if fds 3..7 were not the ones the kernel gave.
bool BuildHostWorld(World& w, const std::vector<int>& hosted) {
  int p[2];
  int s[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return false;
  const int e = ::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s) != 0) return false;
  const int fds[] = {p[0], p[1], e, s[0], s[1]};
  for (int i = 0; i < 5; ++i) {
    if (fds[i] != 3 + i) return false;
  }
  const int ep = sys::EpollCreate1(w.fds, 0).value();
  for (int i = 0; i < 5; ++i) {
    if (std::find(hosted.begin(), hosted.end(), i) == hosted.end()) {
      ::close(fds[i]);
      continue;
    }
    Result<std::shared_ptr<HostFile>> file = HostFile::Create(fds[i]);
    if (!file.ok() || w.fds.InstallAt(fds[i], file.value())) return false;
    Event ev{i == 1 ? kEventOut : kEventIn, {}};
    ev.SetData(100 + i);
    if (sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, fds[i], &ev)) return false;
  }
  return true;
}

// Reads exactly `size` bytes from `socket` into *bytes, counting (and closing) the fds that come with them.
bool ReadExactly(int socket, std::size_t size, std::string* bytes, std::uint8_t* fds) {
  bytes->resize(size);
  for (std::size_t have = 0; have < size;) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
    iovec iov{bytes->data() + have, size - have};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t f = 0; f < k; ++f) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * f, sizeof fd);
        ::close(fd);
      }
      *fds = static_cast<std::uint8_t>(*fds + k);
    }
    have += static_cast<std::size_t>(n);
  }
  return true;
}

std::uint64_t LittleEndian(const std::string& bytes, std::size_t at, std::size_t size) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < size; ++i) v |= std::uint64_t{static_cast<unsigned char>(bytes[at + i])} << (8 * i);
  return v;
}

// What SendWorld sends, as the handoff_receive target's peer messages: the hand-off over a socket pair, read back in
// the pieces its wire format (restore/handoff.h) sends: the header, the image, then one message a batch of fds.
bool RecordHandoff(const World& w, std::vector<fuzz::PeerMessage>* messages) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return false;
  UniqueFd sender(pair[0]);
  UniqueFd receiver(pair[1]);
  bool sent = false;
  std::thread send([&] {
    sent = restore::SendWorld(sender.get(), w).ok();
    ::shutdown(sender.get(), SHUT_WR);
  });
  fuzz::PeerMessage header;
  fuzz::PeerMessage image;
  bool read = ReadExactly(receiver.get(), 24, &header.bytes, &header.fds);
  const std::uint64_t count = read ? LittleEndian(header.bytes, 12, 4) : 0;
  read = read && ReadExactly(receiver.get(), LittleEndian(header.bytes, 16, 8), &image.bytes, &image.fds);
  if (read) messages->insert(messages->end(), {header, image});
  for (std::uint64_t at = 0; read && at < count; at += 253) {
    fuzz::PeerMessage batch;
    read = ReadExactly(receiver.get(), 4 + 4 * 253, &batch.bytes, &batch.fds);
    messages->push_back(std::move(batch));
  }
  receiver.Reset();  // a sender still writing (after a failed read) stops with EPIPE
  send.join();
  return sent && read;
}

bool WriteHandoff(const World& w, const fs::path& path) {
  std::vector<fuzz::PeerMessage> messages;
  return RecordHandoff(w, &messages) && Write(path, fuzz::PeerMessagesInput(messages));
}

// The fdinfo texts of a kernel epoll with entries (two fds of one eventfd among them), an empty one, a pipe and an
// eventfd.
bool WriteFdinfoSeeds(const fs::path& dir) {
  auto fdinfo = [](int fd) {
    std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  int p[2];
  int s[2];
  if (::pipe2(p, O_CLOEXEC) != 0 || ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) != 0) return false;
  const int e = ::eventfd(3, EFD_CLOEXEC);
  const int e2 = ::dup(e);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  const int empty = ::epoll_create1(EPOLL_CLOEXEC);
  const struct {
    int fd;
    std::uint32_t events;
    std::uint64_t data;
  } adds[] = {{p[0], EPOLLIN, 0x1234}, {e, EPOLLIN | EPOLLET, ~0ull}, {e2, EPOLLIN | EPOLLOUT, 0},
              {s[0], EPOLLOUT | EPOLLONESHOT | EPOLLRDHUP, 42}, {empty, EPOLLIN, 7}};
  for (const auto& a : adds) {
    epoll_event ev{};
    ev.events = a.events;
    ev.data.u64 = a.data;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, a.fd, &ev) != 0) return false;
  }
  epoll_event got[8];
  (void)::epoll_wait(ep, got, 8, 0);  // the one-shot entry fires and is disarmed
  const bool ok = Write(dir / "epoll-with-entries", fdinfo(ep)) && Write(dir / "epoll-empty", fdinfo(empty)) &&
                  Write(dir / "pipe", fdinfo(p[0])) && Write(dir / "eventfd", fdinfo(e));
  for (int fd : {p[0], p[1], s[0], s[1], e, e2, ep, empty}) ::close(fd);
  return ok;
}

bool WriteHostSeeds(const fs::path& corpus, const std::vector<std::string>& framed_worlds,
                    const std::vector<std::string>& handoff_worlds) {
  for (std::size_t i = 0; i < framed_worlds.size(); ++i) {
    if (!Write(corpus / "image_restorer" / ("strict-world-" + std::to_string(i)), std::string(1, '\0') + framed_worlds[i])) {
      return false;
    }
  }
  for (std::size_t i = 0; i < handoff_worlds.size(); ++i) {
    if (!Write(corpus / "handoff_receive" / ("world-" + std::to_string(i)), handoff_worlds[i])) return false;
  }
  {
    World all;  // every fixture fd: under prune, the pipe's and socket's references (other inodes) are dropped
    if (!BuildHostWorld(all, {0, 1, 2, 3, 4})) return false;
    Result<std::string> framed = image::SaveImage(all);
    if (!framed.ok() || !Write(corpus / "image_restorer" / "prune-host-all", std::string(1, '\1') + framed.value())) {
      return false;
    }
  }
  World eventfd_only;  // eventfds share their anonymous inode: this reference resolves in the target's run too
  if (!BuildHostWorld(eventfd_only, {2})) return false;
  Result<std::string> framed = image::SaveImage(eventfd_only);
  return framed.ok() && Write(corpus / "image_restorer" / "strict-host-eventfd", std::string(1, '\0') + framed.value()) &&
         WriteHandoff(eventfd_only, corpus / "handoff_receive" / "host-eventfd");
}

}  // namespace

int main(int argc, char** argv) {
  constexpr const char* kUsage = "usage: make_seed_corpus CORPUS_DIR TRACE...\n";
  if (argc >= 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  // An option is not a directory: `make_seed_corpus --help` once wrote the seeds into ./--help.
  if (argc < 2 || argv[1][0] == '-') {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const fs::path corpus = argv[1];
  for (const char* dir : {"image_reader", "trace_parser", "boost_text_loader", "boost_xml_loader", "trace_checkpoints",
                          "image_restorer", "handoff_receive", "fdinfo_parser"}) {
    fs::create_directories(corpus / dir);
  }
  // First, while fds 3..7 are free: the host worlds.
  std::vector<std::string> framed_worlds;
  std::vector<std::string> handoff_worlds;
  for (int variant = 0; variant < 4; ++variant) {
    World w;
    BuildWorld(w, variant);
    Result<std::string> framed = image::SaveImage(w);
    std::vector<fuzz::PeerMessage> messages;
    if (!framed.ok() || !RecordHandoff(w, &messages)) return 1;
    framed_worlds.push_back(framed.value());
    handoff_worlds.push_back(fuzz::PeerMessagesInput(messages));
  }
  if (!WriteHostSeeds(corpus, framed_worlds, handoff_worlds) || !WriteFdinfoSeeds(corpus / "fdinfo_parser")) {
    std::fprintf(stderr, "make_seed_corpus: the host-file and fdinfo seeds failed (are fds 3..7 free?)\n");
    return 1;
  }
  for (int variant = 0; variant < 4; ++variant) {
    World w;
    BuildWorld(w, variant);
    Result<std::string> framed = image::SaveImage(w);
    Result<v1::Image> captured = image::Capture(w);
    if (!framed.ok() || !captured.ok()) return 1;
    const std::string n = std::to_string(variant);
    if (!Write(corpus / "image_reader" / ("framed-" + n), framed.value()) ||
        !Write(corpus / "image_reader" / ("payload-" + n), image::Encode(captured.value()).value()) ||
        !WriteArchives(w, corpus, "world-" + n)) {
      return 1;
    }
  }
  for (int i = 2; i < argc; ++i) {
    const fs::path path = argv[i];
    std::ifstream in(path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Result<replay::Trace> parsed = replay::ParseTrace(text, path.string());
    if (!in || !parsed.ok()) {
      std::fprintf(stderr, "make_seed_corpus: %s: %s\n", argv[i],
                   parsed.ok() ? "unreadable" : parsed.status().message.c_str());
      return 1;
    }
    const std::string name = path.stem().string();
    if (!Write(corpus / "trace_parser" / path.filename(), text) ||
        !Write(corpus / "trace_checkpoints" / path.filename(), text) ||
        !WriteTraceWorld(fuzz::BoundedTrace(parsed.value()), corpus, "trace-" + name)) {
      std::fprintf(stderr, "make_seed_corpus: %s: writing its seeds failed\n", argv[i]);
      return 1;
    }
  }
  return 0;
}
