// A connected AF_UNIX stream socket pair, non-blocking, with Linux's readiness (net/unix/af_unix.c unix_poll).
//
// Each end is a File with its own waiter queue. Data written to one end is queued on the other as segments (one per
// write, like skbs), and the writer is charged each segment's kernel "truesize" until the reader consumes it whole;
// an end is writable while the charge is at most a quarter of its send buffer (unix_writable). Shutdown and close
// follow unix_shutdown and unix_release_sock: RDHUP|IN when the receive side is shut, HUP when both are, ERR on the
// peer when an end closes with unread data.
#pragma once

#include <memory>
#include <utility>

#include "epollcr/file.h"
#include "epollcr/state.h"

namespace epollcr {

class SocketPairState;

class UnixSocket final : public File {
 public:
  UnixSocket(std::shared_ptr<SocketPairState> pair, int side);
  ~UnixSocket() override;
  EventMask Readiness(EventMask mask) override;
  std::string_view TypeName() const override { return "unix-stream"; }
  Builtin builtin() const override { return Builtin::kUnixStream; }
  Result<std::size_t> Read(std::span<std::byte> buffer) override;
  Result<std::size_t> Write(std::span<const std::byte> buffer) override;
  // SHUT_RD (0), SHUT_WR (1) or SHUT_RDWR (2); EINVAL otherwise.
  std::error_code Shutdown(int how) override;
  Mutex* MutationLock() const override;

  const std::shared_ptr<SocketPairState>& pair() const { return pair_; }
  int side() const { return side_; }

  // Checkpoint policy (state.h): the end refers to the shared pair state, which is loaded first.
  template <typename V>
  void VisitState(V& v) {
    v.Field("pair", pair_, kWait);
    v.Field("side", side_, kSave);
  }

 private:
  friend class SocketPairState;
  void Wake(EventMask mask) { Notify(mask); }
  std::shared_ptr<SocketPairState> pair_;  // Immutable once shared (set by the constructor or by load).
  int side_;                               // 0 or 1. Immutable once shared.
};

// socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK).
std::pair<std::shared_ptr<UnixSocket>, std::shared_ptr<UnixSocket>> NewSocketPair();

}  // namespace epollcr
