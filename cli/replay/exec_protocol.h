// --checkpoint-mode exec: what the replay process and its worker processes hand to each other (docs/trace-format.md,
// "Checkpoint modes").
//
// The replay process (replay/exec_chain.h) makes a private scratch directory and one AF_UNIX stream socket pair. The
// workers (replay/exec_worker.h) run the userspace engine, one process after the other; each new one is started by
// the one before at a checkpoint: fork, then exec of /proc/self/exe as
//
//   epollcr __replay-worker DIR SOCKET_FD TAKEOVER_FD
//
// DIR holds what a worker needs to carry on: `trace` (the trace's text), `state` (WorkerState below) and, after the
// first checkpoint, `checkpoint.epcr` (the world, an image file: image::WriteImage / image::ReadImage). SOCKET_FD is
// the workers' end of the socket pair; TAKEOVER_FD (-1 for the first worker) is the write end of a pipe on which the
// new worker tells the old one that it has taken over: one byte '+', or the reason it could not start.
//
// On the socket, the replay process sends one byte per request, and the current worker answers with one record per
// line:
//   request 'g'            run the next operation of the trace
//   end of stream          stop: the worker exits 0
//   P <pid> <exec id>      a worker has started (the first thing every worker sends); the exec id is the 16 bytes
//                          the kernel gives each new program image (AT_RANDOM), in hex: a fork alone keeps them
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
inline constexpr std::string_view kImageFile = "checkpoint.epcr";

// A hidden switch for the tests of failures, read by the workers: "exec" (the next program cannot be executed),
// "image" (the image file is damaged after it is written), "die" (a new worker is killed before it takes over),
// "die-later" (a new worker is killed at its first request), "lie" (a new worker misreports the first operation it
// runs, so that --engine both has a difference to find).
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

// Forks; the child executes `program` as `epollcr __replay-worker DIR SOCKET_FD TAKEOVER_FD` (-1: none), and these
// two fds and `inherit` are the only ones of the caller's that cross the exec. If the exec fails, the child writes
// `report_prefix`, "exec PROGRAM: <strerror>" and `report_suffix` to `report_fd`, and exits 127. Returns the child's
// pid, or -1 (errno says why).
pid_t SpawnWorker(const std::string& program, const std::string& dir, int socket_fd, int takeover_fd, int report_fd,
                  std::string_view report_prefix, std::string_view report_suffix,
                  const std::vector<int>& inherit = {});

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
