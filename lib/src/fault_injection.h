// The one fault-injection seam of epollcr: named points, each just before a system call (or a thread's creation)
// whose failure a test wants to see handled, where a process-wide hook may fail the call with an errno or shorten a
// transfer. The library's own code asks FaultAt(point) there; tests install a hook with SetFaultHook (fault plans:
// tests/common/fault_plan.h). With no hook installed a point costs one relaxed atomic load. Internal to epollcr (lib/,
// restore/ and the tests); never installed.
#pragma once

#include <cerrno>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string_view>

struct msghdr;

namespace epollcr::testing {

enum class FaultPoint : std::uint8_t {
  // lib/src/syscall_batch.cc: one item of a batch (FaultCall::item: its index in the batch). A failed item's call
  // is not made; while a hook is installed every item goes one at a time.
  kBatchStat,
  kBatchEpollAdd,
  // lib/src/event_poll_kernel.cc: a poll's kernel side, made by its first kernel entry or the first Wait that
  // blocks: kWaitEpollCreate (its kernel epoll), then kWaitEventFd and kWaitEventFdAdd (its bell, when it has
  // in-memory entries).
  kWaitEpollCreate,
  kWaitEventFd,
  kWaitEventFdAdd,
  // image/file.cc: the system calls of WriteImageFile and ReadImageFile (open(2) of the directory to fsync,
  // open(2) of the file, write, read, fsync, fstat, close, rename, unlink).
  kImageOpenDirectory,
  kImageOpen,
  kImageWrite,
  kImageRead,
  kImageFsync,
  kImageFstat,
  kImageClose,
  kImageRename,
  kImageUnlink,
  // restore/handoff.cc: the system calls of the hand-off (fcntl F_GETFD and F_SETFD, send, recv, sendmsg, recvmsg,
  // close of a received fd).
  kHandoffGetFdFlags,
  kHandoffSetFdFlags,
  kHandoffSend,
  kHandoffReceive,
  kHandoffSendMessage,
  kHandoffReceiveMessage,
  kHandoffClose,
  // restore/handoff.cc, after a recvmsg that succeeded: FaultCall::message is what the kernel delivered, which the
  // hook may change (a peer that sends fds in other pieces than the data, or a wrong number of them). Its Fault is
  // not used.
  kHandoffReceivedMessage,
  // restore/network_lock.cc: the NETLINK_NETFILTER socket that shows nf_tables is there (failed with
  // EPROTONOSUPPORT: a kernel without it).
  kNetworkLockNetlink,
};

// The name of a point without its k ("ImageWrite"), for messages.
std::string_view FaultPointName(FaultPoint point);

// The call a hook is asked about.
struct FaultCall {
  FaultPoint point;
  std::size_t item = 0;      // kBatch*: the index in the batch
  msghdr* message = nullptr;  // kHandoffReceivedMessage: what recvmsg delivered
};

// What the hook makes of a call. Default: nothing.
struct Fault {
  // Non-zero: the call fails with this errno value and is not made, except close(2), which is made anyway (Linux
  // frees the descriptor even when close fails) and then reports it.
  int error = 0;
  // A read, write, send or receive moves at most this many bytes in this call (short transfers).
  std::size_t max_bytes = std::numeric_limits<std::size_t>::max();
};

using FaultHook = std::function<Fault(const FaultCall& call)>;

// Installs `hook` for the whole process (an empty one removes it). Not while a call at a point may be running on
// another thread: tests install and remove hooks between the operations they fail.
void SetFaultHook(FaultHook hook);

namespace internal {
extern std::atomic<bool> fault_hook_installed;
Fault CallFaultHook(const FaultCall& call);
}  // namespace internal

// Whether a hook is installed.
inline bool FaultHookInstalled() { return internal::fault_hook_installed.load(std::memory_order_relaxed); }

// What the hook makes of `call`; Fault{} without one.
inline Fault FaultAt(const FaultCall& call) {
  return FaultHookInstalled() ? internal::CallFaultHook(call) : Fault{};
}
inline Fault FaultAt(FaultPoint point, std::size_t item = 0) { return FaultAt(FaultCall{point, item}); }
// For a call that is either made or failed whole: true, with errno set as the system call would set it, when a test
// fails this call.
inline bool Faulted(FaultPoint point) {
  const int e = FaultAt(point).error;
  if (e != 0) errno = e;
  return e != 0;
}

}  // namespace epollcr::testing
