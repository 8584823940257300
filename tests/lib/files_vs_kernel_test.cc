// The in-memory files against the kernel's own: the same random operations on a real pipe, eventfd and AF_UNIX
// socket pair and on epollcr's, comparing every return value, errno and the full readiness mask after each step.
// The kernel is the oracle; a mismatch prints the seed and the step.
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "epollcr/epollcr.h"
#include "socket_pair_state.h"

namespace epollcr {
namespace {

constexpr short kAllPollBits =
    POLLIN | POLLPRI | POLLOUT | POLLRDNORM | POLLRDBAND | POLLWRNORM | POLLWRBAND | POLLMSG | POLLRDHUP;

EventMask KernelReadiness(int fd) {
  pollfd p{fd, kAllPollBits, 0};
  if (::poll(&p, 1, 0) < 0) return 0xffffffff;
  return static_cast<EventMask>(static_cast<unsigned short>(p.revents));
}

std::string Outcome(ssize_t kernel_ret) {
  return kernel_ret < 0 ? "err " + std::to_string(errno) : "ok " + std::to_string(kernel_ret);
}
std::string Outcome(const Result<std::size_t>& r) {
  return r.ok() ? "ok " + std::to_string(r.value()) : "err " + std::to_string(r.error().value());
}
std::string Outcome(std::error_code ec) { return ec ? "err " + std::to_string(ec.value()) : "ok 0"; }

class FilesVsKernelTest : public ::testing::Test {
 protected:
  void SetUp() override { std::signal(SIGPIPE, SIG_IGN); }
  std::vector<std::byte> buf_ = std::vector<std::byte>(300000, std::byte{0x5a});
};

std::size_t RandomSize(std::mt19937& rng) {
  switch (rng() % 6) {
    case 0: return rng() % 3;
    case 1: return 1 + rng() % 200;
    case 2: return 4000 + rng() % 200;
    case 3: return 1 + rng() % 9000;
    case 4: return 30000 + rng() % 50000;
    default: return 1 + rng() % 70000;
  }
}

TEST_F(FilesVsKernelTest, PipeMatchesTheKernel) {
  for (unsigned seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    int raw[2];
    ASSERT_EQ(::pipe2(raw, O_NONBLOCK | O_CLOEXEC), 0);
    UniqueFd kernel[2] = {UniqueFd(raw[0]), UniqueFd(raw[1])};
    PipeEnds ours = NewPipe();
    std::shared_ptr<File> mine[2] = {ours.read, ours.write};
    ours = {};
    for (int step = 0; step < 60; ++step) {
      const int end = static_cast<int>(rng() % 2);
      const unsigned op = rng() % 20;
      std::string k, u;
      if (op == 0) {
        kernel[end].Reset();
        mine[end].reset();
      } else if (!mine[end]) {
        continue;
      } else if (op < 10) {
        const std::size_t n = RandomSize(rng);
        k = Outcome(::write(kernel[end].get(), buf_.data(), n));
        u = Outcome(mine[end]->Write({buf_.data(), n}));
      } else {
        const std::size_t n = RandomSize(rng);
        k = Outcome(::read(kernel[end].get(), buf_.data(), n));
        u = Outcome(mine[end]->Read({buf_.data(), n}));
      }
      ASSERT_EQ(k, u) << "seed " << seed << " step " << step << " op " << op << " end " << end;
      for (int e = 0; e < 2; ++e) {
        if (!mine[e]) continue;
        ASSERT_EQ(KernelReadiness(kernel[e].get()), mine[e]->Readiness(kAllEvents))
            << "seed " << seed << " step " << step << " end " << e;
      }
    }
  }
}

TEST_F(FilesVsKernelTest, EventFdMatchesTheKernel) {
  const std::uint64_t values[] = {0, 1, 2, 7, 0xfffffffffffffffeULL, 0xffffffffffffffffULL, 0x8000000000000000ULL};
  for (unsigned seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    const bool semaphore = seed % 2 == 0;
    const unsigned initial = rng() % 3;
    UniqueFd kernel(::eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC | (semaphore ? EFD_SEMAPHORE : 0)));
    ASSERT_GE(kernel.get(), 0);
    auto mine = EventFd::Create(initial, semaphore);
    for (int step = 0; step < 60; ++step) {
      std::string k, u;
      std::uint64_t v = values[rng() % std::size(values)];
      const std::size_t len = rng() % 8 == 0 ? 4 : 8;  // short buffers are EINVAL
      if (rng() % 2 == 0) {
        k = Outcome(::write(kernel.get(), &v, len));
        u = Outcome(mine->Write({reinterpret_cast<const std::byte*>(&v), len}));
      } else {
        std::uint64_t kv = 0, uv = 0;
        k = Outcome(::read(kernel.get(), &kv, len)) + " " + std::to_string(kv);
        u = Outcome(mine->Read({reinterpret_cast<std::byte*>(&uv), len})) + " " + std::to_string(uv);
      }
      ASSERT_EQ(k, u) << "seed " << seed << " step " << step;
      ASSERT_EQ(KernelReadiness(kernel.get()), mine->Readiness(kAllEvents)) << "seed " << seed << " step " << step;
    }
  }
}

TEST_F(FilesVsKernelTest, SocketPairMatchesTheKernel) {
  for (unsigned seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    int raw[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, raw), 0);
    UniqueFd kernel[2] = {UniqueFd(raw[0]), UniqueFd(raw[1])};
    auto [a, b] = NewSocketPair();
    std::shared_ptr<File> mine[2] = {a, b};
    a.reset();
    b.reset();
    for (int step = 0; step < 80; ++step) {
      const int end = static_cast<int>(rng() % 2);
      const unsigned op = rng() % 24;
      std::string k, u;
      if (op == 0) {
        kernel[end].Reset();
        mine[end].reset();
      } else if (!mine[end]) {
        continue;
      } else if (op < 3) {
        const int how = static_cast<int>(rng() % 3);
        k = Outcome(static_cast<ssize_t>(::shutdown(kernel[end].get(), how)));
        u = Outcome(mine[end]->Shutdown(how));
      } else if (op < 13) {
        const std::size_t n = RandomSize(rng);
        k = Outcome(::send(kernel[end].get(), buf_.data(), n, MSG_NOSIGNAL));
        u = Outcome(mine[end]->Write({buf_.data(), n}));
      } else {
        const std::size_t n = RandomSize(rng);
        k = Outcome(::read(kernel[end].get(), buf_.data(), n));
        u = Outcome(mine[end]->Read({buf_.data(), n}));
      }
      ASSERT_EQ(k, u) << "seed " << seed << " step " << step << " op " << op << " end " << end;
      for (int e = 0; e < 2; ++e) {
        if (!mine[e]) continue;
        ASSERT_EQ(KernelReadiness(kernel[e].get()), mine[e]->Readiness(kAllEvents))
            << "seed " << seed << " step " << step << " end " << e;
      }
    }
  }
}

// The truesize model against the kernel's own accounting (SIOCOUTQ is sk_wmem_alloc for AF_UNIX).
TEST_F(FilesVsKernelTest, SegmentTruesizeMatchesTheKernel) {
  for (std::int64_t n = 1; n <= 40000; n += (n < 9000 ? 1 : 97)) {
    int raw[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, raw), 0);
    UniqueFd a(raw[0]), b(raw[1]);
    ASSERT_EQ(::write(a.get(), buf_.data(), static_cast<std::size_t>(n)), n);
    int outq = -1;
    ASSERT_EQ(::ioctl(a.get(), SIOCOUTQ, &outq), 0);
    // One write of n bytes makes ceil(n / MaxSegment) segments.
    std::int64_t expected = 0;
    const std::int64_t seg = SocketPairState::MaxSegment(SocketPairState::kDefaultSndBuf);
    for (std::int64_t left = n; left > 0; left -= seg) expected += SocketPairState::Truesize(std::min(left, seg));
    ASSERT_EQ(outq, expected) << "write of " << n << " bytes";
  }
}

}  // namespace
}  // namespace epollcr
