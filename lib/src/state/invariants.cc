#include "state/invariants.h"

#include "epollcr/eventfd.h"
#include "pipe_buffer.h"
#include "socket_pair_state.h"

namespace epollcr::state {

// fs/pipe.c as the engine follows it (pipe.cc): at most 16 one-page slots; a write fills new slots from offset 0 or
// appends to the last one, a read consumes from the front, so only the first slot can start past 0; no slot is
// empty (a read frees it). Each end is open once or closed, and a pipe whose ends are both closed is gone.
std::string CheckPipe(std::span<const PipeSlotFacts> slots, std::int64_t readers, std::int64_t writers) {
  if (slots.size() > PipeBuffer::kSlots) return "more than 16 slots";
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const PipeSlotFacts& s = slots[i];
    if (s.len == 0 || s.offset > PipeBuffer::kPageSize || s.len > PipeBuffer::kPageSize - s.offset) {
      return "slot " + std::to_string(i) + ": empty or outside its page";
    }
    if (i > 0 && s.offset != 0) return "slot " + std::to_string(i) + ": starts past 0 but is not the first slot";
  }
  if (readers < 0 || readers > 1 || writers < 0 || writers > 1) return "reader/writer counts not 0 or 1";
  if (readers == 0 && writers == 0) return "both ends closed";
  return {};
}

namespace {

// Checks one end's own fields and the segments it received from its peer (whose send buffer is `peer_sndbuf`); adds
// their charge to *queued.
std::string CheckEnd(const SocketEndFacts& e, std::int64_t peer_sndbuf, std::int64_t* queued) {
  if (e.sndbuf < 4608 || e.sndbuf > (std::int64_t{1} << 31)) return "send buffer size out of range";
  if (e.shutdown < 0 || e.shutdown > SocketPairState::kShutdownMask) return "shutdown bits out of range";
  // unix_stream_sendmsg (socket_pair.cc Write): a send goes on while the charge is below sndbuf, one segment of at
  // most MaxSegment bytes at a time, so the charge stays below sndbuf plus one largest segment.
  const std::int64_t max_wmem = e.sndbuf - 1 + SocketPairState::Truesize(SocketPairState::MaxSegment(e.sndbuf));
  if (e.wmem < 0 || e.wmem > max_wmem) return "send charge out of range";
  if (!e.open && !e.receive.empty()) return "a closed end with a receive queue (closing purges it)";
  const auto max_segment = static_cast<std::uint64_t>(SocketPairState::MaxSegment(peer_sndbuf));
  *queued = 0;
  for (std::size_t i = 0; i < e.receive.size(); ++i) {
    const SegmentFacts& s = e.receive[i];
    const std::string where = "segment " + std::to_string(i) + ": ";
    if (s.size == 0 || s.size > max_segment) return where + "empty, or larger than one send makes";
    if (s.offset >= s.size) return where + "consumed";
    if (i > 0 && s.offset != 0) return where + "partly read but not the first segment";
    if (s.truesize != SocketPairState::Truesize(static_cast<std::int64_t>(s.size))) {
      return where + "its charge is not the truesize of its bytes";
    }
    *queued += s.truesize;
  }
  return {};
}

}  // namespace

// net/unix/af_unix.c as the engine follows it (socket_pair.cc). While both ends are open, each end's charge is the
// truesize of what waits in its peer's queue, a shutdown is mirrored on the peer, and no reset is pending. When one
// end closes, the other is shut down both ways, has nothing charged (the queue it sent to was purged), and may have
// a reset pending; the closed end's charge no longer changes (its segments still queued at the peer are read
// without returning it).
std::string CheckSocketPair(const SocketEndFacts& end0, const SocketEndFacts& end1) {
  const SocketEndFacts* ends[2] = {&end0, &end1};
  std::int64_t queued[2] = {0, 0};  // the charge of each end's receive queue, owed by its peer
  for (int side = 0; side < 2; ++side) {
    if (std::string bad = CheckEnd(*ends[side], ends[1 - side]->sndbuf, &queued[side]); !bad.empty()) {
      return "end " + std::to_string(side) + ": " + bad;
    }
  }
  if (!end0.open && !end1.open) return "both ends closed";
  for (int side = 0; side < 2; ++side) {
    const SocketEndFacts& me = *ends[side];
    const SocketEndFacts& peer = *ends[1 - side];
    const std::string where = "end " + std::to_string(side) + ": ";
    if (me.open && peer.open) {
      if (me.wmem != queued[1 - side]) return where + "its send charge is not what its peer has queued";
      if (((me.shutdown & SocketPairState::kRcvShutdown) != 0) != ((peer.shutdown & SocketPairState::kSendShutdown) != 0) ||
          ((me.shutdown & SocketPairState::kSendShutdown) != 0) != ((peer.shutdown & SocketPairState::kRcvShutdown) != 0)) {
        return where + "its shutdown is not mirrored by its peer";
      }
      if (me.error_reset) return where + "a reset pending while its peer is open";
    } else if (me.open) {
      if (me.wmem != 0) return where + "a send charge while its peer is closed";
      if (me.shutdown != SocketPairState::kShutdownMask) return where + "not shut down although its peer is closed";
    } else if (me.wmem < queued[1 - side]) {
      return where + "closed with a send charge below what its peer has queued";
    }
  }
  return {};
}

std::string CheckEventFd(std::uint64_t count) {
  return count > EventFd::kMaxCounter ? "eventfd counter out of range" : std::string();
}

}  // namespace epollcr::state
