#include "epollcr/eventfd.h"

#include <atomic>
#include <cstring>

namespace epollcr {

namespace {
constexpr std::uint64_t kErrCounter = 0xffffffffffffffffULL;
}

// eventfd_poll, which reads the counter once without the lock (READ_ONCE(ctx->count), fs/eventfd.c): any one value
// of it is a consistent answer, and a write after the read sends its own wake-up. A harvest of a thousand ready
// eventfds then makes no atomic read-modify-write per entry (ReadEvents calls this for every entry it reports).
// Not analysed: the lock-free read of count_ is the point.
EventMask EventFd::Readiness(EventMask mask) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
  const std::uint64_t count = std::atomic_ref(count_).load(std::memory_order_acquire);
  EventMask ready = 0;
  if (count > 0) ready |= kEventIn;
  if (count == kErrCounter) ready |= kEventErr;
  if (count < kMaxCounter) ready |= kEventOut;
  return ready & mask;
}

Result<std::uint64_t> EventFd::ReadValue() {
  MutexLock op(op_mu_);
  std::uint64_t value;
  {
    MutexLock lock(mu_);
    if (count_ == 0) return Errno(EAGAIN);
    value = semaphore_ ? 1 : count_;
    std::atomic_ref(count_).store(count_ - value, std::memory_order_release);
  }
  Notify(kEventOut);  // eventfd_read: wake_up_locked_poll(EPOLLOUT)
  ReadinessMayHaveDropped();  // IN, when the counter reached 0
  return value;
}

std::error_code EventFd::WriteValue(std::uint64_t value) {
  if (value == kErrCounter) return Errno(EINVAL);
  MutexLock op(op_mu_);
  {
    MutexLock lock(mu_);
    if (kErrCounter - count_ <= value) return Errno(EAGAIN);
    std::atomic_ref(count_).store(count_ + value, std::memory_order_release);
  }
  Notify(kEventIn);  // eventfd_write: wake_up_locked_poll(EPOLLIN), also for a write of 0
  ReadinessMayHaveDropped();  // OUT, when the counter reached its maximum
  return {};
}

Result<std::size_t> EventFd::Read(std::span<std::byte> buffer) {
  if (buffer.size() < sizeof(std::uint64_t)) return Errno(EINVAL);
  Result<std::uint64_t> value = ReadValue();
  if (!value.ok()) return value.error();
  std::memcpy(buffer.data(), &value.value(), sizeof(std::uint64_t));
  return sizeof(std::uint64_t);
}

Result<std::size_t> EventFd::Write(std::span<const std::byte> buffer) {
  // eventfd_write takes exactly 8 bytes, 4 and 16 are both EINVAL (fs/eventfd.c; eventfd(2) names only the short
  // case; docs/kernel-measurements.md, section 3); reads accept any size >= 8.
  if (buffer.size() != sizeof(std::uint64_t)) return Errno(EINVAL);
  std::uint64_t value;
  std::memcpy(&value, buffer.data(), sizeof value);
  if (std::error_code ec = WriteValue(value)) return ec;
  return sizeof(std::uint64_t);
}

std::uint64_t EventFd::Value() const {
  MutexLock lock(mu_);
  return count_;
}

}  // namespace epollcr
