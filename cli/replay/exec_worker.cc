#include "replay/exec_worker.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
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

// Damages the image file's payload (the "image" fault): the next ReadImage must refuse it.
void DamageImage(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || st.st_size < 40) return;
  char byte = 0;
  const off_t at = st.st_size - 1;
  if (::pread(fd.get(), &byte, 1, at) == 1) {
    byte = static_cast<char>(byte ^ 0x5a);
    (void)!::pwrite(fd.get(), &byte, 1, at);
  }
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

class Worker {
 public:
  Worker(std::string dir, int socket_fd) : dir_(std::move(dir)), channel_(socket_fd) {}

  // The whole life of the worker; returns its exit status.
  int Run(int takeover_fd);

 private:
  std::string Path(std::string_view file) const { return dir_ + "/" + std::string(file); }
  // Reports that the run cannot go on; returns the exit status for it.
  int Fail(const std::string& message) {
    std::string record = "F " + message;
    for (char& c : record) c = c == '\n' ? ' ' : c;
    (void)channel_.Send(record + "\n");
    return 1;
  }
  // Saves the world and the state, starts the next worker and waits until it has taken over: then this process
  // exits 0 (and this never returns). Returns the exit status of a failure, after reporting it.
  int HandOver(long long at, bool verb);

  std::string dir_;
  Channel channel_;
  WorkerState state_;
  Trace trace_;
  std::unique_ptr<UserspaceEngine> engine_;  // once the state says which files the trace has
  std::unique_ptr<Execution> execution_;  // over trace_ and engine_, once both are there
};

int Worker::Run(int takeover_fd) {
  UniqueFd takeover(takeover_fd);
  const std::string fault = Fault();
  const bool restored = takeover.valid();
  std::string text;
  std::string reason;
  if (!ReadFile(Path(kStateFile), &text, &reason) || !DecodeState(text, &state_, &reason)) return Fail(reason);
  if (!ReadFile(Path(kTraceFile), &text, &reason)) return Fail(reason);
  Result<Trace> parsed = ParseTrace(text, state_.trace_name);
  if (!parsed.ok()) return Fail("trace: " + parsed.status().message);
  trace_ = std::move(parsed).value();
  const Trace& trace = trace_;
  if (state_.fds.size() != trace.names.size() || state_.at >= static_cast<long long>(trace.ops.size()) ||
      restored != (state_.at >= 0)) {
    return Fail("bad state file: it does not fit the trace");
  }
  if (!channel_.Send("P " + std::to_string(::getpid()) + " " + ExecId() + "\n")) return 1;
  if (restored && fault == "die") ::raise(SIGKILL);
  Watchdog::Start(channel_.fd(), dir_);

  engine_ = std::make_unique<UserspaceEngine>(CheckpointFormat::kProto, ImageStore::kFile,
                                              state_.host_files ? FileBacking::kHost : FileBacking::kMemory);
  if (restored) {
    // Host files (the backing, or kernel-only objects) crossed the exec: the restorer resolves them.
    Status status = state_.host_files || !state_.inherited.empty()
                        ? engine_->RestoreHostImageFile(Path(kImageFile), state_.inherited, state_.released)
                        : engine_->RestoreImageFile(Path(kImageFile));
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
    (void)!::write(takeover.get(), "+", 1);
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
  const Status saved = host ? engine_->SaveHostImageFile(Path(kImageFile), &state_.inherited, &state_.released)
                            : engine_->SaveImageFile(Path(kImageFile));
  if (!saved.ok()) return Fail("checkpoint: " + Reason(saved));
  std::string reason;
  if (!WriteFileAtomically(Path(kStateFile), EncodeState(state_), &reason)) return Fail("checkpoint: " + reason);
  if (fault == "image") DamageImage(Path(kImageFile));

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Fail(std::string("checkpoint: pipe: ") + std::strerror(errno));
  UniqueFd takeover_read(pipe_fds[0]);
  UniqueFd takeover_write(pipe_fds[1]);
  const std::string program = fault == "exec" ? "/nonexistent/epollcr-exec-fault" : kSelfProgram;
  // An exec that fails is reported on the takeover pipe.
  const pid_t child =
      SpawnWorker(program, dir_, channel_.fd(), takeover_write.get(), takeover_write.get(), "", "", state_.inherited);
  if (child < 0) return Fail(std::string("checkpoint: fork: ") + std::strerror(errno));
  takeover_write.Reset();
  std::string answer;
  char buffer[512];
  while (true) {
    const ssize_t n = ::read(takeover_read.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buffer, static_cast<std::size_t>(n));
    if (answer == "+") break;
  }
  // The new process has taken over: this one is done. _exit: nothing of this process is needed any more.
  if (answer == "+") ::_exit(0);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!answer.empty()) return Fail("checkpoint: " + answer);
  return Fail("checkpoint: the new process (pid " + std::to_string(child) + ") " + DescribeWaitStatus(status) +
              " before it took over");
}

}  // namespace

int RunWorker(int argc, char** argv) {
  int socket_fd = -1;
  int takeover_fd = -1;
  if (argc != 5 || !ParseFd(argv[3], &socket_fd) || !ParseFd(argv[4], &takeover_fd) || socket_fd < 3 ||
      takeover_fd < -1 || ::fcntl(socket_fd, F_GETFD) < 0 || (takeover_fd >= 0 && ::fcntl(takeover_fd, F_GETFD) < 0)) {
    std::cerr << "epollcr: usage: " << kWorkerCommand
              << " is the worker process of 'epollcr replay --checkpoint-mode exec', not a command\n";
    return 2;
  }
  // Neither fd may leak into anything this process starts but the next worker (which gets them explicitly).
  ::fcntl(socket_fd, F_SETFD, FD_CLOEXEC);
  if (takeover_fd >= 0) ::fcntl(takeover_fd, F_SETFD, FD_CLOEXEC);
  Worker worker(argv[2], socket_fd);
  return worker.Run(takeover_fd);
}

}  // namespace epollcr::replay::exec
