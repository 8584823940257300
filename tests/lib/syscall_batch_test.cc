// lib/src/syscall_batch.h against the kernel's own answers: every item of a batch (through io_uring, and one at a
// time) gives what the same system call made alone gives — the same identity as fstat(2), the same errno as
// epoll_ctl(2), and an epoll instance that then reports the same events — for sockets, pipes, eventfds, a regular
// file, a directory, /dev/null, closed fds, duplicates and an epoll instance added to itself.
#include <fcntl.h>
#include <liburing.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "fault_injection.h"
#include "syscall_batch.h"
#include "temp_dir.h"

namespace epollcr::sys {
namespace {

// Whether this process can have an io_uring at all (a seccomp filter or kernel.io_uring_disabled may say no): asked
// of the kernel directly, not of the code under test.
bool KernelHasRing() {
  io_uring ring;
  if (io_uring_queue_init(8, &ring, 0) != 0) return false;
  io_uring_queue_exit(&ring);
  return true;
}

// A few hundred fds of every kind, a closed number and -1 among them. Owns what it opens.
struct Fds {
  std::vector<int> all;   // what the batch is given, in order
  std::vector<int> open;  // what to close
  int closed_number = -1;
  testing_support::TempDir dir{"syscall-batch"};

  Fds() {
    for (int i = 0; i < 60; ++i) {
      int p[2];
      EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p), 0);
      Keep(p[0]);
      Keep(p[1]);
      EXPECT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
      Keep(p[0]);
      Keep(p[1]);
      Keep(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    }
    Keep(OpenPath(dir.path() + "/regular", O_RDWR | O_CREAT | O_CLOEXEC));
    Keep(OpenPath(dir.path(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    Keep(OpenPath("/dev/null", O_RDWR | O_CLOEXEC));
    // A number far above the others, so that no fd opened meanwhile (the ring's own, an epoll) takes it again.
    closed_number = fcntl(all.front(), F_DUPFD_CLOEXEC, 15000);
    close(closed_number);
    all.insert(all.begin() + 100, closed_number);
    all.insert(all.begin() + 200, -1);
  }
  ~Fds() {
    for (int fd : open) close(fd);
  }
  Fds(const Fds&) = delete;
  Fds& operator=(const Fds&) = delete;

  static int OpenPath(const std::string& path, int flags) { return ::open(path.c_str(), flags, 0600); }
  void Keep(int fd) {
    EXPECT_GE(fd, 0);
    all.push_back(fd);
    open.push_back(fd);
  }
};

// Every item of a StatMany of f.all is what fstat says of that fd now.
void ExpectWhatFstatGives(const Fds& f, const std::vector<FileIdentity>& got, const std::vector<int>& errors) {
  std::set<std::uint32_t> types;
  for (std::size_t i = 0; i < f.all.size(); ++i) {
    struct stat st;
    const int want_error = fstat(f.all[i], &st) == 0 ? 0 : errno;
    ASSERT_EQ(errors[i], want_error) << "fd " << f.all[i];
    if (want_error != 0) continue;
    EXPECT_EQ(got[i].dev, st.st_dev) << "fd " << f.all[i];
    EXPECT_EQ(got[i].ino, st.st_ino) << "fd " << f.all[i];
    EXPECT_EQ(got[i].file_type, st.st_mode & S_IFMT) << "fd " << f.all[i];
    types.insert(got[i].file_type);
  }
  // Sockets, fifos, an anonymous inode (eventfd: no type bits), a regular file, a directory, a character device.
  EXPECT_EQ(types.size(), 6u);
  EXPECT_EQ(errors[100], EBADF);
  EXPECT_EQ(errors[200], EBADF);
}

class SyscallBatchTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { SetBatchMode(GetParam() ? BatchMode::kRing : BatchMode::kSingle); }
  void TearDown() override { SetBatchMode(BatchMode::kAuto); }
  // Whether this test's batches should have gone through a ring.
  bool ExpectRing() const { return GetParam() && KernelHasRing(); }
};

TEST_P(SyscallBatchTest, StatManyGivesWhatFstatGives) {
  Fds f;
  ASSERT_GE(f.all.size(), 300u);
  std::vector<FileIdentity> got(f.all.size());
  std::vector<int> errors(f.all.size(), -1);
  const BatchCounts before = Counts();
  StatMany(f.all, got, errors);
  const BatchCounts after = Counts();
  EXPECT_EQ(after.ring_batches - before.ring_batches, ExpectRing() ? 1u : 0u);
  EXPECT_EQ(after.single_calls - before.single_calls, ExpectRing() ? 0u : f.all.size());

  ExpectWhatFstatGives(f, got, errors);
}

TEST_P(SyscallBatchTest, EpollAddManyGivesWhatEpollCtlGives) {
  Fds f;
  const int batched = epoll_create1(EPOLL_CLOEXEC);
  const int single = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(batched, 0);
  ASSERT_GE(single, 0);
  // The same socket twice (EEXIST the second time), and each epoll instance added to itself (EINVAL).
  std::vector<int> batched_fds = f.all;
  batched_fds.push_back(f.all.front());
  std::vector<int> single_fds = batched_fds;
  batched_fds.push_back(batched);
  single_fds.push_back(single);
  std::vector<epoll_event> events(batched_fds.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    events[i].events = EPOLLIN | (i % 2 ? EPOLLET : 0u);
    events[i].data.u64 = i;
  }
  std::vector<int> errors(batched_fds.size(), -1);
  const BatchCounts before = Counts();
  EpollAddMany(batched, batched_fds, events, errors);
  EXPECT_EQ(Counts().ring_batches - before.ring_batches, ExpectRing() ? 1u : 0u);

  std::set<int> seen;
  for (std::size_t i = 0; i < single_fds.size(); ++i) {
    epoll_event ev = events[i];
    const int want = epoll_ctl(single, EPOLL_CTL_ADD, single_fds[i], &ev) == 0 ? 0 : errno;
    EXPECT_EQ(errors[i], want) << "item " << i << " fd " << single_fds[i];
    seen.insert(want);
  }
  EXPECT_EQ(seen, (std::set<int>{0, EBADF, EEXIST, EINVAL, EPERM}));

  // Both instances now report the same ready fds: write to every tenth eventfd and socket.
  for (std::size_t i = 0; i < f.open.size(); i += 10) {
    const std::uint64_t one = 1;
    if (write(f.open[i], &one, sizeof one) < 0) continue;  // a pipe's read end, a directory: not writable
  }
  auto ready = [](int epfd) {
    std::vector<std::uint64_t> keys;
    epoll_event out[512];
    const int n = epoll_wait(epfd, out, 512, 0);
    for (int i = 0; i < n; ++i) keys.push_back(std::uint64_t{out[i].data.u64});  // a copy: the field is packed
    std::sort(keys.begin(), keys.end());
    return keys;
  };
  const std::vector<std::uint64_t> from_batch = ready(batched);
  EXPECT_FALSE(from_batch.empty());
  EXPECT_EQ(from_batch, ready(single));
  close(batched);
  close(single);
}

TEST_P(SyscallBatchTest, SmallBatchesGoOneAtATime) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  std::vector<int> fds(10, p[0]);
  std::vector<FileIdentity> got(fds.size());
  std::vector<int> errors(fds.size(), -1);
  const BatchCounts before = Counts();
  StatMany(fds, got, errors);
  EXPECT_EQ(Counts().ring_batches, before.ring_batches);
  EXPECT_EQ(Counts().single_calls - before.single_calls, fds.size());
  EXPECT_EQ(errors, std::vector<int>(fds.size(), 0));
  close(p[0]);
  close(p[1]);
}

testing::Fault FailEvery7th(const testing::FaultCall& call) {
  return {.error = call.point == testing::FaultPoint::kBatchEpollAdd && call.item % 7 == 3 ? ENOMEM : 0};
}

TEST_P(SyscallBatchTest, AnInjectedFaultIsThatItemsResultAndItsCallIsNotMade) {
  Fds f;
  std::vector<int> fds(f.open.begin(), f.open.begin() + 100);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<epoll_event> events(fds.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    events[i].events = EPOLLIN;
    events[i].data.u64 = i;
  }
  std::vector<int> errors(fds.size(), -1);
  testing::SetFaultHook(FailEvery7th);
  EpollAddMany(ep, fds, events, errors);
  testing::SetFaultHook({});
  for (std::size_t i = 0; i < fds.size(); ++i) {
    EXPECT_EQ(errors[i], i % 7 == 3 ? ENOMEM : 0) << "item " << i;
    // Registered exactly when it succeeded: a second ADD says EEXIST, a DEL of one that was not made ENOENT.
    EXPECT_EQ(epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], nullptr) == 0 ? 0 : errno, i % 7 == 3 ? ENOENT : 0) << "item " << i;
  }
  close(ep);
}

// The default mode measures each kind of batch once, on the first items of its first batch, and keeps the cheaper
// path: the results are fstat's whichever path each item took, and the next batch takes the kept path without
// measuring again.
TEST(SyscallBatchAutoTest, TheFirstBatchMeasuresBothPathsAndLaterBatchesKeepTheCheaperOne) {
  ForgetChoices();
  Fds f;
  const std::size_t n = f.all.size();
  std::vector<FileIdentity> got(n);
  std::vector<int> errors(n, -1);
  BatchCounts before = Counts();
  StatMany(f.all, got, errors);
  BatchCounts after = Counts();
  ExpectWhatFstatGives(f, got, errors);
  const PathChoice choice = ChoiceOf(BatchKind::kStat);
  if (!KernelHasRing()) {
    EXPECT_FALSE(choice.measured);
    EXPECT_EQ(after.single_calls - before.single_calls, n);
    return;
  }
  ASSERT_TRUE(choice.measured);
  EXPECT_GT(choice.single_ns, 0.0);
  EXPECT_GT(choice.ring_ns, 0.0);
  EXPECT_EQ(choice.ring, choice.ring_ns < choice.single_ns);
  EXPECT_EQ(after.ring_batches - before.ring_batches, 1u);
  // Two rounds of min(32, n/16) items alone and min(256, n/4) on the ring; then the rest on the path kept.
  const std::size_t alone = std::min<std::size_t>(32, n / 16), ringed = std::min<std::size_t>(256, n / 4);
  EXPECT_EQ(after.single_calls - before.single_calls, choice.ring ? 2 * alone : n - 2 * ringed);
  EXPECT_FALSE(ChoiceOf(BatchKind::kEpollAdd).measured) << "each kind is measured on its own";

  std::fill(errors.begin(), errors.end(), -1);
  before = Counts();
  StatMany(f.all, got, errors);
  after = Counts();
  ExpectWhatFstatGives(f, got, errors);
  EXPECT_EQ(after.ring_batches - before.ring_batches, choice.ring ? 1u : 0u);
  EXPECT_EQ(after.single_calls - before.single_calls, choice.ring ? 0u : n);
  EXPECT_EQ(ChoiceOf(BatchKind::kStat).ring_ns, choice.ring_ns) << "measured once";
}

INSTANTIATE_TEST_SUITE_P(RingAndSingle, SyscallBatchTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Ring" : "Single"; });

}  // namespace
}  // namespace epollcr::sys
