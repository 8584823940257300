#include "fault_injection.h"

#include <utility>

namespace epollcr::testing {

namespace internal {

// The hook and whether there is one: the one global of the seam. Written only by SetFaultHook, which tests call while
// no hooked call runs, so the hook itself needs no lock; the flag is atomic because points read it on any thread.
std::atomic<bool> fault_hook_installed{false};

namespace {
FaultHook& Hook() {
  static FaultHook* const hook = new FaultHook();  // never destroyed: a point may be reached during exit
  return *hook;
}
}  // namespace

Fault CallFaultHook(const FaultCall& call) {
  const FaultHook& hook = Hook();
  return hook ? hook(call) : Fault{};
}

}  // namespace internal

void SetFaultHook(FaultHook hook) {
  internal::fault_hook_installed.store(false, std::memory_order_relaxed);
  internal::Hook() = std::move(hook);
  internal::fault_hook_installed.store(static_cast<bool>(internal::Hook()), std::memory_order_release);
}

std::string_view FaultPointName(FaultPoint point) {
  switch (point) {
    case FaultPoint::kBatchStat: return "BatchStat";
    case FaultPoint::kBatchEpollAdd: return "BatchEpollAdd";
    case FaultPoint::kWaitEpollCreate: return "WaitEpollCreate";
    case FaultPoint::kWaitEventFd: return "WaitEventFd";
    case FaultPoint::kWaitEventFdAdd: return "WaitEventFdAdd";
    case FaultPoint::kImageOpenDirectory: return "ImageOpenDirectory";
    case FaultPoint::kImageOpen: return "ImageOpen";
    case FaultPoint::kImageWrite: return "ImageWrite";
    case FaultPoint::kImageRead: return "ImageRead";
    case FaultPoint::kImageFsync: return "ImageFsync";
    case FaultPoint::kImageFstat: return "ImageFstat";
    case FaultPoint::kImageClose: return "ImageClose";
    case FaultPoint::kImageRename: return "ImageRename";
    case FaultPoint::kImageUnlink: return "ImageUnlink";
    case FaultPoint::kHandoffGetFdFlags: return "HandoffGetFdFlags";
    case FaultPoint::kHandoffSetFdFlags: return "HandoffSetFdFlags";
    case FaultPoint::kHandoffSend: return "HandoffSend";
    case FaultPoint::kHandoffReceive: return "HandoffReceive";
    case FaultPoint::kHandoffSendMessage: return "HandoffSendMessage";
    case FaultPoint::kHandoffReceiveMessage: return "HandoffReceiveMessage";
    case FaultPoint::kHandoffClose: return "HandoffClose";
    case FaultPoint::kHandoffReceivedMessage: return "HandoffReceivedMessage";
    case FaultPoint::kNetworkLockNetlink: return "NetworkLockNetlink";
  }
  return "?";
}

}  // namespace epollcr::testing
