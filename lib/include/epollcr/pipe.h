// An anonymous pipe, with Linux's buffer geometry and readiness (fs/pipe.c).
//
// The buffer is 16 slots of one 4096-byte page each (65536 bytes). A write first merges its sub-page remainder into
// the last slot when it fits there, then fills whole new slots; it is all-or-nothing up to PIPE_BUF (4096) bytes.
// Readiness (pipe_poll): the read end is IN|RDNORM when not empty, HUP when the writer is gone; the write end is
// OUT|WRNORM while a slot is free, ERR when the reader is gone. Wake-ups: every write wakes the read end with
// IN|RDNORM (the "poll_usage" rule of pipe_write); a read that frees a slot of a full pipe wakes the write end with
// OUT|WRNORM (Linux 6.14+); closing one end wakes both ends without a key.
#pragma once

#include <memory>

#include "epollcr/file.h"
#include "epollcr/state.h"

namespace epollcr {

class PipeBuffer;

class PipeReadEnd final : public File {
 public:
  explicit PipeReadEnd(std::shared_ptr<PipeBuffer> pipe);
  ~PipeReadEnd() override;
  EventMask Readiness(EventMask mask) override;
  std::string_view TypeName() const override { return "pipe-read"; }
  Builtin builtin() const override { return Builtin::kPipeRead; }
  Result<std::size_t> Read(std::span<std::byte> buffer) override;
  Result<std::size_t> Write(std::span<const std::byte> buffer) override;  // EBADF, as for a read-only fd
  Mutex* MutationLock() const override;
  const std::shared_ptr<PipeBuffer>& pipe() const { return pipe_; }

  // Checkpoint policy (state.h): the end refers to the shared buffer, which is loaded first.
  template <typename V>
  void VisitState(V& v) {
    v.Field("pipe", pipe_, kWait);
  }

 private:
  friend class PipeBuffer;
  void Wake(EventMask mask) { Notify(mask); }
  std::shared_ptr<PipeBuffer> pipe_;  // Immutable once shared (set by the constructor or by load).
};

class PipeWriteEnd final : public File {
 public:
  explicit PipeWriteEnd(std::shared_ptr<PipeBuffer> pipe);
  ~PipeWriteEnd() override;
  EventMask Readiness(EventMask mask) override;
  std::string_view TypeName() const override { return "pipe-write"; }
  Builtin builtin() const override { return Builtin::kPipeWrite; }
  Result<std::size_t> Read(std::span<std::byte> buffer) override;  // EBADF, as for a write-only fd
  Result<std::size_t> Write(std::span<const std::byte> buffer) override;
  Mutex* MutationLock() const override;
  const std::shared_ptr<PipeBuffer>& pipe() const { return pipe_; }

  // Checkpoint policy (state.h): the end refers to the shared buffer, which is loaded first.
  template <typename V>
  void VisitState(V& v) {
    v.Field("pipe", pipe_, kWait);
  }

 private:
  friend class PipeBuffer;
  void Wake(EventMask mask) { Notify(mask); }
  std::shared_ptr<PipeBuffer> pipe_;  // Immutable once shared (set by the constructor or by load).
};

struct PipeEnds {
  std::shared_ptr<PipeReadEnd> read;
  std::shared_ptr<PipeWriteEnd> write;
};

// pipe(2) with O_NONBLOCK on both ends.
PipeEnds NewPipe();

}  // namespace epollcr
