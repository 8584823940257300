// Event masks and the Event record, with Linux's values and layout.
//
// Masks use the EPOLL* bit values of <sys/epoll.h> everywhere, so nothing is translated between the userspace
// engine, the kernel and the image format (gVisor's pkg/abi/linux/epoll.go carries the same numbers).
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>

namespace epollcr {

using EventMask = std::uint32_t;

// Readiness and request bits: epoll(7), uapi/linux/eventpoll.h.
inline constexpr EventMask kEventIn = 0x001;
inline constexpr EventMask kEventPri = 0x002;
inline constexpr EventMask kEventOut = 0x004;
inline constexpr EventMask kEventErr = 0x008;
inline constexpr EventMask kEventHup = 0x010;
inline constexpr EventMask kEventRdNorm = 0x040;
inline constexpr EventMask kEventRdBand = 0x080;
inline constexpr EventMask kEventWrNorm = 0x100;
inline constexpr EventMask kEventWrBand = 0x200;
inline constexpr EventMask kEventMsg = 0x400;
inline constexpr EventMask kEventRdHup = 0x2000;

// Flag bits of an epoll registration (EP_PRIVATE_BITS in fs/eventpoll.c). They are never reported.
inline constexpr EventMask kEpollExclusive = 1u << 28;
inline constexpr EventMask kEpollWakeup = 1u << 29;
inline constexpr EventMask kEpollOneShot = 1u << 30;
inline constexpr EventMask kEpollEdgeTriggered = 1u << 31;
inline constexpr EventMask kEpollPrivateBits = kEpollExclusive | kEpollWakeup | kEpollOneShot | kEpollEdgeTriggered;

// The only bits allowed together with EPOLLEXCLUSIVE (EPOLLEXCLUSIVE_OK_BITS, fs/eventpoll.c).
inline constexpr EventMask kEpollExclusiveOkBits =
    kEventIn | kEventOut | kEventErr | kEventHup | kEpollWakeup | kEpollEdgeTriggered | kEpollExclusive;

// Every bit a wake-up can carry. A wake-up "without a key" (wake_up_all in Linux) notifies with this mask, which
// meets every registration that still has an event bit armed.
inline constexpr EventMask kAllEvents = ~kEpollPrivateBits;

// What epoll adds to every registration on ADD and MOD (epoll_ctl(2): "always reported").
inline constexpr EventMask kAlwaysReported = kEventErr | kEventHup;

// What an epoll instance reports about itself when polled (__ep_eventpoll_poll) ...
inline constexpr EventMask kEpollReadable = kEventIn | kEventRdNorm;
// ... and the key it wakes its own watchers with (ep_poll_safewake: EPOLLIN).
inline constexpr EventMask kEpollWakeKey = kEventIn;

// EP_MAX_NESTS (fs/eventpoll.c): at most 4 epoll-in-epoll links in any chain.
inline constexpr int kMaxNests = 4;

// One reported event, laid out exactly like x86-64's packed struct epoll_event: events at offset 0, the 64-bit user
// data at offset 4, 12 bytes in all. data[0] holds the low 32 bits (gVisor's Event keeps the same two words).
struct Event {
  EventMask events = 0;
  std::uint32_t data[2] = {0, 0};

  std::uint64_t Data() const { return (std::uint64_t{data[1]} << 32) | data[0]; }
  void SetData(std::uint64_t value) {
    data[0] = static_cast<std::uint32_t>(value);
    data[1] = static_cast<std::uint32_t>(value >> 32);
  }
};
static_assert(sizeof(Event) == 12, "Event must be laid out like x86-64 struct epoll_event");
static_assert(offsetof(Event, data) == 4, "Event::data must sit at offset 4 like epoll_event.data");

// EP_MAX_EVENTS: INT_MAX / sizeof(struct epoll_event).
inline constexpr int kMaxEvents = INT_MAX / static_cast<int>(sizeof(Event));

// "in|out|hup" for the readiness bits in the fixed order in|pri|out|err|hup|rdnorm|rdband|wrnorm|wrband|msg|rdhup,
// then the flag names, then any other bits as one 0x hex number. An empty mask is "0".
std::string FormatEventMask(EventMask mask);

}  // namespace epollcr
