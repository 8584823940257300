// A live hand-off with a way back: a running program's world (its EventPolls, in-memory files and host fds) handed to
// a successor, a new program image started before the pause, with the predecessor keeping everything it needs to
// resume until the successor confirms it is serving. docs/restore.md, "Live hand-off", tells it step by step.
//
//   before the pause  Successor::Start forks; the child clears FD_CLOEXEC on the world's host fds and on every poll's
//                     kernel epoll, bell and private duplicates (their numbers stay), and execs `argv` followed by
//                     "--handoff-fd N". The predecessor tells it which fds it inherited and serves on. The successor
//                     loads and sets itself up, and AcceptHandOff says HELLO.
//   the pause         Successor::HandOver: the image (image::SaveImageWith), encoded straight into memory the two
//                     share (a memfd both mapped and faulted in before the pause; the socket if it does not fit), with, by
//                     SCM_RIGHTS, only the fds the successor does not already hold as they are now (host fds opened
//                     since Start, every kernel-side fd), each with the number it must take, and the numbers of the
//                     inherited fds that went stale (closed or re-used since). The successor closes those, puts each
//                     fd at its number, restores without a system call per fd (the predecessor itself named the fds:
//                     InheritedFdResolver::Trusted) and takes each poll's kernel epoll over as it is (no epoll_ctl per
//                     entry; the kernel's ready list and edges go on). It answers RESTORED, or REFUSED with its reason.
//   commit            The predecessor answers GO; the successor answers SERVING and serves. Then the predecessor gives
//                     the world up (ReleaseHostResources) and closes its copies of the fds: no EPOLL_CTL_DEL, no
//                     read or write, since the open files and kernel epolls are the successor's now.
//   the way back      Until it sends SERVING the successor changes nothing the two processes share: no read, write or
//                     epoll_ctl on a shared fd, no epoll_wait on a shared kernel epoll. If it exits, is killed,
//                     refuses, or does not answer within `confirm_timeout`, HandOver kills it (SIGKILL), reaps it and
//                     returns the error with the world untouched, and the predecessor resumes serving. A successor
//                     that does not get GO closes what it received and inherited, and its caller exits.
//
// Wire (little-endian; the framing of handoff_wire.h):
//   P->S at Start  "EPCRLIVS" | u32 version | i32 memfd (-1: none) | u64 its size | u32 n | n pairs of i32
//                  [first, last]: the fd ranges it inherited. The memfd, which the successor maps (and faults in)
//                  before HELLO, is where the image will be: no copy through the socket in the pause.
//   S->P           "HELO" | u32 version
//   P->S the pause "EPCRLIVE" | u32 version | u32 host fds sent | u32 kernel fds sent | u32 stale | u64 image bytes
//                  | u32 where (1: in the memfd, 0: next on the socket), then stale i32s, then the framed image if
//                  on the socket, then the host fds and the kernel fds (handoff_wire.h)
//   S->P           "DONE" | or "FAIL" u32 length, reason
//   P->S           "GO!!"
//   S->P           "SERV"
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "epollcr/state.h"
#include "restore/restorer.h"

namespace epollcr::restore {

struct SuccessorOptions {
  // The successor's program and its arguments; "--handoff-fd N" is appended. argv[0] is a path (execv).
  std::vector<std::string> argv;
  // Other fds of the predecessor the successor is to inherit under their numbers (a log, a status pipe); the world's
  // fds are inherited without being listed. The successor inherits stdin, stdout and stderr too, and nothing else.
  std::vector<int> keep_fds;
  // How long HandOver waits for the successor's HELLO (if it has not come yet), for its answer to the image, and for
  // SERVING after GO.
  std::chrono::milliseconds confirm_timeout{5000};
  // Heap faulted in by Start for the pause, per fd of the world (0: none). Start then also sets malloc's
  // M_MMAP_THRESHOLD and M_TRIM_THRESHOLD for this process, so that large blocks come from that heap and freed memory
  // stays there (successor.cc, WarmHeap).
  std::size_t warm_heap_bytes_per_fd = 1024;
};

// What HandOver did, for reports. Times are CLOCK_MONOTONIC (std::chrono::steady_clock), comparable across processes.
struct HandOverReport {
  std::uint64_t entries = 0;     // poll entries in the image
  std::uint64_t host_fds = 0;    // host fds of the world
  std::uint64_t inherited = 0;   // of which the successor already held from Start
  std::uint64_t sent = 0;        // fds sent with the image (host fds opened since Start, kernel-side fds)
  std::uint64_t stale = 0;       // inherited fds the successor closed
  std::uint64_t image_bytes = 0;
  std::chrono::steady_clock::time_point paused, saved, sent_at, restored, serving;
  std::string ToString() const;  // "entries=.. ... pause_ms=.. (save=.. send=.. restore=.. go=..)"
};

// The predecessor's side.
class Successor {
 public:
  // Starts the successor (fork, FD_CLOEXEC cleared on the world's fds in the child, exec). Returns at once: the
  // caller serves on until Ready(). Fails (nothing started, nothing changed) if the fork or the socket pair fails.
  static Result<std::unique_ptr<Successor>> Start(World& world, SuccessorOptions options);
  // A successor that did not take the world over is killed and reaped.
  ~Successor();
  Successor(const Successor&) = delete;
  Successor& operator=(const Successor&) = delete;

  pid_t pid() const { return pid_; }
  // Readable when the successor has said HELLO, or failed before it: watch it, then ask Ready().
  int channel() const { return channel_; }
  // Without blocking: true once the successor said HELLO; an error if it failed first (exited, or closed the
  // channel): it has been reaped then, and the world was never touched.
  Result<bool> Ready();
  // The pause (blocking, bounded by confirm_timeout at each wait). On success the successor serves the world and
  // this process has given it up: the world is only fit to be dropped. On failure (the error names the stage) the
  // successor is killed and reaped and the world is exactly as it was: resume serving it. Once only.
  Status HandOver(World& world, HandOverReport* report = nullptr);

 private:
  Successor() = default;
  void Abandon();  // kill and reap the successor, close the channel

  SuccessorOptions options_;
  pid_t pid_ = -1;
  int channel_ = -1;
  bool hello_ = false;
  bool done_ = false;  // handed over (or abandoned)
  std::string hello_bytes_;
  // What the successor inherited: each host fd with its file then (and that file's address, which names it while the
  // weak reference has not expired), and the kernel-side fds.
  struct Inherited {
    int fd;
    std::weak_ptr<File> file;
    const File* address;
  };
  std::vector<Inherited> host_;
  std::vector<int> kernel_;
  // Memory shared with the successor (a memfd it inherits), where the image is encoded in the pause.
  int shared_fd_ = -1;
  char* shared_ = nullptr;
  std::size_t shared_size_ = 0;
};

// The successor's side.
enum class SuccessorStage : std::uint8_t {
  kStarted,    // the inherited fds are known; HELLO not yet sent
  kReceiving,  // the pause began: the header came, the image and fds not yet
  kRestoring,  // everything received and every fd in place; the restore not yet begun
  kRestored,   // restored; RESTORED not yet sent
  kConfirmed,  // RESTORED sent; GO not yet received
  kServing,    // GO received; SERVING not yet sent
};
const char* SuccessorStageName(SuccessorStage stage);

struct AcceptOptions {
  Options restore;  // resolvers (InheritedFdResolver::Trusted is placed before them), policy, limits
  // How long to wait for the pause after HELLO, and for GO after RESTORED; 0: as long as it takes (the predecessor
  // closing the channel ends any wait).
  std::chrono::milliseconds timeout{0};
  // Called at each stage; an error refuses the hand-off there (sent as the reason if the pause has begun).
  std::function<Status(SuccessorStage)> at_stage;
  // Heap faulted in before HELLO for the pause, per inherited fd, as SuccessorOptions::warm_heap_bytes_per_fd (the
  // same malloc settings).
  std::size_t warm_heap_bytes_per_fd = 4096;
};

struct AcceptReport {
  Report restore;
  std::uint64_t inherited = 0, received = 0, stale = 0, moved = 0;  // moved: fds that could not take their number
  std::chrono::steady_clock::time_point hello, header, received_at, placed, restored, go;
};

// Takes the world over from the predecessor over `channel` (the fd after --handoff-fd) into `out` (empty). Returns
// once SERVING is sent: serve. On failure `out` is empty, every fd the predecessor sent or left to it is closed, no
// shared fd or kernel epoll was changed, and the predecessor resumes: exit.
Status AcceptHandOff(int channel, World* out, const AcceptOptions& options = {}, AcceptReport* report = nullptr);

}  // namespace epollcr::restore
