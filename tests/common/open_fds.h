// The number of fds this process has open: a failed restore, hand-off or image write must leave it as it was.
#pragma once

#include <dirent.h>

namespace epollcr::testing {

inline int OpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n - 3;  // ".", ".." and the DIR's own fd
}

}  // namespace epollcr::testing
