// --checkpoint-mode exec: what the replay process and its worker processes hand to each other (docs/trace-format.md,
// "Checkpoint modes").
//
// The replay process (replay/exec_chain.h) makes a private scratch directory and one AF_UNIX stream socket pair. The
// workers (replay/exec_worker.h) run the userspace engine, one process after the other. Each is a fork, then an exec
// of /proc/self/exe, as
//
//   epollcr __replay-worker DIR socket SOCKET_FD     the first worker, started by the replay process
//   epollcr __replay-worker DIR handoff HANDOFF_FD   every later one, started by the worker before it
//
// DIR holds `trace` (the trace's text) and `state` (WorkerState below: the first worker's). SOCKET_FD is the workers'
// end of the socket pair.
//
// A later worker (the successor) is started ahead of its turn, as soon as the worker before it runs (in a world of
// host files, whose fds must cross the exec, only at the checkpoint): it loads, reads the trace and waits. HANDOFF_FD
// is its end of an AF_UNIX stream socket pair with the worker that started it. At the checkpoint that worker saves
// the world and sends its turn (SendTurn): one byte 'g' with the socket to the replay process attached (SCM_RIGHTS),
// then its state and the world as the bytes of an image file (image::SaveImage; the successor loads them with
// image::LoadImage: unframe, decode, validate, restore). The successor answers one byte '+' once it has taken over;
// the old worker then exits. A successor that sees the end of the stream instead of its turn (the run ended or its
// starter died) exits 0 without having done anything; until its turn it holds nothing of the run.
//
// On the socket, the replay process sends one byte per request, and the current worker answers with one record per
// line:
//   request 'g'            run the next operation of the trace
//   end of stream          stop: the worker exits 0
//   P <pid> <exec id>      a worker has started (the first thing every worker sends when its turn comes); the exec
//                          id is the 16 bytes the kernel gives each new program image (AT_RANDOM), in hex: a fork alone
//                          keeps them
//   L <line>               the output line of the operation asked for
//   K                      the implicit checkpoint after that operation (--checkpoint-every) succeeded
//   F <message>            the run cannot go on ("checkpoint: <why>"); the worker exits 1
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace epollcr::replay::exec {

// argv[1] of a worker process. Not a command for people: `epollcr --help` does not list it.
inline constexpr std::string_view kWorkerCommand = "__replay-worker";

// The files in the scratch directory.
inline constexpr std::string_view kTraceFile = "trace";
inline constexpr std::string_view kStateFile = "state";

// A hidden switch for the tests of failures, read by the workers: "exec" (the next program cannot be executed),
// "image" (the image file is damaged after it is written), "die" (a new worker is killed when its turn comes, before
// it takes over), "die-waiting" (a successor started ahead of its turn is killed while it waits), "die-later" (a new
// worker is killed at its first request), "lie" (a new worker misreports the first operation it runs, so that
// --engine both has a difference to find).
inline constexpr const char* kFaultEnv = "EPOLLCR_REPLAY_EXEC_FAULT";
// A hidden diagnostic: the replay process appends "replay PID EXEC_ID" and one "worker PID EXEC_ID" line per worker
// process to this file when the run ends.
inline constexpr const char* kLogEnv = "EPOLLCR_REPLAY_EXEC_LOG";

// Where a worker picks the run up.
struct WorkerState {
  std::string trace_name;    // the trace's name in messages ("<stdin>", the path)
  int checkpoint_every = 0;  // RunOptions::checkpoint_every
  // -1: the start of the trace, in a fresh world (no image). Otherwise the index (in Trace::ops) of the operation
  // the checkpoint belongs to: the `checkpoint` line itself when `verb`, else the operation it followed.
  long long at = -1;
  bool verb = false;
  std::vector<int> fds;  // Execution::fds(): NameId -> fd, -1 when dead
  bool host_files = false;  // --files host
  // --files host, after a checkpoint: the kernel fds that crossed the exec (without FD_CLOEXEC): every host file's,
  // then the kernel epolls, bells and private duplicates the old world gave up (ReleaseHostResources), which are
  // `released`. The new worker marks them all close-on-exec again.
  std::vector<int> inherited;
  std::vector<int> released;
};

// Text lines: "epollcr-replay-state 1", "every N", "at N", "verb 0|1", "files memory|host", "fds N fd...",
// "inherited N fd...", "released N fd...", then "name" and the trace's name up to the end of the file (it may hold
// any byte).
std::string EncodeState(const WorkerState& state);
// False with a reason when `text` is not a whole, well-formed state.
bool DecodeState(std::string_view text, WorkerState* state, std::string* reason);

// "exited with status 3", "was killed by signal 9 (Killed)": what waitpid's status says, for messages.
std::string DescribeWaitStatus(int status);

// The 16 bytes of AT_RANDOM in lower-case hex: different for every exec, the same after a fork.
std::string ExecId();

// The program every worker executes: this one.
inline constexpr const char* kSelfProgram = "/proc/self/exe";

// How a worker gets the socket to the replay process: at once (the first), or when its turn comes (a successor).
enum class WorkerRole { kFirst, kSuccessor };

// Starts a worker: the child executes `program` as `epollcr __replay-worker DIR socket FD` (kFirst: `fd` is the
// socket) or `... DIR handoff FD` (kSuccessor: `fd` is its end of the hand-off socket pair), and `fd` and `inherit`
// are the only fds of the caller's that cross the exec.
struct SpawnedWorker {
  pid_t pid = -1;
  std::string failure;  // when pid is -1: "fork: <strerror>" or "exec PROGRAM: <strerror>"
};
SpawnedWorker SpawnWorker(const std::string& program, const std::string& dir, WorkerRole role, int fd,
                          const std::vector<int>& inherit = {});

// The successor's turn: one byte 'g' on `handoff` with `socket_fd` attached, then the sizes of `state` (its
// EncodeState text) and `image` (the world, as the bytes of an image file) and their bytes. False if it could not all
// be sent (the successor is gone).
bool SendTurn(int handoff, int socket_fd, std::string_view state, std::string_view image);
// Waits on `handoff` for the turn and reads it: returns the socket to the replay process, with `*state` and `*image`;
// or an invalid fd at the end of the stream (the turn never came) or on a turn that is not whole.
int AwaitTurn(int handoff, std::string* state, std::string* image);

// Reads a whole file; false with strerror's reason.
bool ReadFile(const std::string& path, std::string* text, std::string* reason);
// Writes `path` through a temporary file in the same directory and a rename, so a reader sees all or nothing. Not
// synced: the reader is a process on this machine. False with a reason.
bool WriteFileAtomically(const std::string& path, std::string_view text, std::string* reason);

// One end of the socket pair: whole records out, requests and records in.
class Channel {
 public:
  explicit Channel(int fd) : fd_(fd) {}

  int fd() const { return fd_; }
  // Sends all of `bytes` (MSG_NOSIGNAL: a vanished peer is an error, not a signal).
  bool Send(std::string_view bytes) const;
  // One request byte; false at the end of the stream or on an error.
  bool ReadByte(char* byte) const;
  // One record, without its newline; false at the end of the stream (or on an error) before a whole line.
  bool ReadRecord(std::string* record);

 private:
  int fd_;
  std::string buffer_;  // read but not yet returned (records only: requests are read byte by byte)
};

}  // namespace epollcr::replay::exec
