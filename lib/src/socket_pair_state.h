// The shared state of an AF_UNIX stream socket pair. Internal to lib/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "epollcr/mutex.h"
#include "epollcr/socket_pair.h"
#include "epollcr/state.h"

namespace epollcr {

class SocketPairState {
 public:
  static constexpr std::int64_t kDefaultSndBuf = 212992;  // net.core.wmem_default on Linux
  static constexpr int kRcvShutdown = 1;                  // RCV_SHUTDOWN
  static constexpr int kSendShutdown = 2;                 // SEND_SHUTDOWN
  static constexpr int kShutdownMask = 3;

  // The kernel's skb truesize of one segment of `size` bytes sent on a unix stream socket (x86-64, 4 KiB pages):
  // the linear head is kmalloc'ed as SKB_DATA_ALIGN(head) + 320 (skb_shared_info) rounded to a kmalloc bucket, plus
  // 256 for struct sk_buff, plus whole pages for the paged part. Checked against the kernel (tests/lib).
  static std::int64_t Truesize(std::int64_t size);
  // The largest segment one send makes (unix_stream_sendmsg: sndbuf/2 - 64, and SKB_MAX_HEAD(0) + 32 KiB).
  static std::int64_t MaxSegment(std::int64_t sndbuf);

  // One queued skb: data[offset..) unread; `truesize` is charged to the sender until the segment is consumed.
  struct Segment {
    std::vector<std::byte> data;
    std::size_t offset = 0;
    std::int64_t truesize = 0;
  };

  // One end's state (struct sock).
  struct End {
    std::deque<Segment> receive;   // The segments the peer sent to this end.
    std::int64_t wmem = 0;         // sk_wmem_alloc - 1: truesize of this end's segments still queued at the peer.
    std::int64_t sndbuf = kDefaultSndBuf;
    int shutdown = 0;              // RCV_SHUTDOWN | SEND_SHUTDOWN
    bool error_reset = false;      // sk_err == ECONNRESET: the peer closed with unread data
    bool open = true;              // false once the end's file is released
    std::weak_ptr<File> file;      // For wake-ups only.

    template <typename V>
    void VisitState(V& v) {
      v.Field("receive", receive, kSave);
      v.Field("wmem", wmem, kSave);
      v.Field("sndbuf", sndbuf, kSave);
      v.Field("shutdown", shutdown, kSave);
      v.Field("error_reset", error_reset, kSave);
      v.Field("open", open, kSave);
      v.Field("file", file, kNoSave);  // rebuilt by Attach() in after_load
    }
  };

  void Attach(UnixSocket* a, UnixSocket* b);
  Result<std::size_t> Write(int side, std::span<const std::byte> data);
  Result<std::size_t> Read(int side, std::span<std::byte> out);
  std::error_code Shutdown(int side, int how);
  EventMask Readiness(int side) const;
  void Close(int side);

  // Checkpoint policy (state.h). Preconditions: mu_ is held, or the state is not shared yet (load): not analysed,
  // as the analysis cannot tell the second.
  template <typename V>
  void VisitState(V& v) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
    v.Field("end0", ends_[0], kSave);
    v.Field("end1", ends_[1], kSave);
    v.Field("mu", mu_, kNoSave);
  }
  Mutex& state_mutex() const EPOLLCR_RETURN_CAPABILITY(mu_) { return mu_; }
  // Held across every read, write, shutdown and close together with its wake-ups (file.h MutationLock; LOCKING 2
  // and 8, event_poll_internal.h).
  mutable Mutex op_mu_ EPOLLCR_ACQUIRED_BEFORE(mu_);
  // Re-attaches one end after load (the other may be closed).
  void AttachEnd(int side, UnixSocket* end);
  // Checks loaded fields; empty when they are consistent. Preconditions: mu_ is held, or the state is not shared yet
  // (load): not analysed, as the analysis cannot tell the second.
  std::string Validate() const EPOLLCR_NO_THREAD_SAFETY_ANALYSIS;
  // Bit 1 << side for each open end.
  int OpenEnds() const {
    MutexLock lock(mu_);
    return (ends_[0].open ? 1 : 0) | (ends_[1].open ? 2 : 0);
  }

 private:
  static void Wake(const std::weak_ptr<File>& end, EventMask mask);
  // Frees a consumed segment sent by `sender`; returns true if the sender should be woken (unix_write_space).
  bool UnchargeLocked(int sender, std::int64_t truesize) EPOLLCR_REQUIRES(mu_);

  mutable Mutex mu_;
  End ends_[2] EPOLLCR_GUARDED_BY(mu_);
};

}  // namespace epollcr
