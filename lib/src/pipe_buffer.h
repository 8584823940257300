// The shared state of a pipe: its slots and which ends are open. Internal to lib/.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>

#include "epollcr/mutex.h"
#include "epollcr/pipe.h"
#include "epollcr/state.h"

namespace epollcr {

class PipeBuffer {
 public:
  static constexpr std::size_t kPageSize = 4096;  // PAGE_SIZE; also PIPE_BUF
  static constexpr std::size_t kSlots = 16;       // PIPE_DEF_BUFFERS: 16 pages = 65536 bytes

  // One page of data: bytes [offset, offset + len) are unread (struct pipe_buffer).
  struct Slot {
    std::unique_ptr<std::byte[]> page;
    std::uint32_t offset = 0;
    std::uint32_t len = 0;
  };

  Result<std::size_t> Write(std::span<const std::byte> data);
  Result<std::size_t> Read(std::span<std::byte> out);
  EventMask ReadEndReadiness() const;
  EventMask WriteEndReadiness() const;

  void Attach(PipeReadEnd* read, PipeWriteEnd* write);
  void CloseRead();
  void CloseWrite();

  std::size_t BytesQueued() const;

  // Checkpoint policy (state.h). The ends' weak references are rebuilt by Attach() in after_load.
  // Preconditions: mu_ is held, or the buffer is not shared yet (load): not analysed, as the analysis cannot tell
  // the second.
  template <typename V>
  void VisitState(V& v) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    v.Field("slots", slots_, kSave);
    v.Field("readers", readers_, kSave);
    v.Field("writers", writers_, kSave);
    v.Field("read_end", read_, kNoSave);
    v.Field("write_end", write_, kNoSave);
    v.Field("mu", mu_, kNoSave);
  }
  Mutex& state_mutex() const EPOLLCR_RETURN_CAPABILITY(mu_) { return mu_; }
  // Held across every read, write and close together with its wake-up (file.h MutationLock; LOCKING 2 and 8,
  // event_poll_internal.h).
  mutable Mutex op_mu_ EPOLLCR_ACQUIRED_BEFORE(mu_);
  // Checks loaded fields against the pipe's geometry; empty when they are consistent. Preconditions: mu_ is held, or
  // the buffer is not shared yet (load): not analysed, as the analysis cannot tell the second.
  std::string Validate() const EPOLLCR_NO_THREAD_SAFETY_ANALYSIS;
  // Bit 1: the read end is open; bit 2: the write end is.
  int OpenEnds() const {
    MutexLock lock(mu_);
    return (readers_ > 0 ? 1 : 0) | (writers_ > 0 ? 2 : 0);
  }

 private:
  // Wakes an end if it is still alive. Preconditions: mu_ is not held.
  template <typename End>
  static void Wake(const std::weak_ptr<File>& end, EventMask mask);

  mutable Mutex mu_;
  std::deque<Slot> slots_ EPOLLCR_GUARDED_BY(mu_);  // at most kSlots
  int readers_ EPOLLCR_GUARDED_BY(mu_) = 1;
  int writers_ EPOLLCR_GUARDED_BY(mu_) = 1;
  std::weak_ptr<File> read_ EPOLLCR_GUARDED_BY(mu_);   // for wake-ups only
  std::weak_ptr<File> write_ EPOLLCR_GUARDED_BY(mu_);  // for wake-ups only
};

}  // namespace epollcr
