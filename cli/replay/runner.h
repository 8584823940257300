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

  Engine& engine() { return engine_; }

 private:
  int Fd(NameId id) const { return id == kNoName ? -1 : fds_[static_cast<std::size_t>(id)]; }
  void SetFd(NameId id, int fd) { fds_[static_cast<std::size_t>(id)] = fd; }
  std::span<std::byte> IoBuffer(std::size_t size) { return io_.Get(size); }

  const Trace& trace_;
  Engine& engine_;
  std::vector<int> fds_;  // NameId -> fd in engine_, -1 when dead
  ScratchBuffer io_;
  std::vector<Event> events_;
};

struct RunReport {
  int exit_status = 0;  // 0: every line ran (and agreed); 1: divergence or runtime failure
  std::string error;    // "FILE:LINE: <reason>" when exit_status != 0

  bool ok() const { return exit_status == 0; }
};

struct RunOptions {
  // After every operation (once its line is written), Engine::Checkpoint(); the kernel engine does nothing. These
  // implicit checkpoints print nothing, so the output must be that of a run without them. A failed one stops the run
  // like a `checkpoint` line, with the line number of the operation it followed.
  bool checkpoint_every = false;
};

// Runs `trace` on `engine`, writing one line per operation to `out`. Stops at a runtime failure (exit 1).
RunReport RunTrace(const Trace& trace, Engine& engine, std::ostream& out, const RunOptions& options = {});

// Runs `trace` on both engines, operation by operation. Lines on which they agree are written once. At the first
// line where they differ, writes both lines, each after its engine's name, and stops with exit 1:
//   kernel:    14 wait events 2 in@7 out|hup@3
//   userspace: 14 wait events 1 in@7
RunReport RunLockstep(const Trace& trace, Engine& reference, Engine& candidate, std::ostream& out,
                      const RunOptions& options = {});

}  // namespace epollcr::replay
