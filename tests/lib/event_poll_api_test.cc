// EventPoll through its C++ API: argument checks, ownership, inspection and the save/restore hooks. Behaviour that
// a trace can express is checked against the kernel by tests/cli (replay); these are the parts only the API has.
#include <gtest/gtest.h>

#include <array>

#include "epollcr/epollcr.h"

namespace epollcr {
namespace {

std::vector<std::uint64_t> DataOf(EventPoll& poll, int max) {
  std::vector<Event> events(static_cast<std::size_t>(max));
  Result<int> n = poll.ReadEvents(events.data(), max);
  EXPECT_TRUE(n.ok());
  std::vector<std::uint64_t> out;
  for (int i = 0; i < n.value(); ++i) out.push_back(events[static_cast<std::size_t>(i)].Data());
  return out;
}

TEST(EventPollApiTest, EventIsLaidOutLikeEpollEvent) {
  Event e;
  e.SetData(0x0102030405060708ULL);
  EXPECT_EQ(e.Data(), 0x0102030405060708ULL);
  EXPECT_EQ(e.data[0], 0x05060708u);
  EXPECT_EQ(sizeof(Event), 12u);
}

TEST(EventPollApiTest, MisuseReturnsErrnoAndChangesNothing) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  EXPECT_EQ(poll->AddEntry({nullptr, 3}, EntryFlags::kNone, kEventIn, 0), Errno(EBADF));
  EXPECT_EQ(poll->AddEntry({poll.get(), 3}, EntryFlags::kNone, kEventIn, 0), Errno(EINVAL));
  EXPECT_EQ(poll->AddEntry({efd.get(), 3}, EntryFlags::kNone, kEventIn | kEpollOneShot, 0), Errno(EINVAL));
  auto unmanaged = std::make_shared<EventFd>(0, false);  // not made by MakeFile: cannot be watched
  EXPECT_EQ(poll->AddEntry({unmanaged.get(), 4}, EntryFlags::kNone, kEventIn, 0), Errno(EINVAL));
  EXPECT_EQ(poll->UpdateEntry({efd.get(), 3}, EntryFlags::kNone, kEventIn, 0), Errno(ENOENT));
  EXPECT_EQ(poll->RemoveEntry({efd.get(), 3}), Errno(ENOENT));
  EXPECT_EQ(poll->RemoveEntry({nullptr, 3}), Errno(EBADF));
  std::array<Event, 4> ev{};
  EXPECT_EQ(poll->ReadEvents(ev.data(), 0).error(), Errno(EINVAL));
  EXPECT_EQ(poll->ReadEvents(ev.data(), -1).error(), Errno(EINVAL));
  EXPECT_EQ(poll->ReadEvents(nullptr, 1).error(), Errno(EFAULT));
  EXPECT_EQ(poll->Wait(ev.data(), kMaxEvents + 1, 0).error(), Errno(EINVAL));
  EXPECT_EQ(poll->EntryCount(), 0u);
}

TEST(EventPollApiTest, DuplicateAddKeepsTheFirstRegistration) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  ASSERT_FALSE(poll->AddEntry({efd.get(), 5}, EntryFlags::kNone, kEventIn, 1));
  EXPECT_EQ(poll->AddEntry({efd.get(), 5}, EntryFlags::kEdgeTriggered, kEventOut, 2), Errno(EEXIST));
  auto entries = poll->Entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].events, kEventIn | kEventErr | kEventHup);
  EXPECT_EQ(entries[0].data, 1u);
  // The same file under another fd is another entry (epoll(7), Q1).
  EXPECT_FALSE(poll->AddEntry({efd.get(), 6}, EntryFlags::kNone, kEventOut, 2));
  EXPECT_EQ(poll->EntryCount(), 2u);
}

TEST(EventPollApiTest, ExclusiveRules) {
  auto poll = EventPoll::Create();
  auto inner = EventPoll::Create();
  auto efd = EventFd::Create();
  EXPECT_EQ(poll->AddEntry({efd.get(), 1}, EntryFlags::kExclusive | EntryFlags::kOneShot, kEventIn, 0), Errno(EINVAL));
  EXPECT_EQ(poll->AddEntry({efd.get(), 1}, EntryFlags::kExclusive, kEventIn | kEventRdHup, 0), Errno(EINVAL));
  EXPECT_EQ(poll->AddEntry({inner.get(), 2}, EntryFlags::kExclusive, kEventIn, 0), Errno(EINVAL));
  EXPECT_EQ(poll->UpdateEntry({efd.get(), 1}, EntryFlags::kExclusive, kEventIn, 0), Errno(EINVAL));  // not ENOENT
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kExclusive | EntryFlags::kEdgeTriggered,
                              kEventIn | kEventOut, 7));
  EXPECT_EQ(poll->UpdateEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 8), Errno(EINVAL));
  EXPECT_EQ(poll->Entries()[0].data, 7u);
  EXPECT_FALSE(poll->RemoveEntry({efd.get(), 1}));
}

TEST(EventPollApiTest, EntryDoesNotKeepItsFileAlive) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create(1);
  ASSERT_FALSE(poll->AddEntry({efd.get(), 3}, EntryFlags::kNone, kEventIn, 9));
  EXPECT_EQ(poll->ReadyList().size(), 1u);
  std::weak_ptr<EventFd> weak = efd;
  efd.reset();
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(poll->EntryCount(), 0u);
  EXPECT_TRUE(poll->ReadyList().empty());
  EXPECT_TRUE(DataOf(*poll, 4).empty());
}

TEST(EventPollApiTest, ReleasingThePollUnregistersFromEveryFile) {
  auto efd = EventFd::Create();
  auto pipe = NewPipe();
  {
    auto poll = EventPoll::Create();
    ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 0));
    ASSERT_FALSE(poll->AddEntry({pipe.read.get(), 2}, EntryFlags::kEdgeTriggered, kEventIn, 0));
    EXPECT_FALSE(efd->queue().IsEmpty());
  }
  EXPECT_TRUE(efd->queue().IsEmpty());
  EXPECT_TRUE(pipe.read->queue().IsEmpty());
}

TEST(EventPollApiTest, ReleaseEmptiesThePollAndKeepsItUsable) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create(1);
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 0));
  poll->Release();
  EXPECT_EQ(poll->EntryCount(), 0u);
  EXPECT_TRUE(efd->queue().IsEmpty());
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 4));
  EXPECT_EQ(DataOf(*poll, 4), (std::vector<std::uint64_t>{4}));
}

// A file that records, in its own destructor, how many entries its poll still has.
class CountsAtDestruction final : public File {
 public:
  CountsAtDestruction(const EventPoll* poll, std::size_t* seen) : poll_(poll), seen_(seen) {}
  ~CountsAtDestruction() override { *seen_ = poll_->EntryCount(); }
  EventMask Readiness(EventMask) override { return 0; }
  std::string_view TypeName() const override { return "counts-at-destruction"; }

 private:
  const EventPoll* poll_;
  std::size_t* seen_;
};

// file.h: the last reference removes the file from its polls before the file's own destructor runs (Linux:
// eventpoll_release() in __fput()), also for a final type, and while a weak reference keeps its memory.
TEST(EventPollApiTest, TheLastReferenceLeavesThePollsBeforeTheDestructor) {
  auto poll = EventPoll::Create();
  std::size_t seen = ~std::size_t{0};
  auto file = MakeFile<CountsAtDestruction>(poll.get(), &seen);
  ASSERT_FALSE(poll->AddEntry({file.get(), 3}, EntryFlags::kNone, kEventIn, 0));
  ASSERT_FALSE(poll->AddEntry({file.get(), 4}, EntryFlags::kNone, kEventIn, 0));
  std::weak_ptr<File> weak = file;
  const long live = File::LiveFiles();
  file.reset();
  EXPECT_EQ(seen, 0u);
  EXPECT_EQ(poll->EntryCount(), 0u);
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(File::LiveFiles(), live - 1);
}

TEST(EventPollApiTest, DroppingAnInnerPollRemovesItFromTheOuter) {
  auto outer = EventPoll::Create();
  auto inner = EventPoll::Create();
  auto efd = EventFd::Create(1);
  ASSERT_FALSE(inner->AddEntry({efd.get(), 1}, EntryFlags::kNone, kEventIn, 0));
  ASSERT_FALSE(outer->AddEntry({inner.get(), 2}, EntryFlags::kNone, kEventIn, 22));
  EXPECT_EQ(DataOf(*outer, 4), (std::vector<std::uint64_t>{22}));
  inner.reset();
  EXPECT_EQ(outer->EntryCount(), 0u);
  EXPECT_TRUE(DataOf(*outer, 4).empty());
  EXPECT_TRUE(efd->queue().IsEmpty());
}

TEST(EventPollApiTest, UnregisteredWaitersMissWakeUpsUntilRegisteredAgain) {
  auto poll = EventPoll::Create();
  auto efd = EventFd::Create();
  ASSERT_FALSE(poll->AddEntry({efd.get(), 1}, EntryFlags::kEdgeTriggered, kEventIn, 3));
  poll->UnregisterEpollWaiters();
  EXPECT_TRUE(efd->queue().IsEmpty());
  ASSERT_FALSE(efd->WriteValue(1));
  EXPECT_TRUE(DataOf(*poll, 4).empty());  // the wake-up went nowhere
  poll->RegisterEpollWaiters();           // after_load: re-register, then re-check readiness
  EXPECT_EQ(DataOf(*poll, 4), (std::vector<std::uint64_t>{3}));
  EXPECT_TRUE(DataOf(*poll, 4).empty());
}

TEST(EventPollApiTest, ListsAreVisibleThroughInspection) {
  auto poll = EventPoll::Create();
  auto a = EventFd::Create(1);
  auto b = EventFd::Create(0);
  auto c = EventFd::Create(1);
  ASSERT_FALSE(poll->AddEntry({a.get(), 1}, EntryFlags::kOneShot, kEventIn, 1));
  ASSERT_FALSE(poll->AddEntry({b.get(), 2}, EntryFlags::kNone, kEventIn, 2));
  ASSERT_FALSE(poll->AddEntry({c.get(), 3}, EntryFlags::kNone, kEventIn, 3));
  auto ready = poll->ReadyList();
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_EQ(ready[0].data, 1u);
  EXPECT_EQ(ready[1].data, 3u);
  EXPECT_EQ(DataOf(*poll, 1), (std::vector<std::uint64_t>{1}));
  for (const EntryInfo& e : poll->Entries()) {
    if (e.data == 1) {
      EXPECT_EQ(e.list, EntryList::kDisabled);
      EXPECT_EQ(e.events, kEpollOneShot);  // only flag bits once fired (fs/eventpoll.c)
    } else if (e.data == 2) {
      EXPECT_EQ(e.list, EntryList::kWaiting);
    } else {
      EXPECT_EQ(e.list, EntryList::kReady);
    }
  }
}

TEST(EventPollApiTest, ReleasingManyFilesEmptiesThePoll) {
  auto poll = EventPoll::Create();
  std::vector<std::shared_ptr<EventFd>> files;
  for (int i = 0; i < 1000; ++i) {
    files.push_back(EventFd::Create());
    ASSERT_FALSE(poll->AddEntry({files.back().get(), i}, EntryFlags::kNone, kEventIn, 0));
  }
  EXPECT_EQ(poll->EntryCount(), 1000u);
  files.clear();
  EXPECT_EQ(poll->EntryCount(), 0u);
}

}  // namespace
}  // namespace epollcr
