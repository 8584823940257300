#include "replay/exec_worker.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "epollcr/unique_fd.h"
#include "replay/exec_protocol.h"
#include "replay/formatter.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"

namespace epollcr::replay::exec {
namespace {

std::string Fault() {
  const char* fault = std::getenv(kFaultEnv);
  return fault != nullptr ? fault : "";
}

std::string Reason(const Status& status) {
  return status.message.empty() ? status.code.message() : status.message;
}

bool ParseFd(const char* text, int* fd) {
  const std::string_view word(text);
  auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), *fd);
  return ec == std::errc() && ptr == word.data() + word.size() && !word.empty();
}

// Damages the image's payload (the "image" fault): the next LoadImage must refuse it.
void DamageImage(std::string* image) {
  if (image->size() >= 40) image->back() = static_cast<char>(image->back() ^ 0x5a);
}

// The replay process may die while a worker is inside an operation that never returns (`wait E MAX -1` with nothing
// ready: the trace is single-threaded, so nothing else would wake it). A watchdog thread waits for the replay
// process's end of the socket to close (POLLHUP: closed, not the shutdown(SHUT_WR) that ends a run normally, after
// which the replay process waits for the workers to close their end first). Then, if the worker is inside an
// operation, the watchdog ends it as the end of the requests does: the scratch directory removed, exit status 0.
// Outside an operation the worker's own thread sees the socket close at its next read or write and ends the same
// way; the watchdog then waits for the worker to enter an operation (which it may never do), so that it never removes
// the directory while this process writes a checkpoint into it (or a new worker reads one: that happens outside
// operations too).
class Watchdog {
 public:
  static void Start(int socket_fd, std::string dir) {
    std::thread([socket_fd, dir = std::move(dir)] {
      pollfd hangup{.fd = socket_fd, .events = 0, .revents = 0};  // POLLHUP is always reported
      while (::poll(&hangup, 1, -1) < 0 && errno == EINTR) {
      }
      std::unique_lock lock(State().mu);
      State().entered.wait(lock, [] { return State().in_operation; });
      // The worker stays inside: it cannot leave while the lock is held, and the lock is held until the process ends.
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
      ::_exit(0);
    }).detach();
  }
  // Marks the calling thread's time inside one operation of the trace.
  class InOperation {
   public:
    InOperation() { Set(true); }
    ~InOperation() { Set(false); }
    InOperation(const InOperation&) = delete;
    InOperation& operator=(const InOperation&) = delete;

   private:
    static void Set(bool in) {
      {
        std::lock_guard lock(State().mu);
        State().in_operation = in;
      }
      if (in) State().entered.notify_one();
    }
  };

 private:
  struct Shared {
    std::mutex mu;
    std::condition_variable entered;  // notified when in_operation becomes true
    bool in_operation = false;        // Guarded by mu.
  };
  // Never destroyed: the detached thread may use it while the process exits.
  static Shared& State() {
    static Shared* const state = new Shared();
    return *state;
  }
};

// Reads the trace from the scratch directory, named as the state says (the name never changes along the chain).
bool LoadTrace(const std::string& dir, Trace* trace, std::string* reason) {
  std::string text;
  WorkerState state;
  if (!ReadFile(dir + "/" + std::string(kStateFile), &text, reason) || !DecodeState(text, &state, reason)) return false;
  if (!ReadFile(dir + "/" + std::string(kTraceFile), &text, reason)) return false;
  Result<Trace> parsed = ParseTrace(text, state.trace_name);
  if (!parsed.ok()) {
    *reason = "trace: " + parsed.status().message;
    return false;
  }
  *trace = std::move(parsed).value();
  return true;
}

// The next worker, started by this one: the hand-off socket pair's end of ours, or why it could not start.
struct Successor {
  pid_t pid = -1;
  UniqueFd handoff;
  std::string failure;
};

Successor StartSuccessor(const std::string& dir, const std::vector<int>& inherit) {
  Successor successor;
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    successor.failure = std::string("socketpair: ") + std::strerror(errno);
    return successor;
  }
  successor.handoff.Reset(pair[0]);
  const UniqueFd theirs(pair[1]);
  const std::string program = Fault() == "exec" ? "/nonexistent/epollcr-exec-fault" : kSelfProgram;
  SpawnedWorker spawned = SpawnWorker(program, dir, WorkerRole::kSuccessor, theirs.get(), inherit);
  successor.pid = spawned.pid;
  successor.failure = std::move(spawned.failure);
  return successor;
}

class Worker {
 public:
  Worker(std::string dir, int socket_fd, Trace trace)
      : dir_(std::move(dir)), channel_(socket_fd), trace_(std::move(trace)) {}

  // The whole life of the worker; returns its exit status. `state` is the text of a WorkerState. `takeover` is a
  // successor's hand-off socket (its turn has come, and `image` is the world), invalid for the first worker.
  int Run(std::string_view state, UniqueFd takeover, std::string image);
  // Reports that the run cannot go on; returns the exit status for it.
  int Fail(const std::string& message) {
    std::string record = "F " + message;
    for (char& c : record) c = c == '\n' ? ' ' : c;
    (void)channel_.Send(record + "\n");
    return 1;
  }

 private:
  // Whether a checkpoint is due after the operation at index `from` or later (a `checkpoint` line, or
  // --checkpoint-every with an operation left after it).
  bool CheckpointAhead(std::size_t from) const;
  // Starts the successor ahead of its turn, so that its process start overlaps this worker's work: when a checkpoint
  // is ahead, and the world has no host fds (those cross the exec, so that successor is started at the checkpoint).
  void StartSpare(std::size_t from);
  // Saves the world and the state, gives the successor its turn and waits until it has taken over: then this process
  // exits 0 (and this never returns). Returns the exit status of a failure, after reporting it.
  int HandOver(long long at, bool verb);

  std::string dir_;
  Channel channel_;
  WorkerState state_;
  Trace trace_;
  std::unique_ptr<UserspaceEngine> engine_;  // once the state says which files the trace has
  std::unique_ptr<Execution> execution_;  // over trace_ and engine_, once both are there
  Successor spare_;  // started ahead of its turn, if any
};

int Worker::Run(std::string_view state, UniqueFd takeover, std::string image) {
  const std::string fault = Fault();
  const bool restored = takeover.valid();
  if (std::string reason; !DecodeState(state, &state_, &reason)) return Fail(reason);
  const Trace& trace = trace_;
  if (state_.fds.size() != trace.names.size() || state_.at >= static_cast<long long>(trace.ops.size()) ||
      restored != (state_.at >= 0)) {
    return Fail("bad state file: it does not fit the trace");
  }
  if (!channel_.Send("P " + std::to_string(::getpid()) + " " + ExecId() + "\n")) return 1;
  if (restored && fault == "die") ::raise(SIGKILL);
  Watchdog::Start(channel_.fd(), dir_);
  const std::size_t resume = restored ? static_cast<std::size_t>(state_.at) : 0;
  StartSpare(resume);

  engine_ = std::make_unique<UserspaceEngine>(CheckpointFormat::kProto, ImageStore::kFile,
                                              state_.host_files ? FileBacking::kHost : FileBacking::kMemory);
  if (restored) {
    // Host files (the backing, or kernel-only objects) crossed the exec: the restorer resolves them.
    Status status = state_.host_files || !state_.inherited.empty()
                        ? engine_->RestoreHostImage(image, state_.inherited, state_.released)
                        : engine_->RestoreImage(image);
    image = std::string();  // the world holds what it needs
    if (!status.ok()) return Fail("checkpoint: " + Reason(status));
  }
  execution_ = std::make_unique<Execution>(trace, *engine_);
  (void)execution_->SetFds(state_.fds);  // the size was checked above
  // Taken over: the old process may go. With host files it shares this world's kernel objects until it has exited
  // (a pipe's write end it still holds keeps the read end from hanging up), so this one waits for it to be gone: its
  // pidfd turns readable once the exit has closed and released every file.
  if (takeover.valid()) {
    const bool shares_kernel_objects = state_.host_files || !state_.inherited.empty();
    UniqueFd old(shares_kernel_objects ? static_cast<int>(::syscall(SYS_pidfd_open, ::getppid(), 0)) : -1);
    (void)::send(takeover.get(), "+", 1, MSG_NOSIGNAL);
    takeover.Reset();
    if (old.valid()) {
      pollfd exited{.fd = old.get(), .events = POLLIN, .revents = 0};
      while (::poll(&exited, 1, 10'000) < 0 && errno == EINTR) {
      }
    }
  }
  const RunOptions options{.checkpoint_every = state_.checkpoint_every};
  std::size_t next = 0;
  if (restored) {
    const auto at = static_cast<std::size_t>(state_.at);
    if (state_.verb) {
      if (!channel_.Send("L " + FormatLine(trace.ops[at], OpOutcome::Ok()) + "\n")) return 1;
      if (CheckpointDue(options, at)) return HandOver(state_.at, false);
    } else if (!channel_.Send("K\n")) {
      return 1;
    }
    next = at + 1;
  }
  bool first_request = true;
  for (char request = 0; channel_.ReadByte(&request); ++next, first_request = false) {
    if (restored && first_request && fault == "die-later") ::raise(SIGKILL);
    if (request != 'g') return Fail("unknown request from the replay process");
    if (next >= trace.ops.size()) return Fail("the replay process asked for more operations than the trace has");
    const Op& op = trace.ops[next];
    if (op.verb == Verb::kCheckpoint) return HandOver(static_cast<long long>(next), true);
    OpOutcome outcome;
    Status status = Status::Ok();
    {
      Watchdog::InOperation inside;
      status = execution_->Step(op, &outcome);
    }
    if (!status.ok()) return Fail(status.message);
    std::string line = FormatLine(op, outcome);
    if (restored && first_request && fault == "lie") line += " (lie)";
    if (!channel_.Send("L " + line + "\n")) return 1;
    if (CheckpointDue(options, next)) return HandOver(static_cast<long long>(next), false);
  }
  // The replay process ended the run (or died: then nobody else would). It removes the scratch directory too, once
  // every worker is gone; whoever comes first does it.
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
  return 0;
}

int Worker::HandOver(long long at, bool verb) {
  for (const Op& op : trace_.ops) {
    if (op.verb == Verb::kSignalFd || op.verb == Verb::kFifo) return Fail(std::string(kExecDoesNotCarry));
  }
  const std::string fault = Fault();
  state_.at = at;
  state_.verb = verb;
  state_.fds = execution_->fds();
  // A world with host files gives them up to the next worker, with its polls' kernel epolls: they cross the exec.
  state_.inherited.clear();
  state_.released.clear();
  const bool host = state_.host_files || trace_.host_objects;
  std::string image;
  Status saved = Status::Ok();
  if (host) {
    saved = engine_->SaveHostImage(&image, &state_.inherited, &state_.released);
  } else if (Result<std::string> bytes = engine_->SaveImage(); bytes.ok()) {
    image = std::move(bytes).value();
  } else {
    saved = bytes.status();
  }
  if (!saved.ok()) return Fail("checkpoint: " + Reason(saved));
  if (fault == "image") DamageImage(&image);

  // The successor started ahead of its turn, or, in a world of host files, one started now: the fds the world gave
  // up cross its exec.
  Successor successor = spare_.pid > 0 || !spare_.failure.empty() ? std::move(spare_)
                                                                   : StartSuccessor(dir_, state_.inherited);
  if (successor.pid < 0) return Fail("checkpoint: " + successor.failure);
  // The image goes to the successor over the hand-off socket, not through a file: it crosses to a process on this
  // machine, which reads it at once. A successor that is gone already cannot take the turn; what became of it is
  // the answer.
  (void)SendTurn(successor.handoff.get(), channel_.fd(), EncodeState(state_), image);
  char answer = 0;
  ssize_t n;
  do {
    n = ::read(successor.handoff.get(), &answer, 1);
  } while (n < 0 && errno == EINTR);
  // The new process has taken over: this one is done. _exit: nothing of this process is needed any more.
  if (n == 1 && answer == '+') ::_exit(0);
  int status = 0;
  while (::waitpid(successor.pid, &status, 0) < 0 && errno == EINTR) {
  }
  return Fail("checkpoint: the new process (pid " + std::to_string(successor.pid) + ") " +
              DescribeWaitStatus(status) + " before it took over");
}

bool Worker::CheckpointAhead(std::size_t from) const {
  const RunOptions options{.checkpoint_every = state_.checkpoint_every};
  for (std::size_t i = from; i < trace_.ops.size(); ++i) {
    if (trace_.ops[i].verb == Verb::kCheckpoint || CheckpointDue(options, i)) return true;
  }
  return false;
}

void Worker::StartSpare(std::size_t from) {
  if (state_.host_files || trace_.host_objects || !CheckpointAhead(from)) return;
  // A trace that exec mode cannot carry stops at its first checkpoint (HandOver): no successor will be needed.
  for (const Op& op : trace_.ops) {
    if (op.verb == Verb::kSignalFd || op.verb == Verb::kFifo) return;
  }
  spare_ = StartSuccessor(dir_, {});
}

}  // namespace

int RunWorker(int argc, char** argv) {
  const std::string_view role = argc == 5 ? argv[3] : "";
  int fd = -1;
  if ((role != "socket" && role != "handoff") || !ParseFd(argv[4], &fd) || fd < 3 || ::fcntl(fd, F_GETFD) < 0) {
    std::cerr << "epollcr: usage: " << kWorkerCommand
              << " is the worker process of 'epollcr replay --checkpoint-mode exec', not a command\n";
    return 2;
  }
  // The fd must not leak into anything this process starts (the next worker gets what it needs explicitly).
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  const std::string dir = argv[2];
  // Everything that does not depend on the world is done before the turn comes: loading this program, reading the
  // trace. A failure is reported once the worker has the socket to report it on.
  Trace trace;
  std::string reason;
  const bool loaded = LoadTrace(dir, &trace, &reason);
  std::string state;
  if (role == "socket") {
    Worker worker(dir, fd, std::move(trace));
    if (!loaded || !ReadFile(dir + "/" + std::string(kStateFile), &state, &reason)) return worker.Fail(reason);
    return worker.Run(state, UniqueFd(), "");
  }
  UniqueFd handoff(fd);
  if (Fault() == "die-waiting") ::raise(SIGKILL);
  std::string image;
  const int socket_fd = AwaitTurn(handoff.get(), &state, &image);
  // Not needed: the run ended, or the worker that started this one did, before its checkpoint.
  if (socket_fd < 0) return 0;
  Worker worker(dir, socket_fd, std::move(trace));
  return loaded ? worker.Run(state, std::move(handoff), std::move(image)) : worker.Fail(reason);
}

}  // namespace epollcr::replay::exec
