// The seccomp filter of `epollcr run --raw-syscalls emulate` (docs/interposer.md, "Raw system calls"), also measured
// by bench/engine_bench.cc (BM_NullSyscall_Filtered).
#pragma once

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <system_error>
#include <vector>

#include "epollcr/event_poll.h"

namespace epollcr::preload {

// Installs, for the calling thread and what it becomes (its children, threads and later program images), a seccomp
// filter under which an epoll system call or io_uring_setup raises SIGSYS unless it carries the library's tag
// (epollcr::kOwnSyscallTag in its first argument's upper half): the interposer's handler answers a program's raw epoll
// calls as its libc calls are answered, and refuses io_uring. Every other system call, and the 64-bit numbers a
// 32-bit one does not share, pass at the cost of the filter's few instructions. Cannot be undone.
inline std::error_code InstallRawSyscallTrap() {
  constexpr std::uint32_t kTrapped64[] = {SYS_epoll_create, SYS_epoll_create1, SYS_epoll_ctl,      SYS_epoll_wait,
                                          SYS_epoll_pwait,  SYS_epoll_pwait2,  SYS_io_uring_setup};
  // The same calls through the 32-bit entry (int 0x80, or a 32-bit program): trapped, tag or not.
  constexpr std::uint32_t kTrapped32[] = {254, 329, 255, 256, 319, 441, 425};
  constexpr std::uint32_t kN = std::size(kTrapped64);
  std::vector<sock_filter> program;
  auto at = [&] { return static_cast<std::uint32_t>(program.size()); };
  auto load = [&](std::uint32_t offset) { program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset)); };
  auto ret = [&](std::uint32_t action) { program.push_back(BPF_STMT(BPF_RET | BPF_K, action)); };
  // 0: the architecture; 64-bit goes on at 2, anything else jumps to the 32-bit part.
  load(offsetof(seccomp_data, arch));
  // The index of the 32-bit part: after this jump, the number's load, kN tests, allow, the tag's load and test, allow
  // and trap.
  const std::uint32_t to_32 = 2 + 1 + kN + 5;
  const auto past_64 = static_cast<std::uint8_t>(to_32 - at() - 1);
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, past_64));
  load(offsetof(seccomp_data, nr));
  const std::uint32_t check_tag = at() + kN + 1;
  for (std::uint32_t nr : kTrapped64) {
    program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, static_cast<std::uint8_t>(check_tag - at() - 1), 0));
  }
  ret(SECCOMP_RET_ALLOW);
  load(offsetof(seccomp_data, args[0]) + 4);  // the upper half (little-endian)
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(kOwnSyscallTag >> 32), 0, 1));
  ret(SECCOMP_RET_ALLOW);
  ret(SECCOMP_RET_TRAP);
  if (at() != to_32) return std::make_error_code(std::errc::state_not_recoverable);
  load(offsetof(seccomp_data, nr));
  for (std::uint32_t nr : kTrapped32) {
    const auto to_trap = static_cast<std::uint8_t>(kN - (at() - to_32 - 1));
    program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, to_trap, 0));
  }
  ret(SECCOMP_RET_ALLOW);
  ret(SECCOMP_RET_TRAP);
  const sock_fprog fprog{.len = static_cast<unsigned short>(program.size()), .filter = program.data()};
  // Speculative-store-bypass mitigation is the program's business, not the filter's (SPEC_ALLOW). Without
  // CAP_SYS_ADMIN the kernel wants no_new_privs first (so a set-user-ID program it execs gains nothing).
  auto install = [&] {
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, &fprog) == 0) return 0;
    if (errno == EINVAL) return static_cast<int>(::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog));
    return -1;
  };
  if (install() == 0) return {};
  if (errno == EACCES && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && install() == 0) return {};
  return std::error_code(errno, std::generic_category());
}

}  // namespace epollcr::preload
