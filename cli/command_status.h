// Exit statuses and errors of every epollcr command: replay, the image commands, ps, demo and main.cc itself
// (docs/cli.md, "Exit status and errors").
//
// Every error is one line on stderr, "epollcr: <what>: <reason>"; <what> is the input or output it concerns (a path,
// "<stdin>", "<stdout>", "FILE:LINE" of a trace) or "usage" for a bad command line.
#pragma once

#include <cerrno>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

#include "epollcr/result.h"

namespace epollcr::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // an invalid or unreadable input, a difference (diff), a failed write, a
                                        // divergence between engines (replay)
inline constexpr int kExitUsage = 2;    // a bad command line, a malformed or unreadable trace (replay)

// What went wrong with `what` (a path, "<stdin>", "<stdout>", "FILE:LINE", "usage"), in the words the user sees:
// a Status whose message is "WHAT: REASON" and whose code is the errno that caused it (EINVAL for input that is not
// what it should be). Commands pass Status and Result<T> around like the library does; only main.cc and the commands'
// entry points turn one into an exit status.
inline Status CommandError(std::string_view what, std::string_view reason, int errno_value = EINVAL) {
  std::string message;
  message.reserve(what.size() + 2 + reason.size());
  message.append(what).append(": ").append(reason);
  return Status::Error(errno_value, std::move(message));
}

// "epollcr: WHAT: REASON" on one line.
inline void PrintError(std::ostream& err, const Status& error) { err << "epollcr: " << error.message << '\n'; }

// An error whose message already says what it concerns ("FILE:LINE: reason", a runner's report).
inline void PrintErrorMessage(std::ostream& err, std::string_view message) { err << "epollcr: " << message << '\n'; }

// How inputs and outputs are named in messages: "-" is "<stdin>" or "<stdout>".
inline std::string InputName(const std::string& path) { return path == "-" ? "<stdin>" : path; }
inline std::string OutputName(const std::string& path) { return path == "-" ? "<stdout>" : path; }

}  // namespace epollcr::cli
