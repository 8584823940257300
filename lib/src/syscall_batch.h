// Many independent system calls of one kind at once, through one io_uring: a restore that verifies and watches
// 10,000 host fds then enters the kernel a few dozen times instead of 20,000 (on a virtual machine entering and
// leaving the kernel can cost more than the work of an fstat or an epoll_ctl ADD itself: BENCHMARKS.md, "Machine",
// the getppid rows; docs/restore.md, "System calls in batches"). Internal to epollcr.
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

// For tests: how many batches ran through io_uring, and how many items went one at a time, since the process began.
struct BatchCounts {
  std::uint64_t ring_batches = 0;
  std::uint64_t single_calls = 0;
};
BatchCounts Counts();

// For tests: when false, every batch runs one call at a time (the path taken where io_uring is unavailable).
void SetRingEnabled(bool enabled);

// Fault injection: each item of a batch is a point of fault_injection.h (kBatchStat, kBatchEpollAdd).

}  // namespace epollcr::sys
