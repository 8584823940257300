// Checkpoints through the portable image (issue 4; BENCHMARKS.md "Checkpoint image"), beside what a kernel-based
// restorer pays per entry (BM_CheckpointKernelAdd/entries:N at the same N, checkpoint_bench.cc), in the same run:
//   BM_ImageSave/entries:N     encode+write: image::WriteImage - capture the world, encode, frame, write the file
//                              atomically and durably (a temporary file, fsync, rename, fsync of the directory)
//   BM_ImageEncode/entries:N   the same into memory (image::SaveImage), without the file and its two fsyncs; the
//                              counter locks_held_ns is how long each save held the consistent cut, per entry, and
//                              faults_per_entry the page faults the save took (freeing its bytes included); after
//                              two untimed saves (checkpoint_world.h WarmUpSaves)
//   BM_ImageRead/entries:N     read+decode+validate: ReadImageFile (read, check the framing and CRC32C), Decode,
//                              Validate
//   BM_ImageRestore/entries:N  read+decode+validate+restore: image::ReadImage into an empty world (restore includes
//                              after_load: every entry on its list, its waiter registered with its file again)
//   BM_ImageMemory/<data>/entries:N  one save and one restore under a HeapMeter: peak heap of each, the world's heap,
//                              the image's bytes and its entry records' bytes (the polls' columns); <data> is fd
//                              (data = the entry's fd) or pointer (pointer-like 64-bit data; checkpoint_world.h)
// The timed ones report per_entry and units_per_iteration (worlds.h CountWork). The world is checkpoint_world.h's.
// Image files live in a directory of their own under $TMPDIR (or /tmp), removed at exit.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <memory>
#include <string>

#include "checkpoint_world.h"
#include "image/codec.h"
#include "image/file.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

// A directory for image files, made on first use and emptied and removed at exit.
class ScratchDir {
 public:
  ~ScratchDir() {
    for (const std::string& path : files_) ::unlink(path.c_str());
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  // The path of `name` inside the directory, or empty if it cannot be made.
  std::string Path(const std::string& name) {
    if (dir_.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      std::string dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/epollcr-bench-XXXXXX";
      if (::mkdtemp(dir.data()) == nullptr) return {};
      dir_ = dir;
    }
    files_.push_back(dir_ + "/" + name);
    return files_.back();
  }

 private:
  std::string dir_;
  std::vector<std::string> files_;
};

ScratchDir& Scratch() {
  static ScratchDir dir;
  return dir;
}

// The image file of a fixture's world, written once per (size, data kind); its path, or empty after SkipWithError.
std::string ImageFileFor(benchmark::State& state, int entries, DataKind data = DataKind::kFd) {
  static std::map<std::pair<int, DataKind>, std::string> paths;
  auto it = paths.find({entries, data});
  if (it != paths.end()) return it->second;
  CheckpointFixture& f = CheckpointFixtureFor(entries, data);
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return {};
  }
  const std::string path =
      Scratch().Path("world-" + std::to_string(entries) + (data == DataKind::kFd ? "-fd" : "-pointer") + ".epcr");
  if (path.empty()) {
    state.SkipWithError("cannot make a scratch directory for image files");
    return {};
  }
  if (Status s = image::WriteImage(f.world.world, path); !s.ok()) {
    state.SkipWithError(StatusFailure("image::WriteImage", s).c_str());
    return {};
  }
  paths.emplace(std::pair{entries, data}, path);
  return path;
}

void BM_ImageSave(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const std::string path = ImageFileFor(state, n);
  if (path.empty()) return;
  const World& world = CheckpointFixtureFor(n).world.world;
  for (auto _ : state) {
    if (Status s = image::WriteImage(world, path); !s.ok()) {
      state.SkipWithError(StatusFailure("image::WriteImage", s).c_str());
      break;
    }
  }
  CountWork(state, "per_entry", n);
}

void BM_ImageEncode(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  CheckpointFixture& f = CheckpointFixtureFor(n);
  if (!f.error.empty()) return state.SkipWithError(f.error.c_str());
  static std::set<int> warmed;
  WarmUpSaves(warmed, n, [&] { benchmark::DoNotOptimize(image::SaveImage(f.world.world).ok()); });
  std::chrono::nanoseconds held{0};
  std::int64_t faults = 0;
  for (auto _ : state) {
    SavePause pause;
    image::SaveOptions options;
    options.pause = &pause;
    const std::int64_t faults_before = ThreadFaults();
    {
      Result<std::string> bytes = image::SaveImage(f.world.world, options);  // freeing them, at the end, is timed too
      if (!bytes.ok()) {
        state.SkipWithError(StatusFailure("image::SaveImage", bytes.status()).c_str());
        break;
      }
      benchmark::DoNotOptimize(bytes.value().data());
    }
    faults += ThreadFaults() - faults_before;
    held += pause.locks_held;
  }
  CountWork(state, "per_entry", n);
  CountLocksHeld(state, held, n);
  CountFaults(state, faults, n);
}

void BM_ImageRead(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const std::string path = ImageFileFor(state, n);
  if (path.empty()) return;
  for (auto _ : state) {
    std::string payload;
    if (Status e = image::ReadImageFile(path, &payload); !e.ok()) {
      state.SkipWithError(("image::ReadImageFile: " + e.message).c_str());
      break;
    }
    Result<v1::Image> decoded = image::Decode(payload);
    if (!decoded.ok()) {
      state.SkipWithError(StatusFailure("image::Decode", decoded.status()).c_str());
      break;
    }
    if (Status s = image::Validate(decoded.value()); !s.ok()) {
      state.SkipWithError(StatusFailure("image::Validate", s).c_str());
      break;
    }
  }
  CountWork(state, "per_entry", n);
}

void BM_ImageRestore(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const std::string path = ImageFileFor(state, n);
  if (path.empty()) return;
  const int epfd = CheckpointFixtureFor(n).world.epfd;
  std::int64_t faults = 0;
  for (auto _ : state) {
    auto restored = std::make_unique<World>();
    const std::int64_t faults_before = ThreadFaults();
    if (Status s = image::ReadImage(path, restored.get()); !s.ok()) {
      state.SkipWithError(StatusFailure("image::ReadImage", s).c_str());
      break;
    }
    faults += ThreadFaults() - faults_before;
    state.PauseTiming();
    ReleaseWorld(*restored, epfd);
    restored.reset();
    state.ResumeTiming();
  }
  CountWork(state, "per_entry", n);
  CountFaults(state, faults, n);
}

// Peaks are deterministic (the same calls allocate the same blocks), so one run of each call is the measurement. The
// restored world is checked against the saved one: same fds, entries and ready list.
void BM_ImageMemory(benchmark::State& state, DataKind data) {
  const int n = static_cast<int>(state.range(0));
  const std::string path = ImageFileFor(state, n, data);
  if (path.empty()) return;
  const CheckpointFixture& f = CheckpointFixtureFor(n, data);
  std::string bytes;
  for (auto _ : state) {
    Status status;
    const HeapUse save = Metered([&] { status = image::WriteImage(f.world.world, path); });
    if (!status.ok()) return state.SkipWithError(StatusFailure("image::WriteImage", status).c_str());
    if (Status e = image::ReadImageFile(path, &bytes); !e.ok()) {
      return state.SkipWithError(("image::ReadImageFile: " + e.message).c_str());
    }
    World restored;
    const HeapUse load = Metered([&] { status = image::ReadImage(path, &restored); });
    if (!status.ok()) return state.SkipWithError(StatusFailure("image::ReadImage", status).c_str());
    const bool same = SameShape(restored, f, n);
    ReleaseWorld(restored, f.world.epfd);
    if (!same) return state.SkipWithError("the restored world lacks some of the saved world's fds, entries or ready list");
    CountHeap(state, "save", save);
    CountHeap(state, "load", load);
  }
  // The entries' own records (the EventPollState columns, as CRIU's per-entry tfd records are), apart from the
  // file and fd records the world would need without any poll.
  Result<v1::Image> image = image::Decode(bytes);
  if (!image.ok()) return state.SkipWithError(StatusFailure("image::Decode", image.status()).c_str());
  std::size_t entry_bytes = 0;
  for (const v1::File& file : image.value().files()) {
    if (file.has_eventpoll()) entry_bytes += file.eventpoll().ByteSizeLong();
  }
  state.counters["entry_record_bytes"] = static_cast<double>(entry_bytes);
  state.counters["world_heap_bytes"] = f.heap;
  state.counters["payload_bytes"] = static_cast<double>(bytes.size());
  state.counters["image_bytes"] = static_cast<double>(bytes.size() + image::kHeaderSize);
  state.counters["entries"] = n;
}

[[maybe_unused]] const bool registered = [] {
  using Function = void (*)(benchmark::State&);
  for (auto [name, function] : {std::pair<const char*, Function>{"BM_ImageSave", BM_ImageSave},
                                std::pair<const char*, Function>{"BM_ImageEncode", BM_ImageEncode},
                                std::pair<const char*, Function>{"BM_ImageRead", BM_ImageRead},
                                std::pair<const char*, Function>{"BM_ImageRestore", BM_ImageRestore}}) {
    benchmark::RegisterBenchmark(name, function)
        ->ArgName("entries")->Arg(1000)->Arg(100000)->MinTime(kCheckpointMinTime)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(name, function)
        ->ArgName("entries")->Arg(1000000)->Iterations(1)->Repetitions(kCheckpointLargeRepetitions)
        ->Unit(benchmark::kMillisecond);
  }
  for (auto [name, data] : {std::pair<const char*, DataKind>{"BM_ImageMemory/fd", DataKind::kFd},
                            std::pair<const char*, DataKind>{"BM_ImageMemory/pointer", DataKind::kPointer}}) {
    benchmark::RegisterBenchmark(name, BM_ImageMemory, data)
        ->ArgName("entries")->Arg(1000)->Arg(100000)->Arg(1000000)->Iterations(1)->Repetitions(1)
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
}  // namespace epollcr::bench
