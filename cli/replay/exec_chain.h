// The replay process's side of --checkpoint-mode exec (replay/exec_protocol.h): the userspace engine runs in a chain
// of worker processes (replay/exec_worker.h), a new one at every checkpoint, and this LineSource asks the current
// one for each operation's line. The replay process keeps standard output (and, with --engine both, the kernel
// engine and the comparison), so the output is made exactly as in memory mode.
//
// Start makes the process a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER): a worker whose parent has handed
// over and exited becomes this process's child, so that every worker is waited for and none is left behind. The
// process must start no other children while an ExecChain lives. Whatever happens, the destructor ends the chain,
// waits for every worker and removes the scratch directory.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "epollcr/unique_fd.h"
#include "replay/exec_protocol.h"
#include "replay/runner.h"
#include "replay/trace.h"

namespace epollcr::replay::exec {

struct WorkerProcess {
  pid_t pid = 0;
  std::string exec_id;  // ExecId() of its program image
};

class ExecChain final : public LineSource {
 public:
  // `text` is the trace's text (it parses to `trace`), `name` its name in messages.
  ExecChain(const Trace& trace, std::string text, std::string name, int checkpoint_every, bool host_files = false);
  ~ExecChain() override;

  // Makes the scratch directory under $TMPDIR (or /tmp), writes the trace and the first state there, and starts
  // the first worker (a fresh world at the start of the trace). A failure says why.
  Status Start();

  std::string_view Name() const override { return "userspace"; }
  Status Step(const Op& op, std::string* line) override;
  Status CheckpointAfter() override;

  // Ends the run: the current worker is told to stop, and every worker process is waited for. Fails if one of them
  // did not exit 0 (a crash, a sanitizer's report at exit). Call once, after the last operation; the destructor does
  // the same without the check.
  Status Finish();

  // The worker processes that took part, in order.
  const std::vector<WorkerProcess>& workers() const { return workers_; }

 private:
  // Reads records up to the next one of `kind` ('L' or 'K'); its text (after "X ") goes to `payload`.
  Status Await(char kind, std::string* payload);
  // Collects the exit statuses of the workers that have ended; with `block`, waits until there is no child left.
  void Reap(bool block);
  // What became of the workers that ended badly, or empty if all exited 0.
  std::string Casualties() const;
  // Stops the chain, waits for every worker, removes the scratch directory. Idempotent.
  void Stop();

  const Trace& trace_;
  std::string text_;
  std::string name_;
  int checkpoint_every_;
  bool host_files_;  // --files host
  std::string dir_;  // empty until Start made it
  UniqueFd socket_;  // the replay process's end
  std::unique_ptr<Channel> channel_;
  std::vector<WorkerProcess> workers_;
  std::map<pid_t, int> ended_;  // pid -> wait status, of every child waited for
  bool stopped_ = false;
};

}  // namespace epollcr::replay::exec
