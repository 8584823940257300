// Running a parsed trace on one engine, or on two in lockstep (docs/trace-format.md).
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "replay/engine.h"
#include "replay/formatter.h"
#include "replay/scratch_buffer.h"
#include "replay/trace.h"

namespace epollcr::replay {

// One engine's run of one trace: the name -> fd table (dead or failed names hold -1) and scratch buffers.
class Execution {
 public:
  Execution(const Trace& trace, Engine& engine);
  Execution(const Execution&) = delete;
  Execution& operator=(const Execution&) = delete;

  // Runs one operation. A failed call is an outcome ("err E..."); a non-ok Status means the run cannot go on.
  Status Step(const Op& op, OpOutcome* outcome);
  // The engine's checkpoint. A `checkpoint` line and the implicit checkpoints both come here.
  Status Checkpoint();

  Engine& engine() { return engine_; }
  const Engine& engine() const { return engine_; }
  // The name -> fd table (NameId -> fd, -1 when dead): what a run in another process needs to carry on
  // (--checkpoint-mode exec). SetFds takes one of the trace's size; false (and nothing changed) otherwise.
  const std::vector<int>& fds() const { return fds_; }
  bool SetFds(std::vector<int> fds);

 private:
  int Fd(NameId id) const { return id == kNoName ? -1 : fds_[static_cast<std::size_t>(id)]; }
  void SetFd(NameId id, int fd) { fds_[static_cast<std::size_t>(id)] = fd; }
  std::span<std::byte> IoBuffer(std::size_t size) { return io_.Get(size); }
  // Sets the name a creation defines (-1 on a failure) and the outcome.
  void Define(NameId id, const Result<int>& fd, OpOutcome* outcome);
  // `write` of a TCP socket, UDP end, FIFO end, listener, timerfd or signalfd: bytes, then the settling of TCP and UDP
  // (replay/host_objects.h).
  OpOutcome WriteKernelOnly(const Op& op);

  const Trace& trace_;
  Engine& engine_;
  std::vector<int> fds_;  // NameId -> fd in engine_, -1 when dead
  ScratchBuffer io_;
  std::vector<Event> events_;
};

// Why a trace with signalfds or FIFOs stops at its first checkpoint in --checkpoint-mode exec.
inline constexpr std::string_view kExecDoesNotCarry =
    "checkpoint: --checkpoint-mode exec does not carry signalfds or FIFOs (a signal pending for a process does not "
    "cross the fork that starts the next worker, and the FIFOs' directory is the first worker's); "
    "--checkpoint-mode memory does";

struct RunReport {
  int exit_status = 0;  // 0: every line ran (and agreed); 1: divergence or runtime failure
  std::string error;    // "FILE:LINE: <reason>" when exit_status != 0

  bool ok() const { return exit_status == 0; }
};

struct RunOptions {
  // N > 0: after every N-th operation of the trace (once its line is written), a checkpoint; 0: none. 1 is after
  // every operation. These implicit checkpoints print nothing, so the output must be that of a run without them. A
  // failed one stops the run like a `checkpoint` line, with the line number of the operation it followed.
  int checkpoint_every = 0;
};

// Whether a checkpoint follows the operation at `index` (0-based, in Trace::ops).
inline bool CheckpointDue(const RunOptions& options, std::size_t index) {
  return options.checkpoint_every > 0 && (index + 1) % static_cast<std::size_t>(options.checkpoint_every) == 0;
}

// Where the output lines of a run come from: an engine in this process (EngineLines), or one that runs elsewhere
// (--checkpoint-mode exec: replay/exec_chain.h). The runners below call Step for each operation in trace order, and
// CheckpointAfter after the operations for which CheckpointDue holds.
class LineSource {
 public:
  LineSource() = default;
  LineSource(const LineSource&) = delete;
  LineSource& operator=(const LineSource&) = delete;
  virtual ~LineSource() = default;

  // "kernel", "userspace": the engine's name in messages.
  virtual std::string_view Name() const = 0;
  // Runs `op`, the next operation, and sets `line` to its output line (no newline). A non-ok Status means the run
  // cannot go on (a failed `checkpoint` line, a lost worker process); `line` is then meaningless.
  virtual Status Step(const Op& op, std::string* line) = 0;
  // The implicit checkpoint after an operation (RunOptions::checkpoint_every).
  virtual Status CheckpointAfter() = 0;
};

// The lines of an engine in this process: Execution::Step, then FormatLine; CheckpointAfter is Execution::Checkpoint.
class EngineLines final : public LineSource {
 public:
  EngineLines(const Trace& trace, Engine& engine) : execution_(trace, engine) {}

  std::string_view Name() const override { return execution_.engine().Name(); }
  Status Step(const Op& op, std::string* line) override;
  Status CheckpointAfter() override { return execution_.Checkpoint(); }

 private:
  Execution execution_;
};

// Runs `trace` on `engine`, writing one line per operation to `out`. Stops at a runtime failure (exit 1).
RunReport RunTrace(const Trace& trace, Engine& engine, std::ostream& out, const RunOptions& options = {});
RunReport RunTrace(const Trace& trace, LineSource& source, std::ostream& out, const RunOptions& options = {});

// Runs `trace` on both engines, operation by operation. Lines on which they agree are written once. At the first
// line where they differ, writes both lines, each after its engine's name, and stops with exit 1:
//   kernel:    14 wait events 2 in@7 out|hup@3
//   userspace: 14 wait events 1 in@7
RunReport RunLockstep(const Trace& trace, Engine& reference, Engine& candidate, std::ostream& out,
                      const RunOptions& options = {});
RunReport RunLockstep(const Trace& trace, LineSource& reference, LineSource& candidate, std::ostream& out,
                      const RunOptions& options = {});

}  // namespace epollcr::replay
