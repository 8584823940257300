// A fault plan: which call at which point of the fault-injection seam (lib/src/fault_injection.h) fails and how, and
// the record of every call made at a point. A plan is the process's fault hook while it lives.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "fault_injection.h"

namespace epollcr::testing {

struct PlannedFault {
  FaultPoint point;
  int nth;                         // which call at that point, from 1
  int error = 0;                   // the errno it fails with (0: none)
  std::size_t short_transfer = 0;  // with error 0: the call really runs but moves at most this many data bytes
};

class FaultPlan {
 public:
  // Every transfer moves at most `max_transfer` bytes (so short ones are the rule), and at most a planned fault's
  // short_transfer.
  explicit FaultPlan(std::vector<PlannedFault> faults = {},
                     std::size_t max_transfer = std::numeric_limits<std::size_t>::max())
      : faults_(std::move(faults)), max_transfer_(max_transfer) {
    SetFaultHook([this](const FaultCall& call) { return At(call); });
  }
  ~FaultPlan() { SetFaultHook({}); }
  FaultPlan(const FaultPlan&) = delete;
  FaultPlan& operator=(const FaultPlan&) = delete;

  // `change` is given what each recvmsg of the hand-off delivered, and may change it (kHandoffReceivedMessage).
  void OnReceivedMessage(std::function<void(msghdr*)> change) { on_received_ = std::move(change); }

  int calls(FaultPoint point) const {
    const auto it = calls_.find(point);
    return it == calls_.end() ? 0 : it->second;
  }
  // Every call made at a point, in order (kHandoffReceivedMessage, which is not a call, left out).
  const std::vector<FaultPoint>& trace() const { return trace_; }

 private:
  Fault At(const FaultCall& call) {
    if (call.point == FaultPoint::kHandoffReceivedMessage) {
      if (on_received_) on_received_(call.message);
      return {};
    }
    trace_.push_back(call.point);
    const int nth = ++calls_[call.point];
    Fault fault{.error = 0, .max_bytes = max_transfer_};
    for (const PlannedFault& planned : faults_) {
      if (planned.point != call.point || planned.nth != nth) continue;
      fault.error = planned.error;
      if (planned.short_transfer != 0) fault.max_bytes = std::min(fault.max_bytes, planned.short_transfer);
    }
    return fault;
  }

  std::vector<PlannedFault> faults_;
  std::size_t max_transfer_;
  std::function<void(msghdr*)> on_received_;
  std::map<FaultPoint, int> calls_;
  std::vector<FaultPoint> trace_;
};

}  // namespace epollcr::testing
