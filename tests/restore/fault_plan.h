// The plan of a fault-injection test (image_fault_test.cc, handoff_fault_test.cc): which call of each kind fails and
// how, and the record of every call made. `Op` is the test's own enum of the calls its seam has; its fake ops derive
// from FaultPlan<Op> and ask Next before each call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <map>
#include <utility>
#include <vector>

namespace epollcr::testing {

template <typename Op>
struct Fault {
  Op op;
  int nth;                         // which call of that kind, from 1
  int error = 0;                   // the errno it returns (0: none)
  std::size_t short_transfer = 0;  // with error 0: the call really runs but moves at most this many data bytes
};

template <typename Op>
class FaultPlan {
 public:
  explicit FaultPlan(std::vector<Fault<Op>> faults = {},
                     std::size_t max_transfer = std::numeric_limits<std::size_t>::max())
      : faults_(std::move(faults)), max_transfer_(max_transfer) {}

  // Records a call of kind `op`; the fault planned for it, or null.
  const Fault<Op>* Next(Op op) {
    trace_.push_back(op);
    const int nth = ++calls_[op];
    for (const Fault<Op>& fault : faults_) {
      if (fault.op == op && fault.nth == nth) return &fault;
    }
    return nullptr;
  }
  // How many bytes a transfer of `size` may move: at most max_transfer, and at most the fault's short_transfer.
  std::size_t Cap(std::size_t size, const Fault<Op>* fault) const {
    std::size_t cap = max_transfer_;
    if (fault != nullptr && fault->short_transfer != 0) cap = std::min(cap, fault->short_transfer);
    return std::min(size, cap);
  }

  int calls(Op op) const {
    const auto it = calls_.find(op);
    return it == calls_.end() ? 0 : it->second;
  }
  const std::vector<Op>& trace() const { return trace_; }

 private:
  std::vector<Fault<Op>> faults_;
  std::size_t max_transfer_;
  std::map<Op, int> calls_;
  std::vector<Op> trace_;
};

}  // namespace epollcr::testing
