// SigPipeGuard: a write to a broken pipe fails with EPIPE instead of killing the replay with SIGPIPE, in both engines
// (the kernel's fds and the userspace engine's host files), as a trace expects.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <cerrno>

namespace epollcr::replay {

// Blocks SIGPIPE for the calling thread while it lives. If the guarded write raised SIGPIPE (EPIPE) and none was
// pending before, the signal is consumed before the old mask comes back, so it is never delivered.
class SigPipeGuard {
 public:
  SigPipeGuard() {
    sigemptyset(&pipe_set_);
    sigaddset(&pipe_set_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    was_pending_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_mask_);
  }
  SigPipeGuard(const SigPipeGuard&) = delete;
  SigPipeGuard& operator=(const SigPipeGuard&) = delete;

  void set_broken() { broken_ = true; }

  ~SigPipeGuard() {
    if (broken_ && !was_pending_) {
      int saved = errno;
      const timespec zero{};
      while (sigtimedwait(&pipe_set_, nullptr, &zero) < 0 && errno == EINTR) {
      }
      errno = saved;
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }

 private:
  sigset_t pipe_set_;
  sigset_t old_mask_;
  bool was_pending_ = false;
  bool broken_ = false;
};

}  // namespace epollcr::replay
