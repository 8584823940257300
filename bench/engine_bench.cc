// The userspace engine against the kernel's epoll, doing the same work over eventfds (BENCHMARKS.md):
//   NotifyHarvest  - make 1 of n level-triggered entries ready, harvest it, consume it (round-robin over the n)
//   ReadEvents1000 - harvest 1000 level-triggered entries that stay ready, in one call
//   AddRemove      - add and remove one entry while 1000 others are registered
//   NullSyscall    - context: the kernel's cost of entering and leaving it for nothing (getppid), and the same
//                    under `epollcr run`'s seccomp filter (BM_NullSyscall_Filtered)
//   AtomicAdd, MutexCycle - context: one atomic read-modify-write, and a try_lock and unlock of each of 1000 mutexes
//                    in objects of their own (as a save's cut takes every file's lock: docs/state-model.md)
// Each reports `per_event` (or `per_pair`, `per_call`): seconds per unit of work on the benchmark thread's CPU clock
// (user + system time: Google Benchmark's default), items_per_second, and units_per_iteration so that a reader of the
// JSON can turn its real_time (wall clock) and cpu_time per iteration into time per unit.
#include <benchmark/benchmark.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <vector>

#include "epollcr/mutex.h"

#include "preload/raw_syscall_trap.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr int kHarvestMax = 8;    // the events array of NotifyHarvest
constexpr int kReadyCount = 1000;  // entries ready in ReadEvents1000
constexpr int kOthers = 1000;      // entries registered beside the one AddRemove adds and removes

// ---- context: one trivial system call -----------------------------------------------------------------------------

// What entering and leaving the kernel costs on this machine; every kernel iteration below makes one to three calls.
void BM_NullSyscall_Kernel(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(::syscall(SYS_getppid));
  CountWork(state, "per_call", 1);
}

BENCHMARK(BM_NullSyscall_Kernel);

// ---- context: atomic instructions -------------------------------------------------------------------------------

// One atomic read-modify-write (a lock-prefixed add) on a line in the cache: what each mutex operation and each
// shared_ptr copy costs at least.
void BM_AtomicAdd(benchmark::State& state) {
  std::atomic<std::uint64_t> counter{0};
  for (auto _ : state) counter.fetch_add(1, std::memory_order_relaxed);
  benchmark::DoNotOptimize(counter.load());
  CountWork(state, "per_op", 1);
}

BENCHMARK(BM_AtomicAdd);

// A try_lock and an unlock of each of kMutexes Mutexes, each in a heap object of an eventfd's size: what a save's cut
// pays per file for its mutation lock (the walk of its wait queue pays as much again for the queue's lock).
constexpr int kMutexes = 1000;

void BM_MutexCycle(benchmark::State& state) {
  struct Holder {
    char before[96];
    Mutex mu;
    char after[64];
  };
  std::vector<std::unique_ptr<Holder>> holders;
  holders.reserve(kMutexes);
  for (int i = 0; i < kMutexes; ++i) holders.push_back(std::make_unique<Holder>());
  for (auto _ : state) {
    for (auto& h : holders) {
      if (!h->mu.try_lock()) {
        state.SkipWithError("an uncontended try_lock failed");
        return;
      }
    }
    for (auto& h : holders) h->mu.unlock();
  }
  CountWork(state, "per_mutex", kMutexes);
}

BENCHMARK(BM_MutexCycle);

// The same call under `epollcr run`'s seccomp filter (preload/raw_syscall_trap.h), which every system call of an
// interposed program passes through. A filter cannot be removed, so each iteration forks a child that times
// kFilterCalls calls, installs the filter, and times as many again, on its own CPU clock: per_call_plain and
// per_call_filtered are those two figures (the iteration's time is the child's whole life, not reported).
constexpr int kFilterCalls = 1'000'000;

double ThreadCpuSeconds() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

void BM_NullSyscall_Filtered(benchmark::State& state) {
  double plain = 0, filtered = 0;
  for (auto _ : state) {
    int out[2];
    if (::pipe(out) != 0) {
      state.SkipWithError("pipe failed");
      break;
    }
    const pid_t child = ::fork();
    if (child == 0) {
      auto loop = [] {
        const double start = ThreadCpuSeconds();
        for (int i = 0; i < kFilterCalls; ++i) benchmark::DoNotOptimize(::syscall(SYS_getppid));
        return (ThreadCpuSeconds() - start) / kFilterCalls;
      };
      double per_call[2] = {loop(), 0};
      per_call[1] = preload::InstallRawSyscallTrap() ? -1 : loop();
      (void)!::write(out[1], per_call, sizeof per_call);
      ::_exit(0);
    }
    ::close(out[1]);
    double per_call[2] = {-1, -1};
    const bool got = ::read(out[0], per_call, sizeof per_call) == static_cast<ssize_t>(sizeof per_call);
    ::close(out[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!got || per_call[1] < 0) {
      state.SkipWithError("the child could not install the filter");
      break;
    }
    plain += per_call[0];
    filtered += per_call[1];
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["per_call_plain"] = benchmark::Counter(plain / n * 1e9);
  state.counters["per_call_filtered"] = benchmark::Counter(filtered / n * 1e9);
}

BENCHMARK(BM_NullSyscall_Filtered)->Iterations(3)->Unit(benchmark::kMillisecond);

// ---- 1. notify + harvest, 1 ready among n --------------------------------------------------------------------------

void BM_NotifyHarvest_Userspace(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  UserWorld world;
  if (std::string err = world.Create(n, 0); !err.empty()) return state.SkipWithError(err.c_str());
  Event events[kHarvestMax];
  int next = 0;
  for (auto _ : state) {
    EventFd& file = *world.files[static_cast<std::size_t>(next)];
    if (std::error_code ec = file.WriteValue(1)) {
      state.SkipWithError(Failure("EventFd::WriteValue", ec.value()).c_str());
      break;
    }
    Result<int> got = world.poll->ReadEvents(events, kHarvestMax);
    if (!got.ok() || got.value() != 1 || events[0].Data() != static_cast<std::uint64_t>(next)) {
      state.SkipWithError("ReadEvents did not report exactly the notified entry");
      break;
    }
    Result<std::uint64_t> value = file.ReadValue();
    if (!value.ok()) {
      state.SkipWithError(Failure("EventFd::ReadValue", value.error().value()).c_str());
      break;
    }
    benchmark::DoNotOptimize(events);
    benchmark::DoNotOptimize(value.value());
    next = next + 1 == n ? 0 : next + 1;
  }
  CountWork(state, "per_event", 1);
}

void BM_NotifyHarvest_Kernel(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  KernelWorld world;
  if (std::string err = world.Create(n, 0); !err.empty()) return state.SkipWithError(err.c_str());
  epoll_event events[kHarvestMax];
  int next = 0;
  for (auto _ : state) {
    const int fd = world.fds[static_cast<std::size_t>(next)].get();
    std::uint64_t value = 1;
    if (::write(fd, &value, sizeof value) != sizeof value) {
      state.SkipWithError(Failure("write(eventfd)", errno).c_str());
      break;
    }
    const int got = ::epoll_wait(world.epoll.get(), events, kHarvestMax, 0);
    if (got != 1 || events[0].data.u64 != static_cast<std::uint64_t>(next)) {
      state.SkipWithError(got < 0 ? Failure("epoll_wait", errno).c_str()
                                  : "epoll_wait did not report exactly the notified entry");
      break;
    }
    if (::read(fd, &value, sizeof value) != sizeof value) {
      state.SkipWithError(Failure("read(eventfd)", errno).c_str());
      break;
    }
    benchmark::DoNotOptimize(events);
    benchmark::DoNotOptimize(value);
    next = next + 1 == n ? 0 : next + 1;
  }
  CountWork(state, "per_event", 1);
}

// The kernel side stops at 10000: this host's RLIMIT_NOFILE hard limit is 20000 fds per process, and nothing raises it.
BENCHMARK(BM_NotifyHarvest_Userspace)->ArgName("n")->Arg(10)->Arg(100)->Arg(1000)->Arg(10000)->Arg(100000);
BENCHMARK(BM_NotifyHarvest_Kernel)->ArgName("n")->Arg(10)->Arg(100)->Arg(1000)->Arg(10000);

// ---- 2. one harvest of 1000 level-triggered ready entries ----------------------------------------------------------

void BM_ReadEvents1000_Userspace(benchmark::State& state) {
  UserWorld world;
  if (std::string err = world.Create(kReadyCount, 1); !err.empty()) return state.SkipWithError(err.c_str());
  std::vector<Event> events(kReadyCount);
  for (auto _ : state) {
    Result<int> got = world.poll->ReadEvents(events.data(), kReadyCount);
    if (!got.ok() || got.value() != kReadyCount) {
      state.SkipWithError("ReadEvents did not report every ready entry");
      break;
    }
    benchmark::DoNotOptimize(events.data());
    benchmark::ClobberMemory();
  }
  CountWork(state, "per_event", kReadyCount);
}

void BM_ReadEvents1000_Kernel(benchmark::State& state) {
  KernelWorld world;
  if (std::string err = world.Create(kReadyCount, 1); !err.empty()) return state.SkipWithError(err.c_str());
  std::vector<epoll_event> events(kReadyCount);
  for (auto _ : state) {
    const int got = ::epoll_wait(world.epoll.get(), events.data(), kReadyCount, 0);
    if (got != kReadyCount) {
      state.SkipWithError(got < 0 ? Failure("epoll_wait", errno).c_str() : "epoll_wait did not report every ready fd");
      break;
    }
    benchmark::DoNotOptimize(events.data());
    benchmark::ClobberMemory();
  }
  CountWork(state, "per_event", kReadyCount);
}

BENCHMARK(BM_ReadEvents1000_Userspace);
BENCHMARK(BM_ReadEvents1000_Kernel);

// ---- 3. add + remove one entry beside 1000 others -------------------------------------------------------------------

void BM_AddRemove_Userspace(benchmark::State& state) {
  UserWorld world;
  if (std::string err = world.Create(kOthers, 0); !err.empty()) return state.SkipWithError(err.c_str());
  std::shared_ptr<EventFd> extra = EventFd::Create();
  const FileIdentifier id{extra.get(), kOthers};
  for (auto _ : state) {
    if (std::error_code ec = world.poll->AddEntry(id, EntryFlags::kNone, kEventIn, kOthers)) {
      state.SkipWithError(Failure("EventPoll::AddEntry", ec.value()).c_str());
      break;
    }
    if (std::error_code ec = world.poll->RemoveEntry(id)) {
      state.SkipWithError(Failure("EventPoll::RemoveEntry", ec.value()).c_str());
      break;
    }
  }
  CountWork(state, "per_pair", 1);
}

void BM_AddRemove_Kernel(benchmark::State& state) {
  KernelWorld world;
  if (std::string err = world.Create(kOthers, 0); !err.empty()) return state.SkipWithError(err.c_str());
  const UniqueFd extra(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!extra.valid()) return state.SkipWithError(Failure("eventfd", errno).c_str());
  const int fd = extra.get();
  for (auto _ : state) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kOthers;
    if (::epoll_ctl(world.epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      state.SkipWithError(Failure("epoll_ctl ADD", errno).c_str());
      break;
    }
    if (::epoll_ctl(world.epoll.get(), EPOLL_CTL_DEL, fd, nullptr) != 0) {
      state.SkipWithError(Failure("epoll_ctl DEL", errno).c_str());
      break;
    }
  }
  CountWork(state, "per_pair", 1);
}

BENCHMARK(BM_AddRemove_Userspace);
BENCHMARK(BM_AddRemove_Kernel);

}  // namespace
}  // namespace epollcr::bench
