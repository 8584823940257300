// The classic libevent benchmark shape (the loop of libevent's test/bench.c) on both engines (BENCHMARKS.md section
// "libevent shape"):
//   N pipes, the read end of each registered level-triggered for EPOLLIN (data = its index), A = min(N, 100) of them
//   active and W = 100 writes per round. A round writes one byte into the A active pipes (spread evenly: pipe
//   k * (N / A)), then polls without blocking and runs a read callback per reported pipe until every byte written has
//   been read; a callback reads its pipe's byte and, while fewer than W writes have been made, writes one byte into
//   the next pipe (i + 1, wrapping). So a round reads A + W bytes, and ends with every pipe empty.
// The userspace side is epollcr::EventPoll over epollcr's in-memory pipes (NewPipe), polled with Wait(events, 64, 0);
// the kernel side is an epoll instance over real pipes (pipe2, non-blocking), polled with epoll_wait(ep, events, 64, 0).
// One benchmark iteration is one round, from the first active write to the last read (bench.c's "event loop" time;
// its re-registration of all N events before each round is not timed here: AddRemove in engine_bench.cc measures
// registration). Each reports `per_round` (seconds per round, CPU clock) with units_per_iteration = 1,
// `reads_per_round` (A + W) to turn it into time per read callback, and `polls_per_round`, the polls a round took.
// Kernel N stops below 10,000: a kernel pipe costs 2 fds and this host allows 20,000 fds per process (hard limit).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/pipe.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr int kActive = 100;     // A, or N when N is smaller
constexpr int kWrites = 100;     // W
constexpr int kMaxEvents = 64;   // the events array of one poll, the same on both engines

// N in-memory pipes in one userspace EventPoll: read end i is entry {read end i, fd i} with data i.
class UserPipes {
 public:
  UserPipes() = default;
  UserPipes(const UserPipes&) = delete;
  UserPipes& operator=(const UserPipes&) = delete;
  ~UserPipes() { poll_->Release(); }  // Entries go before their files (either order is correct; this one is quicker).

  // Returns an empty string, or what failed.
  std::string Create(int n) {
    pipes_.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      pipes_.push_back(NewPipe());
      if (std::error_code ec = poll_->AddEntry({pipes_.back().read.get(), i}, EntryFlags::kNone, kEventIn,
                                               static_cast<std::uint64_t>(i))) {
        return Failure("EventPoll::AddEntry", ec.value());
      }
    }
    return {};
  }

  bool Send(int i) {
    const std::byte byte{'e'};
    Result<std::size_t> put = pipes_[static_cast<std::size_t>(i)].write->Write(std::span(&byte, 1));
    return Check(put, "PipeWriteEnd::Write");
  }

  bool Receive(int i) {
    std::byte byte{};
    Result<std::size_t> got = pipes_[static_cast<std::size_t>(i)].read->Read(std::span(&byte, 1));
    return Check(got, "PipeReadEnd::Read");
  }

  // One non-blocking poll; calls on_read(index) for each reported pipe. Returns the number reported, or -1 when the
  // poll or a callback failed.
  template <typename OnRead>
  int Dispatch(OnRead&& on_read) {
    Result<int> got = poll_->Wait(events_, kMaxEvents, 0);
    if (!got.ok()) {
      error_ = Failure("EventPoll::Wait", got.error().value());
      return -1;
    }
    for (int k = 0; k < got.value(); ++k) {
      if (!on_read(static_cast<int>(events_[k].Data()))) return -1;
    }
    return got.value();
  }

  const std::string& error() const { return error_; }

 private:
  bool Check(const Result<std::size_t>& moved, const char* what) {
    if (moved.ok() && moved.value() == 1) return true;
    error_ = moved.ok() ? std::string(what) + " moved " + std::to_string(moved.value()) + " bytes, not 1"
                        : Failure(what, moved.error().value());
    return false;
  }

  std::shared_ptr<EventPoll> poll_ = EventPoll::Create();
  std::vector<PipeEnds> pipes_;
  Event events_[kMaxEvents];
  std::string error_;
};

// N kernel pipes in one epoll instance: read end i is added with data i.
class KernelPipes {
 public:
  std::string Create(int n) {
    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return Failure("epoll_create1", errno);
    read_.reserve(static_cast<std::size_t>(n));
    write_.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      int ends[2];
      if (::pipe2(ends, O_NONBLOCK | O_CLOEXEC) != 0) return Failure("pipe2 (pipe #" + std::to_string(i) + ")", errno);
      read_.emplace_back(ends[0]);
      write_.emplace_back(ends[1]);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = static_cast<std::uint64_t>(i);
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, ends[0], &ev) != 0) return Failure("epoll_ctl ADD", errno);
    }
    return {};
  }

  bool Send(int i) {
    const char byte = 'e';
    return Check(::write(write_[static_cast<std::size_t>(i)].get(), &byte, 1), "write(pipe)");
  }

  bool Receive(int i) {
    char byte;
    return Check(::read(read_[static_cast<std::size_t>(i)].get(), &byte, 1), "read(pipe)");
  }

  template <typename OnRead>
  int Dispatch(OnRead&& on_read) {
    const int got = ::epoll_wait(epoll_.get(), events_, kMaxEvents, 0);
    if (got < 0) {
      error_ = Failure("epoll_wait", errno);
      return -1;
    }
    for (int k = 0; k < got; ++k) {
      if (!on_read(static_cast<int>(events_[k].data.u64))) return -1;
    }
    return got;
  }

  const std::string& error() const { return error_; }

 private:
  bool Check(ssize_t moved, const char* what) {
    if (moved == 1) return true;
    error_ = moved < 0 ? Failure(what, errno) : std::string(what) + " moved " + std::to_string(moved) + " bytes, not 1";
    return false;
  }

  UniqueFd epoll_;
  std::vector<UniqueFd> read_;
  std::vector<UniqueFd> write_;
  epoll_event events_[kMaxEvents];
  std::string error_;
};

// One round on either engine (the header says what a round is). Returns the polls it took, or -1 with
// pipes.error() set. A poll that reports nothing while a written byte is unread fails the round: every pipe holding a
// byte is readable, and level-triggered entries report it, so that would be a lost event (and an endless loop).
template <typename Pipes>
int RunRound(Pipes& pipes, int n, int active) {
  const int space = n / active;
  for (int k = 0; k < active; ++k) {
    if (!pipes.Send(k * space)) return -1;
  }
  int written = active;  // bytes written this round
  int read = 0;          // bytes read this round
  int polls = 0;
  while (read != written) {
    const int reported = pipes.Dispatch([&](int i) {
      if (!pipes.Receive(i)) return false;
      ++read;
      if (written - active == kWrites) return true;
      ++written;
      return pipes.Send(i + 1 == n ? 0 : i + 1);
    });
    if (reported < 0) return -1;
    ++polls;
    if (reported == 0) return -1;
  }
  return polls;
}

template <typename Pipes>
void MeasureRounds(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int active = std::min(n, kActive);
  Pipes pipes;
  if (std::string err = pipes.Create(n); !err.empty()) return state.SkipWithError(err.c_str());
  std::int64_t polls = 0;
  for (auto _ : state) {
    const int took = RunRound(pipes, n, active);
    if (took < 0) {
      const std::string why = pipes.error().empty() ? "a poll reported nothing while a written byte was unread"
                                                    : pipes.error();
      state.SkipWithError(why.c_str());
      break;
    }
    polls += took;
  }
  CountWork(state, "per_round", 1);
  state.counters["reads_per_round"] = active + kWrites;
  state.counters["active"] = active;
  state.counters["writes"] = kWrites;
  state.counters["polls_per_round"] = benchmark::Counter(static_cast<double>(polls), benchmark::Counter::kAvgIterations);
}

void BM_Libevent_Userspace(benchmark::State& state) { MeasureRounds<UserPipes>(state); }
void BM_Libevent_Kernel(benchmark::State& state) { MeasureRounds<KernelPipes>(state); }

// 9,000 kernel pipes are 18,000 fds, the most in round thousands that fit under 20,000 beside the epoll instance,
// stdio and what the benchmark library opens; the userspace side has no fd limit and also runs 100,000.
BENCHMARK(BM_Libevent_Userspace)->ArgName("n")->Arg(100)->Arg(1000)->Arg(9000)->Arg(100000);
BENCHMARK(BM_Libevent_Kernel)->ArgName("n")->Arg(100)->Arg(1000)->Arg(9000);

}  // namespace
}  // namespace epollcr::bench
