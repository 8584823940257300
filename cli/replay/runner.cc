#include "replay/runner.h"

#include <sys/epoll.h>
#include <sys/signalfd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "epollcr/syscalls.h"
#include "replay/host_objects.h"
#include "replay/sigpipe_guard.h"

namespace epollcr::replay {
namespace {

OpOutcome FromError(std::error_code error) { return error ? OpOutcome::Error(error.value()) : OpOutcome::Ok(); }

std::string Where(const Trace& trace, const Op& op) { return trace.file + ":" + std::to_string(op.line); }

bool IsKernelOnlyKind(FileKind kind) {
  switch (kind) {
    case FileKind::kTimerFd:
    case FileKind::kSignalFd:
    case FileKind::kListener:
    case FileKind::kTcp:
    case FileKind::kUdp:
    case FileKind::kFifoRead:
    case FileKind::kFifoWrite:
      return true;
    default:
      return false;
  }
}

}  // namespace

Execution::Execution(const Trace& trace, Engine& engine)
    : trace_(trace), engine_(engine), fds_(trace.names.size(), -1) {}

Status Execution::Step(const Op& op, OpOutcome* outcome) {
  switch (op.verb) {
    case Verb::kEpoll: {
      Result<int> fd = engine_.EpollCreate();
      SetFd(op.defines[0], fd.ok() ? fd.value() : -1);
      *outcome = FromError(fd.error());
      break;
    }
    case Verb::kPipe:
    case Verb::kSocketPair: {
      int pair[2] = {-1, -1};
      std::error_code error = op.verb == Verb::kPipe ? engine_.Pipe(pair) : engine_.SocketPair(pair);
      SetFd(op.defines[0], error ? -1 : pair[0]);
      SetFd(op.defines[1], error ? -1 : pair[1]);
      *outcome = FromError(error);
      break;
    }
    case Verb::kEventFd: {
      Result<int> fd = engine_.EventFd(static_cast<std::uint32_t>(op.number), op.semaphore);
      SetFd(op.defines[0], fd.ok() ? fd.value() : -1);
      *outcome = FromError(fd.error());
      break;
    }
    case Verb::kDup: {
      Result<int> fd = engine_.Dup(Fd(op.target));
      SetFd(op.defines[0], fd.ok() ? fd.value() : -1);
      *outcome = FromError(fd.error());
      break;
    }
    case Verb::kClose: {
      std::error_code error;
      if (op.reset) {
        // The reset reaches the other end in a softirq: wait until it has taken it, if the trace holds it.
        const int peer = host::FindPeer(engine_.KernelFd(Fd(op.target)), engine_.KernelFds());
        error = engine_.CloseReset(Fd(op.target));
        if (!error) host::AwaitClosed(peer);
      } else {
        // A TCP connection's close returns once its FIN is acknowledged (SO_LINGER, replay/host_objects.h).
        error = engine_.Close(Fd(op.target));
      }
      SetFd(op.target, -1);  // the name is dead whatever close said
      *outcome = FromError(error);
      break;
    }
    case Verb::kAdd:
    case Verb::kMod:
    case Verb::kDel: {
      const int ctl = op.verb == Verb::kAdd   ? sys::kEpollCtlAdd
                      : op.verb == Verb::kMod ? sys::kEpollCtlMod
                                              : sys::kEpollCtlDel;
      *outcome = FromError(engine_.EpollCtl(Fd(op.epoll), ctl, Fd(op.target), op.events, op.data));
      break;
    }
    case Verb::kWrite: {
      if (IsCounterKind(op.kind)) {
        std::span<std::byte> value = IoBuffer(sizeof(std::uint64_t));
        std::memcpy(value.data(), &op.number, sizeof(op.number));
        Result<std::size_t> n = engine_.Write(Fd(op.target), value);
        *outcome = FromError(n.error());
      } else if (IsKernelOnlyKind(op.kind)) {
        *outcome = WriteKernelOnly(op);
      } else {
        Result<std::size_t> n = engine_.Write(Fd(op.target), IoBuffer(static_cast<std::size_t>(op.number)));
        *outcome = n.ok() ? OpOutcome::Number(n.value()) : OpOutcome::Error(n.error().value());
      }
      break;
    }
    case Verb::kRead: {
      std::span<std::byte> buffer = IoBuffer(static_cast<std::size_t>(op.number));
      Result<std::size_t> n = engine_.Read(Fd(op.target), buffer);
      if (!n.ok()) {
        *outcome = OpOutcome::Error(n.error().value());
      } else if (IsCounterKind(op.kind) && n.value() >= sizeof(std::uint64_t)) {
        std::uint64_t value = 0;
        std::memcpy(&value, buffer.data(), sizeof(value));
        *outcome = OpOutcome::Number(value);
      } else if (op.kind == FileKind::kSignalFd && n.value() >= sizeof(signalfd_siginfo)) {
        signalfd_siginfo info{};
        std::memcpy(&info, buffer.data(), sizeof(info));
        *outcome = OpOutcome::Number(static_cast<std::uint64_t>(engine_.TraceSignal(static_cast<int>(info.ssi_signo))));
      } else {
        *outcome = OpOutcome::Number(n.value());
      }
      break;
    }
    case Verb::kShutdown: {
      std::error_code error = engine_.Shutdown(Fd(op.target), op.how);
      // A FIN reaches the peer in a softirq: wait until it is acknowledged.
      if (!error && op.kind == FileKind::kTcp) host::AwaitAcknowledged(engine_.KernelFd(Fd(op.target)));
      *outcome = FromError(error);
      break;
    }
    case Verb::kWait: {
      // No wait can return more events than there are registrations, and there are at most add_count of those: the
      // buffer need not be `max` long (max may be up to EP_MAX_EVENTS, and is passed as is).
      std::size_t size = static_cast<std::size_t>(std::clamp(op.max, 1, trace_.add_count + 1));
      if (events_.size() < size) events_.resize(size);
      Result<int> n = engine_.EpollWait(Fd(op.epoll), std::span<Event>(events_.data(), size), op.max, op.timeout_ms);
      if (n.ok()) {
        *outcome = OpOutcome::Events(std::vector<Event>(events_.begin(), events_.begin() + n.value()));
      } else {
        *outcome = OpOutcome::Error(n.error().value());
      }
      break;
    }
    case Verb::kCheckpoint: {
      Status status = Checkpoint();
      if (!status.ok()) return status;
      *outcome = OpOutcome::Ok();
      break;
    }
    case Verb::kTimerFd:
      Define(op.defines[0], engine_.TimerFd(), outcome);
      break;
    case Verb::kSetTime:
      *outcome = FromError(engine_.TimerSetTime(Fd(op.target), op.number, op.interval, op.absolute));
      break;
    case Verb::kSignalFd:
      Define(op.defines[0], engine_.SignalFd(static_cast<int>(op.number)), outcome);
      break;
    case Verb::kRaise:
      *outcome = FromError(engine_.Raise(static_cast<int>(op.number)));
      break;
    case Verb::kListen:
      Define(op.defines[0], engine_.Listen(), outcome);
      break;
    case Verb::kConnect:
      Define(op.defines[0], engine_.Connect(Fd(op.target)), outcome);
      break;
    case Verb::kAccept:
      Define(op.defines[0], engine_.Accept(Fd(op.target)), outcome);
      break;
    case Verb::kUdp:
    case Verb::kFifo: {
      int pair[2] = {-1, -1};
      const std::error_code error =
          op.verb == Verb::kUdp
              ? engine_.UdpPair(pair)
              : engine_.Fifo(op.fifo, op.defines[0] != kNoName, op.defines[1] != kNoName, pair);
      for (int i = 0; i < 2; ++i) {
        if (op.defines[i] != kNoName) SetFd(op.defines[i], error ? -1 : pair[i]);
      }
      *outcome = FromError(error);
      break;
    }
  }
  return Status::Ok();
}

void Execution::Define(NameId id, const Result<int>& fd, OpOutcome* outcome) {
  SetFd(id, fd.ok() ? fd.value() : -1);
  *outcome = FromError(fd.error());
}

OpOutcome Execution::WriteKernelOnly(const Op& op) {
  const int fd = Fd(op.target);
  // A datagram reaches the other end of a UDP pair in a softirq: watch for its wake-up there. With the other end
  // closed, an ICMP error comes back to this end instead.
  host::WakeWatch delivered;
  if (op.kind == FileKind::kUdp) {
    const int kernel_fd = engine_.KernelFd(fd);
    const int peer = host::FindPeer(kernel_fd, engine_.KernelFds());
    if (peer >= 0) {
      delivered.Add(peer, EPOLLIN);
    } else {
      delivered.Add(kernel_fd, EPOLLERR);
    }
  }
  // A FIFO's write(2) without a reader raises SIGPIPE, in either engine: it must never be delivered.
  SigPipeGuard guard;
  Result<std::size_t> n = engine_.Write(fd, IoBuffer(static_cast<std::size_t>(op.number)));
  if (!n.ok()) {
    if (n.error() == Errno(EPIPE)) guard.set_broken();
    return OpOutcome::Error(n.error().value());
  }
  if (op.kind == FileKind::kUdp) (void)delivered.Await();  // a datagram of 0 bytes is sent too
  if (op.kind == FileKind::kTcp && n.value() > 0) host::AwaitAcknowledged(engine_.KernelFd(fd));
  return OpOutcome::Number(n.value());
}

Status Execution::Checkpoint() {
  return engine_.Checkpoint();
}

bool Execution::SetFds(std::vector<int> fds) {
  if (fds.size() != fds_.size()) return false;
  fds_ = std::move(fds);
  return true;
}

Status EngineLines::Step(const Op& op, std::string* line) {
  OpOutcome outcome;
  Status status = execution_.Step(op, &outcome);
  if (status.ok()) *line = FormatLine(op, outcome);
  return status;
}

RunReport RunTrace(const Trace& trace, Engine& engine, std::ostream& out, const RunOptions& options) {
  EngineLines lines(trace, engine);
  return RunTrace(trace, lines, out, options);
}

RunReport RunTrace(const Trace& trace, LineSource& source, std::ostream& out, const RunOptions& options) {
  for (std::size_t i = 0; i < trace.ops.size(); ++i) {
    const Op& op = trace.ops[i];
    std::string line;
    Status status = source.Step(op, &line);
    if (status.ok()) {
      out << line << '\n';
      if (CheckpointDue(options, i)) status = source.CheckpointAfter();
    }
    out.flush();
    if (!status.ok()) return {1, Where(trace, op) + ": " + status.message};
  }
  return {};
}

RunReport RunLockstep(const Trace& trace, Engine& reference, Engine& candidate, std::ostream& out,
                      const RunOptions& options) {
  EngineLines first(trace, reference);
  EngineLines second(trace, candidate);
  return RunLockstep(trace, first, second, out, options);
}

RunReport RunLockstep(const Trace& trace, LineSource& reference, LineSource& candidate, std::ostream& out,
                      const RunOptions& options) {
  // A runtime failure of one engine names it: "t.trace:7: userspace: checkpoint: ...".
  auto failure = [&](const Op& op, const LineSource& source, const Status& status) {
    out.flush();
    return RunReport{1, Where(trace, op) + ": " + std::string(source.Name()) + ": " + status.message};
  };
  for (std::size_t i = 0; i < trace.ops.size(); ++i) {
    const Op& op = trace.ops[i];
    std::string line_a;
    std::string line_b;
    for (auto [source, line] : {std::pair{&reference, &line_a}, std::pair{&candidate, &line_b}}) {
      Status status = source->Step(op, line);
      if (!status.ok()) return failure(op, *source, status);
    }
    if (line_a != line_b) {
      // Pad the names to one width so the two lines line up.
      std::string name_a = std::string(reference.Name()) + ":";
      std::string name_b = std::string(candidate.Name()) + ":";
      std::size_t width = std::max(name_a.size(), name_b.size()) + 1;
      name_a.resize(width, ' ');
      name_b.resize(width, ' ');
      out << name_a << line_a << '\n' << name_b << line_b << '\n';
      out.flush();
      return {1, Where(trace, op) + ": " + std::string(reference.Name()) + " and " + std::string(candidate.Name()) +
                     " engines differ"};
    }
    out << line_a << '\n';
    out.flush();
    if (CheckpointDue(options, i)) {
      for (LineSource* source : {&reference, &candidate}) {
        Status status = source->CheckpointAfter();
        if (!status.ok()) return failure(op, *source, status);
      }
    }
  }
  return {};
}

}  // namespace epollcr::replay
