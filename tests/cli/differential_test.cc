// Random differential test: generated traces (tests/common/trace_generator.h) run on the kernel, which is the oracle,
// and on the userspace engine three ways; every output must be the kernel's, byte for byte:
//   userspace   straight through;
//   host        straight through, with every pipe, eventfd and socket pair a real kernel object wrapped as a host
//               file (`replay --files host`): the polls' entries are kernel entries (docs/engine.md);
//   host-memory the same with a checkpoint after every operation, restored in the same process: the host fds and
//               the polls' kernel epolls are taken over as they are (docs/restore.md), for one trace in
//               EPOLLCR_DIFF_HOST_CHECKPOINT_EVERY (default 1: every trace);
//   memory      with a checkpoint after every operation, restored in the same process (the proto image, kept in
//               memory: image::SaveImage, image::LoadImage; the same bytes an image file holds, without the disk);
//   exec        for one trace in EPOLLCR_DIFF_EXEC_EVERY (default 100), the epollcr program (EPOLLCR_BIN) with
//               `replay --checkpoint-mode exec --checkpoint-every 1`: every checkpoint restored in a new process;
//   host-exec   the same with `--files host`, for every other such trace instead: the host fds and the polls'
//               kernel epolls cross every exec and are taken over there.
// The default run is 2000 traces of 50 operations: 100,000 operations on each engine, 100,000 checkpoints in memory,
// and 20 traces (about 1,000 processes) across processes, half of them over host files. A process start costs about 25 ms of CPU here (more under
// AddressSanitizer), which is why the exec share is small; scripts/soak runs more of everything.
// For one seed in EPOLLCR_DIFF_KERNEL_ONLY_EVERY (default 4) a second trace also has the kernel-only kinds
// (GeneratorOptions::kernel_only_kinds: timerfds, signalfds, UDP pairs, FIFOs): it runs over host files only, straight
// and with a checkpoint after every operation (host and host-memory modes). Over --files memory such a trace mixes kernel entries and
// in-memory entries in one poll, whose order the engine does not keep yet (tests/traces/known-userspace-divergences,
// mixed_kernel_and_memory_entries_ready_order).
//
// A divergence is shrunk to a minimal trace (tests/common/trace_shrinker.h: delta debugging over the operation lines,
// for the same mode) and written as NAME.trace and NAME.expected (the kernel's output, as tests/traces/regenerate
// makes it) into EPOLLCR_DIFF_OUT (default: differential-divergences/ in the build tree, printed with the failure).
// To reproduce and keep it:
//   1. rerun the one trace: EPOLLCR_DIFF_SEED=<seed> EPOLLCR_DIFF_TRACES=1 meson test -C build differential
//      (or `epollcr replay --engine both [--checkpoint-mode exec --checkpoint-every] NAME.trace`);
//   2. copy NAME.trace and NAME.expected into tests/traces/, rename them after what they check, and edit the first
//      comment line to say so (its line numbers are counted in .expected: keep it one line, or run
//      tests/traces/regenerate afterwards); tests/cli/traces_test.cc runs it from then on;
//   3. until the engine is fixed, list the name in tests/traces/known-userspace-divergences.
// See docs/testing.md.
//
// Environment: EPOLLCR_DIFF_SEED (first seed, default 0x5eed), EPOLLCR_DIFF_TRACES (default 2000, 600 under a
// sanitizer), EPOLLCR_DIFF_OPS (operations per trace, default 50), EPOLLCR_DIFF_EXCLUSIVE (0: no EPOLLEXCLUSIVE,
// default 1),
// EPOLLCR_DIFF_EXEC_EVERY (run one trace in N in exec mode, default 100, 300 under a sanitizer; 0: none),
// EPOLLCR_DIFF_KERNEL_ONLY_EVERY (a trace with kernel-only kinds for one seed in N, default 4; 0: none),
// EPOLLCR_DIFF_MAX_FAILURES
// (failing traces to report before stopping, default 1), EPOLLCR_DIFF_OUT (where shrunk traces go). A soak:
// scripts/soak.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "program_run.h"
#include "sanitized.h"
#include "replay/forwarding_engine.h"
#include "replay/host_objects.h"
#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"
#include "temp_dir.h"
#include "trace_generator.h"
#include "trace_shrinker.h"

namespace epollcr::replay {
namespace {

// Under AddressSanitizer a process start of epollcr costs about 0.3 s of CPU instead of 0.02 s, and everything else
// runs a few times slower: there the default run is 600 traces (the plain build runs 2000 in the same CI run), with
// one trace in 300 across processes (2 traces, about 100 processes).
#if EPOLLCR_TEST_SANITIZED
constexpr std::uint64_t kDefaultTraces = 600;
constexpr std::uint64_t kDefaultExecEvery = 300;
#else
constexpr std::uint64_t kDefaultTraces = 2000;
constexpr std::uint64_t kDefaultExecEvery = 100;
#endif

std::uint64_t EnvNumber(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strtoull(value, nullptr, 0);
}

std::string EnvString(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// The ways a trace runs on the userspace engine, each compared with the kernel.
enum class Mode : std::uint8_t { kUserspace, kHost, kHostMemory, kMemory, kExec, kHostExec };

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kUserspace: return "userspace";
    case Mode::kHost: return "host";
    case Mode::kHostMemory: return "host-memory";
    case Mode::kMemory: return "memory";
    case Mode::kExec: return "exec";
    case Mode::kHostExec: return "host-exec";
  }
  return "?";
}

// How to replay a mode by hand.
const char* ModeCommand(Mode mode) {
  switch (mode) {
    case Mode::kUserspace: return "epollcr replay --engine both TRACE";
    case Mode::kHost: return "epollcr replay --engine both --files host TRACE";
    case Mode::kHostMemory: return "epollcr replay --engine both --files host --checkpoint-every TRACE";
    case Mode::kMemory: return "epollcr replay --engine both --checkpoint-every TRACE";
    case Mode::kExec: return "epollcr replay --engine both --checkpoint-mode exec --checkpoint-every TRACE";
    case Mode::kHostExec:
      return "epollcr replay --engine both --files host --checkpoint-mode exec --checkpoint-every TRACE";
  }
  return "?";
}

// Makes the userspace engine of a run: plain, or one whose checkpoints keep the image in memory. A test replaces it
// with a deliberately wrong engine to show that the harness catches and shrinks a divergence.
using EngineFactory = std::function<std::unique_ptr<Engine>(bool checkpoints)>;

std::unique_ptr<Engine> RealUserspace(bool checkpoints) {
  return std::make_unique<UserspaceEngine>(CheckpointFormat::kProto,
                                           checkpoints ? ImageStore::kMemory : ImageStore::kFile);
}

class Harness {
 public:
  explicit Harness(EngineFactory factory = RealUserspace) : factory_(std::move(factory)) {}

  // What `trace` prints on the kernel.
  static std::string Kernel(const Trace& trace) {
    KernelEngine kernel;
    std::ostringstream out;
    RunReport report = RunTrace(trace, kernel, out);
    if (!report.ok()) out << "error: " << report.error << '\n';
    return out.str();
  }

  // What `trace` (whose text is `text`) prints on the userspace engine in `mode`; a failure's message is appended.
  std::string Userspace(Mode mode, const std::string& text, const Trace& trace) {
    if (mode == Mode::kExec || mode == Mode::kHostExec) return Exec(text, mode == Mode::kHostExec ? "host" : "memory");
    const bool host = mode == Mode::kHost || mode == Mode::kHostMemory;
    const bool checkpoints = mode == Mode::kMemory || mode == Mode::kHostMemory;
    std::unique_ptr<Engine> engine =
        host ? std::make_unique<UserspaceEngine>(CheckpointFormat::kProto, ImageStore::kMemory, FileBacking::kHost)
             : factory_(checkpoints);
    std::ostringstream out;
    RunReport report = RunTrace(trace, *engine, out, {.checkpoint_every = checkpoints ? 1 : 0});
    if (!report.ok()) out << "error: " << report.error << '\n';
    return out.str();
  }

 private:
  std::string Exec(const std::string& text, const char* files) {
    const char* bin = std::getenv("EPOLLCR_BIN");
    if (bin == nullptr) return "error: EPOLLCR_BIN is not set\n";
    const std::string trace = dir_.File("t.trace");
    std::ofstream(trace, std::ios::binary) << text;
    std::ofstream(dir_.File("stdin"));
    testing_support::ProgramRun run = testing_support::RunProgram(
        bin, {"replay", trace, "--files", files, "--checkpoint-mode", "exec", "--checkpoint-every", "1"},
        {.stdin_path = dir_.File("stdin"), .stdout_path = dir_.File("stdout"), .stderr_path = dir_.File("stderr"),
         .cwd = "", .as_uid = -1});
    if (run.status != 0 || !run.err.empty()) run.out += "error (status " + std::to_string(run.status) + "): " + run.err;
    return run.out;
  }

  EngineFactory factory_;
  testing_support::TempDir dir_{"differential"};
};

struct Divergence {
  Mode mode = Mode::kUserspace;
  std::string kernel;
  std::string userspace;
};

// The first mode (of `modes`) in which `text` prints something else than on the kernel.
std::optional<Divergence> FirstDivergence(Harness& harness, const std::string& text, const Trace& trace,
                                          const std::vector<Mode>& modes) {
  const std::string kernel = Harness::Kernel(trace);
  for (Mode mode : modes) {
    std::string userspace = harness.Userspace(mode, text, trace);
    if (userspace != kernel) return Divergence{mode, kernel, std::move(userspace)};
  }
  return std::nullopt;
}

std::string DivergenceDir() {
  return EnvString("EPOLLCR_DIFF_OUT", EnvString("EPOLLCR_DIFF_DEFAULT_OUT", "differential-divergences"));
}

// Shrinks a diverging trace for its mode and writes the minimal one out; returns the report for the failure.
std::string ShrinkAndWrite(Harness& harness, const std::string& name, const std::string& text,
                           const Divergence& divergence, const std::string& dir) {
  ShrinkResult shrunk = ShrinkTrace(text, [&](const std::string& candidate, const Trace& trace) {
    return FirstDivergence(harness, candidate, trace, {divergence.mode}).has_value();
  });
  std::ostringstream report;
  report << "--- trace ---\n" << text << "--- kernel ---\n" << divergence.kernel << "--- " << ModeName(divergence.mode)
         << " ---\n" << divergence.userspace;
  std::string error;
  RegressionTrace regression = MakeRegressionTrace(
      name,
      std::string("shrunk by tests/cli/differential_test.cc: the userspace engine (") + ModeName(divergence.mode) +
          ") differs from the kernel; replay: " + ModeCommand(divergence.mode),
      shrunk.lines, &error);
  Result<Trace> parsed = ParseTrace(regression.trace, name + ".trace");
  report << "=== minimal trace: " << shrunk.lines.size() << " operations (" << shrunk.tests << " runs"
         << (shrunk.minimal ? "" : ", search stopped at its budget") << ") ===\n"
         << regression.trace << "--- kernel ---\n" << regression.expected;
  if (parsed.ok()) report << "--- " << ModeName(divergence.mode) << " ---\n"
                          << harness.Userspace(divergence.mode, regression.trace, parsed.value());
  std::string reason;
  if (!error.empty()) {
    report << "could not make the regression trace: " << error << "\n";
  } else if (!WriteRegressionTrace(dir, regression, &reason)) {
    report << "could not write the regression trace: " << reason << "\n";
  } else {
    report << "written: " << dir << "/" << name << ".trace and .expected (the kernel's output); copy both into "
           << "tests/traces/ as a regression test (see the top of tests/cli/differential_test.cc)\n";
  }
  return report.str();
}

// The trace signals are blocked before anything runs, as `epollcr replay` does: a `raise` leaves its signal pending.
class BlockTraceSignals : public ::testing::Environment {
 public:
  void SetUp() override { host::BlockTraceSignals(); }
};
[[maybe_unused]] ::testing::Environment* const kBlockTraceSignals =
    ::testing::AddGlobalTestEnvironment(new BlockTraceSignals);

TEST(TraceGeneratorTest, SameSeedSameTrace) {
  EXPECT_EQ(GenerateTrace(42), GenerateTrace(42));
  EXPECT_NE(GenerateTrace(42), GenerateTrace(43));
}

TEST(TraceGeneratorTest, TracesParseAndCoverEveryVerb) {
  std::map<Verb, int> seen;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    Result<Trace> parsed = ParseTrace(GenerateTrace(seed), "generated");
    ASSERT_TRUE(parsed.ok()) << "seed " << seed << ": " << parsed.status().message << "\n" << GenerateTrace(seed);
    EXPECT_EQ(parsed.value().ops.size(), 50u);
    for (const Op& op : parsed.value().ops) ++seen[op.verb];
  }
  for (Verb verb : {Verb::kEpoll, Verb::kPipe, Verb::kEventFd, Verb::kSocketPair, Verb::kDup, Verb::kClose, Verb::kAdd,
                    Verb::kMod, Verb::kDel, Verb::kWrite, Verb::kRead, Verb::kShutdown, Verb::kWait}) {
    EXPECT_GT(seen[verb], 10) << VerbName(verb);
  }
  EXPECT_EQ(seen[Verb::kCheckpoint], 0) << "no checkpoint unless asked for";
  GeneratorOptions with_checkpoints;
  with_checkpoints.checkpoint_percent = 20;
  Result<Trace> parsed = ParseTrace(GenerateTrace(1, with_checkpoints), "generated");
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(std::any_of(parsed.value().ops.begin(), parsed.value().ops.end(),
                          [](const Op& op) { return op.verb == Verb::kCheckpoint; }));
  EXPECT_EQ(seen[Verb::kTimerFd] + seen[Verb::kSignalFd] + seen[Verb::kUdp] + seen[Verb::kFifo] + seen[Verb::kRaise],
            0)
      << "no kernel-only kinds unless asked for";
}

TEST(TraceGeneratorTest, KernelOnlyKindsOnlyWhenAskedAndNeverTcp) {
  GeneratorOptions options;
  options.kernel_only_kinds = true;
  std::map<Verb, int> seen;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    const std::string text = GenerateTrace(seed, options);
    Result<Trace> parsed = ParseTrace(text, "generated");
    ASSERT_TRUE(parsed.ok()) << "seed " << seed << ": " << parsed.status().message << "\n" << text;
    for (const Op& op : parsed.value().ops) ++seen[op.verb];
  }
  for (Verb verb : {Verb::kTimerFd, Verb::kSetTime, Verb::kSignalFd, Verb::kRaise, Verb::kUdp, Verb::kFifo,
                    Verb::kEpoll, Verb::kPipe, Verb::kAdd, Verb::kWait}) {
    EXPECT_GT(seen[verb], 10) << VerbName(verb);
  }
  for (Verb verb : {Verb::kListen, Verb::kConnect, Verb::kAccept, Verb::kCheckpoint}) {
    EXPECT_EQ(seen[verb], 0) << VerbName(verb);
  }
}

// An engine that loses a checkpoint's effect on one thing: after its first checkpoint, an eventfd read reports one
// more than the counter held. Only the checkpointed modes see it.
class ForgetfulEngine final : public ForwardingEngine {
 public:
  explicit ForgetfulEngine(bool checkpoints)
      : ForwardingEngine(userspace_), userspace_(CheckpointFormat::kProto, checkpoints ? ImageStore::kMemory
                                                                                       : ImageStore::kFile) {}
  std::string_view Name() const override { return "forgetful"; }
  Result<std::size_t> Read(int fd, std::span<std::byte> buffer) override {
    Result<std::size_t> n = ForwardingEngine::Read(fd, buffer);
    if (n.ok() && n.value() == 8 && userspace_.checkpoints() > 0) {
      std::uint64_t value = 0;
      std::memcpy(&value, buffer.data(), 8);
      ++value;
      std::memcpy(buffer.data(), &value, 8);
    }
    return n;
  }

 private:
  UserspaceEngine userspace_;
};

TEST(DifferentialHarnessTest, FindsShrinksAndWritesOutADivergence) {
  // The harness, pointed at a wrong engine, must fail a trace and leave a minimal regression trace behind.
  Harness harness([](bool checkpoints) { return std::make_unique<ForgetfulEngine>(checkpoints); });
  const std::string text = "# t\nepoll e\npipe p\neventfd f 5\nadd e f in 1\nwrite p.w 3\nwait e 4\nread p.r\n"
                           "read f\nclose p.w\nwait e 4\n";
  Result<Trace> parsed = ParseTrace(text, "t.trace");
  ASSERT_TRUE(parsed.ok());
  std::optional<Divergence> divergence =
      FirstDivergence(harness, text, parsed.value(), {Mode::kUserspace, Mode::kMemory});
  ASSERT_TRUE(divergence.has_value());
  EXPECT_EQ(divergence->mode, Mode::kMemory) << "straight through, the engine is right";
  testing_support::TempDir out("differential-out");
  const std::string report = ShrinkAndWrite(harness, "forgetful", text, *divergence, out.path());
  EXPECT_NE(report.find("written: " + out.path() + "/forgetful.trace"), std::string::npos) << report;
  const std::string trace = testing_support::ReadWholeFile(out.File("forgetful.trace"));
  const std::string expected = testing_support::ReadWholeFile(out.File("forgetful.expected"));
  // The minimal trace: an eventfd and a read of it (the checkpoint after the first line does the rest).
  EXPECT_EQ(OperationLines(trace), (std::vector<std::string>{"eventfd f 5", "read f"})) << trace;
  EXPECT_EQ(expected, "2 eventfd ok\n3 read ok 5\n");
}

TEST(DifferentialTest, KernelAndUserspaceAgreeOnRandomTracesWithAndWithoutCheckpoints) {
  const std::uint64_t first = EnvNumber("EPOLLCR_DIFF_SEED", 0x5eed);
  const std::uint64_t count = EnvNumber("EPOLLCR_DIFF_TRACES", kDefaultTraces);
  const std::uint64_t exec_every = EnvNumber("EPOLLCR_DIFF_EXEC_EVERY", kDefaultExecEvery);
  const std::uint64_t host_checkpoint_every = EnvNumber("EPOLLCR_DIFF_HOST_CHECKPOINT_EVERY", 1);
  const std::uint64_t kernel_only_every = EnvNumber("EPOLLCR_DIFF_KERNEL_ONLY_EVERY", 4);
  GeneratorOptions options;
  options.ops = static_cast<int>(EnvNumber("EPOLLCR_DIFF_OPS", 50));
  options.exclusive = EnvNumber("EPOLLCR_DIFF_EXCLUSIVE", 1) != 0;
  GeneratorOptions kernel_only_options = options;
  kernel_only_options.kernel_only_kinds = true;
  const std::uint64_t max_failures = EnvNumber("EPOLLCR_DIFF_MAX_FAILURES", 1);
  std::cout << "seeds " << first << " .. " << first + count - 1 << " (EPOLLCR_DIFF_SEED, EPOLLCR_DIFF_TRACES), "
            << options.ops << " operations each; exec mode for one trace in " << exec_every
            << " (EPOLLCR_DIFF_EXEC_EVERY); kernel-only kinds in a second trace for one seed in " << kernel_only_every
            << " (EPOLLCR_DIFF_KERNEL_ONLY_EVERY)\n";
  RecordProperty("first_seed", std::to_string(first));
  const auto start = std::chrono::steady_clock::now();
  Harness harness;
  std::uint64_t failures = 0;
  std::uint64_t operations = 0;
  std::uint64_t exec_traces = 0;
  std::uint64_t host_checkpoint_traces = 0;
  std::uint64_t kernel_only_operations = 0;
  for (std::uint64_t seed = first; seed < first + count && failures < max_failures; ++seed) {
    const std::string name = "seed-" + std::to_string(seed);
    const std::string text = GenerateTrace(seed, options);
    Result<Trace> parsed = ParseTrace(text, name + ".trace");
    ASSERT_TRUE(parsed.ok()) << parsed.status().message << "\n" << text;
    operations += parsed.value().ops.size();
    const bool exec = exec_every != 0 && (seed - first) % exec_every == 0;
    exec_traces += exec ? 1 : 0;
    const bool host_checkpoints = host_checkpoint_every != 0 && (seed - first) % host_checkpoint_every == 0;
    host_checkpoint_traces += host_checkpoints ? 1 : 0;
    std::vector<Mode> modes = {Mode::kUserspace, Mode::kHost, Mode::kMemory};
    if (host_checkpoints) modes.push_back(Mode::kHostMemory);
    if (exec) modes.push_back(exec_traces % 2 == 1 ? Mode::kExec : Mode::kHostExec);
    std::optional<Divergence> divergence = FirstDivergence(harness, text, parsed.value(), modes);
    if (divergence) {
      ++failures;
      const std::string file = name + "-" + ModeName(divergence->mode);
      ADD_FAILURE() << "seed " << seed << " (EPOLLCR_DIFF_SEED=" << seed << " EPOLLCR_DIFF_TRACES=1): the userspace "
                    << "engine (" << ModeName(divergence->mode) << ") differs from the kernel\n"
                    << ShrinkAndWrite(harness, file, text, *divergence, DivergenceDir());
    }
    if (kernel_only_every == 0 || (seed - first) % kernel_only_every != 0 || failures >= max_failures) continue;
    // The same seed with the kernel-only kinds: over host files only (see the top).
    const std::string kernel_only_text = GenerateTrace(seed, kernel_only_options);
    Result<Trace> kernel_only = ParseTrace(kernel_only_text, name + "-kernel-only.trace");
    ASSERT_TRUE(kernel_only.ok()) << kernel_only.status().message << "\n" << kernel_only_text;
    kernel_only_operations += kernel_only.value().ops.size();
    divergence = FirstDivergence(harness, kernel_only_text, kernel_only.value(), {Mode::kHost, Mode::kHostMemory});
    if (!divergence) continue;
    ++failures;
    ADD_FAILURE() << "seed " << seed << " with the kernel-only kinds (EPOLLCR_DIFF_SEED=" << seed
                  << " EPOLLCR_DIFF_TRACES=1): the userspace engine (" << ModeName(divergence->mode)
                  << ") differs from the kernel\n"
                  << ShrinkAndWrite(harness, name + "-kernel-only-" + ModeName(divergence->mode), kernel_only_text,
                                    *divergence, DivergenceDir());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << operations << " operations on each engine (and over host files), " << operations
            << " in-memory checkpoints, " << host_checkpoint_traces << " traces over host files with a checkpoint after "
            << "every operation, " << exec_traces << " traces across processes (half over host files), "
            << kernel_only_operations << " operations of traces with kernel-only kinds (over host files, straight and "
            << "with a checkpoint after every operation), in " << seconds << " s\n";
  if (count >= 2000 && options.ops >= 50 && failures == 0) {
    EXPECT_GE(operations, 100000u) << "the default run covers at least 100,000 operations";
  }
}

}  // namespace
}  // namespace epollcr::replay
