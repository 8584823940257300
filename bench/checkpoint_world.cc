#include "checkpoint_world.h"

#include <sys/resource.h>

#include <map>
#include <utility>
#include <vector>

#include "epollcr/syscalls.h"
#include "heap_meter.h"
#include "worlds.h"

namespace epollcr::bench {

std::uint32_t CheckpointEventsOf(int k) {
  switch (k % 3) {
    case 0: return kEventIn;
    case 1: return kEventIn | kEpollEdgeTriggered;
    default: return kEventIn | kEpollOneShot;
  }
}

std::string StatusFailure(const char* what, const Status& s) { return std::string(what) + ": " + s.message; }

std::shared_ptr<EventPoll> PollAt(const World& world, int epfd) {
  return std::dynamic_pointer_cast<EventPoll>(world.fds.Get(epfd));
}

void ReleaseWorld(World& world, int epfd) {
  if (std::shared_ptr<EventPoll> poll = PollAt(world, epfd)) poll->Release();
  world.roots.clear();
  world.fds.Clear();
}

std::string CheckpointWorld::Build(int entries, DataKind data) {
  Result<int> ep = sys::EpollCreate1(world.fds, 0);
  if (!ep.ok()) return Failure("sys::EpollCreate1", ep.error().value());
  epfd = ep.value();
  int k = 0;
  for (int f = 0; f < kCheckpointFiles; ++f) {
    const Result<int> efd = sys::EventFd(world.fds, f % kCheckpointReadyEvery == 0 ? 1 : 0, false);
    if (!efd.ok()) return Failure("sys::EventFd", efd.error().value());
    for (int j = 0; j < entries / kCheckpointFiles; ++j, ++k) {
      const Result<int> fd = j == 0 ? efd : sys::Dup(world.fds, efd.value());
      if (!fd.ok()) return Failure("sys::Dup", fd.error().value());
      Event event;
      event.events = CheckpointEventsOf(k);
      event.SetData(data == DataKind::kFd ? static_cast<std::uint64_t>(fd.value())
                                          : 0x7f3a5c000000ULL + 48ULL * static_cast<std::uint64_t>(k));
      if (std::error_code ec = sys::EpollCtl(world.fds, epfd, sys::kEpollCtlAdd, fd.value(), &event)) {
        return Failure("sys::EpollCtl ADD", ec.value());
      }
    }
  }
  std::shared_ptr<EventPoll> poll = PollAt(world, epfd);
  std::vector<Event> events(poll->ReadyList().size() / 2 + 1);
  const Result<int> got = sys::EpollWait(world.fds, epfd, events.data(), static_cast<int>(events.size()), 0);
  if (!got.ok() || got.value() != static_cast<int>(events.size())) return "the harvest did not fill its buffer";
  ready = poll->ReadyList().size();
  return {};
}

CheckpointFixture& CheckpointFixtureFor(int entries, DataKind data) {
  // By (size, data kind); only the benchmark thread touches it.
  static std::map<std::pair<int, DataKind>, std::unique_ptr<CheckpointFixture>> fixtures;
  std::unique_ptr<CheckpointFixture>& f = fixtures[{entries, data}];
  if (!f) {
    const std::size_t before = HeapInUse();
    f = std::make_unique<CheckpointFixture>();
    f->error = f->world.Build(entries, data);
    f->heap = static_cast<double>(HeapInUse() - before);
  }
  return *f;
}

bool SameShape(const World& loaded, const CheckpointFixture& f, int entries) {
  const std::shared_ptr<EventPoll> poll = PollAt(loaded, f.world.epfd);
  return loaded.fds.Count() == entries + 1 && poll && poll->EntryCount() == static_cast<std::size_t>(entries) &&
         poll->ReadyList().size() == f.world.ready;
}

void CountHeap(benchmark::State& state, const char* call, const HeapUse& use) {
  const std::string prefix = call;
  state.counters[prefix + "_peak_heap_bytes"] = static_cast<double>(use.peak);
  state.counters[prefix + "_net_heap_bytes"] = static_cast<double>(use.net);
  state.counters[prefix + "_net_heap_bytes_mallinfo"] = static_cast<double>(use.net_mallinfo);
}

void WarmUpSaves(std::set<int>& warmed, int n, const std::function<void()>& save) {
  if (!warmed.insert(n).second) return;
  save();
  save();
}

std::int64_t ThreadFaults() {
  rusage usage{};
  return getrusage(RUSAGE_THREAD, &usage) == 0 ? usage.ru_minflt : 0;
}

void CountFaults(benchmark::State& state, std::int64_t faults, double registrations) {
  state.counters["faults_per_entry"] =
      static_cast<double>(faults) / (static_cast<double>(state.iterations()) * registrations);
}

void CountLocksHeld(benchmark::State& state, std::chrono::nanoseconds total, double per_iteration) {
  const double iterations = static_cast<double>(state.iterations());
  state.counters["locks_held_ns"] =
      iterations > 0 ? static_cast<double>(total.count()) / iterations / per_iteration : 0.0;
}

void AddStages(restore::Report& total, const restore::Report& one) {
  total.read += one.read;
  total.validate += one.validate;
  total.resolve += one.resolve;
  total.build += one.build;
  total.after_load += one.after_load;
}

void CountStages(benchmark::State& state, const restore::Report& total, double registrations) {
  const double per = static_cast<double>(state.iterations()) * registrations;
  auto ns = [&](restore::Report::Duration d) { return std::chrono::duration<double, std::nano>(d).count() / per; };
  state.counters["read_ns"] = ns(total.read);
  state.counters["validate_ns"] = ns(total.validate);
  state.counters["resolve_ns"] = ns(total.resolve);
  state.counters["build_ns"] = ns(total.build);
  state.counters["after_load_ns"] = ns(total.after_load);
}

}  // namespace epollcr::bench
