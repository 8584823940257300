// One scenario of real sockets and an eventfd watched by nested polls, played on the kernel's epoll and on epollcr
// with host files, so a restored epollcr world (in this process or a new one) can be compared with what the kernel
// reports for the same operations. Shared by restorer_test.cc and handoff_child.cc.
//
// Before the checkpoint: inner watches a (IN); outer watches inner (IN), b (IN|ET), c (IN|ONESHOT), e (IN|ET); a
// byte on c fires c's one-shot entry (delivered: disabled from then on); d (OUT, level) is added; then a, b, c and
// e all get data. After it: outer is waited on twice (the edge-triggered entries report once, the level ones
// again), c is re-armed and reports, inner reports a.
#pragma once

#include <dirent.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "epollcr/epollcr.h"
#include "open_fds.h"

namespace epollcr::testing {

// The real descriptors of one run: socket pairs a..d (end 0 watched, end 1 the peer) and an eventfd.
struct HostFds {
  int a[2], b[2], c[2], d[2];
  int e;
  // Makes them; with `base` > 0 each watched fd is moved to base, base+1, ... (so a new process's numbers differ).
  bool Open(int base = 0) {
    int* pairs[] = {a, b, c, d};
    for (int* p : pairs) {
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p) != 0) return false;
    }
    e = eventfd(0, EFD_NONBLOCK);
    if (e < 0) return false;
    if (base > 0) {
      int* watched[] = {&a[0], &b[0], &c[0], &d[0], &e};
      for (int* fd : watched) {
        if (dup2(*fd, base) != base) return false;
        close(*fd);
        *fd = base++;
      }
    }
    return true;
  }
  void Feed() const {  // the data that arrives before the checkpoint
    const std::uint64_t one = 1;
    (void)!write(a[1], "a", 1);
    (void)!write(b[1], "b", 1);
    (void)!write(c[1], "c", 1);
    (void)!write(e, &one, sizeof one);
  }
};

inline constexpr int kInnerFd = 1000;  // the fd number the inner poll is registered under (not a host fd)

// "data=5 events=out" for each event, sorted (the order of independent sockets' events is
// not something the kernel fixes either), joined by " ".
inline std::string EventsLine(const std::vector<std::pair<std::uint64_t, std::uint32_t>>& events) {
  std::vector<std::string> parts;
  for (const auto& [data, mask] : events) {
    parts.push_back("data=" + std::to_string(data) + " events=" + FormatEventMask(mask));
  }
  std::sort(parts.begin(), parts.end());
  std::string line;
  for (const std::string& p : parts) line += (line.empty() ? "" : " ") + p;
  return line.empty() ? "none" : line;
}

// The operations of the scenario, on either side.
struct PollSide {
  std::function<void(int poll, int op, int fd, std::uint32_t events, std::uint64_t data)> ctl;
  std::function<std::vector<std::pair<std::uint64_t, std::uint32_t>>(int poll, int timeout_ms)> wait;
};

enum : int { kOuter = 0, kInner = 1 };

// Before the checkpoint. Returns what the wait for c's one-shot event saw.
inline std::string PlayBefore(const PollSide& s, const HostFds& f) {
  s.ctl(kInner, EPOLL_CTL_ADD, f.a[0], EPOLLIN, 1);
  s.ctl(kOuter, EPOLL_CTL_ADD, kInnerFd, EPOLLIN, 2);
  s.ctl(kOuter, EPOLL_CTL_ADD, f.b[0], EPOLLIN | EPOLLET, 3);
  s.ctl(kOuter, EPOLL_CTL_ADD, f.c[0], EPOLLIN | EPOLLONESHOT, 4);
  s.ctl(kOuter, EPOLL_CTL_ADD, f.e, EPOLLIN | EPOLLET, 6);
  (void)!write(f.c[1], "c", 1);
  const std::string fired = EventsLine(s.wait(kOuter, 5000));
  s.ctl(kOuter, EPOLL_CTL_ADD, f.d[0], EPOLLOUT, 5);
  f.Feed();
  return fired;
}

// After the checkpoint: one line per step.
inline std::vector<std::string> PlayAfter(const PollSide& s, int c_fd) {
  std::vector<std::string> lines;
  lines.push_back("wait outer: " + EventsLine(s.wait(kOuter, 0)));
  lines.push_back("wait outer: " + EventsLine(s.wait(kOuter, 0)));
  s.ctl(kOuter, EPOLL_CTL_MOD, c_fd, EPOLLIN | EPOLLONESHOT, 4);
  lines.push_back("rearm c, wait outer: " + EventsLine(s.wait(kOuter, 0)));
  lines.push_back("wait inner: " + EventsLine(s.wait(kInner, 0)));
  return lines;
}

// The kernel's side: two epoll instances, the inner one registered in the outer under kInnerFd's place.
struct KernelSide {
  int outer = epoll_create1(EPOLL_CLOEXEC);
  int inner = epoll_create1(EPOLL_CLOEXEC);
  ~KernelSide() {
    close(outer);
    close(inner);
  }
  PollSide Side() {
    PollSide s;
    s.ctl = [this](int poll, int op, int fd, std::uint32_t events, std::uint64_t data) {
      epoll_event ev{};
      ev.events = events;
      ev.data.u64 = data;
      epoll_ctl(poll == kOuter ? outer : inner, op, fd == kInnerFd ? inner : fd, &ev);
    };
    s.wait = [this](int poll, int timeout_ms) {
      epoll_event ev[16];
      const int n = epoll_wait(poll == kOuter ? outer : inner, ev, 16, timeout_ms);
      std::vector<std::pair<std::uint64_t, std::uint32_t>> out;
      for (int i = 0; i < n; ++i) {
        const std::uint64_t data = ev[i].data.u64;  // packed: copied, not bound
        const std::uint32_t events = ev[i].events;
        out.emplace_back(data, events);
      }
      return out;
    };
    return s;
  }
};

// epollcr's side: a World whose fd table holds the watched fds as host files at their own numbers, and roots
// "outer", "inner" and "c".
struct EpollcrSide {
  World* world;
  std::shared_ptr<EventPoll> Poll(int which) const {
    return std::static_pointer_cast<EventPoll>(world->roots.at(which == kOuter ? "outer" : "inner"));
  }
  PollSide Side() {
    PollSide s;
    s.ctl = [this](int poll, int op, int fd, std::uint32_t events, std::uint64_t data) {
      std::shared_ptr<File> file = fd == kInnerFd ? world->roots.at("inner") : world->fds.Get(fd);
      const FileIdentifier id{file.get(), fd};
      std::error_code e = op == EPOLL_CTL_ADD   ? Poll(poll)->AddEntry(id, FlagsFromLinux(events), MaskFromLinux(events), data)
                          : op == EPOLL_CTL_MOD ? Poll(poll)->UpdateEntry(id, FlagsFromLinux(events), MaskFromLinux(events), data)
                                                : Poll(poll)->RemoveEntry(id);
      if (e) std::fprintf(stderr, "ctl %d on fd %d: %s\n", op, fd, e.message().c_str());
    };
    s.wait = [this](int poll, int timeout_ms) {
      Event ev[16];
      Result<int> n = Poll(poll)->Wait(ev, 16, timeout_ms);
      std::vector<std::pair<std::uint64_t, std::uint32_t>> out;
      for (int i = 0; n.ok() && i < n.value(); ++i) out.emplace_back(ev[i].Data(), ev[i].events);
      return out;
    };
    return s;
  }
  // The fd of root "c" in this world's fd table, -1 if none.
  int FdOfC() const {
    for (const auto& [fd, file] : world->fds.Snapshot()) {
      if (file == world->roots.at("c")) return fd;
    }
    return -1;
  }
};

// Wraps the watched fds in host files at their own numbers and makes the polls; false on failure.
inline bool BuildHostWorld(World* w, const HostFds& f) {
  for (int fd : {f.a[0], f.b[0], f.c[0], f.d[0], f.e}) {
    Result<std::shared_ptr<HostFile>> h = HostFile::Create(fd);
    if (!h.ok() || w->fds.InstallAt(fd, h.value())) return false;
  }
  w->roots["outer"] = EventPoll::Create();
  w->roots["inner"] = EventPoll::Create();
  w->roots["c"] = w->fds.Get(f.c[0]);
  return true;
}

// The host files of a world give their fds back (they stay open, for a restore to take) and the world goes away.
inline void HandOver(World* w) {
  for (const auto& [fd, file] : w->fds.Snapshot()) {
    if (auto* h = dynamic_cast<HostFile*>(file.get())) h->ReleaseFd();
  }
  w->roots.clear();
  w->fds.Clear();
}

}  // namespace epollcr::testing
