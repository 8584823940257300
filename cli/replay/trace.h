// A parsed replay trace: the operations of a trace file, validated, with their source lines (docs/trace-format.md).
//
// Names are resolved to small integer ids by the parser; an engine run keeps its own id -> fd table, so the same
// Trace runs on the kernel and on the userspace engine. A Trace is only ever built by ParseTrace, which rejects
// anything malformed: a Trace always runs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace epollcr::replay {

enum class Verb : std::uint8_t {
  kEpoll,
  kPipe,
  kEventFd,
  kSocketPair,
  kDup,
  kClose,
  kAdd,
  kMod,
  kDel,
  kWrite,
  kRead,
  kShutdown,
  kWait,
  kCheckpoint,
  // The kinds only the kernel has (docs/trace-format.md, "Kernel-only kinds"): real kernel objects in both engines.
  kTimerFd,
  kSetTime,
  kSignalFd,
  kRaise,
  kListen,
  kConnect,
  kAccept,
  kUdp,
  kFifo,
};

// The verb as it is spelled in a trace and in the output ("socketpair").
std::string_view VerbName(Verb verb);

// The static kind of a name: fixed when the name is defined, carried through dup. It decides what `read` and `write`
// mean (a counter for an eventfd, bytes otherwise).
enum class FileKind : std::uint8_t {
  kEpoll,
  kPipeRead,
  kPipeWrite,
  kEventFd,
  kSocket,
  // Kernel-only kinds.
  kTimerFd,
  kSignalFd,
  kListener,  // a listening TCP socket (`listen`)
  kTcp,       // a connected TCP socket (`connect`, `accept`)
  kUdp,       // one end of a `udp` pair
  kFifoRead,
  kFifoWrite,
};

std::string_view FileKindName(FileKind kind);

// Whether a read of this kind prints a 64-bit counter (eventfd, timerfd) instead of a byte count, and a write passes
// an 8-byte value.
inline bool IsCounterKind(FileKind kind) { return kind == FileKind::kEventFd || kind == FileKind::kTimerFd; }

// Whether the verb makes kernel-only objects (timerfd, signalfd, listen, connect, accept, udp, fifo): a trace with
// one of them is not checkpointed by replay yet (Trace::host_objects).
bool MakesHostObjects(Verb verb);

// Index into Trace::names.
using NameId = int;
inline constexpr NameId kNoName = -1;

// shutdown(2) `how` values.
inline constexpr int kShutRd = 0;
inline constexpr int kShutWr = 1;
inline constexpr int kShutRdWr = 2;

// The default buffer size of `read` on a pipe or socket.
inline constexpr std::uint64_t kDefaultReadSize = 1048576;
// The largest byte count of `read` and `write` on a pipe or socket (and of an eventfd read buffer).
inline constexpr std::uint64_t kMaxIoSize = 16 * 1048576;
// The largest eventfd INIT (eventfd(2) takes an unsigned int).
inline constexpr std::uint64_t kMaxEventFdInit = 0xffffffffULL;
// Trace signals are 1 ... kTraceSignals (`signalfd S SIG`, `raise SIG`); each engine maps them to real-time signals
// of its own (replay/host_objects.h).
inline constexpr std::uint64_t kTraceSignals = 8;
// The default buffer of `read` on a signalfd: one struct signalfd_siginfo.
inline constexpr std::uint64_t kSignalInfoSize = 128;

// One operation. Which fields mean something depends on the verb:
//   epoll E                   defines[0] = E
//   pipe P                    defines[0] = P.r, defines[1] = P.w
//   eventfd F [INIT] [sem]    defines[0] = F, number = INIT, semaphore
//   socketpair S              defines[0] = S.a, defines[1] = S.b
//   dup NAME NEW              target = NAME, defines[0] = NEW
//   close NAME                target = NAME
//   add|mod E NAME EV [DATA]  epoll = E, target = NAME, events = EV, data = DATA
//   del E NAME                epoll = E, target = NAME
//   write NAME N              target = NAME, kind, number = N
//   read NAME [N]             target = NAME, kind, number = N (has_number: N was given)
//   shutdown NAME HOW         target = NAME, how
//   wait E MAX [TIMEOUT]      epoll = E, max, timeout_ms
//   close NAME rst            target = NAME, kind, reset
//   timerfd T                 defines[0] = T
//   settime T NS [IV] [abs]   target = T, number = NS, interval = IV, absolute
//   signalfd S SIG            defines[0] = S, number = SIG
//   raise SIG                 number = SIG
//   listen L                  defines[0] = L
//   connect C L | accept A L  target = L, defines[0] = C or A
//   udp U                     defines[0] = U.a, defines[1] = U.b
//   fifo F [r|w]              defines[0] = F.r (or kNoName with `w`), defines[1] = F.w (or kNoName with `r`);
//                             fifo = F
//   shutdown, close and write also set kind (the settling of TCP and UDP depends on it).
struct Op {
  int line = 0;  // 1-based line in the trace file
  Verb verb = Verb::kCheckpoint;
  NameId epoll = kNoName;
  NameId target = kNoName;
  NameId defines[2] = {kNoName, kNoName};
  FileKind kind = FileKind::kEpoll;  // static kind of `target` at this line (read, write)
  std::uint64_t number = 0;
  bool has_number = false;
  bool semaphore = false;
  std::uint32_t events = 0;
  std::uint64_t data = 0;
  int how = kShutRd;
  int max = 0;
  int timeout_ms = 0;
  std::uint64_t interval = 0;  // settime: INTERVAL_NS
  bool absolute = false;       // settime: abs
  bool reset = false;          // close NAME rst
  std::string fifo;            // fifo: the FIFO's name F (its file in the engine's scratch directory)
};

struct Trace {
  std::string file;                // as given to the parser, for messages
  std::vector<std::string> names;  // NameId -> name
  std::vector<Op> ops;             // in file order
  int add_count = 0;               // number of `add` lines: no wait can return more events than this
  bool host_objects = false;       // a line makes kernel-only objects (MakesHostObjects): no checkpoints yet
};

}  // namespace epollcr::replay
