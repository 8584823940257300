// Exit statuses and errors of every epollcr command: replay, the image commands, ps, demo and main.cc itself
// (docs/cli.md, "Exit status and errors").
//
// Every error is one line on stderr, "epollcr: <what>: <reason>"; <what> is the input or output it concerns (a path,
// "<stdin>", "<stdout>", "FILE:LINE" of a trace) or "usage" for a bad command line.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace epollcr::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // an invalid or unreadable input, a difference (diff), a failed write, a
                                        // divergence between engines (replay)
inline constexpr int kExitUsage = 2;    // a bad command line, a malformed or unreadable trace (replay)

// What went wrong, in the words the user sees, and the exit status it leads to.
struct CommandError {
  std::string what;
  std::string reason;
  int exit_status = kExitFailure;
};

inline void PrintError(std::ostream& err, const CommandError& error) {
  err << "epollcr: " << error.what << ": " << error.reason << '\n';
}

// An error whose message already says what it concerns ("FILE:LINE: reason", a runner's report).
inline void PrintErrorMessage(std::ostream& err, std::string_view message) { err << "epollcr: " << message << '\n'; }

// A value or the error that prevented it (like epollcr::StatusOr, with the user's words).
template <typename T>
struct Outcome {
  std::optional<CommandError> error;
  T value{};

  bool ok() const { return !error.has_value(); }
  static Outcome Fail(std::string what, std::string reason, int exit_status = kExitFailure) {
    Outcome o;
    o.error = CommandError{std::move(what), std::move(reason), exit_status};
    return o;
  }
};

// How inputs and outputs are named in messages: "-" is "<stdin>" or "<stdout>".
inline std::string InputName(const std::string& path) { return path == "-" ? "<stdin>" : path; }
inline std::string OutputName(const std::string& path) { return path == "-" ? "<stdout>" : path; }

}  // namespace epollcr::cli
