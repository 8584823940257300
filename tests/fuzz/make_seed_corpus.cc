// Writes the seed corpora of the fuzz targets (fuzz_entry_points.h) from real worlds and traces:
//   image_reader/       framed images and bare payloads of four small hand-built worlds
//   trace_parser/       the traces given, as they are
//   boost_text_loader/  Boost text archives (without the envelope) of the four worlds, and of the world of each trace
//   boost_xml_loader/   the same in Boost xml
// The world of a trace is the userspace engine's world at the step where the most fds are open (the first such).
// usage: make_seed_corpus CORPUS_DIR TRACE...   (tests/fuzz/corpus is generated with it and committed: see
// docs/testing.md, "Fuzzing")
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "epollcr/epollcr.h"
#include "fuzz_entry_points.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/userspace_engine.h"
#include "restore/image_codec.h"

namespace {

using namespace epollcr;
namespace fs = std::filesystem;

constexpr std::size_t kEnvelopeSize = 24;  // SaveWorld's header before the Boost archive (state_api.cc)

bool Write(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  return static_cast<bool>(out);
}

// Variant 0: an eventfd in a poll; 1: and a pipe with bytes in it, a semaphore eventfd; 2, 3: and edge-triggered,
// a socket pair with bytes, a nested poll holding a one-shot entry already delivered.
void BuildWorld(World& w, int variant) {
  int ep = sys::EpollCreate1(w.fds, 0).value();
  int efd = sys::EventFd(w.fds, 1, variant % 2 == 1).value();
  Event e{kEventIn | (variant >= 2 ? kEpollEdgeTriggered : 0u), {}};
  e.SetData(7);
  (void)sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, efd, &e);
  if (variant >= 1) {
    int p[2];
    (void)sys::Pipe(w.fds, p);
    const std::byte b[3] = {};
    (void)sys::Write(w.fds, p[1], b);
    e.events = kEventIn;
    (void)sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, p[0], &e);
  }
  if (variant >= 2) {
    int s[2];
    (void)sys::SocketPair(w.fds, s);
    const std::byte b[5] = {};
    (void)sys::Write(w.fds, s[0], b);
    int inner = sys::EpollCreate1(w.fds, 0).value();
    e.events = kEventIn | kEventRdHup | kEpollOneShot;
    (void)sys::EpollCtl(w.fds, inner, sys::kEpollCtlAdd, s[1], &e);
    e.events = kEventIn;
    (void)sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, inner, &e);
    Event got[4];
    (void)sys::EpollWait(w.fds, inner, got, 4, 0);
  }
}

// The Boost archives of `world` into the two loaders' corpora, as NAME.
bool WriteArchives(const World& world, const fs::path& corpus, const std::string& name) {
  for (auto [format, dir] : {std::pair{ArchiveFormat::kBoostText, "boost_text_loader"},
                             std::pair{ArchiveFormat::kBoostXml, "boost_xml_loader"}}) {
    StatusOr<std::string> saved = SaveWorld(world, format);
    if (!saved.ok() || !Write(corpus / dir / name, saved.value.substr(kEnvelopeSize))) return false;
  }
  return true;
}

// Runs the trace step by step and returns the archive seeds of its fullest world.
bool WriteTraceWorld(const replay::Trace& trace, const fs::path& corpus, const std::string& name) {
  replay::UserspaceEngine engine(replay::CheckpointFormat::kBoostBinary);
  replay::Execution execution(trace, engine);
  int most = -1;
  for (const replay::Op& op : trace.ops) {
    replay::OpOutcome outcome;
    if (!execution.Step(op, &outcome).ok()) return false;
    const int open = engine.fds().Count();
    if (open > most) {
      most = open;
      if (!WriteArchives(engine.world(), corpus, name)) return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_seed_corpus CORPUS_DIR TRACE...\n");
    return 2;
  }
  const fs::path corpus = argv[1];
  for (const char* dir : {"image_reader", "trace_parser", "boost_text_loader", "boost_xml_loader"}) {
    fs::create_directories(corpus / dir);
  }
  for (int variant = 0; variant < 4; ++variant) {
    World w;
    BuildWorld(w, variant);
    StatusOr<std::string> framed = image::SaveImage(w);
    StatusOr<v1::Image> captured = image::Capture(w);
    if (!framed.ok() || !captured.ok()) return 1;
    const std::string n = std::to_string(variant);
    if (!Write(corpus / "image_reader" / ("framed-" + n), framed.value) ||
        !Write(corpus / "image_reader" / ("payload-" + n), image::Encode(captured.value).value) ||
        !WriteArchives(w, corpus, "world-" + n)) {
      return 1;
    }
  }
  for (int i = 2; i < argc; ++i) {
    const fs::path path = argv[i];
    std::ifstream in(path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    replay::ParseResult parsed = replay::ParseTrace(text, path.string());
    if (!in || !parsed.ok()) {
      std::fprintf(stderr, "make_seed_corpus: %s: %s\n", argv[i],
                   parsed.ok() ? "unreadable" : parsed.error->Message().c_str());
      return 1;
    }
    const std::string name = path.stem().string();
    if (!Write(corpus / "trace_parser" / path.filename(), text) ||
        !WriteTraceWorld(fuzz::BoundedTrace(parsed.trace), corpus, "trace-" + name)) {
      std::fprintf(stderr, "make_seed_corpus: %s: writing its seeds failed\n", argv[i]);
      return 1;
    }
  }
  return 0;
}
