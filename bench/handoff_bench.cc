// The live hand-off (restore/successor.h; BENCHMARKS.md "Hand-off"): its two in-process stages on a world of real
// sockets, and the whole hand-off under traffic as clients see it.
//   BM_HandOffSave/registrations:N     image::SaveImageInto with host_open_state = false, what the predecessor does in
//                              the pause: N socket fds (N/2 socket pairs), each a host file registered level-triggered for
//                              EPOLLIN in one EventPoll (kernel entries)
//   BM_HandOffRestore/registrations:N  restore::RestoreBytes of that image with InheritedFdResolver::Trusted, the
//                              world's kernel epoll given up as a hand-off gives it (ReleaseHostResources) and taken
//                              over as it is: what the successor does in the pause
//   BM_HandOffDemo/clients:N           `epollcr demo --clients N --messages M --rate R`: a server, its successor and N
//                              paced clients; counters: the stall (max and p99 latency of the messages in flight
//                              across the pause), the same outside the hand-off, the pause and its stages, lost
// Per registration times are counters <stage>_ns; every figure is the median of the repetitions.
#include <benchmark/benchmark.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "big_buffer.h"
#include "checkpoint_world.h"
#include "demo/demo.h"
#include "epollcr/epollcr.h"
#include "image/codec.h"
#include "restore/resolvers.h"
#include "restore/restorer.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

using cli::DemoOptions;
using cli::DemoResult;
using cli::RunDemo;

// N socket fds watched by one poll: the server side of a hand-off, without the traffic.
struct SocketWorld {
  std::vector<int> fds;
  World world;
  std::string error;

  explicit SocketWorld(int n) {
    error = OpenSocketPairs(n, &fds);
    if (!error.empty()) return;
    error = Build();
  }
  ~SocketWorld() {
    Drop();
    for (int fd : fds) close(fd);
  }
  SocketWorld(const SocketWorld&) = delete;
  SocketWorld& operator=(const SocketWorld&) = delete;

  // The world over the fds (which no host file owns).
  std::string Build() {
    auto poll = EventPoll::Create();
    world.roots["poll"] = poll;
    for (int fd : fds) {
      Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
      if (!file.ok() || world.fds.InstallAt(fd, file.value()) ||
          poll->AddEntry({file.value().get(), fd}, EntryFlags::kNone, kEventIn, static_cast<std::uint64_t>(fd))) {
        return "building the socket world failed";
      }
    }
    return "";
  }

  // Gives the world up as a predecessor does (the fds stay open, owned by nobody) and returns its kernel-side fds.
  std::vector<int> GiveUp() {
    std::vector<int> kernel = ReleaseHostResources(world);
    world.roots.clear();
    world.fds.Clear();
    return kernel;
  }
  void Drop() { CloseUnadopted(GiveUp()); }
};

// A hand-off's save options: the successor shares the open files, so their flags and positions are not read.
image::SaveOptions Shared() {
  image::SaveOptions options;
  options.host_open_state = false;
  return options;
}

void BM_HandOffSave(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  SocketWorld w(n);
  if (!w.error.empty()) return state.SkipWithError(w.error.c_str());
  for (auto _ : state) {
    BigBuffer image;
    std::size_t size = 0;
    if (Status s = image::SaveImageInto(w.world, Shared(), &image, &size); !s.ok()) {
      return state.SkipWithError(StatusFailure("image::SaveImageInto", s).c_str());
    }
    benchmark::DoNotOptimize(image.data());
  }
  CountWork(state, "per_entry", n);
}

void BM_HandOffRestore(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  SocketWorld w(n);
  if (!w.error.empty()) return state.SkipWithError(w.error.c_str());
  w.Drop();  // each round builds its own
  std::map<int, int> same;
  for (int fd : w.fds) same.emplace(fd, fd);
  restore::Report total;
  for (auto _ : state) {
    state.PauseTiming();
    if (std::string e = w.Build(); !e.empty()) return state.SkipWithError(e.c_str());
    Result<std::string> image = image::SaveImage(w.world, Shared());
    if (!image.ok()) return state.SkipWithError(StatusFailure("image::SaveImage", image.status()).c_str());
    const std::vector<int> kernel = w.GiveUp();
    (void)AcceptHandedOver(kernel);  // as the successor accepts them
    World restored;
    restore::InheritedFdResolver trusted = restore::InheritedFdResolver::Trusted(same);
    restore::Options options;
    options.resolvers = {&trusted};
    restore::Report report;
    state.ResumeTiming();
    Status s = restore::RestoreBytes(image.value(), &restored, options, &report);
    state.PauseTiming();
    CloseUnadopted(kernel);
    if (!s.ok()) return state.SkipWithError(StatusFailure("restore::RestoreBytes", s).c_str());
    AddStages(total, report);
    CloseUnadopted(ReleaseHostResources(restored));  // the fds stay open for the next round
    state.ResumeTiming();
  }
  CountWork(state, "per_entry", n);
  CountStages(state, total, n);
}

// The demo's load for N clients: 10,000 messages a second over all of them, about 20,000 messages in all (at least
// two per client), the hand-off when half of them are echoed.
DemoOptions HandOffLoad(int clients) {
  DemoOptions o;
  o.clients = clients;
  o.messages = std::max(2, 20000 / clients);
  o.size = 64;
  o.window = 8;
  o.rate = 10000;
  o.checkpoint_at = 0.5;
  o.timeout_s = 120;
  return o;
}

void BM_HandOffDemo(benchmark::State& state) {
  const int clients = static_cast<int>(state.range(0));
  DemoResult r;
  for (auto _ : state) {
    std::ostringstream out, err;
    r = DemoResult{};
    if (RunDemo(HandOffLoad(clients), out, err, &r) != 0) {
      return state.SkipWithError(("epollcr demo: " + err.str() + out.str()).c_str());
    }
  }
  state.counters["stall_max_ms"] = r.stall_max_ms;
  state.counters["stall_p99_ms"] = r.stall_p99_ms;
  state.counters["outside_max_ms"] = r.outside_max_ms;
  state.counters["outside_p99_ms"] = r.outside_p99_ms;
  state.counters["pause_ms"] = r.pause_ms;
  state.counters["save_ms"] = r.save_ms;
  state.counters["send_ms"] = r.send_ms;
  state.counters["restore_ms"] = r.restore_ms;
  state.counters["go_ms"] = r.go_ms;
  state.counters["successor_ready_ms"] = r.successor_ready_ms;
  state.counters["registrations"] = static_cast<double>(r.registrations);
  state.counters["pause_ns_per_registration"] =
      r.registrations == 0 ? -1 : r.pause_ms * 1e6 / static_cast<double>(r.registrations);
  state.counters["in_flight"] = static_cast<double>(r.in_flight);
  state.counters["messages"] = static_cast<double>(r.messages);
  state.counters["lost"] = static_cast<double>(r.lost);
  state.counters["corrupt"] = static_cast<double>(r.corrupt);
}

BENCHMARK(BM_HandOffSave)->ArgName("registrations")->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_HandOffRestore)->ArgName("registrations")->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_HandOffDemo)
    ->ArgName("clients")
    ->Arg(1000)
    ->Arg(5000)
    ->Arg(10000)
    ->Arg(cli::MaxDemoClients())
    ->Iterations(1)
    ->Repetitions(5)
    ->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); })
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace epollcr::bench

// The demo's server (`epollcr demo-server`) when BM_HandOffDemo's RunDemo starts this binary as it (bench/main.cc).
extern "C" int EpollcrBenchSubprogram(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == epollcr::cli::kDemoServerCommand) {
    return epollcr::cli::RunDemoServer(argc, argv);
  }
  return -1;
}
