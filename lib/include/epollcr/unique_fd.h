// UniqueFd: the owner of one kernel fd, and the only fd owner in epollcr (the CLI, the restorer, the benchmarks and
// the tests use it too). Move-only; closes the fd when destroyed, dropping close(2)'s error there, or when Close()
// is called, which reports it.
#pragma once

#include <system_error>
#include <utility>

namespace epollcr {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership without closing.
  int Release() { return std::exchange(fd_, -1); }
  // Closes the owned fd (if any; its error is dropped) and owns `fd` instead.
  void Reset(int fd = -1);
  // Closes the owned fd now and returns close(2)'s error (none if there was no fd). The fd is released whatever the
  // result: Linux frees the descriptor even when close fails, and EINTR must not be retried (close(2), "Dealing with
  // error returns"); whether EINTR is a failure is the caller's call.
  std::error_code Close();

 private:
  int fd_ = -1;
};

}  // namespace epollcr
