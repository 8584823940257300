// Host files against the kernel, wait by wait: every scenario runs the same operations twice, once on a kernel epoll
// over real fds (the kernel twin) and once on an EventPoll over another, independent set of real fds of the same kind
// wrapped as HostFiles (same registration order, flags and data). Every wait result is compared record by record
// (count, then events and data of each record, in order). The kernel twin is the oracle: no expected event is
// written down here. Writes come from this thread, from another thread and from another process; a Wait(0) right
// after any of them must see what epoll_wait(0) sees.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/events.h"
#include "epollcr/host_file.h"
#include "epollcr/unique_fd.h"
#include "fault_injection.h"

namespace epollcr {
namespace {

// ---- what a wait returned -------------------------------------------------------------------------------------------

struct Record {
  std::uint32_t events = 0;
  std::uint64_t data = 0;
};

struct Waited {
  int count = -1;  // -1: failed with `error`
  int error = 0;
  std::vector<Record> records;
};

std::string Format(const Waited& w) {
  if (w.count < 0) return "errno " + std::to_string(w.error);
  std::string s = std::to_string(w.count) + ":";
  for (const Record& r : w.records) s += " " + FormatEventMask(r.events) + "(" + std::to_string(r.data) + ")";
  return s;
}

// EXPECT_EQs the kernel twin's wait against epollcr's; returns whether they agree.
bool CompareWaits(const Waited& kernel, const Waited& ours, const std::string& step) {
  const std::string both = "\n  kernel:  " + Format(kernel) + "\n  epollcr: " + Format(ours);
  EXPECT_EQ(kernel.error, ours.error) << step << both;
  EXPECT_EQ(kernel.count, ours.count) << step << both;
  const std::size_t n = std::min(kernel.records.size(), ours.records.size());
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_EQ(FormatEventMask(kernel.records[i].events), FormatEventMask(ours.records[i].events))
        << step << ", events of record " << i << both;
    EXPECT_EQ(kernel.records[i].data, ours.records[i].data) << step << ", data of record " << i << both;
  }
  return Format(kernel) == Format(ours);
}

// ---- the two sides --------------------------------------------------------------------------------------------------

// One poll and the watched fds it owns. Fds that are only written to or closed (peers) stay with the scenario.
class Side {
 public:
  virtual ~Side() = default;
  // Takes ownership of `fd`, which the scenario will register.
  virtual void Own(int fd) = 0;
  // epoll_ctl: 0 or an errno.
  virtual int Ctl(int op, int fd, std::uint32_t events, std::uint64_t data) = 0;
  virtual Waited Wait(int max, int timeout_ms) = 0;
};

class KernelSide final : public Side {
 public:
  KernelSide() : ep_(::epoll_create1(EPOLL_CLOEXEC)) { EXPECT_TRUE(ep_.valid()) << std::strerror(errno); }
  void Own(int fd) override { fds_[fd] = UniqueFd(fd); }
  int Ctl(int op, int fd, std::uint32_t events, std::uint64_t data) override {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = data;
    return ::epoll_ctl(ep_.get(), op, fd, &ev) == 0 ? 0 : errno;
  }
  Waited Wait(int max, int timeout_ms) override {
    std::vector<epoll_event> ev(static_cast<std::size_t>(max));
    const int n = ::epoll_wait(ep_.get(), ev.data(), max, timeout_ms);
    Waited w;
    if (n < 0) {
      w.error = errno;
      return w;
    }
    w.count = n;
    for (int i = 0; i < n; ++i) w.records.push_back({ev[i].events, ev[i].data.u64});
    return w;
  }

 private:
  UniqueFd ep_;
  std::map<int, UniqueFd> fds_;  // closed after the epoll (declared after it)
};

class OurSide final : public Side {
 public:
  void Own(int fd) override {
    auto file = HostFile::Create(fd);
    ASSERT_TRUE(file.ok()) << "HostFile::Create(" << fd << "): " << file.status().message;
    files_[fd] = std::move(file).value();
  }
  int Ctl(int op, int fd, std::uint32_t events, std::uint64_t data) override {
    const auto it = files_.find(fd);
    if (it == files_.end()) {
      ADD_FAILURE() << "fd " << fd << " is not a host file of this side";
      return EBADF;
    }
    const FileIdentifier id{it->second.get(), fd};
    std::error_code ec;
    switch (op) {
      case EPOLL_CTL_ADD: ec = poll_->AddEntry(id, FlagsFromLinux(events), MaskFromLinux(events), data); break;
      case EPOLL_CTL_MOD: ec = poll_->UpdateEntry(id, FlagsFromLinux(events), MaskFromLinux(events), data); break;
      case EPOLL_CTL_DEL: ec = poll_->RemoveEntry(id); break;
      default: ec = Errno(EINVAL);
    }
    return ec ? ec.value() : 0;
  }
  Waited Wait(int max, int timeout_ms) override {
    std::vector<Event> ev(static_cast<std::size_t>(max));
    const Result<int> r = poll_->Wait(ev.data(), max, timeout_ms);
    Waited w;
    if (!r.ok()) {
      w.error = r.error().value();
      return w;
    }
    w.count = r.value();
    for (int i = 0; i < w.count; ++i) w.records.push_back({ev[i].events, ev[i].Data()});
    return w;
  }

 private:
  std::map<int, std::shared_ptr<HostFile>> files_;  // HostFiles close their fds (after the poll is gone)
  std::shared_ptr<EventPoll> poll_ = EventPoll::Create();
};

constexpr int kKernel = 0;
constexpr int kOurs = 1;

// The kernel twin and epollcr, side by side. A scenario keeps, per side, its own fds (index kKernel or kOurs).
struct Twin {
  KernelSide kernel;
  OurSide ours;
  Side* sides[2] = {&kernel, &ours};

  // Wait on both (the kernel twin first) and compare.
  bool Wait(int max, const std::string& step, int timeout_ms = 0) {
    const Waited k = kernel.Wait(max, timeout_ms);
    const Waited u = ours.Wait(max, timeout_ms);
    return CompareWaits(k, u, step);
  }
  // The same epoll_ctl on both sides, on each side's own fd; their results must agree.
  void Ctl(int op, std::array<int, 2> fds, std::uint32_t events, std::uint64_t data, const std::string& step) {
    const int k = kernel.Ctl(op, fds[kKernel], events, data);
    const int u = ours.Ctl(op, fds[kOurs], events, data);
    EXPECT_EQ(k, u) << step << ": epoll_ctl errno, kernel vs epollcr";
  }
};

// ---- fds ------------------------------------------------------------------------------------------------------------

struct Ends {
  int watched = -1;  // owned by a Side once Own()ed
  UniqueFd peer;
};

Ends SocketPair() {
  int raw[2] = {-1, -1};
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, raw), 0) << std::strerror(errno);
  return {raw[0], UniqueFd(raw[1])};
}

// watched = the read end, peer = the write end.
Ends PipeReadEnd() {
  int raw[2] = {-1, -1};
  EXPECT_EQ(::pipe2(raw, O_NONBLOCK | O_CLOEXEC), 0) << std::strerror(errno);
  return {raw[0], UniqueFd(raw[1])};
}

// watched = the write end, peer = the read end.
Ends PipeWriteEnd() {
  int raw[2] = {-1, -1};
  EXPECT_EQ(::pipe2(raw, O_NONBLOCK | O_CLOEXEC), 0) << std::strerror(errno);
  return {raw[1], UniqueFd(raw[0])};
}

void WriteByte(int fd) {
  const char c = 'x';
  EXPECT_EQ(::write(fd, &c, 1), 1) << "write to fd " << fd << ": " << std::strerror(errno);
}

// Reads what there is (non-blocking fds); returns the byte count or -errno of the first read.
long Drain(int fd) {
  char buf[4096];
  long total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) return total > 0 ? total : -errno;
    if (n == 0) return total;
    total += n;
  }
}

std::size_t OpenFds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

class HostExactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::signal(SIGPIPE, SIG_IGN);
    fds_before_ = OpenFds();
  }
  void TearDown() override { EXPECT_EQ(OpenFds(), fds_before_) << "the scenario left fds open"; }

  std::size_t fds_before_ = 0;
};

// Mismatching rounds of a long loop: the first few are reported in full, the rest only counted.
struct RoundFailures {
  int count = 0;
  bool Report() const { return count < 5; }
};

// A socket pair and a pipe per side of `twin`, their watched ends owned by the side.
void MakeSocketsAndPipes(Twin& twin, Ends sock[2], Ends pipe[2]) {
  for (int s = 0; s < 2; ++s) {
    sock[s] = SocketPair();
    pipe[s] = PipeReadEnd();
    twin.sides[s]->Own(sock[s].watched);
    twin.sides[s]->Own(pipe[s].watched);
  }
}

// One round of tests 1 and 2, once the writes are done: Wait(0) on both sides, each watched fd read back (one byte
// each), and Wait(0) again. A round that differs is counted, and the first few are reported in full.
void CheckRound(Twin& twin, Ends sock[2], Ends pipe[2], const std::string& what, RoundFailures& failures,
                int* kernel_saw_both) {
  const Waited k = twin.kernel.Wait(8, 0);
  const Waited u = twin.ours.Wait(8, 0);
  if (k.count == 2) ++*kernel_saw_both;
  bool same = Format(k) == Format(u);
  if (!same && failures.Report()) CompareWaits(k, u, what);
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(Drain(sock[s].watched), 1) << what << ", side " << s;
    EXPECT_EQ(Drain(pipe[s].watched), 1) << what << ", side " << s;
  }
  const Waited k2 = twin.kernel.Wait(8, 0);
  const Waited u2 = twin.ours.Wait(8, 0);
  if (Format(k2) != Format(u2)) {
    if (same && failures.Report()) CompareWaits(k2, u2, what + ", then Wait(0) after reading");
    same = false;
  }
  if (!same) ++failures.count;
}

// ---- 1. Wait(0) right after another thread's write ------------------------------------------------------------------

TEST_F(HostExactTest, WaitZeroSeesAnotherThreadsWriteAtOnce) {
  Twin twin;
  Ends sock[2], pipe[2];
  MakeSocketsAndPipes(twin, sock, pipe);
  twin.Ctl(EPOLL_CTL_ADD, {sock[0].watched, sock[1].watched}, EPOLLIN, 0x5000'0000'0001ULL, "add socket");
  twin.Ctl(EPOLL_CTL_ADD, {pipe[0].watched, pipe[1].watched}, EPOLLIN, 0x5000'0000'0002ULL, "add pipe");
  ASSERT_FALSE(HasFailure());
  twin.Wait(8, "before any write");

  constexpr int kRounds = 10'000;
  std::atomic<int> go{0};    // the round the helper may write for
  std::atomic<int> done{0};  // the last round the helper has written for
  std::thread helper([&] {
    for (int round = 1; round <= kRounds; ++round) {
      go.wait(round - 1);
      // Odd rounds write the socket first, even rounds the pipe first; the kernel twin's fds first on odd rounds.
      const bool socket_first = round % 2 == 1;
      for (int i = 0; i < 2; ++i) {
        const int s = round % 2 == 1 ? i : 1 - i;
        WriteByte(socket_first ? sock[s].peer.get() : pipe[s].peer.get());
        WriteByte(socket_first ? pipe[s].peer.get() : sock[s].peer.get());
      }
      done.store(round);
      done.notify_one();
    }
  });

  RoundFailures failures;
  int kernel_saw_both = 0;
  for (int round = 1; round <= kRounds; ++round) {
    go.store(round);
    go.notify_one();
    done.wait(round - 1);
    CheckRound(twin, sock, pipe, "round " + std::to_string(round) + ", Wait(0) after the write", failures,
               &kernel_saw_both);
  }
  helper.join();
  EXPECT_EQ(failures.count, 0) << "rounds where epollcr differed from the kernel twin, of " << kRounds;
  // The oracle itself: the kernel reports both fds every round (nothing is in flight after a write returns).
  EXPECT_EQ(kernel_saw_both, kRounds);
}

// ---- 2. Wait(0) right after another process's write -----------------------------------------------------------------

TEST_F(HostExactTest, WaitZeroSeesAnotherProcesssWriteAtOnce) {
  Twin twin;
  Ends sock[2], pipe[2];
  MakeSocketsAndPipes(twin, sock, pipe);
  twin.Ctl(EPOLL_CTL_ADD, {pipe[0].watched, pipe[1].watched}, EPOLLIN, 21, "add pipe");
  twin.Ctl(EPOLL_CTL_ADD, {sock[0].watched, sock[1].watched}, EPOLLIN | EPOLLRDHUP, 22, "add socket");
  ASSERT_FALSE(HasFailure());

  constexpr int kRounds = 200;
  RoundFailures failures;
  int kernel_saw_both = 0;
  for (int round = 1; round <= kRounds; ++round) {
    const int p[4] = {sock[0].peer.get(), pipe[0].peer.get(), sock[1].peer.get(), pipe[1].peer.get()};
    const bool pipe_first = round % 2 == 0;
    const pid_t child = ::fork();
    ASSERT_GE(child, 0) << std::strerror(errno);
    if (child == 0) {
      // Only async-signal-safe calls in the child.
      const char c = 'y';
      bool ok = true;
      for (int s = 0; s < 2; ++s) {
        ok &= ::write(pipe_first ? p[2 * s + 1] : p[2 * s], &c, 1) == 1;
        ok &= ::write(pipe_first ? p[2 * s] : p[2 * s + 1], &c, 1) == 1;
      }
      ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "round " << round << ": the child's writes failed";
    CheckRound(twin, sock, pipe, "round " + std::to_string(round) + ", Wait(0) after the child's write", failures,
               &kernel_saw_both);
  }
  EXPECT_EQ(failures.count, 0) << "rounds where epollcr differed from the kernel twin, of " << kRounds;
  EXPECT_EQ(kernel_saw_both, kRounds);
}

// ---- 3. An edge-triggered entry and the wake-up's key ---------------------------------------------------------------

// A socket registered OUT|ET is writable from the start: one edge. Data from the peer wakes the socket with key IN,
// which does not meet OUT: the kernel does not report the OUT edge again. The peer reading what the socket wrote
// frees write space (key OUT): that is an edge.
TEST_F(HostExactTest, EdgeTriggeredEntryIgnoresAWakeUpWithAnotherKey) {
  Twin twin;
  Ends sock[2];
  for (int s = 0; s < 2; ++s) {
    sock[s] = SocketPair();
    twin.sides[s]->Own(sock[s].watched);
  }
  const std::array<int, 2> fds = {sock[0].watched, sock[1].watched};
  twin.Ctl(EPOLL_CTL_ADD, fds, EPOLLOUT | EPOLLET, 31, "add OUT|ET");
  ASSERT_FALSE(HasFailure());
  twin.Wait(4, "1: after ADD (writable)");
  twin.Wait(4, "2: again");
  for (int s = 0; s < 2; ++s) WriteByte(sock[s].peer.get());
  twin.Wait(4, "3: after the peer's write (key IN)");
  twin.Wait(4, "4: again");
  for (int s = 0; s < 2; ++s) WriteByte(sock[s].peer.get());
  twin.Wait(4, "5: after a second peer write");
  for (int s = 0; s < 2; ++s) WriteByte(sock[s].watched);
  twin.Wait(4, "6: after the socket's own write");
  for (int s = 0; s < 2; ++s) EXPECT_EQ(Drain(sock[s].peer.get()), 1);
  twin.Wait(4, "7: after the peer read the socket's write (key OUT)");
  twin.Wait(4, "8: again");
  for (int s = 0; s < 2; ++s) EXPECT_EQ(Drain(sock[s].watched), 2);
  twin.Wait(4, "9: after the socket read the peer's data");
  twin.Ctl(EPOLL_CTL_MOD, fds, EPOLLIN | EPOLLOUT | EPOLLET, 32, "MOD to IN|OUT|ET");
  twin.Wait(4, "10: after MOD");
  twin.Wait(4, "11: again");
  for (int s = 0; s < 2; ++s) WriteByte(sock[s].peer.get());
  twin.Wait(4, "12: after a peer write with IN armed");
  for (int s = 0; s < 2; ++s) WriteByte(sock[s].peer.get());
  twin.Wait(4, "13: after another peer write, nothing read");
  twin.Wait(4, "14: again");
  for (int s = 0; s < 2; ++s) EXPECT_EQ(Drain(sock[s].watched), 2);
  twin.Wait(4, "15: after reading");
}

// ---- 4. RDHUP and HUP -----------------------------------------------------------------------------------------------

TEST_F(HostExactTest, ShutdownAndCloseGiveRdHupAndHup) {
  Twin twin;
  Ends sock[2], in_pipe[2], out_pipe[2];
  for (int s = 0; s < 2; ++s) {
    sock[s] = SocketPair();
    in_pipe[s] = PipeReadEnd();
    out_pipe[s] = PipeWriteEnd();
    twin.sides[s]->Own(sock[s].watched);
    twin.sides[s]->Own(in_pipe[s].watched);
    twin.sides[s]->Own(out_pipe[s].watched);
  }
  twin.Ctl(EPOLL_CTL_ADD, {sock[0].watched, sock[1].watched}, EPOLLIN | EPOLLRDHUP, 41, "add socket IN|RDHUP");
  twin.Ctl(EPOLL_CTL_ADD, {in_pipe[0].watched, in_pipe[1].watched}, EPOLLIN, 42, "add pipe read end IN");
  twin.Ctl(EPOLL_CTL_ADD, {out_pipe[0].watched, out_pipe[1].watched}, EPOLLOUT, 43, "add pipe write end OUT");
  ASSERT_FALSE(HasFailure());
  twin.Wait(8, "1: after ADD");
  for (int s = 0; s < 2; ++s) ASSERT_EQ(::shutdown(sock[s].peer.get(), SHUT_WR), 0);
  twin.Wait(8, "2: after the socket peer's shutdown(SHUT_WR)");
  twin.Wait(8, "3: again");
  twin.Wait(1, "4: max 1");
  twin.Wait(2, "5: max 2");
  for (int s = 0; s < 2; ++s) sock[s].peer.Reset();
  twin.Wait(8, "6: after closing the socket peer");
  for (int s = 0; s < 2; ++s) WriteByte(in_pipe[s].peer.get());
  twin.Wait(8, "7: after a write to the pipe");
  for (int s = 0; s < 2; ++s) in_pipe[s].peer.Reset();
  twin.Wait(8, "8: after closing the pipe's write end (data left)");
  for (int s = 0; s < 2; ++s) EXPECT_EQ(Drain(in_pipe[s].watched), 1);
  twin.Wait(8, "9: after reading the data");
  for (int s = 0; s < 2; ++s) out_pipe[s].peer.Reset();
  twin.Wait(8, "10: after closing the read end of the watched write end");
  twin.Wait(2, "11: max 2");
  twin.Wait(1, "12: max 1");
  twin.Wait(8, "13: all");
  twin.Ctl(EPOLL_CTL_MOD, {sock[0].watched, sock[1].watched}, EPOLLIN | EPOLLRDHUP | EPOLLET, 44, "MOD socket to ET");
  twin.Wait(8, "14: after MOD to ET");
  twin.Wait(8, "15: again");
}

// ---- 5. A TCP reset ----------------------------------------------------------------------------------------------

// Waits (bounded) until the kernel has processed the reset on `fd`: poll reports ERR or HUP.
bool AwaitResetSeen(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    pollfd p{fd, 0, 0};  // ERR and HUP are always reported
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    if (::poll(&p, 1, static_cast<int>(left)) > 0 && (p.revents & (POLLERR | POLLHUP)) != 0) return true;
  }
}

TEST_F(HostExactTest, TcpResetGivesErrAndHup) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid()) << std::strerror(errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  ASSERT_EQ(::listen(listener.get(), 8), 0) << std::strerror(errno);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);

  // Per side two connections: one registered level-triggered, one edge-triggered. The client end is watched, the
  // accepted end is the peer.
  auto connect_one = [&]() -> Ends {
    const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(client, 0) << std::strerror(errno);
    EXPECT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    EXPECT_EQ(::fcntl(client, F_SETFL, O_NONBLOCK), 0);
    UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    EXPECT_TRUE(accepted.valid()) << std::strerror(errno);
    return {client, std::move(accepted)};
  };
  Twin twin;
  Ends level[2], edge[2];
  for (int s = 0; s < 2; ++s) {
    level[s] = connect_one();
    edge[s] = connect_one();
    twin.sides[s]->Own(level[s].watched);
    twin.sides[s]->Own(edge[s].watched);
  }
  ASSERT_FALSE(HasFailure());
  twin.Ctl(EPOLL_CTL_ADD, {level[0].watched, level[1].watched}, EPOLLIN | EPOLLRDHUP, 51, "add level IN|RDHUP");
  twin.Ctl(EPOLL_CTL_ADD, {edge[0].watched, edge[1].watched}, EPOLLIN | EPOLLRDHUP | EPOLLET, 52, "add edge");
  ASSERT_FALSE(HasFailure());
  twin.Wait(8, "1: connected, nothing sent");
  for (int s = 0; s < 2; ++s) WriteByte(level[s].peer.get());
  // Loopback TCP delivers within the send, but wait for it boundedly rather than assume.
  for (int s = 0; s < 2; ++s) {
    pollfd p{level[s].watched, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 2000), 1) << "the byte did not arrive on side " << s;
  }
  twin.Wait(8, "2: after the peer sent a byte to the level-triggered client");

  const linger reset{1, 0};
  for (Ends* conn : {level, edge}) {
    for (int s = 0; s < 2; ++s) {
      ASSERT_EQ(::setsockopt(conn[s].peer.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset), 0);
      conn[s].peer.Reset();  // sends RST
      ASSERT_TRUE(AwaitResetSeen(conn[s].watched)) << "no ERR/HUP within 2 s on side " << s;
    }
  }
  twin.Wait(8, "3: after both peers closed with RST");
  twin.Wait(8, "4: again");
  twin.Wait(1, "5: max 1");
  twin.Wait(8, "6: all");
  {
    // The first read returns the reset (ECONNRESET) and clears the socket's error.
    const long k = Drain(level[kKernel].watched);
    const long u = Drain(level[kOurs].watched);
    EXPECT_EQ(k, u) << "read on the reset level-triggered client";
  }
  twin.Wait(8, "7: after reading the level-triggered client (error consumed)");
  {
    const long k = Drain(edge[kKernel].watched);
    const long u = Drain(edge[kOurs].watched);
    EXPECT_EQ(k, u) << "read on the reset edge-triggered client";
  }
  twin.Wait(8, "8: after reading the edge-triggered client");
  twin.Ctl(EPOLL_CTL_MOD, {edge[0].watched, edge[1].watched}, EPOLLIN | EPOLLRDHUP | EPOLLET, 53, "re-arm edge");
  twin.Wait(8, "9: after MOD of the edge-triggered client");
}

// ---- 6. Several fds ready in one step: order and round robin ----------------------------------------------------

TEST_F(HostExactTest, SeveralReadyFdsKeepTheKernelsOrder) {
  constexpr int kFds = 4;
  Twin twin;
  Ends sock[2][kFds];
  for (int i = 0; i < kFds; ++i) {
    for (int s = 0; s < 2; ++s) {
      sock[s][i] = SocketPair();
      twin.sides[s]->Own(sock[s][i].watched);
    }
    twin.Ctl(EPOLL_CTL_ADD, {sock[0][i].watched, sock[1][i].watched}, EPOLLIN, 600 + static_cast<std::uint64_t>(i),
             "add socket " + std::to_string(i));
  }
  ASSERT_FALSE(HasFailure());
  twin.Wait(kFds, "before any write");

  std::mt19937 rng(20240611);
  constexpr int kRounds = 300;
  const int maxes[] = {1, 2, 4, 1, 1, 2, 4, 2, 1, 4, 3, 1};
  RoundFailures failures;
  for (int round = 0; round < kRounds; ++round) {
    std::array<int, kFds> order = {0, 1, 2, 3};
    std::shuffle(order.begin(), order.end(), rng);
    // One go from another thread: the peers in `order`, each side's in the same order.
    std::thread writer([&] {
      for (int i : order) {
        for (int s = 0; s < 2; ++s) WriteByte(sock[s][i].peer.get());
      }
    });
    writer.join();
    const std::string prefix = "round " + std::to_string(round) + " (order " + std::to_string(order[0]) +
                               std::to_string(order[1]) + std::to_string(order[2]) + std::to_string(order[3]) + ")";
    bool same = true;
    auto wait = [&](int max, const std::string& what) {
      const Waited k = twin.kernel.Wait(max, 0);
      const Waited u = twin.ours.Wait(max, 0);
      if (Format(k) != Format(u)) {
        if (same && failures.Report()) CompareWaits(k, u, prefix + ", " + what + ", max " + std::to_string(max));
        same = false;
      }
    };
    for (int i = 0; i < 6; ++i) wait(maxes[(round + i) % std::size(maxes)], "wait " + std::to_string(i));
    // One fd stops being ready (stale on the ready list), another gets more data; then more waits.
    const int stale = static_cast<int>(rng() % kFds);
    const int more = static_cast<int>(rng() % kFds);
    for (int s = 0; s < 2; ++s) EXPECT_EQ(Drain(sock[s][stale].watched), 1);
    wait(1 + static_cast<int>(rng() % kFds), "after fd " + std::to_string(stale) + " was read");
    for (int s = 0; s < 2; ++s) WriteByte(sock[s][more].peer.get());
    for (int i = 0; i < 4; ++i) {
      wait(maxes[(round * 5 + i) % std::size(maxes)], "after more data, wait " + std::to_string(i));
    }
    for (int i = 0; i < kFds; ++i) {
      for (int s = 0; s < 2; ++s) Drain(sock[s][i].watched);
    }
    wait(kFds, "after reading everything");
    if (!same) ++failures.count;
  }
  EXPECT_EQ(failures.count, 0) << "rounds where epollcr differed from the kernel twin, of " << kRounds;
}

// ---- 7. One-shot: fire, disarm, re-arm ------------------------------------------------------------------------------

TEST_F(HostExactTest, OneShotFiresOnceAndReArmsOnMod) {
  Twin twin;
  Ends sock[2], pipe[2];
  MakeSocketsAndPipes(twin, sock, pipe);
  const std::array<int, 2> sfd = {sock[0].watched, sock[1].watched};
  const std::array<int, 2> pfd = {pipe[0].watched, pipe[1].watched};
  twin.Ctl(EPOLL_CTL_ADD, sfd, EPOLLIN | EPOLLONESHOT, 71, "add socket IN|ONESHOT");
  twin.Ctl(EPOLL_CTL_ADD, pfd, EPOLLIN | EPOLLONESHOT | EPOLLET, 72, "add pipe IN|ONESHOT|ET");
  ASSERT_FALSE(HasFailure());
  twin.Wait(4, "1: after ADD, nothing ready");
  for (int s = 0; s < 2; ++s) {
    WriteByte(pipe[s].peer.get());
    WriteByte(sock[s].peer.get());
  }
  twin.Wait(4, "2: both fire");
  twin.Wait(4, "3: both disarmed");
  for (int s = 0; s < 2; ++s) {
    WriteByte(sock[s].peer.get());
    WriteByte(pipe[s].peer.get());
  }
  twin.Wait(4, "4: more data while disarmed");
  twin.Ctl(EPOLL_CTL_MOD, sfd, EPOLLIN | EPOLLONESHOT, 73, "re-arm socket (new data)");
  twin.Wait(4, "5: after re-arming the socket");
  twin.Wait(4, "6: again");
  twin.Ctl(EPOLL_CTL_MOD, pfd, EPOLLIN | EPOLLONESHOT | EPOLLET, 74, "re-arm pipe");
  twin.Ctl(EPOLL_CTL_MOD, sfd, EPOLLIN | EPOLLONESHOT, 75, "re-arm socket again");
  twin.Wait(1, "7: max 1 after re-arming both");
  twin.Wait(4, "8: the rest");
  twin.Wait(4, "9: both disarmed");
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(Drain(sock[s].watched), 2);
    EXPECT_EQ(Drain(pipe[s].watched), 2);
  }
  twin.Ctl(EPOLL_CTL_MOD, sfd, EPOLLIN | EPOLLONESHOT, 76, "re-arm socket, nothing ready");
  twin.Ctl(EPOLL_CTL_MOD, pfd, EPOLLIN, 77, "pipe to level-triggered, nothing ready");
  twin.Wait(4, "10: re-armed, nothing ready");
  for (int s = 0; s < 2; ++s) {
    WriteByte(pipe[s].peer.get());
    WriteByte(sock[s].peer.get());
  }
  twin.Wait(4, "11: data after re-arm");
  twin.Wait(4, "12: again (the pipe is level-triggered now)");
  twin.Ctl(EPOLL_CTL_MOD, sfd, EPOLLOUT | EPOLLONESHOT, 78, "socket to OUT|ONESHOT");
  twin.Wait(4, "13: after MOD to OUT");
  twin.Wait(4, "14: again");
  twin.Ctl(EPOLL_CTL_DEL, pfd, 0, 0, "DEL pipe");
  twin.Ctl(EPOLL_CTL_MOD, pfd, EPOLLIN, 79, "MOD after DEL");
  twin.Ctl(EPOLL_CTL_ADD, pfd, EPOLLIN | EPOLLONESHOT, 80, "ADD pipe again");
  twin.Wait(4, "15: after ADD again");
  twin.Wait(4, "16: again");
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(Drain(sock[s].watched), 1);
    EXPECT_EQ(Drain(pipe[s].watched), 1);
  }
}

// ---- 8. A user's own kernel epoll inside an EventPoll ------------------------------------------------------------

// Each side: an inner kernel epoll (the user's, an ordinary fd) watching a pipe's read end; the kernel twin registers
// the inner epoll in its epoll, epollcr wraps it as a HostFile and registers it in the EventPoll. Both level-
// and edge-triggered links on each level.
TEST_F(HostExactTest, UsersKernelEpollNestedInAnEventPoll) {
  for (const std::uint32_t outer_flags : {0u, static_cast<std::uint32_t>(EPOLLET)}) {
    for (const std::uint32_t inner_flags : {0u, static_cast<std::uint32_t>(EPOLLET)}) {
      SCOPED_TRACE("outer " + std::string(outer_flags ? "ET" : "LT") + ", inner " + (inner_flags ? "ET" : "LT"));
      Twin twin;
      Ends pipe[2];
      int inner[2] = {-1, -1};
      for (int s = 0; s < 2; ++s) {
        pipe[s] = PipeReadEnd();
        inner[s] = ::epoll_create1(EPOLL_CLOEXEC);
        ASSERT_GE(inner[s], 0) << std::strerror(errno);
        epoll_event ev{};
        ev.events = EPOLLIN | inner_flags;
        ev.data.u64 = 81;
        ASSERT_EQ(::epoll_ctl(inner[s], EPOLL_CTL_ADD, pipe[s].watched, &ev), 0) << std::strerror(errno);
        twin.sides[s]->Own(inner[s]);
      }
      // The pipe read end is the inner epoll's; it closes with the scenario.
      UniqueFd pipe_read[2] = {UniqueFd(pipe[0].watched), UniqueFd(pipe[1].watched)};
      twin.Ctl(EPOLL_CTL_ADD, {inner[0], inner[1]}, EPOLLIN | outer_flags, 82, "add the inner epoll");
      ASSERT_FALSE(HasFailure());

      // The inner epolls themselves, waited on directly.
      auto inner_wait = [&](const std::string& step) {
        Waited w[2];
        for (int s = 0; s < 2; ++s) {
          epoll_event ev[4];
          const int n = ::epoll_wait(inner[s], ev, 4, 0);
          w[s].count = n;
          if (n < 0) w[s].error = errno;
          for (int i = 0; i < n; ++i) w[s].records.push_back({ev[i].events, ev[i].data.u64});
        }
        CompareWaits(w[kKernel], w[kOurs], step + " (the inner epoll)");
      };

      twin.Wait(4, "1: nothing written");
      for (int s = 0; s < 2; ++s) WriteByte(pipe[s].peer.get());
      twin.Wait(4, "2: after a write to the pipe");
      twin.Wait(4, "3: again");
      for (int s = 0; s < 2; ++s) WriteByte(pipe[s].peer.get());
      twin.Wait(4, "4: after a second write");
      inner_wait("5: wait on the inner epoll");
      twin.Wait(4, "6: after the inner epoll was waited on");
      inner_wait("7: the inner epoll again");
      for (int s = 0; s < 2; ++s) EXPECT_EQ(Drain(pipe_read[s].get()), 2);
      twin.Wait(4, "8: after reading the pipe (stale inner entry)");
      inner_wait("9: the inner epoll after reading");
      twin.Wait(4, "10: again");
      for (int s = 0; s < 2; ++s) WriteByte(pipe[s].peer.get());
      twin.Ctl(EPOLL_CTL_MOD, {inner[0], inner[1]}, EPOLLIN | outer_flags, 83, "MOD the inner epoll's entry");
      twin.Wait(4, "11: after a write and a MOD");
      twin.Wait(4, "12: again");
      for (int s = 0; s < 2; ++s) pipe[s].peer.Reset();
      twin.Wait(4, "13: after closing the pipe's write end");
      inner_wait("14: the inner epoll after the close");
      twin.Wait(4, "15: again");
      for (int s = 0; s < 2; ++s) Drain(pipe_read[s].get());
      twin.Wait(4, "16: after reading the rest");
      inner_wait("17: the inner epoll at the end");
    }
  }
}

// ---- 9. The kernel side cannot be made -----------------------------------------------------------------------------

// The first kernel entry makes the poll's kernel epoll (and, with in-memory entries there, its bell). When the kernel
// refuses (EMFILE here, by fault injection at each of the three calls), the ADD fails with its errno and the poll is
// as it was: no entry, no fd left open, and the next ADD works and reports like the kernel's.
TEST_F(HostExactTest, AFailureToMakeTheKernelSideFailsTheAddAndChangesNothing) {
  for (const testing::FaultPoint point :
       {testing::FaultPoint::kWaitEpollCreate, testing::FaultPoint::kWaitEventFd, testing::FaultPoint::kWaitEventFdAdd}) {
    SCOPED_TRACE(testing::FaultPointName(point));
    auto poll = EventPoll::Create();
    auto memory = EventPoll::Create();  // an in-memory entry: the poll needs a bell next to its kernel epoll
    ASSERT_FALSE(poll->AddEntry({memory.get(), 100}, EntryFlags::kNone, kEventIn, 1));
    Ends sock = SocketPair();
    Result<std::shared_ptr<HostFile>> file = HostFile::Create(sock.watched);
    ASSERT_TRUE(file.ok());
    const int fd = file.value()->fd();
    const std::size_t open_before = OpenFds();
    testing::SetFaultHook([point](const testing::FaultCall& call) {
      return call.point == point ? testing::Fault{EMFILE} : testing::Fault{};
    });
    EXPECT_EQ(poll->AddEntry({file.value().get(), fd}, EntryFlags::kNone, kEventOut, 2), Errno(EMFILE));
    testing::SetFaultHook({});
    EXPECT_EQ(poll->EntryCount(), 1u);
    EXPECT_LE(OpenFds(), open_before + 1) << "at most the kernel epoll made before the failing call stays, the poll's own";
    ASSERT_FALSE(poll->AddEntry({file.value().get(), fd}, EntryFlags::kNone, kEventOut, 2));
    Event events[4];
    Result<int> n = poll->Wait(events, 4, 0);
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(n.value(), 1);
    EXPECT_EQ(events[0].events, kEventOut);
    EXPECT_EQ(events[0].Data(), 2u);
  }
}

}  // namespace
}  // namespace epollcr
