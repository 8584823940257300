// The output of a replay: one line per operation, "<line> <verb> <result>" (docs/trace-format.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "epollcr/events.h"
#include "replay/trace.h"

namespace epollcr::replay {

// What one operation produced on an engine.
struct OpOutcome {
  enum class Kind : std::uint8_t {
    kOk,      // "ok"
    kNumber,  // "ok N": bytes read or written, or an eventfd's value
    kError,   // "err ENAME"
    kEvents,  // "events N FLAGS@DATA ..."
  };
  Kind kind = Kind::kOk;
  std::uint64_t number = 0;
  int error = 0;               // errno, for kError
  std::vector<Event> events;   // for kEvents, in the order returned

  static OpOutcome Ok() { return {}; }
  static OpOutcome Number(std::uint64_t n) { return {Kind::kNumber, n, 0, {}}; }
  static OpOutcome Error(int errno_value) { return {Kind::kError, 0, errno_value, {}}; }
  static OpOutcome Events(std::vector<Event> events) { return {Kind::kEvents, 0, 0, std::move(events)}; }
};

// "EAGAIN" for EAGAIN; "E<number>" for a value without a name in the table.
std::string ErrnoName(int errno_value);

// Reported event bits: in|pri|out|err|hup|rdnorm|rdband|wrnorm|wrband|msg|rdhup in that order, then every other bit
// as one 0x hex number (lower case). An empty mask is "0".
std::string FormatEventFlags(std::uint32_t events);

// "ok", "ok 8", "err EBADF", "events 2 in@7 out|hup@3".
std::string FormatOutcome(const OpOutcome& outcome);

// "<line> <verb> <result>", without a newline.
std::string FormatLine(const Op& op, const OpOutcome& outcome);

}  // namespace epollcr::replay
