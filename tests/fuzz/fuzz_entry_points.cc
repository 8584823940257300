#include "fuzz_checks.h"
#include "fuzz_entry_points.h"

#include <algorithm>
#include <cstdint>
#include <sstream>

#include "epollcr/crc32c.h"
#include "epollcr/epollcr.h"
#include "replay/trace_parser.h"
#include "replay/runner.h"
#include "replay/userspace_engine.h"
#include "image/codec.h"

namespace epollcr::fuzz {
namespace {


std::string LeftAlive(long before) {
  return "files alive: " + std::to_string(File::LiveFiles()) + ", before: " + std::to_string(before);
}

// ---- trace parser ----

int LineCount(std::string_view text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n')) + 1;
}

// The parser's promises about a Trace (trace.h): ops in file order, every name id defined, add_count counted.
void CheckTrace(const replay::Trace& trace, int lines, Checks& checks) {
  int last_line = 0;
  int adds = 0;
  auto known = [&](replay::NameId id) {
    return id == replay::kNoName || (id >= 0 && static_cast<std::size_t>(id) < trace.names.size());
  };
  for (const replay::Op& op : trace.ops) {
    checks.Expect(op.line > last_line && op.line <= lines, "trace: op line out of order or beyond the text");
    checks.Expect(known(op.epoll) && known(op.target) && known(op.defines[0]) && known(op.defines[1]),
                  "trace: op with an unknown name id");
    last_line = op.line;
    if (op.verb == replay::Verb::kAdd) ++adds;
  }
  checks.Expect(adds == trace.add_count, "trace: add_count is not the number of add lines");
}

}  // namespace

// Waits do not block (a negative timeout waits forever when nothing is ready, and a trace is single-threaded); byte
// counts are capped above what a pipe or socket buffer holds, so every partial read and write still happens. The
// kernel-only verbs (timerfd, signalfd, TCP, UDP, FIFO; docs/trace-format.md) go: they make real kernel objects, which
// replay does not checkpoint yet, and the fuzzer checkpoints every trace. Their names then hold no fd (EBADF).
replay::Trace BoundedTrace(const replay::Trace& trace) {
  replay::Trace bounded = trace;
  std::erase_if(bounded.ops, [](const replay::Op& op) {
    return replay::MakesHostObjects(op.verb) || op.verb == replay::Verb::kSetTime || op.verb == replay::Verb::kRaise;
  });
  bounded.host_objects = false;
  if (bounded.ops.size() > kMaxTraceOps) bounded.ops.resize(kMaxTraceOps);
  for (replay::Op& op : bounded.ops) {
    if (op.verb == replay::Verb::kWait) op.timeout_ms = 0;
    if ((op.verb == replay::Verb::kRead || op.verb == replay::Verb::kWrite) && !replay::IsCounterKind(op.kind)) {
      op.number = std::min(op.number, kMaxTraceIoBytes);
    }
  }
  return bounded;
}

namespace {

struct TraceRun {
  replay::RunReport report;
  std::string lines;
};

TraceRun RunOnUserspace(const replay::Trace& trace, replay::CheckpointFormat format, bool checkpoint_every) {
  replay::UserspaceEngine engine(format, replay::ImageStore::kMemory);
  std::ostringstream out;
  replay::RunOptions options;
  options.checkpoint_every = checkpoint_every;
  TraceRun run;
  run.report = replay::RunTrace(trace, engine, out, options);
  run.lines = std::move(out).str();
  return run;
}

}  // namespace

Verdict ReadImage(std::string_view bytes) {
  Checks checks;
  const long live = File::LiveFiles();
  bool accepted = false;
  {
    World world;
    image::ReadLimits limits;
    limits.max_payload = 1 << 20;
    accepted = image::LoadImage(bytes, &world, limits).ok();
    // The payload alone, without the framing, so that the decoder and validator are reached directly.
    Result<v1::Image> decoded = image::Decode(bytes);
    if (decoded.ok()) {
      World other;
      accepted = image::Restore(decoded.value(), &other).ok() || accepted;
    }
  }
  checks.Expect(File::LiveFiles() == live, "image: a load left files behind: " + LeftAlive(live));
  return checks.Done(accepted);
}

namespace {

// Parses `text`, checks the parser's promises, and runs the trace straight and with a checkpoint in `format` after
// every operation: both runs succeed, print the same, and leave no file alive.
Verdict ParseAndRunTraceIn(std::string_view text, replay::CheckpointFormat format) {
  Checks checks;
  const int lines = LineCount(text);
  Result<replay::Trace> parsed = replay::ParseTrace(text, "fuzz.trace");
  if (!parsed.ok()) {
    // "fuzz.trace:LINE: reason"
    const std::string& message = parsed.status().message;
    const std::string prefix = "fuzz.trace:";
    const std::size_t colon = message.find(": ", prefix.size());
    const bool shaped = message.rfind(prefix, 0) == 0 && colon != std::string::npos && colon > prefix.size() &&
                        colon - prefix.size() <= 9 &&
                        message.find_first_not_of("0123456789", prefix.size()) == colon;
    checks.Expect(shaped, "trace: an error not shaped \"fuzz.trace:LINE: reason\": " + message);
    if (shaped) {
      const int line = std::stoi(message.substr(prefix.size(), colon - prefix.size()));
      checks.Expect(line >= 1 && line <= lines, "trace: an error names line " + std::to_string(line) +
                                                    " of a text of " + std::to_string(lines) + " lines");
      checks.Expect(colon + 2 < message.size(), "trace: an error without a reason");
    }
    return checks.Done(false);
  }
  CheckTrace(parsed.value(), lines, checks);
  if (!checks.ok()) return checks.Done(true);

  const long live = File::LiveFiles();
  const replay::Trace trace = BoundedTrace(parsed.value());
  const TraceRun straight = RunOnUserspace(trace, format, false);
  checks.Expect(straight.report.ok(), "trace: the run failed: " + straight.report.error);
  const TraceRun checkpointed = RunOnUserspace(trace, format, true);
  checks.Expect(checkpointed.report.ok(), std::string("trace: the run with a ") +
                                              replay::CheckpointFormatName(format) +
                                              " checkpoint after every operation failed: " + checkpointed.report.error);
  checks.Expect(straight.lines == checkpointed.lines,
                std::string("trace: a ") + replay::CheckpointFormatName(format) +
                    " checkpoint after every operation changed the output:\n" + straight.lines + "-- with --\n" +
                    checkpointed.lines);
  checks.Expect(File::LiveFiles() == live, "trace: the runs left files behind: " + LeftAlive(live));
  return checks.Done(true);
}

}  // namespace

Verdict ParseAndRunTrace(std::string_view text) {
  constexpr replay::CheckpointFormat kFormats[] = {replay::CheckpointFormat::kBoostText,
                                                   replay::CheckpointFormat::kBoostXml,
                                                   replay::CheckpointFormat::kBoostBinary};
  return ParseAndRunTraceIn(text, kFormats[text.size() % std::size(kFormats)]);
}

Verdict RunTraceWithImageCheckpoints(std::string_view text) {
  return ParseAndRunTraceIn(text, replay::CheckpointFormat::kProto);
}

std::string Envelope(ArchiveFormat format, std::string_view archive) {
  std::string out = "EPCRWRLD";
  auto put_le = [&out](std::uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  put_le(1, 1);  // envelope version
  put_le(static_cast<std::uint8_t>(format), 1);
  put_le(0, 2);  // reserved
  put_le(Crc32c(archive), 4);
  put_le(archive.size(), 8);
  out += archive;
  return out;
}

Verdict LoadBoostArchive(ArchiveFormat format, std::string_view archive) {
  Checks checks;
  const long live = File::LiveFiles();
  const std::string name = ArchiveFormatName(format);
  bool accepted = false;
  {
    World world;
    const Status loaded = LoadWorld(Envelope(format, archive), &world);
    accepted = loaded.ok();
    if (!accepted) {
      checks.Expect(!loaded.message.empty(), name + ": a failed load without a message");
      checks.Expect(world.fds.Count() == 0 && world.roots.empty(), name + ": a failed load left the world not empty");
      checks.Expect(File::LiveFiles() == live, name + ": a failed load left files behind: " + LeftAlive(live));
      return checks.Done(false);
    }
    const Result<std::string> saved = SaveWorld(world, format);
    checks.Expect(saved.ok(), name + ": a loaded world does not save: " + saved.status().message);
    if (saved.ok()) {
      const Result<std::string> again = SaveWorld(world, format);
      checks.Expect(again.ok() && again.value() == saved.value(), name + ": two saves of one world differ");
      World reloaded;
      const Status second = LoadWorld(saved.value(), &reloaded);
      checks.Expect(second.ok(), name + ": a saved world does not load: " + second.message);
      const Result<std::string> resaved = SaveWorld(reloaded, format);
      checks.Expect(resaved.ok() && resaved.value() == saved.value(),
                    name + ": save, load, save does not give the same bytes");
    }
  }
  checks.Expect(File::LiveFiles() == live, name + ": the worlds left files behind: " + LeftAlive(live));
  return checks.Done(accepted);
}

namespace {

constexpr Target kTargets[] = {
    {"image_reader", ReadImage},
    {"trace_parser", ParseAndRunTrace},
    {"boost_text_loader", [](std::string_view input) { return LoadBoostArchive(ArchiveFormat::kBoostText, input); }},
    {"boost_xml_loader", [](std::string_view input) { return LoadBoostArchive(ArchiveFormat::kBoostXml, input); }},
    {"trace_checkpoints", RunTraceWithImageCheckpoints},
    {"image_restorer", RestoreWithResolvers},
    {"handoff_receive", ReceiveFromHostilePeer},
    {"fdinfo_parser", ParseFdinfoText},
};

}  // namespace

std::span<const Target> Targets() { return kTargets; }

const Target* FindTarget(std::string_view name) {
  for (const Target& target : kTargets) {
    if (target.name == name) return &target;
  }
  return nullptr;
}

}  // namespace epollcr::fuzz
