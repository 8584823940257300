#include <cstdio>

#include "epollcr/event_poll.h"
#include "epollcr/events.h"

namespace epollcr {

std::string FormatEventMask(EventMask mask) {
  static constexpr struct {
    EventMask bit;
    const char* name;
  } kNames[] = {
      {kEventIn, "in"},         {kEventPri, "pri"},       {kEventOut, "out"},         {kEventErr, "err"},
      {kEventHup, "hup"},       {kEventRdNorm, "rdnorm"}, {kEventRdBand, "rdband"},   {kEventWrNorm, "wrnorm"},
      {kEventWrBand, "wrband"}, {kEventMsg, "msg"},       {kEventRdHup, "rdhup"},     {kEpollExclusive, "exclusive"},
      {kEpollWakeup, "wakeup"}, {kEpollOneShot, "oneshot"}, {kEpollEdgeTriggered, "et"},
  };
  if (mask == 0) return "0";
  std::string out;
  for (const auto& n : kNames) {
    if (mask & n.bit) {
      if (!out.empty()) out += '|';
      out += n.name;
      mask &= ~n.bit;
    }
  }
  if (mask != 0) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%x", mask);
    if (!out.empty()) out += '|';
    out += hex;
  }
  return out;
}

EntryFlags FlagsFromLinux(std::uint32_t events) {
  EntryFlags f = EntryFlags::kNone;
  if (events & kEpollOneShot) f = f | EntryFlags::kOneShot;
  if (events & kEpollEdgeTriggered) f = f | EntryFlags::kEdgeTriggered;
  if (events & kEpollExclusive) f = f | EntryFlags::kExclusive;
  if (events & kEpollWakeup) f = f | EntryFlags::kWakeup;
  return f;
}

EventMask MaskFromLinux(std::uint32_t events) { return events & ~kEpollPrivateBits; }

std::uint32_t ToLinux(EntryFlags flags, EventMask mask) {
  std::uint32_t events = mask & ~kEpollPrivateBits;
  if (Any(flags & EntryFlags::kOneShot)) events |= kEpollOneShot;
  if (Any(flags & EntryFlags::kEdgeTriggered)) events |= kEpollEdgeTriggered;
  if (Any(flags & EntryFlags::kExclusive)) events |= kEpollExclusive;
  if (Any(flags & EntryFlags::kWakeup)) events |= kEpollWakeup;
  return events;
}

}  // namespace epollcr
