// Worlds for tests: one with every file type, dup'd fds, nested polls and entries on all three lists, and a text
// description of everything observable about a world, to compare two of them.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "epollcr/crc32c.h"
#include "epollcr/epollcr.h"

namespace epollcr::testing {

// n bytes of `c` written to a file, and n bytes read from one, each in one call that must succeed.
inline void WriteBytes(File& f, std::size_t n, char c = 'x') {
  const std::string bytes(n, c);
  ASSERT_TRUE(f.Write(std::as_bytes(std::span(bytes))).ok());
}
inline void ReadBytes(File& f, std::size_t n) {
  std::vector<std::byte> buffer(n);
  ASSERT_TRUE(f.Read(buffer).ok());
}

// A world with every file type, dup'd fds, nested polls and entries on all three lists.
inline void BuildWorld(World& w) {
  using sys::EpollCtl;
  int ep = sys::EpollCreate1(w.fds, 0).value();
  int inner = sys::EpollCreate1(w.fds, 0).value();
  int efd = sys::EventFd(w.fds, 3, true).value();
  int p[2], s[2];
  ASSERT_FALSE(sys::Pipe(w.fds, p));
  ASSERT_FALSE(sys::SocketPair(w.fds, s));
  int dup = sys::Dup(w.fds, efd).value();
  auto ctl = [&](int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) {
    Event e{events, {}};
    e.SetData(data);
    ASSERT_FALSE(EpollCtl(w.fds, epfd, op, fd, &e));
  };
  ctl(ep, sys::kEpollCtlAdd, efd, kEventIn | kEpollEdgeTriggered, 1);
  ctl(ep, sys::kEpollCtlAdd, dup, kEventOut | kEpollOneShot, 2);
  ctl(ep, sys::kEpollCtlAdd, p[0], kEventIn, 3);
  ctl(ep, sys::kEpollCtlAdd, p[1], kEventOut, 4);
  ctl(inner, sys::kEpollCtlAdd, s[1], kEventIn | kEventRdHup, 5);
  ctl(ep, sys::kEpollCtlAdd, inner, kEventIn, 6);
  ctl(ep, sys::kEpollCtlAdd, s[0], kEventOut | kEpollEdgeTriggered, 7);
  const std::byte bytes[5000] = {};
  ASSERT_TRUE(sys::Write(w.fds, p[1], {bytes, 4100}).ok());
  ASSERT_TRUE(sys::Write(w.fds, s[0], {bytes, 10}).ok());
  ASSERT_FALSE(sys::Shutdown(w.fds, s[0], 1));
  Event ev[2];
  ASSERT_TRUE(sys::EpollWait(w.fds, ep, ev, 2, 0).ok());  // one-shot disabled, ET consumed, LT rotated
  std::byte got[100];
  ASSERT_TRUE(sys::Read(w.fds, p[0], got).ok());
  ASSERT_FALSE(sys::Close(w.fds, efd));  // the eventfd lives on through `dup`
}

// n bytes from `random` (std::mt19937's output is the same on every platform), each value equally likely.
inline std::vector<std::byte> RandomBytes(std::size_t n, std::mt19937& random) {
  std::vector<std::byte> bytes(n);
  for (std::byte& b : bytes) b = static_cast<std::byte>(random() & 0xff);
  return bytes;
}

// A world whose files hold bytes: fds 0 and 1 are a pipe's read and write ends, 2 and 3 a socket pair's ends. Each of
// `pipe_writes` is one write of that many random bytes to the pipe, each of `socket_writes` one to end 0 of the pair
// (a segment each); then `pipe_read` bytes are read from the pipe (its first slot's bytes then start past its page's
// start). `*pipe_bytes` and `*socket_bytes` get what is left to read at fds 0 and 3.
inline void BuildBufferedWorld(World& w, std::span<const std::size_t> pipe_writes,
                               std::span<const std::size_t> socket_writes, std::size_t pipe_read, std::uint32_t seed,
                               std::vector<std::byte>* pipe_bytes, std::vector<std::byte>* socket_bytes) {
  std::mt19937 random(seed);
  int p[2], s[2];
  ASSERT_FALSE(sys::Pipe(w.fds, p));
  ASSERT_FALSE(sys::SocketPair(w.fds, s));
  ASSERT_EQ(p[0], 0);
  ASSERT_EQ(s[1], 3);
  for (std::size_t n : pipe_writes) {
    const std::vector<std::byte> bytes = RandomBytes(n, random);
    ASSERT_EQ(sys::Write(w.fds, p[1], bytes).value(), n);
    pipe_bytes->insert(pipe_bytes->end(), bytes.begin(), bytes.end());
  }
  for (std::size_t n : socket_writes) {
    const std::vector<std::byte> bytes = RandomBytes(n, random);
    ASSERT_EQ(sys::Write(w.fds, s[0], bytes).value(), n);
    socket_bytes->insert(socket_bytes->end(), bytes.begin(), bytes.end());
  }
  std::vector<std::byte> read(pipe_read);
  if (pipe_read > 0) {
    ASSERT_EQ(sys::Read(w.fds, p[0], read).value(), pipe_read);
  }
  pipe_bytes->erase(pipe_bytes->begin(), pipe_bytes->begin() + static_cast<std::ptrdiff_t>(pipe_read));
}

// Everything there is to read at `fd` now (reads until EAGAIN).
inline std::vector<std::byte> ReadAll(World& w, int fd) {
  std::vector<std::byte> all, chunk(70000);
  for (;;) {
    Result<std::size_t> n = sys::Read(w.fds, fd, chunk);
    if (!n.ok() || n.value() == 0) return all;
    all.insert(all.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n.value()));
  }
}

// LoadWorld's envelope (lib/src/archive/world_api.cc) around a Boost archive: magic, version 1, the format, CRC32C
// and length.
inline std::string Envelope(std::string_view archive, ArchiveFormat format) {
  std::string bytes = "EPCRWRLD";
  bytes += static_cast<char>(1);
  bytes += static_cast<char>(format);
  bytes.append(2, '\0');
  for (int i = 0; i < 4; ++i) bytes += static_cast<char>((Crc32c(archive) >> (8 * i)) & 0xff);
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>((std::uint64_t{archive.size()} >> (8 * i)) & 0xff);
  bytes += archive;
  return bytes;
}

// Everything observable about a world, as text: fds and kinds, file states, every poll's entries and ready order.
inline std::string Describe(World& w) {
  std::ostringstream out;
  std::map<const File*, int> fd_of;
  for (auto& [fd, f] : w.fds.Snapshot()) {
    if (!fd_of.count(f.get())) fd_of[f.get()] = fd;
  }
  for (auto& [fd, f] : w.fds.Snapshot()) {
    out << "fd " << fd << " " << f->TypeName() << " first " << fd_of[f.get()] << " ready "
        << FormatEventMask(f->Readiness(kAllEvents));
    if (auto* e = dynamic_cast<EventFd*>(f.get())) out << " count " << e->Value() << " sem " << e->semaphore();
    if (auto* p = dynamic_cast<EventPoll*>(f.get())) {
      std::vector<EntryInfo> entries = p->Entries();  // in key order, which depends on addresses: sort by fd, data
      std::sort(entries.begin(), entries.end(), [](const EntryInfo& x, const EntryInfo& y) {
        return x.fd != y.fd ? x.fd < y.fd : x.data < y.data;
      });
      for (const EntryInfo& e : entries) {
        out << "\n  entry fd " << e.fd << " file " << fd_of[e.file] << " " << FormatEventMask(e.events) << " data "
            << e.data << " list " << static_cast<int>(e.list);
      }
      out << "\n  ready:";
      for (const EntryInfo& e : p->ReadyList()) out << " " << e.data;
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace epollcr::testing
