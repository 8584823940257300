#include "epollcr/waiter_queue.h"

#include <gtest/gtest.h>

#include <vector>

namespace epollcr {
namespace {

TEST(WaiterQueueTest, NotifyCallsOnlyEntriesWhoseMaskIntersects) {
  WaiterQueue q;
  std::vector<EventMask> in_calls, out_calls;
  CallbackWaiter in(kEventIn, [&](EventMask m) { in_calls.push_back(m); });
  CallbackWaiter out(kEventOut | kEventHup, [&](EventMask m) { out_calls.push_back(m); });
  q.EventRegister(&in);
  q.EventRegister(&out);
  EXPECT_EQ(q.Events(), kEventIn | kEventOut | kEventHup);

  q.Notify(kEventIn | kEventRdNorm);
  q.Notify(kEventPri);
  q.Notify(kEventHup);
  EXPECT_EQ(in_calls, (std::vector<EventMask>{kEventIn | kEventRdNorm}));
  EXPECT_EQ(out_calls, (std::vector<EventMask>{kEventHup}));

  q.EventUnregister(&in);
  q.Notify(kAllEvents);
  EXPECT_EQ(in_calls.size(), 1u);
  EXPECT_EQ(out_calls.size(), 2u);
  EXPECT_EQ(out_calls.back(), kAllEvents);
  q.EventUnregister(&out);
  EXPECT_TRUE(q.IsEmpty());
  EXPECT_EQ(q.Events(), 0u);
}

TEST(WaiterQueueTest, NewestEntryIsNotifiedFirst) {
  WaiterQueue q;
  std::vector<int> order;
  CallbackWaiter first(kEventIn, [&](EventMask) { order.push_back(1); });
  CallbackWaiter second(kEventIn, [&](EventMask) { order.push_back(2); });
  q.EventRegister(&first);
  q.EventRegister(&second);
  q.Notify(kEventIn);
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
  q.EventUnregister(&first);
  q.EventUnregister(&second);
}

TEST(WaiterQueueTest, ForEachVisitsEveryEntry) {
  WaiterQueue q;
  CallbackWaiter a(kEventIn, [](EventMask) {});
  CallbackWaiter b(kEventOut, [](EventMask) {});
  q.EventRegister(&a);
  q.EventRegister(&b);
  EventMask seen = 0;
  int count = 0;
  q.ForEach([&](WaiterEntry& e) {
    ++count;
    EXPECT_EQ(e.WatchingPoll(), nullptr);
    seen |= (&e == &a) ? kEventIn : kEventOut;
  });
  EXPECT_EQ(count, 2);
  EXPECT_EQ(seen, kEventIn | kEventOut);
  q.EventUnregister(&a);
  q.EventUnregister(&b);
}

}  // namespace
}  // namespace epollcr
