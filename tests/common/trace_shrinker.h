// Shrinking a failing trace to a minimal one, and writing it out as a regression trace for tests/traces.
//
// ShrinkTrace is delta debugging (Zeller and Hildebrandt's ddmin, "Simplifying and Isolating Failure-Inducing
// Input", 2002) over a trace's operation lines: it removes chunks of lines, from halves down to single lines, and
// keeps a removal whenever the smaller trace still fails. A candidate that does not parse (a line that defines a
// name used later is gone, or a name is defined twice) is skipped, not run. The result is 1-minimal: removing any
// one of its lines makes the trace pass or not parse.
//
// The failure is whatever the caller's predicate says: for the differential test, "the kernel and the userspace
// engine (in some checkpoint mode) print different lines". Nothing here depends on a test framework.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "replay/trace.h"

namespace epollcr::replay {

// Whether a candidate (its text, and the Trace it parses to) still shows the failure.
using FailurePredicate = std::function<bool(const std::string& text, const Trace& trace)>;

struct ShrinkOptions {
  std::size_t max_tests = 20000;  // candidates run through the predicate at most; then the smallest so far is returned
};

struct ShrinkResult {
  std::vector<std::string> lines;  // the operation lines of the smallest failing trace found
  std::size_t tests = 0;           // candidates run through the predicate
  std::size_t unparsable = 0;      // candidates skipped because they do not parse
  bool minimal = false;            // 1-minimal; false when max_tests stopped the search first

  std::string Text() const;        // the lines, one per line
};

// The operation lines of a trace: without blank lines and comments, each without its line end.
std::vector<std::string> OperationLines(std::string_view text);

// Shrinks the operation lines of `text`, which must fail (the predicate is not asked about it again). If it does not
// parse, the result is its lines unchanged, with tests == 0.
ShrinkResult ShrinkTrace(std::string_view text, const FailurePredicate& fails, const ShrinkOptions& options = {});

// A trace for tests/traces: NAME.trace (a first comment line, then the operation lines) and NAME.expected, the
// kernel's output for exactly that text, as tests/traces/regenerate would make it.
struct RegressionTrace {
  std::string name;
  std::string trace;
  std::string expected;
};

// Runs `lines` after the comment `comment` (one line, without '#') on the kernel engine. A kernel run that stops
// (it does not, for a trace that parses) is reported in `error`.
RegressionTrace MakeRegressionTrace(const std::string& name, const std::string& comment,
                                    const std::vector<std::string>& lines, std::string* error);

// Writes DIR/NAME.trace and DIR/NAME.expected, making DIR (and its parents) if needed. False with a reason.
bool WriteRegressionTrace(const std::string& dir, const RegressionTrace& regression, std::string* reason);

}  // namespace epollcr::replay
