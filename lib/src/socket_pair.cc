// AF_UNIX stream socket pairs, following net/unix/af_unix.c (unix_stream_sendmsg, unix_stream_read_generic,
// unix_poll, unix_shutdown, unix_release_sock) and net/core/sock.c (sock_alloc_send_pskb, sock_wfree).
#include <algorithm>
#include <cstring>
#include <vector>

#include "socket_pair_state.h"
#include "state/invariants.h"

namespace epollcr {

namespace {

constexpr std::int64_t kPageSize = 4096;
constexpr std::int64_t kSharedInfo = 320;         // SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
constexpr std::int64_t kSkBuff = 256;             // SKB_DATA_ALIGN(sizeof(struct sk_buff))
constexpr std::int64_t kMaxHead = kPageSize - kSharedInfo;  // SKB_MAX_HEAD(0) = 3776
constexpr std::int64_t kFragsSize = 32768;        // UNIX_SKB_FRAGS_SZ

constexpr EventMask kReadableKey = kEventIn | kEventPri | kEventRdNorm | kEventRdBand;  // sock_def_readable
constexpr EventMask kWritableKey = kEventOut | kEventWrNorm | kEventWrBand;             // unix_write_space

std::int64_t PageAlign(std::int64_t n) { return (n + kPageSize - 1) & ~(kPageSize - 1); }

std::int64_t KmallocBucket(std::int64_t n) {
  static constexpr std::int64_t kBuckets[] = {8,    16,   32,   64,    96,    128,   192,    256,
                                              512,  1024, 2048, 4096,  8192,  16384, 32768, 65536, 131072};
  for (std::int64_t b : kBuckets) {
    if (n <= b) return b;
  }
  return PageAlign(n);
}

// unix_writable: (sk_wmem_alloc << 2) <= sk_sndbuf, where the refcount sk_wmem_alloc is one more than the charge.
bool Writable(std::int64_t refcount, std::int64_t sndbuf) { return (refcount << 2) <= sndbuf; }

}  // namespace

std::int64_t SocketPairState::Truesize(std::int64_t size) {
  std::int64_t data_len = size <= kMaxHead ? 0 : std::min(size, PageAlign(size - kMaxHead));
  const std::int64_t head = size - data_len;
  const std::int64_t head_alloc = KmallocBucket(((head + 63) & ~std::int64_t{63}) + kSharedInfo);
  return head_alloc + kSkBuff + PageAlign(data_len);
}

std::int64_t SocketPairState::MaxSegment(std::int64_t sndbuf) { return std::min(sndbuf / 2 - 64, kMaxHead + kFragsSize); }

void SocketPairState::Wake(const std::weak_ptr<File>& end, EventMask mask) {
  if (std::shared_ptr<File> held = end.lock()) static_cast<UnixSocket*>(held.get())->Wake(mask);
}

void SocketPairState::Attach(UnixSocket* a, UnixSocket* b) {
  AttachEnd(0, a);
  AttachEnd(1, b);
}

void SocketPairState::AttachEnd(int side, UnixSocket* end) {
  MutexLock lock(mu_);
  ends_[side].file = end->weak_from_this();
}

std::string SocketPairState::Validate() const {
  std::vector<state::SegmentFacts> segments[2];
  state::SocketEndFacts facts[2];
  for (int side = 0; side < 2; ++side) {
    const End& e = ends_[side];
    for (const Segment& seg : e.receive) {
      segments[side].push_back({seg.data.size(), seg.offset, seg.truesize});
    }
    facts[side] = {segments[side], e.wmem, e.sndbuf, e.shutdown, e.error_reset, e.open};
  }
  return state::CheckSocketPair(facts[0], facts[1]);
}

Result<std::size_t> SocketPairState::Write(int side, std::span<const std::byte> data) {
  MutexLock op(op_mu_);
  const int peer = 1 - side;
  std::weak_ptr<File> receiver;
  Result<std::size_t> result = std::size_t{0};
  std::size_t sent = 0;
  {
    MutexLock lock(mu_);
    End& me = ends_[side];
    End& other = ends_[peer];
    receiver = other.file;
    if ((me.shutdown & kSendShutdown) != 0) return Errno(EPIPE);
    while (sent < data.size()) {
      // sock_alloc_send_pskb: a pending error first, then the send limit (checked before allocating, so the last
      // segment may pass sndbuf).
      if (me.wmem >= me.sndbuf) {
        if (sent == 0) result = Errno(EAGAIN);
        break;
      }
      if (!other.open || (other.shutdown & kRcvShutdown) != 0) {
        if (sent == 0) result = Errno(EPIPE);
        break;
      }
      const auto size = static_cast<std::size_t>(
          std::min<std::int64_t>(static_cast<std::int64_t>(data.size() - sent), MaxSegment(me.sndbuf)));
      Segment seg;
      seg.data.assign(data.begin() + static_cast<std::ptrdiff_t>(sent),
                      data.begin() + static_cast<std::ptrdiff_t>(sent + size));
      seg.truesize = Truesize(static_cast<std::int64_t>(size));
      me.wmem += seg.truesize;
      other.receive.push_back(std::move(seg));
      sent += size;
    }
    if (sent > 0) result = sent;
  }
  if (sent > 0) Wake(receiver, kReadableKey);  // sk_data_ready for each segment; one wake-up says the same
  return result;
}

bool SocketPairState::UnchargeLocked(int sender, std::int64_t truesize) {
  End& s = ends_[sender];
  s.wmem -= truesize;
  // sock_wfree keeps one extra reference while it calls sk_write_space, so the check sees the charge plus two.
  return Writable(s.wmem + 2, s.sndbuf);
}

Result<std::size_t> SocketPairState::Read(int side, std::span<std::byte> out) {
  MutexLock op(op_mu_);
  const int peer = 1 - side;
  std::weak_ptr<File> sender;
  bool wake_sender = false;
  Result<std::size_t> result = std::size_t{0};
  {
    MutexLock lock(mu_);
    End& me = ends_[side];
    sender = ends_[peer].file;
    std::size_t done = 0;
    while (done < out.size() && !me.receive.empty()) {
      Segment& seg = me.receive.front();
      const std::size_t n = std::min(seg.data.size() - seg.offset, out.size() - done);
      std::memcpy(out.data() + done, seg.data.data() + seg.offset, n);
      seg.offset += n;
      done += n;
      if (seg.offset == seg.data.size()) {
        const std::int64_t truesize = seg.truesize;
        me.receive.pop_front();
        if (ends_[peer].open) wake_sender |= UnchargeLocked(peer, truesize);
      }
    }
    if (done > 0 || out.empty()) {
      result = done;
    } else if (me.error_reset) {
      me.error_reset = false;  // sock_error() reports it once
      result = Errno(ECONNRESET);
    } else if ((me.shutdown & kRcvShutdown) != 0) {
      result = std::size_t{0};
    } else {
      result = Errno(EAGAIN);
    }
  }
  if (wake_sender) Wake(sender, kWritableKey);
  return result;
}

std::error_code SocketPairState::Shutdown(int side, int how) {
  if (how < 0 || how > 2) return Errno(EINVAL);
  MutexLock op(op_mu_);
  const int mode = (how + 1) & kShutdownMask;
  const int peer = 1 - side;
  std::weak_ptr<File> self;
  std::weak_ptr<File> other;
  {
    MutexLock lock(mu_);
    ends_[side].shutdown |= mode;
    int peer_mode = 0;
    if ((mode & kRcvShutdown) != 0) peer_mode |= kSendShutdown;
    if ((mode & kSendShutdown) != 0) peer_mode |= kRcvShutdown;
    ends_[peer].shutdown |= peer_mode;
    self = ends_[side].file;
    other = ends_[peer].file;
  }
  // sk_state_change on both ends: a wake-up without a key.
  Wake(self, kAllEvents);
  Wake(other, kAllEvents);
  return {};
}

EventMask SocketPairState::Readiness(int side) const {
  MutexLock lock(mu_);
  const End& me = ends_[side];
  EventMask ready = 0;
  if (me.error_reset) ready |= kEventErr;
  if (me.shutdown == kShutdownMask) ready |= kEventHup;
  if ((me.shutdown & kRcvShutdown) != 0) ready |= kEventRdHup | kEventIn | kEventRdNorm;
  if (!me.receive.empty()) ready |= kEventIn | kEventRdNorm;
  // Writable also when the other side has shut down, "to prevent stuck sockets" (unix_poll).
  if (Writable(me.wmem + 1, me.sndbuf)) ready |= kEventOut | kEventWrNorm | kEventWrBand;
  return ready;
}

// unix_release_sock: the peer is fully shut down (with ECONNRESET pending if this end had unread data) and woken;
// then this end's receive queue is purged, which returns the peer's charge and may wake it as a writer.
void SocketPairState::Close(int side) {
  MutexLock op(op_mu_);
  const int peer = 1 - side;
  std::weak_ptr<File> other;
  bool wake_writer = false;
  {
    MutexLock lock(mu_);
    End& me = ends_[side];
    End& them = ends_[peer];
    me.open = false;
    other = them.file;
    if (them.open) {
      them.shutdown = kShutdownMask;
      if (!me.receive.empty()) them.error_reset = true;
    }
    for (const Segment& seg : me.receive) {
      if (them.open) wake_writer |= UnchargeLocked(peer, seg.truesize);
    }
    me.receive.clear();
    // Segments this end sent stay queued at the peer; its charge no longer matters.
  }
  Wake(other, kAllEvents);
  if (wake_writer) Wake(other, kWritableKey);
}

// ---- UnixSocket ------------------------------------------------------------------------------------------------------

UnixSocket::UnixSocket(std::shared_ptr<SocketPairState> pair, int side) : pair_(std::move(pair)), side_(side) {}
UnixSocket::~UnixSocket() {
  if (pair_ && (side_ == 0 || side_ == 1)) pair_->Close(side_);  // not so only for an end whose load failed
}
EventMask UnixSocket::Readiness(EventMask mask) { return pair_->Readiness(side_) & mask; }
Result<std::size_t> UnixSocket::Read(std::span<std::byte> buffer) {
  Result<std::size_t> n = pair_->Read(side_, buffer);
  ReadinessMayHaveDropped();  // IN, when nothing is left to read
  return n;
}
Result<std::size_t> UnixSocket::Write(std::span<const std::byte> buffer) {
  Result<std::size_t> n = pair_->Write(side_, buffer);
  ReadinessMayHaveDropped();  // OUT, when the peer's buffer is full now
  return n;
}
std::error_code UnixSocket::Shutdown(int how) { return pair_->Shutdown(side_, how); }
Mutex* UnixSocket::MutationLock() const { return pair_ ? &pair_->op_mu_ : nullptr; }

std::pair<std::shared_ptr<UnixSocket>, std::shared_ptr<UnixSocket>> NewSocketPair() {
  auto state = std::make_shared<SocketPairState>();
  auto a = MakeFile<UnixSocket>(state, 0);
  auto b = MakeFile<UnixSocket>(state, 1);
  state->Attach(a.get(), b.get());
  return {std::move(a), std::move(b)};
}

}  // namespace epollcr
