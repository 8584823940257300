// The two worlds every benchmark compares: n eventfds registered level-triggered for EPOLLIN in the userspace engine
// (epollcr::EventPoll over epollcr::EventFd), and n real eventfds registered the same way in a kernel epoll instance.
// Entry i has fd i (userspace) and data i (both), so a harvested event names the file it came from.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "epollcr/unique_fd.h"

namespace epollcr::bench {

// Setup calls return an empty string on success, else what failed (for benchmark::State::SkipWithError).
struct UserWorld {
  std::shared_ptr<EventPoll> poll = EventPoll::Create();
  std::vector<std::shared_ptr<EventFd>> files;

  UserWorld() = default;
  UserWorld(const UserWorld&) = delete;
  UserWorld& operator=(const UserWorld&) = delete;
  ~UserWorld() { poll->Release(); }  // Entries go before their files (either order is correct; this one is quicker).

  // Creates n eventfds with counter `initial`, not yet registered.
  void CreateFiles(int n, std::uint64_t initial);
  // Registers every file: fd = data = its index, level-triggered, EPOLLIN.
  std::string RegisterAll();
  std::string Create(int n, std::uint64_t initial) {
    CreateFiles(n, initial);
    return RegisterAll();
  }
};

struct KernelWorld {
  UniqueFd epoll;
  std::vector<UniqueFd> fds;

  // epoll_create1 and n non-blocking eventfds with counter `initial`, each added with EPOLLIN, data = its index.
  std::string Create(int n, std::uint64_t initial);
};

// "what: strerror(err)".
std::string Failure(const std::string& what, int err);

// Opens n / 2 non-blocking AF_UNIX stream socket pairs and appends both ends of each to *fds (the caller closes
// them); an empty string, or what failed (a process may open 20,000 fds here).
std::string OpenSocketPairs(int n, std::vector<int>* fds);

// Reports `per_iteration` units of work per iteration: a rate of units (items_per_second), its inverse, seconds per
// unit (the counter `name`), and units_per_iteration, with which scripts/bench_report.py turns the JSON's cpu_time and
// real_time per iteration into time per unit.
void CountWork(benchmark::State& state, const char* name, double per_iteration);

}  // namespace epollcr::bench
