#include "epollcr/unique_fd.h"

#include <unistd.h>

#include <cerrno>

namespace epollcr {

void UniqueFd::Reset(int fd) {
  const int old = std::exchange(fd_, fd);
  if (old >= 0) ::close(old);
}

std::error_code UniqueFd::Close() {
  const int fd = Release();
  if (fd < 0 || ::close(fd) == 0) return {};
  return {errno, std::generic_category()};
}

}  // namespace epollcr
