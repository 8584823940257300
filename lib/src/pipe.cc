// Pipes, following fs/pipe.c (pipe_write, pipe_read, pipe_poll, pipe_release) for byte counts and wake-ups.
#include <algorithm>
#include <cstring>
#include <vector>

#include "pipe_buffer.h"
#include "state/invariants.h"

namespace epollcr {

namespace {
constexpr EventMask kReadableKey = kEventIn | kEventRdNorm;
constexpr EventMask kWritableKey = kEventOut | kEventWrNorm;
}  // namespace

template <typename End>
void PipeBuffer::Wake(const std::weak_ptr<File>& end, EventMask mask) {
  if (std::shared_ptr<File> held = end.lock()) static_cast<End*>(held.get())->Wake(mask);
}

void PipeBuffer::Attach(PipeReadEnd* read, PipeWriteEnd* write) {
  MutexLock lock(mu_);
  if (read != nullptr) read_ = read->weak_from_this();
  if (write != nullptr) write_ = write->weak_from_this();
}

std::string PipeBuffer::Validate() const {
  std::vector<state::PipeSlotFacts> slots;
  slots.reserve(slots_.size());
  for (const Slot& s : slots_) slots.push_back({s.offset, s.len});
  return state::CheckPipe(slots, readers_, writers_);
}

Result<std::size_t> PipeBuffer::Write(std::span<const std::byte> data) {
  if (data.empty()) return std::size_t{0};  // pipe_write returns before taking the lock: no wake-up
  MutexLock op(op_mu_);
  std::weak_ptr<File> reader;
  Result<std::size_t> result = std::size_t{0};
  {
    MutexLock lock(mu_);
    reader = read_;
    if (readers_ == 0) {
      result = Errno(EPIPE);
    } else {
      std::size_t done = 0;
      // Merge the sub-page remainder into the last slot when it fits there.
      const std::size_t chars = data.size() & (kPageSize - 1);
      if (chars != 0 && !slots_.empty()) {
        Slot& last = slots_.back();
        if (last.offset + last.len + chars <= kPageSize) {
          std::memcpy(last.page.get() + last.offset + last.len, data.data(), chars);
          last.len += static_cast<std::uint32_t>(chars);
          done = chars;
        }
      }
      // Then whole new slots, while one is free; non-blocking, so stop when full.
      while (done < data.size() && slots_.size() < kSlots) {
        const std::size_t n = std::min(kPageSize, data.size() - done);
        Slot slot;
        slot.page = std::make_unique<std::byte[]>(kPageSize);
        std::memcpy(slot.page.get(), data.data() + done, n);
        slot.len = static_cast<std::uint32_t>(n);
        slots_.push_back(std::move(slot));
        done += n;
      }
      if (done == 0) {
        result = Errno(EAGAIN);
      } else {
        result = done;
      }
    }
  }
  // "Epoll nonsensically wants a wakeup whether the pipe was already empty or not" (pipe_write): every write that
  // reached the pipe, even one that failed with EAGAIN, wakes the read end.
  Wake<PipeReadEnd>(reader, kReadableKey);
  return result;
}

Result<std::size_t> PipeBuffer::Read(std::span<std::byte> out) {
  if (out.empty()) return std::size_t{0};
  MutexLock op(op_mu_);
  std::weak_ptr<File> writer;
  bool was_full;
  bool full_now;
  Result<std::size_t> result = std::size_t{0};
  {
    MutexLock lock(mu_);
    writer = write_;
    was_full = slots_.size() >= kSlots;
    std::size_t done = 0;
    while (done < out.size() && !slots_.empty()) {
      Slot& head = slots_.front();
      const std::size_t n = std::min<std::size_t>(head.len, out.size() - done);
      std::memcpy(out.data() + done, head.page.get() + head.offset, n);
      head.offset += static_cast<std::uint32_t>(n);
      head.len -= static_cast<std::uint32_t>(n);
      done += n;
      if (head.len == 0) slots_.pop_front();
    }
    full_now = slots_.size() >= kSlots;
    if (done > 0) {
      result = done;
    } else if (writers_ > 0) {
      result = Errno(EAGAIN);
    }  // else: end of file, 0
  }
  // pipe_read (Linux 6.14+) wakes writers only if the pipe was full when the read started and is not full now.
  if (was_full && !full_now) Wake<PipeWriteEnd>(writer, kWritableKey);
  return result;
}

EventMask PipeBuffer::ReadEndReadiness() const {
  MutexLock lock(mu_);
  EventMask ready = 0;
  if (!slots_.empty()) ready |= kEventIn | kEventRdNorm;
  if (writers_ == 0) ready |= kEventHup;
  return ready;
}

EventMask PipeBuffer::WriteEndReadiness() const {
  MutexLock lock(mu_);
  EventMask ready = 0;
  if (slots_.size() < kSlots) ready |= kEventOut | kEventWrNorm;
  if (readers_ == 0) ready |= kEventErr;
  return ready;
}

// pipe_release: when one side's last end closes and the other side is still open, both ends are woken without a key.
void PipeBuffer::CloseRead() {
  MutexLock op(op_mu_);
  std::weak_ptr<File> writer;
  bool wake;
  {
    MutexLock lock(mu_);
    --readers_;
    wake = (readers_ == 0) != (writers_ == 0);
    writer = write_;
  }
  if (wake) Wake<PipeWriteEnd>(writer, kAllEvents);
}

void PipeBuffer::CloseWrite() {
  MutexLock op(op_mu_);
  std::weak_ptr<File> reader;
  bool wake;
  {
    MutexLock lock(mu_);
    --writers_;
    wake = (readers_ == 0) != (writers_ == 0);
    reader = read_;
  }
  if (wake) Wake<PipeReadEnd>(reader, kAllEvents);
}

std::size_t PipeBuffer::BytesQueued() const {
  MutexLock lock(mu_);
  std::size_t n = 0;
  for (const Slot& s : slots_) n += s.len;
  return n;
}

// ---- the two ends ---------------------------------------------------------------------------------------------------

PipeReadEnd::PipeReadEnd(std::shared_ptr<PipeBuffer> pipe) : pipe_(std::move(pipe)) {}
PipeReadEnd::~PipeReadEnd() {
  if (pipe_) pipe_->CloseRead();  // null only for an end whose load failed
}
EventMask PipeReadEnd::Readiness(EventMask mask) { return pipe_->ReadEndReadiness() & mask; }
Result<std::size_t> PipeReadEnd::Read(std::span<std::byte> buffer) {
  Result<std::size_t> n = pipe_->Read(buffer);
  ReadinessMayHaveDropped();  // IN, when the pipe is empty now
  return n;
}
Result<std::size_t> PipeReadEnd::Write(std::span<const std::byte>) { return Errno(EBADF); }
Mutex* PipeReadEnd::MutationLock() const { return pipe_ ? &pipe_->op_mu_ : nullptr; }

PipeWriteEnd::PipeWriteEnd(std::shared_ptr<PipeBuffer> pipe) : pipe_(std::move(pipe)) {}
PipeWriteEnd::~PipeWriteEnd() {
  if (pipe_) pipe_->CloseWrite();
}
EventMask PipeWriteEnd::Readiness(EventMask mask) { return pipe_->WriteEndReadiness() & mask; }
Result<std::size_t> PipeWriteEnd::Read(std::span<std::byte>) { return Errno(EBADF); }
Result<std::size_t> PipeWriteEnd::Write(std::span<const std::byte> buffer) {
  Result<std::size_t> n = pipe_->Write(buffer);
  ReadinessMayHaveDropped();  // OUT, when the pipe is full now
  return n;
}
Mutex* PipeWriteEnd::MutationLock() const { return pipe_ ? &pipe_->op_mu_ : nullptr; }

PipeEnds NewPipe() {
  auto buffer = std::make_shared<PipeBuffer>();
  PipeEnds ends{MakeFile<PipeReadEnd>(buffer), MakeFile<PipeWriteEnd>(buffer)};
  buffer->Attach(ends.read.get(), ends.write.get());
  return ends;
}

}  // namespace epollcr
