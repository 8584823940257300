// The names of epoll event bits in traces and in replay output.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace epollcr::replay {

struct EventBitName {
  std::string_view name;
  std::uint32_t bit;
};

// The readiness bits in output order: in|pri|out|err|hup|rdnorm|rdband|wrnorm|wrband|msg|rdhup.
std::span<const EventBitName> ReadinessBitNames();
// The registration flags a trace may name: exclusive, wakeup, oneshot, et. They are never reported.
std::span<const EventBitName> FlagBitNames();

}  // namespace epollcr::replay
