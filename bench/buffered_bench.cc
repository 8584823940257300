// Checkpoints of a world whose weight is the bytes buffered in its pipes and socket pairs, not its entries (issue 17,
// item 5: text and xml archives at most 10 ns per buffered byte to save and to load):
//   BM_BufferedSave/<format>   SaveWorld (Boost formats) or image::SaveImage (proto) of the world below
//   BM_BufferedLoad/<format>   LoadWorld or image::LoadImage of its checkpoint into an empty world; tearing the loaded
//                              world down is outside the timed region
// Both report per_byte (time per buffered byte) and units_per_iteration (worlds.h CountWork).
//
// The world: kPipes pipes and kPairs AF_UNIX socket pairs of the userspace engine, each filled until its write fails
// with EAGAIN (both directions of a socket pair), in writes of 4 KiB of varied bytes; every read end and socket in one
// EventPoll. About 4 MiB in all; the counter buffered_bytes says how much exactly.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoint_world.h"
#include "epollcr/syscalls.h"
#include "image/codec.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr int kPipes = 32;
constexpr int kPairs = 8;
constexpr std::size_t kChunk = 4096;

struct BufferedWorld {
  World world;
  int epfd = -1;
  std::size_t bytes = 0;  // buffered in all
  std::string error;

  BufferedWorld() { error = Build(); }
  BufferedWorld(const BufferedWorld&) = delete;
  BufferedWorld& operator=(const BufferedWorld&) = delete;
  ~BufferedWorld() { ReleaseWorld(world, epfd); }

 private:
  // Writes to `fd` until the engine says EAGAIN; the bytes differ from chunk to chunk.
  std::string Fill(int fd) {
    std::vector<std::byte> chunk(kChunk);
    for (;;) {
      for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<std::byte>((bytes + i * 7) % 251);
      Result<std::size_t> n = sys::Write(world.fds, fd, chunk);
      if (!n.ok()) return n.error() == Errno(EAGAIN) ? std::string() : Failure("sys::Write", n.error().value());
      bytes += n.value();
      if (n.value() < chunk.size()) return {};
    }
  }
  std::string Watch(int fd) {
    Event event;
    event.events = kEventIn;
    event.SetData(static_cast<std::uint64_t>(fd));
    if (std::error_code ec = sys::EpollCtl(world.fds, epfd, sys::kEpollCtlAdd, fd, &event)) {
      return Failure("sys::EpollCtl", ec.value());
    }
    return {};
  }
  std::string Build() {
    Result<int> ep = sys::EpollCreate1(world.fds, 0);
    if (!ep.ok()) return Failure("sys::EpollCreate1", ep.error().value());
    epfd = ep.value();
    for (int i = 0; i < kPipes; ++i) {
      int fds[2];
      if (std::error_code ec = sys::Pipe(world.fds, fds)) return Failure("sys::Pipe", ec.value());
      if (std::string e = Fill(fds[1]); !e.empty()) return e;
      if (std::string e = Watch(fds[0]); !e.empty()) return e;
    }
    for (int i = 0; i < kPairs; ++i) {
      int fds[2];
      if (std::error_code ec = sys::SocketPair(world.fds, fds)) return Failure("sys::SocketPair", ec.value());
      for (int end : fds) {
        if (std::string e = Fill(end); !e.empty()) return e;
        if (std::string e = Watch(end); !e.empty()) return e;
      }
    }
    return {};
  }
};

BufferedWorld& Fixture() {
  static BufferedWorld world;
  return world;
}

// The checkpoint of the world in `format` (nullopt: the protobuf image), or what failed.
Result<std::string> Save(const World& world, std::optional<ArchiveFormat> format) {
  return format ? SaveWorld(world, *format) : image::SaveImage(world);
}
Status Load(std::string_view bytes, World* out, std::optional<ArchiveFormat> format) {
  return format ? LoadWorld(bytes, out) : image::LoadImage(bytes, out);
}

void BM_BufferedSave(benchmark::State& state, std::optional<ArchiveFormat> format) {
  BufferedWorld& f = Fixture();
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  for (auto _ : state) {
    Result<std::string> saved = Save(f.world, format);  // freeing it, at the end, is timed too
    if (!saved.ok()) return state.SkipWithError(StatusFailure("save", saved.status()).c_str());
    benchmark::DoNotOptimize(saved.value().data());
  }
  CountWork(state, "per_byte", static_cast<double>(f.bytes));
  state.counters["buffered_bytes"] = static_cast<double>(f.bytes);
}

void BM_BufferedLoad(benchmark::State& state, std::optional<ArchiveFormat> format) {
  BufferedWorld& f = Fixture();
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  Result<std::string> saved = Save(f.world, format);
  if (!saved.ok()) return state.SkipWithError(StatusFailure("save", saved.status()).c_str());
  for (auto _ : state) {
    auto loaded = std::make_unique<World>();
    if (Status s = Load(saved.value(), loaded.get(), format); !s.ok()) {
      return state.SkipWithError(StatusFailure("load", s).c_str());
    }
    state.PauseTiming();
    ReleaseWorld(*loaded, f.epfd);
    loaded.reset();
    state.ResumeTiming();
  }
  CountWork(state, "per_byte", static_cast<double>(f.bytes));
  state.counters["buffered_bytes"] = static_cast<double>(f.bytes);
}

[[maybe_unused]] const bool registered = [] {
  using Function = void (*)(benchmark::State&, std::optional<ArchiveFormat>);
  const std::pair<const char*, std::optional<ArchiveFormat>> formats[] = {
      {"boost-text", ArchiveFormat::kBoostText},
      {"boost-xml", ArchiveFormat::kBoostXml},
      {"boost-binary", ArchiveFormat::kBoostBinary},
      {"proto", std::nullopt},
  };
  for (const auto& [name, format] : formats) {
    for (auto [family, function] : {std::pair<std::string, Function>{"BM_BufferedSave/", BM_BufferedSave},
                                    std::pair<std::string, Function>{"BM_BufferedLoad/", BM_BufferedLoad}}) {
      benchmark::RegisterBenchmark((family + name).c_str(), function, format)
          ->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace epollcr::bench
