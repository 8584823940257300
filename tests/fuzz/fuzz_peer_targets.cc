// The fuzz targets where hostile bytes arrive from outside a file epollcr wrote: an image restored with resolvers over
// real fds, the receiving side of an SCM_RIGHTS hand-off, and /proc/PID/fdinfo text (fuzz_entry_points.h).
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "commands/ps_proc.h"
#include "epollcr/epollcr.h"
#include "epollcr/host_file.h"
#include "fuzz_checks.h"
#include "fuzz_entry_points.h"
#include "restore/handoff.h"
#include "restore/resolvers.h"
#include "restore/restorer.h"

namespace epollcr::fuzz {
namespace {


// The process's open fds, as /proc/self/fd lists them (the listing's own fd excepted).
std::vector<int> OpenFds() {
  std::vector<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    fds.push_back(std::stoi(entry.path().filename().string()));
  }
  std::sort(fds.begin(), fds.end());
  return fds;
}

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

// What must hold after any run of a target that restores: nothing alive, watched or open that was not before.
struct Baseline {
  long files = File::LiveFiles();
  std::size_t watched = HostFile::WrappedFds();
  std::size_t fds = OpenFds().size();

  void Check(Checks& checks, const char* target) const {
    checks.Expect(File::LiveFiles() == files, std::string(target) + ": files left alive");
    checks.Expect(HostFile::WrappedFds() == watched, std::string(target) + ": host fds left watched");
    checks.Expect(OpenFds().size() == fds, std::string(target) + ": fds left open or closed");
  }
};

}  // namespace

// ---- image restorer with resolvers -----------------------------------------------------------------------------------

Verdict RestoreWithResolvers(std::string_view input) {
  Checks checks;
  if (input.empty()) return checks.Done(false);
  const Baseline baseline;
  // Real files under the numbers an image names: image fds 3..7 are a pipe's two ends, an eventfd and a socket
  // pair's two ends, opened afresh for each run (so no image made elsewhere names their inodes, but eventfds share
  // the anonymous inode, and an image can name it).
  int pipe_fds[2] = {-1, -1};
  int pair_fds[2] = {-1, -1};
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair_fds) != 0) {
    std::perror("fuzz: pipe2/socketpair");
    std::abort();
  }
  const int eventfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int fixture[] = {pipe_fds[0], pipe_fds[1], eventfd, pair_fds[0], pair_fds[1]};
  std::map<int, int> by_image_fd;
  for (int i = 0; i < 5; ++i) by_image_fd[3 + i] = fixture[i];

  // The first byte picks the policy; the rest is an image file.
  restore::Options options;
  options.policy = (input[0] & 1) != 0 ? restore::Policy::kPrune : restore::Policy::kStrict;
  options.read_limits.max_payload = 1 << 20;
  restore::InheritedFdResolver resolver(by_image_fd);
  options.resolvers.push_back(&resolver);
  bool accepted = false;
  {
    World world;
    restore::Report report;
    const Status s = restore::RestoreBytes(input.substr(1), &world, options, &report);
    accepted = s.ok();
    if (!accepted) {
      checks.Expect(!s.message.empty(), "restorer: a refusal without a message");
      checks.Expect(world.fds.Count() == 0 && world.roots.empty(), "restorer: a refusal left the world not empty");
      for (int fd : fixture) checks.Expect(IsOpen(fd), "restorer: a refusal closed an inherited fd");
    } else {
      checks.Expect(report.host_files <= 5, "restorer: more host files than fds to inherit");
    }
  }
  // The world closed the fds it took; the others are the fixture's to close.
  for (int fd : fixture) {
    if (IsOpen(fd)) ::close(fd);
  }
  baseline.Check(checks, "restorer");
  return checks.Done(accepted);
}

// ---- hand-off, receiving side ------------------------------------------------------------------------------------

// Splits a hand-off input into what the peer sends: records of [u8 fd count][u16 little-endian length][bytes].
std::vector<PeerMessage> ParsePeerMessages(std::string_view input) {
  std::vector<PeerMessage> messages;
  while (input.size() >= 3) {
    PeerMessage m;
    m.fds = static_cast<std::uint8_t>(input[0]) % 8;
    const std::size_t length = static_cast<std::uint8_t>(input[1]) | (static_cast<std::size_t>(static_cast<std::uint8_t>(input[2])) << 8);
    input.remove_prefix(3);
    m.bytes = std::string(input.substr(0, std::min(length, input.size())));
    input.remove_prefix(m.bytes.size());
    messages.push_back(std::move(m));
  }
  return messages;
}

std::string PeerMessagesInput(const std::vector<PeerMessage>& messages) {
  std::string out;
  for (const PeerMessage& m : messages) {
    for (std::size_t at = 0; at == 0 || at < m.bytes.size(); at += 0xffff) {
      const std::string_view part = std::string_view(m.bytes).substr(at, 0xffff);
      out.push_back(static_cast<char>(at == 0 ? m.fds : 0));
      out.push_back(static_cast<char>(part.size() & 0xff));
      out.push_back(static_cast<char>(part.size() >> 8));
      out += part;
    }
  }
  return out;
}

Verdict ReceiveFromHostilePeer(std::string_view input) {
  Checks checks;
  const Baseline baseline;
  int sockets[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) {
    std::perror("fuzz: socketpair");
    std::abort();
  }
  // The peer: each message with its fds (one eventfd, sent as many times as asked: each arrives as a new fd).
  const int carried = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::thread peer([&, messages = ParsePeerMessages(input)] {
    for (const PeerMessage& m : messages) {
      iovec iov{const_cast<char*>(m.bytes.data()), m.bytes.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))];
      if (m.fds > 0) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(m.fds * sizeof(int));
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(m.fds * sizeof(int));
        for (int i = 0; i < m.fds; ++i) std::memcpy(CMSG_DATA(c) + i * sizeof(int), &carried, sizeof(int));
      }
      if (m.bytes.empty() && m.fds == 0) continue;
      if (::sendmsg(sockets[0], &msg, MSG_NOSIGNAL) < 0) break;  // the receiver gave up and closed its end
    }
    ::shutdown(sockets[0], SHUT_WR);
  });
  bool accepted = false;
  {
    World world;
    restore::Options options;
    options.read_limits.max_payload = 1 << 20;
    const Status s = restore::ReceiveWorld(sockets[1], &world, options);
    accepted = s.ok();
    if (!accepted) {
      checks.Expect(!s.message.empty(), "receive: a refusal without a message");
      checks.Expect(world.fds.Count() == 0 && world.roots.empty(), "receive: a refusal left the world not empty");
    }
    ::close(sockets[1]);  // a peer still sending gets EPIPE and ends
    peer.join();
  }
  ::close(sockets[0]);
  ::close(carried);
  baseline.Check(checks, "receive");
  return checks.Done(accepted);
}

// ---- /proc/PID/fdinfo ---------------------------------------------------------------------------------------------

Verdict ParseFdinfoText(std::string_view text) {
  Checks checks;
  cli::ps::OpenFd fd;
  if (!cli::ps::ParseFdinfo(std::string(text), &fd)) return checks.Done(false);
  std::map<int, int> seen;
  for (const cli::ps::FdinfoEntry& e : fd.lines) {
    checks.Expect(e.tfd >= 0, "fdinfo: a negative tfd");
    checks.Expect(e.toff == seen[e.tfd]++, "fdinfo: toff is not the count of earlier lines of the same tfd");
    // Printed as fs/eventpoll.c ep_show_fdinfo prints it, the entry parses back to itself.
    char line[256];
    std::snprintf(line, sizeof line, "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%llx sdev:%x", e.tfd, e.events,
                  static_cast<unsigned long long>(e.data), static_cast<long long>(e.pos),
                  static_cast<unsigned long long>(e.ino), e.sdev);
    const std::optional<cli::ps::FdinfoEntry> again = cli::ps::ParseTfdLine(line);
    checks.Expect(again && again->tfd == e.tfd && again->events == e.events && again->data == e.data &&
                      again->pos == e.pos && again->ino == e.ino && again->sdev == e.sdev,
                  std::string("fdinfo: an entry does not parse back from the kernel's format: ") + line);
  }
  return checks.Done(true);
}

}  // namespace epollcr::fuzz
