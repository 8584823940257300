#include "replay/replay_command.h"

#include <malloc.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "command_status.h"
#include "epollcr/unique_fd.h"
#include "replay/exec_chain.h"
#include "replay/host_objects.h"
#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"

namespace epollcr::replay {
namespace {

using cli::CommandError;
using cli::kExitFailure;
using cli::kExitOk;
using cli::kExitUsage;
using cli::PrintError;
using cli::PrintErrorMessage;

// Reads a whole file, or stdin for "-". On failure returns false with the reason (strerror).
bool ReadInput(const std::string& path, std::string* text, std::string* reason) {
  UniqueFd owned;
  int fd = STDIN_FILENO;
  if (path != "-") {
    owned.Reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned.valid()) {
      *reason = std::strerror(errno);
      return false;
    }
    fd = owned.get();
  }
  char buffer[65536];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *reason = std::strerror(errno);  // e.g. EISDIR for a directory
      return false;
    }
    if (n == 0) return true;
    text->append(buffer, static_cast<std::size_t>(n));
  }
}

// The hidden diagnostic of exec mode (exec::kLogEnv): this process and the workers, with their exec ids.
void LogWorkers(const exec::ExecChain& chain) {
  const char* path = std::getenv(exec::kLogEnv);
  if (path == nullptr || *path == '\0') return;
  std::ofstream log(path, std::ios::app);
  log << "replay " << ::getpid() << ' ' << exec::ExecId() << '\n';
  for (const exec::WorkerProcess& worker : chain.workers()) log << "worker " << worker.pid << ' ' << worker.exec_id << '\n';
}

// The userspace engine in a chain of processes (--checkpoint-mode exec), alone or against the kernel.
RunReport RunExec(const Trace& trace, const std::string& text, const ReplayOptions& options, const RunOptions& run,
                  std::ostream& out) {
  exec::ExecChain chain(trace, text, trace.file, options.checkpoint_every, options.files == "host");
  // As in memory mode, a failure names the engine when there are two.
  const std::string where = trace.file + (options.engine == "both" ? ": userspace: " : ": ");
  RunReport report;
  if (Status started = chain.Start(); !started.ok()) {
    report = {kExitFailure, where + started.message};
  } else if (options.engine == "both") {
    KernelEngine kernel;
    EngineLines reference(trace, kernel);
    report = RunLockstep(trace, reference, chain, out, run);
  } else {
    report = RunTrace(trace, chain, out, run);
  }
  if (report.ok()) {
    // Every line agreed; the workers must also have ended well (a crash at exit, a sanitizer's report).
    if (Status finished = chain.Finish(); !finished.ok()) {
      report = {kExitFailure, where + finished.message};
    }
  }
  LogWorkers(chain);
  return report;
}

}  // namespace

int RunReplay(const ReplayOptions& options, std::ostream& out, std::ostream& err) {
  // Before any thread or worker process starts (they inherit the mask): a trace's `raise` must leave its signal
  // pending for a signalfd, never deliver it.
  host::BlockTraceSignals();
  const std::string display = options.path == "-" ? "<stdin>" : options.path;
  // The options' checks already refused anything else.
  const CheckpointFormat format = ParseCheckpointFormat(options.checkpoint_format).value_or(CheckpointFormat::kProto);
  const bool exec_mode = options.checkpoint_mode == "exec";
  if (exec_mode && format != CheckpointFormat::kProto) {
    PrintError(err, CommandError("usage", "--checkpoint-mode exec: checkpoints cross processes as proto images; "
                              "--checkpoint-format " + options.checkpoint_format + " is for --checkpoint-mode memory"));
    return kExitUsage;
  }
  if (options.checkpoint_store == "file" && (exec_mode || format != CheckpointFormat::kProto)) {
    PrintError(err, CommandError("usage", "--checkpoint-store file is for proto checkpoints in --checkpoint-mode "
                                          "memory (exec mode always goes through an image file; Boost archives "
                                          "stay in memory)"));
    return kExitUsage;
  }
  const FileBacking files = ParseFileBacking(options.files).value_or(FileBacking::kMemory);
  if (files == FileBacking::kHost && format != CheckpointFormat::kProto) {
    PrintError(err, CommandError("usage", "--files host: a world of host files is checkpointed as a proto image "
                                          "(--checkpoint-format proto)"));
    return kExitUsage;
  }
  const RunOptions run_options{.checkpoint_every = options.checkpoint_every};
  std::string text;
  std::string reason;
  if (!ReadInput(options.path, &text, &reason)) {
    PrintError(err, CommandError(display, reason));
    return kExitUsage;
  }
  Result<Trace> parsed = ParseTrace(text, display);
  if (!parsed.ok()) {
    PrintErrorMessage(err, parsed.status().message);
    return kExitUsage;
  }
  const ImageStore store = options.checkpoint_store == "file" ? ImageStore::kFile : ImageStore::kMemory;
  if (options.checkpoint_every > 0) {
    // A checkpoint frees a whole world and builds another one: malloc would give the freed top of its heap back to
    // the system and fault it in again each time (a system call, and a page fault per 4 KiB page).
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
  }
  RunReport report;
  if (options.engine == "kernel") {
    KernelEngine kernel;  // nothing to checkpoint, in either mode
    report = RunTrace(parsed.value(), kernel, out, run_options);
  } else if (exec_mode) {
    report = RunExec(parsed.value(), text, options, run_options, out);
  } else if (options.engine == "userspace") {
    UserspaceEngine userspace(format, store, files);
    report = RunTrace(parsed.value(), userspace, out, run_options);
  } else {
    KernelEngine kernel;
    UserspaceEngine userspace(format, store, files);
    report = RunLockstep(parsed.value(), kernel, userspace, out, run_options);
  }
  out.flush();
  if (!report.ok()) {
    PrintErrorMessage(err, report.error);
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace epollcr::replay
