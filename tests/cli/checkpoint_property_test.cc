// "A checkpoint is invisible": inserting save -> load into a fresh world at any point of any sequence of
// operations changes no later result.
//
// Random traces (tests/common/trace_generator.h: every file kind, nested epolls, dup and close, every flag) of 30 to 60
// operations run twice on the userspace engine in lockstep: once straight, and once with a `checkpoint` line (save
// the whole World, LoadWorld into a fresh one, go on there) at a random step, in a random archive format. Every line
// must be identical. A share of the traces also runs on the kernel and on the userspace engine with a checkpoint after
// every operation (`epollcr replay --engine both --checkpoint-every`).
//
// A failure prints the seed, the step, the format and the trace, then shrinks the trace (drops lines while it still
// fails) and prints the minimal one with both outputs. The printed trace replays with
// `epollcr replay --engine both --checkpoint-format FORMAT` (kernel vs userspace with the checkpoint).
//
// Environment (a soak is `EPOLLCR_CKPT_TRACES=1000000 EPOLLCR_CKPT_KERNEL_TRACES=100000` on the test binary):
//   EPOLLCR_CKPT_SEED           first seed (default 0xc4ec)
//   EPOLLCR_CKPT_TRACES         userspace straight-vs-checkpoint traces (default 10000)
//   EPOLLCR_CKPT_KERNEL_TRACES  kernel vs userspace --checkpoint-every traces (default 1000)
//   EPOLLCR_CKPT_MAX_FAILURES   failing traces to report before stopping, per test (default 1)
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "epollcr/state.h"
#include "replay/formatter.h"
#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"
#include "trace_generator.h"

namespace epollcr::replay {
namespace {

constexpr std::array<CheckpointFormat, 4> kFormats = {CheckpointFormat::kProto, CheckpointFormat::kBoostText,
                                                      CheckpointFormat::kBoostXml, CheckpointFormat::kBoostBinary};

std::uint64_t EnvNumber(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strtoull(value, nullptr, 0);
}

// SplitMix64 of one value: the per-seed choices (length, step, format) are the same on every platform.
std::uint64_t Mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The operation lines of a trace (comments dropped), so that shrinking can remove any of them.
std::vector<std::string> OpLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') lines.push_back(line);
  }
  return lines;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

// One run of a property over a trace: whether it held, why not, and what was printed.
struct Verdict {
  bool holds = true;
  std::string why;     // "line 12 differs", or the runtime failure
  std::string output;  // both sides, labelled
};

// Straight vs checkpointed, on the userspace engine, in lockstep until the first line that differs. `lines` holds
// `checkpoint` lines: the straight engine skips them, the other saves and loads its world there, in `format`.
Verdict CheckpointIsInvisible(const std::vector<std::string>& lines, CheckpointFormat format) {
  Result<Trace> parsed = ParseTrace(Join(lines), "t.trace");
  if (!parsed.ok()) return {true, parsed.status().message, ""};  // shrinking removed a definition: not a failure
  UserspaceEngine straight_engine;
  UserspaceEngine checkpointed_engine(format);
  Execution straight(parsed.value(), straight_engine);
  Execution checkpointed(parsed.value(), checkpointed_engine);
  std::string straight_out;
  std::string checkpointed_out;
  auto failed = [&](std::string why) {
    return Verdict{false, std::move(why), "--- straight ---\n" + straight_out + "--- checkpointed (" +
                                              CheckpointFormatName(format) + ") ---\n" + checkpointed_out};
  };
  for (const Op& op : parsed.value().ops) {
    const std::string where = "line " + std::to_string(op.line) + ": ";
    OpOutcome b;
    if (Status status = checkpointed.Step(op, &b); !status.ok()) return failed(where + status.message);
    checkpointed_out += FormatLine(op, b) + "\n";
    if (op.verb == Verb::kCheckpoint) continue;
    OpOutcome a;
    if (Status status = straight.Step(op, &a); !status.ok()) return failed(where + "straight: " + status.message);
    straight_out += FormatLine(op, a) + "\n";
    if (FormatLine(op, a) != FormatLine(op, b)) return failed(where + "differs");
  }
  return {};
}

// Kernel vs userspace, in lockstep (RunLockstep), with or without a checkpoint after every operation.
Verdict KernelAgrees(const std::vector<std::string>& lines, CheckpointFormat format, bool checkpoint_every) {
  Result<Trace> parsed = ParseTrace(Join(lines), "t.trace");
  if (!parsed.ok()) return {true, parsed.status().message, ""};
  KernelEngine kernel;
  UserspaceEngine userspace(format);
  std::ostringstream out;
  RunReport report = RunLockstep(parsed.value(), kernel, userspace, out, {.checkpoint_every = checkpoint_every});
  return {report.ok(), report.error, out.str()};
}

// Drops one line at a time while `fails` still holds, until no single line can go.
std::vector<std::string> Shrink(std::vector<std::string> lines,
                                const std::function<bool(const std::vector<std::string>&)>& fails) {
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t i = lines.size(); i-- > 0;) {
      std::vector<std::string> candidate = lines;
      candidate.erase(candidate.begin() + static_cast<std::ptrdiff_t>(i));
      if (fails(candidate)) {
        lines = std::move(candidate);
        progress = true;
      }
    }
  }
  return lines;
}

// The choices for one seed: a trace of 30 to 60 operations, a step in [1, ops-1] (after at least one operation and
// before at least one), an archive format.
struct Sequence {
  std::vector<std::string> lines;  // without the checkpoint
  std::size_t step = 0;            // the checkpoint goes before lines[step]
  CheckpointFormat format = CheckpointFormat::kProto;

  static Sequence For(std::uint64_t seed) {
    Sequence s;
    GeneratorOptions options;
    options.ops = 30 + static_cast<int>(Mix(seed) % 31);
    s.lines = OpLines(GenerateTrace(seed, options));
    s.step = 1 + static_cast<std::size_t>(Mix(seed ^ 0x5) % (s.lines.size() - 1));
    s.format = kFormats[Mix(seed ^ 0xf) % kFormats.size()];
    return s;
  }

  std::vector<std::string> WithCheckpoint() const {
    std::vector<std::string> with = lines;
    with.insert(with.begin() + static_cast<std::ptrdiff_t>(step), "checkpoint");
    return with;
  }
};

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(CheckpointPropertyTest, SequencesCoverTheInterestingCases) {
  // The property is only as good as the sequences: every verb, every flag, nested epolls and dup of each kind.
  std::map<Verb, int> verbs;
  std::uint32_t flags = 0;
  int nested = 0;
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    Sequence s = Sequence::For(seed);
    Result<Trace> parsed = ParseTrace(Join(s.WithCheckpoint()), "t.trace");
    ASSERT_TRUE(parsed.ok()) << parsed.status().message;
    EXPECT_GE(parsed.value().ops.size(), 30u);
    EXPECT_LE(parsed.value().ops.size(), 61u);
    for (const Op& op : parsed.value().ops) {
      ++verbs[op.verb];
      if (op.verb == Verb::kAdd || op.verb == Verb::kMod) flags |= op.events;
      // The generator names its epolls e0..e5.
      if (op.verb == Verb::kAdd && parsed.value().names[static_cast<std::size_t>(op.target)][0] == 'e') ++nested;
    }
  }
  for (Verb verb : {Verb::kEpoll, Verb::kPipe, Verb::kEventFd, Verb::kSocketPair, Verb::kDup, Verb::kClose, Verb::kAdd,
                    Verb::kMod, Verb::kDel, Verb::kWrite, Verb::kRead, Verb::kShutdown, Verb::kWait}) {
    EXPECT_GT(verbs[verb], 50) << VerbName(verb);
  }
  EXPECT_EQ(verbs[Verb::kCheckpoint], 300);
  for (std::uint32_t flag : {kEpollEdgeTriggered, kEpollOneShot, kEpollExclusive, kEpollWakeup}) {
    EXPECT_NE(flags & flag, 0u) << std::hex << flag;
  }
  EXPECT_GT(nested, 50);
}

TEST(CheckpointPropertyTest, ShrinkKeepsAFailureAndDropsTheRest) {
  // A made-up property that fails while "b" and "d" are both there.
  auto fails = [](const std::vector<std::string>& lines) {
    return std::count(lines.begin(), lines.end(), "b") > 0 && std::count(lines.begin(), lines.end(), "d") > 0;
  };
  EXPECT_EQ(Shrink({"a", "b", "checkpoint", "c", "d", "e"}, fails), (std::vector<std::string>{"b", "d"}));
}

TEST(CheckpointPropertyTest, CheckpointAtARandomStepIsInvisible) {
  const std::uint64_t first = EnvNumber("EPOLLCR_CKPT_SEED", 0xc4ec);
  const std::uint64_t count = EnvNumber("EPOLLCR_CKPT_TRACES", 10000);
  const std::uint64_t max_failures = EnvNumber("EPOLLCR_CKPT_MAX_FAILURES", 1);
  std::cout << "seeds " << first << " .. " << first + count - 1 << " (EPOLLCR_CKPT_SEED, EPOLLCR_CKPT_TRACES)\n";
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t failures = 0;
  std::uint64_t seed = first;
  for (; seed < first + count && failures < max_failures; ++seed) {
    const Sequence s = Sequence::For(seed);
    const Verdict outcome = CheckpointIsInvisible(s.WithCheckpoint(), s.format);
    if (outcome.holds) continue;
    ++failures;
    const std::vector<std::string> minimal = Shrink(s.WithCheckpoint(), [&](const std::vector<std::string>& lines) {
      return !CheckpointIsInvisible(lines, s.format).holds;
    });
    const Verdict minimal_outcome = CheckpointIsInvisible(minimal, s.format);
    ADD_FAILURE() << "seed " << seed << " (EPOLLCR_CKPT_SEED=" << seed << " EPOLLCR_CKPT_TRACES=1): checkpoint before "
                  << "operation " << s.step + 1 << " of " << s.lines.size() << ", format "
                  << CheckpointFormatName(s.format) << ": " << outcome.why << "\n--- trace ---\n"
                  << Join(s.WithCheckpoint()) << outcome.output << "=== minimal trace, " << minimal.size()
                  << " lines (replay: epollcr replay --engine both --checkpoint-format " << CheckpointFormatName(s.format)
                  << ") ===\n"
                  << Join(minimal) << minimal_outcome.why << "\n"
                  << minimal_outcome.output;
  }
  std::cout << seed - first << " sequences in " << SecondsSince(start) << " s\n";
}

TEST(CheckpointPropertyTest, KernelAgreesWithACheckpointAfterEveryOperation) {
  const std::uint64_t first = EnvNumber("EPOLLCR_CKPT_SEED", 0xc4ec);
  const std::uint64_t count = EnvNumber("EPOLLCR_CKPT_KERNEL_TRACES", 1000);
  const std::uint64_t max_failures = EnvNumber("EPOLLCR_CKPT_MAX_FAILURES", 1);
  std::cout << "seeds " << first << " .. " << first + count - 1 << " (EPOLLCR_CKPT_SEED, EPOLLCR_CKPT_KERNEL_TRACES)\n";
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t failures = 0;
  std::uint64_t seed = first;
  for (; seed < first + count && failures < max_failures; ++seed) {
    const Sequence s = Sequence::For(seed);
    const Verdict outcome = KernelAgrees(s.lines, s.format, true);
    if (outcome.holds) continue;
    ++failures;
    // If the engines differ without checkpoints too, this is an engine divergence (differential_test.cc's business);
    // otherwise the minimal trace keeps agreeing without checkpoints, so that it shows the checkpoint's effect alone.
    const bool agree_without = KernelAgrees(s.lines, s.format, false).holds;
    const std::vector<std::string> minimal = Shrink(s.lines, [&](const std::vector<std::string>& lines) {
      return !KernelAgrees(lines, s.format, true).holds && (!agree_without || KernelAgrees(lines, s.format, false).holds);
    });
    const Verdict minimal_outcome = KernelAgrees(minimal, s.format, true);
    ADD_FAILURE() << "seed " << seed << " (EPOLLCR_CKPT_SEED=" << seed << " EPOLLCR_CKPT_KERNEL_TRACES=1), "
                  << "--checkpoint-every --checkpoint-format " << CheckpointFormatName(s.format) << ": " << outcome.why
                  << (agree_without ? " (the engines agree without checkpoints)"
                                    : " (the engines differ WITHOUT checkpoints too: an engine bug)")
                  << "\n--- trace ---\n"
                  << Join(s.lines) << "--- kernel vs userspace ---\n"
                  << outcome.output << "=== minimal trace, " << minimal.size() << " lines ===\n"
                  << Join(minimal) << "--- kernel vs userspace ---\n"
                  << minimal_outcome.output;
  }
  std::cout << seed - first << " sequences in " << SecondsSince(start) << " s\n";
}

}  // namespace
}  // namespace epollcr::replay
