#include "replay/exec_chain.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>

#include "replay/scratch.h"

namespace epollcr::replay::exec {
namespace {

// "P <pid> <exec id>": the record a worker sends when it starts.
std::optional<WorkerProcess> StartedWorker(std::string_view record) {
  WorkerProcess worker;
  const std::size_t space = record.find(' ', 2);
  if (!record.starts_with("P ") || space == std::string_view::npos ||
      std::from_chars(record.data() + 2, record.data() + space, worker.pid).ec != std::errc()) {
    return std::nullopt;
  }
  worker.exec_id = std::string(record.substr(space + 1));
  return worker;
}

}  // namespace

ExecChain::ExecChain(const Trace& trace, std::string text, std::string name, int checkpoint_every, bool host_files)
    : trace_(trace),
      text_(std::move(text)),
      name_(std::move(name)),
      checkpoint_every_(checkpoint_every),
      host_files_(host_files) {}

ExecChain::~ExecChain() { Stop(); }

Status ExecChain::Start() {
  Result<std::string> dir = MakeScratchDir("epollcr-exec-");  // before the subreaper below (scratch.h)
  if (!dir.ok()) return dir.status();
  dir_ = dir.value();
  WorkerState state;
  state.trace_name = name_;
  state.checkpoint_every = checkpoint_every_;
  state.host_files = host_files_;
  state.fds.assign(trace_.names.size(), -1);
  std::string reason;
  if (!WriteFileAtomically(dir_ + "/" + std::string(kTraceFile), text_, &reason) ||
      !WriteFileAtomically(dir_ + "/" + std::string(kStateFile), EncodeState(state), &reason)) {
    return Halt(reason);
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return Status::Error(errno, std::string("socketpair: ") + std::strerror(errno));
  }
  socket_.Reset(pair[0]);
  UniqueFd theirs(pair[1]);
  channel_ = std::make_unique<Channel>(socket_.get());
  // Best effort: without it, the workers after the first are still waited for through the socket (they hold it until
  // they exit), only their exit statuses are not known.
  (void)::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

  const SpawnedWorker first = SpawnWorker(kSelfProgram, dir_, WorkerRole::kFirst, theirs.get());
  if (first.pid < 0) return Halt(first.failure);
  theirs.Reset();
  // The first record of a worker that started is its P record.
  std::string record;
  if (!channel_->ReadRecord(&record)) {
    Reap(true);
    return Halt("the first worker process " + Casualties());
  }
  if (record.starts_with("F ")) return Halt(record.substr(2));
  std::optional<WorkerProcess> worker = StartedWorker(record);
  if (!worker) return Halt("protocol: the first worker process said '" + record + "'");
  workers_.push_back(std::move(*worker));
  return Status::Ok();
}

Status ExecChain::Step(const Op& op, std::string* line) {
  if (channel_ == nullptr || !channel_->Send("g")) {
    Reap(true);
    return Halt("the worker process is gone: " + Casualties());
  }
  Status status = Await('L', line);
  // The worker keeps its own place in the trace: it must be this operation's line.
  if (status.ok() && !line->starts_with(std::to_string(op.line) + " ")) {
    return Halt("protocol: a worker process answered line " + std::to_string(op.line) + " with '" + *line +
                         "'");
  }
  return status;
}

Status ExecChain::CheckpointAfter() {
  std::string unused;
  return Await('K', &unused);
}

Status ExecChain::Await(char kind, std::string* payload) {
  std::string record;
  while (channel_->ReadRecord(&record)) {
    const char type = record.empty() ? '\0' : record[0];
    const std::string text = record.size() > 2 ? record.substr(2) : "";
    if (type == kind) {
      *payload = text;
      return Status::Ok();
    }
    if (type == 'F') return Halt(text);
    std::optional<WorkerProcess> worker = StartedWorker(record);
    if (!worker) return Halt("protocol: unexpected record from a worker process: '" + record + "'");
    workers_.push_back(std::move(*worker));
    Reap(false);  // the worker before it is about to exit
  }
  // Every worker has closed its end of the socket: none is left to answer.
  Reap(true);
  const std::string casualties = Casualties();
  return Halt(casualties.empty() ? "the worker processes ended without an answer" : casualties);
}

void ExecChain::Reap(bool block) {
  while (true) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, block ? 0 : WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;  // none ended yet, or no child left (ECHILD)
    ended_[pid] = status;
  }
}

std::string ExecChain::Casualties() const {
  std::string text;
  for (const auto& [pid, status] : ended_) {
    if (status == 0) continue;
    text += (text.empty() ? "" : "; ") + std::string("worker process ") + std::to_string(pid) + " " +
            DescribeWaitStatus(status);
  }
  return text;
}

void ExecChain::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (socket_.valid()) {
    // The end of the requests: the current worker exits 0. Wait until every worker has closed the socket, then for
    // every process.
    ::shutdown(socket_.get(), SHUT_WR);
    std::string record;
    while (channel_->ReadRecord(&record)) {
      if (std::optional<WorkerProcess> worker = StartedWorker(record)) workers_.push_back(std::move(*worker));
    }
    socket_.Reset();
  }
  Reap(true);
  if (!dir_.empty()) RemoveScratchDir(dir_);
}

Status ExecChain::Finish() {
  Stop();
  const std::string casualties = Casualties();
  if (!casualties.empty()) return Halt(casualties);
  return Status::Ok();
}

}  // namespace epollcr::replay::exec
