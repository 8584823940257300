#include "worlds.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace epollcr::bench {

std::string Failure(const std::string& what, int err) { return what + ": " + std::strerror(err); }

std::string OpenSocketPairs(int n, std::vector<int>* fds) {
  for (int i = 0; i < n / 2; ++i) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
      return Failure("socketpair (a process may open 20,000 fds here)", errno);
    }
    fds->push_back(pair[0]);
    fds->push_back(pair[1]);
  }
  return {};
}

void CountWork(benchmark::State& state, const char* name, double per_iteration) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(per_iteration));
  state.counters[name] =
      benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["units_per_iteration"] = per_iteration;
}

void UserWorld::CreateFiles(int n, std::uint64_t initial) {
  files.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) files.push_back(EventFd::Create(initial));
}

std::string UserWorld::RegisterAll() {
  for (std::size_t i = 0; i < files.size(); ++i) {
    const int fd = static_cast<int>(i);
    if (std::error_code ec = poll->AddEntry({files[i].get(), fd}, EntryFlags::kNone, kEventIn, i)) {
      return Failure("EventPoll::AddEntry", ec.value());
    }
  }
  return {};
}

std::string KernelWorld::Create(int n, std::uint64_t initial) {
  epoll = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return Failure("epoll_create1", errno);
  fds.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    UniqueFd efd(::eventfd(static_cast<unsigned>(initial), EFD_NONBLOCK | EFD_CLOEXEC));
    if (!efd.valid()) return Failure("eventfd (fd #" + std::to_string(i) + ")", errno);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<std::uint64_t>(i);
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, efd.get(), &ev) != 0) return Failure("epoll_ctl ADD", errno);
    fds.push_back(std::move(efd));
  }
  return {};
}

}  // namespace epollcr::bench
