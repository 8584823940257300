// Pinning for the host-fd benchmarks (host_roundtrip_bench.cc, echo_server_bench.cc), whose figures depend on where
// the scheduler puts the threads that wake each other. On the 2-CPU development VM a wake-up of a thread on the other
// (idle) virtual CPU costs about ten times a wake-up on the same one, and the scheduler picks either from run to run,
// so an unpinned run mixes the two at random; a pinned run measures one of them every time, the same on both engines.
#pragma once

#include <sched.h>

namespace epollcr::bench {

// Pins the calling thread to one CPU for the object's life, then gives it its old CPU set back. Threads it starts
// meanwhile inherit the pin (and keep it).
class PinnedThread {
 public:
  explicit PinnedThread(int cpu) {
    if (cpu < 0 || sched_getaffinity(0, sizeof old_, &old_) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pinned_ = sched_setaffinity(0, sizeof one, &one) == 0;
  }
  PinnedThread(const PinnedThread&) = delete;
  PinnedThread& operator=(const PinnedThread&) = delete;
  ~PinnedThread() {
    if (pinned_) sched_setaffinity(0, sizeof old_, &old_);
  }

  bool pinned() const { return pinned_; }

 private:
  cpu_set_t old_{};
  bool pinned_ = false;
};

// The CPU the calling thread runs on now (-1 if unknown).
inline int CurrentCpu() { return sched_getcpu(); }

// Another CPU than `cpu` the calling thread may run on (the next one up, wrapping), or -1 if there is none.
inline int OtherAllowedCpu(int cpu) {
  cpu_set_t allowed;
  if (cpu < 0 || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return -1;
  for (int step = 1; step < CPU_SETSIZE; ++step) {
    const int other = (cpu + step) % CPU_SETSIZE;
    if (CPU_ISSET(other, &allowed)) return other;
  }
  return -1;
}

}  // namespace epollcr::bench
