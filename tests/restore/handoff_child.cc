// The new process of the hand-off tests (restorer_test.cc): restores a world handed over by exec (an image file and
// inherited fds) or over a Unix socket (SCM_RIGHTS), plays the rest of host_scenario.h on it and prints one line
// per step, then "pid N", "report ...". Exit 0 after a restore, 1 (with the error on stderr) if it failed.
//   handoff_child exec IMAGE
//   handoff_child scm SOCKET_FD [prune]
//   handoff_child live STAGE --handoff-fd FD   a live hand-off's successor (restore/successor.h): STAGE "none", or
//                                    the stage to fail at as `epollcr demo --fail-successor` does (start, receive,
//                                    restore, confirm, timeout, go: killed, refusing, never answering)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <signal.h>

#include "host_scenario.h"
#include "restore/handoff.h"
#include "restore/successor.h"

namespace {

int Live(const std::string& fail, int channel) {
  using namespace epollcr;
  using restore::SuccessorStage;
  restore::AcceptOptions options;
  options.at_stage = [fail](SuccessorStage stage) -> Status {
    if ((fail == "start" && stage == SuccessorStage::kStarted) ||
        (fail == "receive" && stage == SuccessorStage::kReceiving) ||
        (fail == "confirm" && stage == SuccessorStage::kRestored) || (fail == "go" && stage == SuccessorStage::kServing)) {
      raise(SIGKILL);
    }
    if (fail == "restore" && stage == SuccessorStage::kRestoring) return Status::Error(ECANCELED, "refused by the test");
    if (fail == "timeout" && stage == SuccessorStage::kRestored) {
      for (;;) pause();
    }
    return {};
  };
  World world;
  restore::AcceptReport report;
  Status s = restore::AcceptHandOff(channel, &world, options, &report);
  if (!s.ok()) {
    std::fprintf(stderr, "hand-off failed: %s\n", s.message.c_str());
    return 1;
  }
  testing::EpollcrSide side{&world};
  for (const std::string& line : testing::PlayAfter(side.Side(), side.FdOfC())) std::printf("%s\n", line.c_str());
  std::printf("pid %d\n", static_cast<int>(getpid()));
  std::printf("report host_files=%llu inherited=%llu received=%llu stale=%llu moved=%llu entries=%llu\n",
              static_cast<unsigned long long>(report.restore.host_files),
              static_cast<unsigned long long>(report.inherited), static_cast<unsigned long long>(report.received),
              static_cast<unsigned long long>(report.stale), static_cast<unsigned long long>(report.moved),
              static_cast<unsigned long long>(report.restore.entries));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace epollcr;
  if (argc == 5 && std::strcmp(argv[1], "live") == 0 && std::strcmp(argv[3], "--handoff-fd") == 0) {
    return Live(argv[2], std::atoi(argv[4]));
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: handoff_child exec IMAGE | scm SOCKET_FD [prune]\n");
    return 2;
  }
  World world;
  restore::Options options;
  if (argc > 3 && std::strcmp(argv[3], "prune") == 0) options.policy = restore::Policy::kPrune;
  restore::Report report;
  Status s = std::strcmp(argv[1], "exec") == 0
                 ? restore::RestoreAfterExec(argv[2], &world, options, &report)
                 : restore::ReceiveWorld(std::atoi(argv[2]), &world, options, &report);
  if (!s.ok()) {
    std::fprintf(stderr, "restore failed: %s\n", s.message.c_str());
    return 1;
  }
  testing::EpollcrSide side{&world};
  for (const std::string& line : testing::PlayAfter(side.Side(), side.FdOfC())) std::printf("%s\n", line.c_str());
  std::printf("pid %d\n", static_cast<int>(getpid()));
  std::printf("report host_files=%llu rekeyed=%llu polls=%llu entries=%llu pruned=%zu\n",
              static_cast<unsigned long long>(report.host_files), static_cast<unsigned long long>(report.rekeyed),
              static_cast<unsigned long long>(report.polls), static_cast<unsigned long long>(report.entries),
              report.pruned.size());
  return 0;
}
