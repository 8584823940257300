// The new process of the hand-off tests (restorer_test.cc): restores a world handed over by exec (an image file and
// inherited fds) or over a Unix socket (SCM_RIGHTS), plays the rest of host_scenario.h on it and prints one line
// per step, then "pid N", "report ...". Exit 0 after a restore, 1 (with the error on stderr) if it failed.
//   handoff_child exec IMAGE
//   handoff_child scm SOCKET_FD [prune]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "host_scenario.h"
#include "restore/handoff.h"

int main(int argc, char** argv) {
  using namespace epollcr;
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
