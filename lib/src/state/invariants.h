// The invariants of the engine's shared state that a load checks, whatever the format: a Boost archive (archive/world_load.cc)
// and a protobuf image (image/codec.cc, Validate) describe their objects to these checks as plain facts, so
// that anything a load accepts is a state the engine could have reached, and its own checkpoint loads back the same
// (docs/state-model.md, "What a load accepts"). Each check returns empty when the facts hold, else what is wrong.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace epollcr::state {

// One page of a pipe: [offset, offset + len) unread.
struct PipeSlotFacts {
  std::uint64_t offset = 0;
  std::uint64_t len = 0;
};
std::string CheckPipe(std::span<const PipeSlotFacts> slots, std::int64_t readers, std::int64_t writers);

// One queued segment of a socket: `size` bytes sent at once, the first `offset` read, `truesize` charged to the sender.
struct SegmentFacts {
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
  std::int64_t truesize = 0;
};
// One end of a socket pair: the segments its peer sent it, its own send charge and buffer, its shutdown bits.
struct SocketEndFacts {
  std::span<const SegmentFacts> receive;
  std::int64_t wmem = 0;
  std::int64_t sndbuf = 0;
  std::int64_t shutdown = 0;
  bool error_reset = false;
  bool open = false;
};
std::string CheckSocketPair(const SocketEndFacts& end0, const SocketEndFacts& end1);

std::string CheckEventFd(std::uint64_t count);

}  // namespace epollcr::state
