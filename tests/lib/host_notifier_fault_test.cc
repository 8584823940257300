// Fault injection in the host notifier (lib/src/host_notifier.h): each step of its start (epoll_create1, two eventfds
// and their epoll_ctl ADDs, the thread) and the ADD of a watched fd fails in turn, with an errno value the real call
// can give. After each failure, through HostFile::Create and through HostFile::WatchAll (a restore's path):
//   - the error is the injected one;
//   - the set of open fds is what it was (the caller's fd still open, none of the notifier's left), and so is the
//     number of threads;
//   - the notifier is not running and watches nothing;
// and once the fault is gone the same fd is watched, and a write to it reaches an EventPoll through the notifier.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/host_file.h"
#include "epollcr/result.h"
#include "fault_plan.h"
#include "host_notifier.h"

namespace epollcr {
namespace {

using testing::FaultPlan;
using testing::FaultPoint;
using testing::PlannedFault;

std::set<int> OpenFds() {
  std::set<int> fds;
  DIR* d = opendir("/proc/self/fd");
  const int own = dirfd(d);
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.' && std::atoi(e->d_name) != own) fds.insert(std::atoi(e->d_name));
  }
  closedir(d);
  return fds;
}

int Threads() {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

std::string Describe(const PlannedFault& p) {
  return std::string(testing::FaultPointName(p.point)) + " #" + std::to_string(p.nth) + " fails with " +
         std::to_string(p.error);
}

// Every step a start and a watch make, each with a realistic errno.
std::vector<PlannedFault> Plans() {
  return {{FaultPoint::kNotifierEpollCreate, 1, EMFILE}, {FaultPoint::kNotifierEventFd, 1, ENFILE},
          {FaultPoint::kNotifierEventFdAdd, 1, ENOMEM},  {FaultPoint::kNotifierEventFd, 2, EMFILE},
          {FaultPoint::kNotifierEventFdAdd, 2, ENOSPC},  {FaultPoint::kNotifierThread, 1, EAGAIN},
          {FaultPoint::kNotifierWatchAdd, 1, ENOSPC}};
}

class HostNotifierFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(pipe2(pipe_, O_CLOEXEC | O_NONBLOCK), 0);
    ASSERT_FALSE(HostFile::NotifierRunning()) << "another host file is watched: this test needs the notifier idle";
  }
  void TearDown() override {
    testing::SetFaultHook({});
    close(pipe_[0]);
    close(pipe_[1]);
  }

  // Nothing is left of a failed watch: checks the fds, threads and notifier against the state before it.
  void ExpectNothingLeft(const std::string& what, const std::set<int>& fds, int threads) {
    EXPECT_EQ(OpenFds(), fds) << what;
    EXPECT_EQ(Threads(), threads) << what;
    EXPECT_FALSE(HostFile::NotifierRunning()) << what;
    EXPECT_EQ(HostFile::WatchedFds(), 0u) << what;
  }

  // With no fault: the pipe's read end is watched, and a write to the pipe reaches an EventPoll through the notifier.
  void ExpectWatchWorks(const std::string& what) {
    testing::SetFaultHook({});
    Result<std::shared_ptr<HostFile>> created = HostFile::Create(pipe_[0]);
    ASSERT_TRUE(created.ok()) << what;
    std::shared_ptr<HostFile> file = std::move(created).value();
    EXPECT_TRUE(HostFile::NotifierRunning()) << what;
    std::shared_ptr<EventPoll> poll = EventPoll::Create();
    ASSERT_FALSE(poll->AddEntry({file.get(), pipe_[0]}, EntryFlags{}, kEventIn, 7)) << what;
    ASSERT_EQ(write(pipe_[1], "x", 1), 1);
    Event event;
    const Result<int> got = poll->Wait(&event, 1, 5000);
    ASSERT_TRUE(got.ok()) << what;
    EXPECT_EQ(got.value(), 1) << what << ": the notifier did not pass the write on";
    char byte;
    ASSERT_EQ(read(pipe_[0], &byte, 1), 1);
    poll->Release();
    file->ReleaseFd();  // the pipe stays open for the next case
    file.reset();
    EXPECT_FALSE(HostFile::NotifierRunning()) << what << ": the notifier goes with its last file";
  }

  int pipe_[2] = {-1, -1};
};

TEST_F(HostNotifierFaultTest, EveryStepOfCreateFailsCleanly) {
  for (const PlannedFault& p : Plans()) {
    const std::string what = "HostFile::Create, " + Describe(p);
    const std::set<int> fds = OpenFds();
    const int threads = Threads();
    Result<std::shared_ptr<HostFile>> file = Errno(EINVAL);
    {
      FaultPlan plan({p});
      file = HostFile::Create(pipe_[0]);
    }
    ASSERT_FALSE(file.ok()) << what << ": the fault was not reached";
    EXPECT_EQ(file.error(), Errno(p.error)) << what;
    ExpectNothingLeft(what, fds, threads);
    EXPECT_NE(fcntl(pipe_[0], F_GETFD), -1) << what << ": the caller's fd was closed";
    ExpectWatchWorks(what);
  }
}

TEST_F(HostNotifierFaultTest, EveryStepOfAStartFailsCleanlyInWatchAll) {
  for (const PlannedFault& p : Plans()) {
    // WatchAll adds through syscall_batch.h, whose faults its own test injects.
    if (p.point == FaultPoint::kNotifierWatchAdd) continue;
    const std::string what = "HostFile::WatchAll, " + Describe(p);
    const std::set<int> fds = OpenFds();
    const int threads = Threads();
    Result<std::shared_ptr<HostFile>> created = HostFile::CreateUnwatched(pipe_[0], S_IFIFO);
    ASSERT_TRUE(created.ok());
    std::shared_ptr<HostFile> file = std::move(created).value();
    HostFile* files[] = {file.get()};
    std::size_t failed = 99;
    std::error_code e;
    {
      FaultPlan plan({p});
      e = HostFile::WatchAll(files, &failed);
    }
    EXPECT_EQ(e, Errno(p.error)) << what;
    EXPECT_EQ(failed, 0u) << what;
    EXPECT_FALSE(file->watched()) << what;
    file->ReleaseFd();
    file.reset();
    ExpectNothingLeft(what, fds, threads);
    ExpectWatchWorks(what);
  }
}

}  // namespace
}  // namespace epollcr
