// Byte streams with a known content, for the TCP-by-value tests: each side of a connection writes stream `tag`, and
// its reader checks every byte against it, so a lost, repeated or reordered byte shows at its offset.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

namespace epollcr::restore {

// Byte k of stream `tag`: a sequence no shift or repeat of itself matches.
inline char PatternByte(char tag, std::uint64_t k) { return static_cast<char>(tag + (k * 131 + (k >> 8) * 7) % 251); }

inline std::string Pattern(char tag, std::uint64_t from, std::size_t n) {
  std::string bytes(n, '\0');
  for (std::size_t i = 0; i < n; ++i) bytes[i] = PatternByte(tag, from + i);
  return bytes;
}

// Reads exactly `n` bytes within 20 s and checks them against stream `tag` from byte `from`. "" or what went wrong.
inline std::string ReadExactly(int fd, char tag, std::uint64_t from, std::size_t n) {
  std::string got;
  char buffer[65536];
  while (got.size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20000) <= 0) return "timed out after " + std::to_string(got.size()) + " of " + std::to_string(n);
    const ssize_t r = ::recv(fd, buffer, std::min(sizeof buffer, n - got.size()), MSG_DONTWAIT);
    if (r < 0 && errno == EAGAIN) continue;
    if (r <= 0) return r == 0 ? "end of stream" : std::string("recv: ") + std::strerror(errno);
    got.append(buffer, static_cast<std::size_t>(r));
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (got[i] != PatternByte(tag, from + i)) return "byte " + std::to_string(from + i) + " differs";
  }
  return "";
}

// Sends all of `bytes` (blocking); "" or what went wrong.
inline std::string SendAll(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (w <= 0) return std::string("send: ") + std::strerror(errno);
    done += static_cast<std::size_t>(w);
  }
  return "";
}

// Writes `n` bytes of stream `tag` from `*at` while the peer reads them on another thread.
inline std::string Stream(int from_fd, int to_fd, char tag, std::uint64_t* at, std::size_t n) {
  std::string reader_error;
  std::thread reader([&] { reader_error = ReadExactly(to_fd, tag, *at, n); });
  const std::string sent = SendAll(from_fd, Pattern(tag, *at, n));
  reader.join();
  *at += n;
  return !sent.empty() ? sent : reader_error;
}

}  // namespace epollcr::restore
