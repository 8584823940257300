#include "replay/event_names.h"

#include "epollcr/events.h"

namespace epollcr::replay {
namespace {

// Values are Linux's (uapi/linux/eventpoll.h), which epollcr uses everywhere (events.h).
constexpr EventBitName kReadiness[] = {
    {"in", kEventIn},         {"pri", kEventPri},       {"out", kEventOut},       {"err", kEventErr},
    {"hup", kEventHup},       {"rdnorm", kEventRdNorm}, {"rdband", kEventRdBand}, {"wrnorm", kEventWrNorm},
    {"wrband", kEventWrBand}, {"msg", kEventMsg},       {"rdhup", kEventRdHup},
};

constexpr EventBitName kFlags[] = {
    {"exclusive", kEpollExclusive},
    {"wakeup", kEpollWakeup},
    {"oneshot", kEpollOneShot},
    {"et", kEpollEdgeTriggered},
};

}  // namespace

std::span<const EventBitName> ReadinessBitNames() { return kReadiness; }
std::span<const EventBitName> FlagBitNames() { return kFlags; }

}  // namespace epollcr::replay
