// Many independent system calls of one kind at once, either through one io_uring or one call at a time, whichever
// this machine makes cheaper (docs/restore.md, "System calls in batches"). Internal to epollcr.
//
// Where entering and leaving the kernel is dear (about 1 us on the development VM: BENCHMARKS.md, "Machine", the
// getppid rows), a restore that verifies and watches 10,000 host fds through a ring enters the kernel a few dozen
// times instead of 20,000. Where it is cheap (0.2 us on other VMs of the same kind), a ring can cost more than it
// saves: a statx on io_uring is handed to a kernel worker thread. Neither cost can be known in advance, so the first
// batch of each kind in a process runs its first items both ways, timed, and that kind keeps the cheaper path for the
// rest of the process (ChoiceOf says which, and what each cost).
//
// Every call takes one result per item: 0, or the errno value that item's system call gave. The calls are the same
// ones made one at a time, so the results are the same; only the number of kernel entries changes. Where io_uring
// cannot be had (an old kernel, a seccomp filter, kernel.io_uring_disabled, a batch too small to pay for a ring), or
// breaks part way, the items it did not run are made one at a time: a result is never unknown. No ring outlives a
// call (no fd is kept open), so a batch leaves nothing behind.
#pragma once

#include <sys/epoll.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace epollcr::sys {

// The identity fstat(2) reports: st_dev as glibc's makedev encodes it, st_ino and the S_IFMT bits of st_mode.
struct FileIdentity {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::uint32_t file_type = 0;
};

// fstat identity of every fd (statx with AT_EMPTY_PATH: the same inode, the same numbers). `out` and `errors` have
// fds.size() items.
void StatMany(std::span<const int> fds, std::span<FileIdentity> out, std::span<int> errors);

// epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fds[i], &events[i]) for every i. `events` and `errors` have fds.size() items.
void EpollAddMany(int epoll_fd, std::span<const int> fds, std::span<epoll_event> events, std::span<int> errors);

// The kinds of batch.
enum class BatchKind { kStat, kEpollAdd };

// What this process measured of a kind of batch in auto mode: whether it has, the cost per item of each path (CPU time
// of the whole process, the ring's kernel workers included; the cheaper of two runs on the first items of the first
// batch of 64 items or more), and the path kept.
struct PathChoice {
  bool measured = false;
  bool ring = false;
  double single_ns = 0;
  double ring_ns = 0;
};
PathChoice ChoiceOf(BatchKind kind);

// How batches choose: kAuto (the default) measures each kind once and keeps the cheaper path; kRing and kSingle force
// one (tests, and the benchmarks that measure each path).
enum class BatchMode { kAuto, kRing, kSingle };
void SetBatchMode(BatchMode mode);
// For tests: auto mode measures again on the next batch of each kind.
void ForgetChoices();

// For tests: how many batches ran through io_uring, and how many items went one at a time, since the process began.
struct BatchCounts {
  std::uint64_t ring_batches = 0;
  std::uint64_t single_calls = 0;
};
BatchCounts Counts();

// Fault injection: each item of a batch is a point of fault_injection.h (kBatchStat, kBatchEpollAdd).

}  // namespace epollcr::sys
