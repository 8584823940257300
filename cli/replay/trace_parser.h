// Parsing and validating a replay trace (docs/trace-format.md).
//
// The whole trace is checked before anything runs: unknown verbs, wrong arity, bad names and numbers, a use of a
// name that was never defined, a definition of a name that is still live. The first problem is reported as
// "FILE:LINE: <reason>".
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "epollcr/result.h"
#include "replay/trace.h"

namespace epollcr::replay {

// Parses `text`, the contents of a trace; `file` is used in messages. An error is EINVAL with the message
// "FILE:LINE: reason" of the first problem.
Result<Trace> ParseTrace(std::string_view text, std::string_view file);

// Number syntax, exposed for tests: decimal or 0x/0X hex, no sign, at most `max`.
std::optional<std::uint64_t> ParseUnsigned(std::string_view token, std::uint64_t max);
// An optional '-' followed by the unsigned syntax, within [min, max].
std::optional<std::int64_t> ParseSigned(std::string_view token, std::int64_t min, std::int64_t max);
// `[A-Za-z_][A-Za-z0-9_.]*`
bool IsValidName(std::string_view name);
// EVENTS: '|'-joined event names and numbers.
std::optional<std::uint32_t> ParseEvents(std::string_view token, std::string* reason);

}  // namespace epollcr::replay
