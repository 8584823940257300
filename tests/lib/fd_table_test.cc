#include "epollcr/fd_table.h"

#include <gtest/gtest.h>

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"

namespace epollcr {
namespace {

TEST(FdTableTest, InstallsAtLowestFreeNumber) {
  FdTable fds;
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 0);
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 1);
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 2);
  EXPECT_FALSE(fds.Close(1));
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 1);
  EXPECT_FALSE(fds.Close(0));
  EXPECT_EQ(fds.Dup(2).value(), 0);
  EXPECT_EQ(fds.Get(0), fds.Get(2));
  EXPECT_EQ(fds.Count(), 3);
  fds.Clear();
  EXPECT_EQ(fds.Count(), 0);
}

TEST(FdTableTest, ErrorsChangeNothing) {
  FdTable fds(2);
  EXPECT_EQ(fds.Install(nullptr).error(), Errno(EBADF));
  EXPECT_EQ(fds.Close(0), Errno(EBADF));
  EXPECT_EQ(fds.Close(-1), Errno(EBADF));
  EXPECT_EQ(fds.Dup(7).error(), Errno(EBADF));
  EXPECT_EQ(fds.Count(), 0);
  ASSERT_TRUE(fds.Install(EventFd::Create()).ok());
  ASSERT_TRUE(fds.Dup(0).ok());
  EXPECT_EQ(fds.Dup(0).error(), Errno(EMFILE));
  EXPECT_EQ(fds.Install(EventFd::Create()).error(), Errno(EMFILE));
  EXPECT_EQ(fds.Count(), 2);
  EXPECT_EQ(fds.InstallAt(1, EventFd::Create()), Errno(EBUSY));
  EXPECT_EQ(fds.InstallAt(5, EventFd::Create()), Errno(EBADF));
}

TEST(FdTableTest, InstallAtLeavesGapsFree) {
  FdTable fds;
  EXPECT_FALSE(fds.InstallAt(3, EventFd::Create()));
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 0);
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 1);
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 2);
  EXPECT_EQ(fds.Install(EventFd::Create()).value(), 4);
  auto snap = fds.Snapshot();
  ASSERT_EQ(snap.size(), 5u);
  EXPECT_EQ(snap[3].first, 3);
}

TEST(FdTableTest, LastCloseReleasesTheFileFromPolls) {
  FdTable fds;
  auto poll = EventPoll::Create();
  int a = fds.Install(EventFd::Create()).value();
  int b = fds.Dup(a).value();
  std::weak_ptr<File> weak = fds.Get(a);
  ASSERT_FALSE(poll->AddEntry({fds.Get(a).get(), a}, EntryFlags::kNone, kEventIn, 1));
  EXPECT_FALSE(fds.Close(a));  // b still refers to the file: the entry stays
  EXPECT_EQ(poll->EntryCount(), 1u);
  EXPECT_FALSE(weak.expired());
  EXPECT_FALSE(fds.Close(b));  // last reference: released and removed
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(poll->EntryCount(), 0u);
}

}  // namespace
}  // namespace epollcr
