// Blocking Wait: timeouts and wake-ups from other threads (epoll_wait(2)). Threads are synchronized
// through BlockedWaiters() and joins, never through sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "epollcr/epollcr.h"

namespace epollcr {
namespace {

using Clock = std::chrono::steady_clock;

void WaitUntilBlocked(const EventPoll& poll, int n) {
  while (poll.BlockedWaiters() < n) std::this_thread::yield();
}

TEST(EventPollThreadsTest, TimeoutReturnsZeroAfterAtLeastTheTimeout) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 0));
  Event ev[4];
  const auto start = Clock::now();
  Result<int> n = poll->Wait(ev, 4, 100);
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n.value(), 0);
  EXPECT_GE(elapsed, std::chrono::milliseconds(100));
  // An empty poll also just times out (TimeoutNoFds).
  auto empty = EventPoll::Create();
  EXPECT_EQ(empty->Wait(ev, 4, 20).value(), 0);
}

TEST(EventPollThreadsTest, WriteFromAnotherThreadWakesABlockedWait) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 77));
  std::thread writer([&] {
    WaitUntilBlocked(*poll, 1);
    ASSERT_FALSE(efd->WriteValue(1));
  });
  Event ev[4];
  Result<int> n = poll->Wait(ev, 4, -2);  // any negative timeout blocks (item 65)
  writer.join();
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(n.value(), 1);
  EXPECT_EQ(ev[0].events, kEventIn);
  EXPECT_EQ(ev[0].Data(), 77u);
}

TEST(EventPollThreadsTest, AddOfAReadyFileFromAnotherThreadWakesABlockedWait) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  std::thread adder([&] {
    WaitUntilBlocked(*poll, 1);
    ASSERT_FALSE(poll->AddEntry({efd.get(), 4}, EntryFlags::kNone, kEventIn | kEventOut, 0xdeadbeeffacefeedULL));
  });
  Event ev[4];
  Result<int> n = poll->Wait(ev, 4, -1);
  adder.join();
  ASSERT_EQ(n.value(), 1);
  EXPECT_EQ(ev[0].Data(), 0xdeadbeeffacefeedULL);
}

TEST(EventPollThreadsTest, StaleReadyEntryDoesNotEndABlockingWait) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 5));
  ASSERT_FALSE(efd->WriteValue(1));
  ASSERT_TRUE(efd->ReadValue().ok());  // queued, but no longer ready
  std::thread writer([&] {
    WaitUntilBlocked(*poll, 1);
    ASSERT_FALSE(efd->WriteValue(2));
  });
  Event ev[4];
  Result<int> n = poll->Wait(ev, 4, -1);  // never returns 0 (item 41)
  writer.join();
  ASSERT_EQ(n.value(), 1);
  EXPECT_EQ(ev[0].Data(), 5u);
}

TEST(EventPollThreadsTest, LevelTriggeredWakesEveryWaiter) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 0));
  std::atomic<int> got{0};
  auto waiter = [&] {
    Event ev[1];
    Result<int> n = poll->Wait(ev, 1, -1);
    if (n.ok() && n.value() == 1) got.fetch_add(1);
  };
  std::thread t1(waiter), t2(waiter);
  WaitUntilBlocked(*poll, 2);
  ASSERT_FALSE(efd->WriteValue(1));
  t1.join();
  t2.join();
  EXPECT_EQ(got.load(), 2);  // epoll9 / epoll64
}

TEST(EventPollThreadsTest, NestedPollWakesItsWatchers) {
  auto outer = EventPoll::Create();
  auto inner = EventPoll::Create();
  auto pipe = NewPipe();
  ASSERT_FALSE(inner->AddEntry({pipe.read.get(), 1}, EntryFlags::kNone, kEventIn | kEventHup, 10));
  ASSERT_FALSE(outer->AddEntry({inner.get(), 2}, EntryFlags::kNone, kEventIn | kEventHup, 20));
  for (int round = 0; round < 2; ++round) {  // DoubleLayerEpoll
    std::thread writer([&] {
      WaitUntilBlocked(*outer, 1);
      const std::byte b{1};
      ASSERT_EQ(pipe.write->Write({&b, 1}).value(), 1u);
    });
    Event ev[2];
    ASSERT_EQ(outer->Wait(ev, 2, 5000).value(), 1);
    EXPECT_EQ(ev[0].Data(), 20u);
    ASSERT_EQ(inner->Wait(ev, 2, 5000).value(), 1);
    EXPECT_EQ(ev[0].Data(), 10u);
    writer.join();
    std::byte drain[8];
    ASSERT_EQ(pipe.read->Read(drain).value(), 1u);
  }
}

}  // namespace
}  // namespace epollcr
