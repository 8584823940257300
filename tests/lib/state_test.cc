// The state model and the Boost backend: structure survives save -> load, output is deterministic, policy
// violations and hand-made wait cycles are refused with a message that says where, corrupt archives never load.
#include <gtest/gtest.h>

#include <boost/archive/text_oarchive.hpp>
#include <sstream>
#include <thread>

#include "epollcr/boost_world.h"
#include "epollcr/epollcr.h"
#include "event_poll_internal.h"
#include "state/visitors.h"
#include "state/world_archive.h"
#include "world_fixtures.h"

namespace epollcr {
namespace {

using testing::BuildWorld;
using testing::Describe;

constexpr ArchiveFormat kFormats[] = {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary};

TEST(StateTest, PoliciesAreDeclaredForEveryField) {
  state::Describe d;
  auto poll = EventPoll::Create();
  poll->impl()->VisitState(d);
  bool waiters_zero = false;
  for (auto& [name, policy] : d.fields) waiters_zero |= name == "waiters" && policy == FieldPolicy::kZeroValue;
  EXPECT_TRUE(waiters_zero);
  EXPECT_STREQ(FieldPolicyName(FieldPolicy::kWait), "wait");
}

TEST(StateTest, RoundTripKeepsEveryEntryListAndFileState) {
  for (ArchiveFormat format : kFormats) {
    World a;
    BuildWorld(a);
    const std::string before = Describe(a);
    StatusOr<std::string> bytes = SaveWorld(a, format);
    ASSERT_TRUE(bytes.ok()) << bytes.status.message;
    World b;
    Status s = LoadWorld(bytes.value, &b);
    ASSERT_TRUE(s.ok()) << ArchiveFormatName(format) << ": " << s.message;
    EXPECT_EQ(Describe(b), before) << ArchiveFormatName(format);
    // Deterministic: save, load, save again gives the same bytes.
    StatusOr<std::string> again = SaveWorld(b, format);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again.value, bytes.value) << ArchiveFormatName(format);
  }
}

TEST(StateTest, RestoredWorldBehavesLikeTheOriginal) {
  for (ArchiveFormat format : kFormats) {
    World a, b;
    BuildWorld(a);
    StatusOr<std::string> bytes = SaveWorld(a, format);
    ASSERT_TRUE(bytes.ok());
    ASSERT_TRUE(LoadWorld(bytes.value, &b).ok());
    for (World* w : {&a, &b}) {  // the same later operations on both: a byte to s[1], 2 to the eventfd's dup
      const std::byte one[1] = {};
      ASSERT_TRUE(sys::Write(w->fds, 6, one).ok());
      const std::uint64_t two = 2;
      ASSERT_TRUE(sys::Write(w->fds, 7, std::as_bytes(std::span(&two, 1))).ok());
    }
    for (int round = 0; round < 4; ++round) {
      Event ea[8], eb[8];
      Result<int> na = sys::EpollWait(a.fds, 0, ea, 8, 0);
      Result<int> nb = sys::EpollWait(b.fds, 0, eb, 8, 0);
      ASSERT_EQ(na.value(), nb.value()) << ArchiveFormatName(format) << " round " << round;
      for (int i = 0; i < na.value(); ++i) {
        EXPECT_EQ(ea[i].events, eb[i].events);
        EXPECT_EQ(ea[i].Data(), eb[i].Data());
      }
    }
  }
}

TEST(StateTest, SavingWhileAThreadIsBlockedInWaitFailsNamingTheField) {
  World w;
  int ep = sys::EpollCreate1(w.fds, 0).value();
  int efd = sys::EventFd(w.fds, 0, false).value();
  Event e{kEventIn, {}};
  ASSERT_FALSE(sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, efd, &e));
  auto poll = std::dynamic_pointer_cast<EventPoll>(w.fds.Get(ep));
  std::thread waiter([&] {
    Event ev[1];
    (void)poll->Wait(ev, 1, -1);
  });
  while (poll->BlockedWaiters() == 0) std::this_thread::yield();
  StatusOr<std::string> bytes = SaveWorld(w, ArchiveFormat::kBoostText);
  EXPECT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status.message.find("eventpoll#1 field waiters"), std::string::npos) << bytes.status.message;
  ASSERT_TRUE(std::dynamic_pointer_cast<EventFd>(w.fds.Get(efd))->WriteValue(1) == std::error_code{});
  waiter.join();
  EXPECT_TRUE(SaveWorld(w, ArchiveFormat::kBoostText).ok());
}

TEST(StateTest, EntryWhoseFileIsOutsideTheWorldFailsTheSave) {
  World w;
  auto outside = EventFd::Create();
  int ep = sys::EpollCreate1(w.fds, 0).value();
  auto poll = std::dynamic_pointer_cast<EventPoll>(w.fds.Get(ep));
  ASSERT_FALSE(poll->AddEntry({outside.get(), 9}, EntryFlags::kNone, kEventIn, 0));
  StatusOr<std::string> bytes = SaveWorld(w, ArchiveFormat::kBoostXml);
  EXPECT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status.message.find("not in the world"), std::string::npos) << bytes.status.message;
  w.roots["outside"] = outside;  // owned by the world: now it saves
  EXPECT_TRUE(SaveWorld(w, ArchiveFormat::kBoostXml).ok());
}

// Layout 2 keeps a poll's entries as columns of decimal numbers; a hand-made archive with a bad column is refused
// with the column's name, and leaves nothing behind.
TEST(StateTest, BadEntryColumnsAreLoadErrors) {
  struct Case {
    const char* fds;
    const char* lists;
    const char* message;
  };
  for (const Case& c : {Case{"3 x", "1 1", "eventpoll#1 column fds: not a number"},
                        Case{"3 4 5", "1 1", "column fds: more than 2 numbers"},
                        Case{"3", "1 1", "column fds: 1 numbers for 2 entries"},
                        Case{"3  4", "1 1", "column fds: not a number"},
                        Case{"3 4", "1 7", "entry 1: unknown list"},
                        Case{"3 4", "1 300", "column lists: not a number, or out of range"}}) {
    std::ostringstream os;
    {
      boost::archive::text_oarchive ar(os);
      std::uint32_t layout = 2;
      std::uint64_t zero = 0, two = 2, one = 1, n = 2;
      ar << layout << zero << two;  // no shared objects; two files: a poll and an eventfd
      std::string poll = "eventpoll", efd = "eventfd";
      ar << one << poll << two << efd;
      std::uint64_t count = 0;
      bool semaphore = false;
      ar << n << std::string(c.fds) << std::string("2 2") << std::string("25 25") << std::string("7 8")
         << std::string(c.lists) << std::string("0 1");
      std::vector<std::uint32_t> ready;
      ar << ready << count << semaphore;  // the eventfd's fields
      ar << zero << zero;                 // no fds, no roots
    }
    const long live_before = File::LiveFiles();
    std::istringstream is(os.str());
    boost::archive::text_iarchive ar(is);
    World w;
    Status s = state::LoadWorldFrom(ar, &w);
    ASSERT_FALSE(s.ok()) << c.fds << " / " << c.lists;
    EXPECT_NE(s.message.find(c.message), std::string::npos) << s.message;
    EXPECT_EQ(File::LiveFiles(), live_before);
  }
}

// Two polls each watching the other cannot be built through the API (ELOOP); written by hand, the load refuses it.
TEST(StateTest, HandMadeWaitCycleIsALoadError) {
  std::ostringstream os;
  {
    boost::archive::text_oarchive ar(os);
    std::uint32_t layout = 1;
    std::uint64_t zero = 0, two = 2, one = 1;
    ar << layout << zero << two;  // no shared objects; two files
    for (std::uint64_t id : {1, 2}) {
      std::string kind = "eventpoll";
      ar << id << kind;
    }
    for (std::uint64_t other : {2, 1}) {  // each poll: one entry watching the other
      std::int32_t fd = static_cast<std::int32_t>(other);
      std::uint32_t events = kEventIn | kAlwaysReported;
      std::uint64_t data = 0;
      EntryList list = EntryList::kWaiting;
      std::vector<std::uint32_t> ready;
      std::uint32_t queue_rank = 0;
      ar << one << fd << other << events << data << list << queue_rank << ready;
    }
    ar << zero << zero;  // no fds, no roots
  }
  const long live_before = File::LiveFiles();
  std::istringstream is(os.str());
  boost::archive::text_iarchive ar(is);
  World w;
  Status s = state::LoadWorldFrom(ar, &w);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message.find("wait cycle"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("eventpoll#1"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("eventpoll#2"), std::string::npos) << s.message;
  EXPECT_EQ(File::LiveFiles(), live_before);
}

TEST(StateTest, EveryTruncationAndByteFlipIsRefused) {
  const long live_before = File::LiveFiles();
  for (ArchiveFormat format : kFormats) {
    std::string bytes;
    {
      World w;
      int ep = sys::EpollCreate1(w.fds, 0).value();
      int efd = sys::EventFd(w.fds, 1, false).value();
      Event e{kEventIn | kEpollEdgeTriggered, {}};
      ASSERT_FALSE(sys::EpollCtl(w.fds, ep, sys::kEpollCtlAdd, efd, &e));
      StatusOr<std::string> saved = SaveWorld(w, format);
      ASSERT_TRUE(saved.ok());
      bytes = saved.value;
    }
    for (std::size_t len = 0; len < bytes.size(); ++len) {
      World w;
      EXPECT_FALSE(LoadWorld(std::string_view(bytes).substr(0, len), &w).ok()) << "truncated at " << len;
      EXPECT_EQ(w.fds.Count(), 0);
    }
    for (std::size_t at = 0; at < bytes.size(); ++at) {
      for (unsigned char bit : {0x01, 0x80}) {
        std::string bad = bytes;
        bad[at] = static_cast<char>(bad[at] ^ bit);
        World w;
        EXPECT_FALSE(LoadWorld(bad, &w).ok()) << ArchiveFormatName(format) << " flip at " << at;
      }
    }
  }
  EXPECT_EQ(File::LiveFiles(), live_before);
}

}  // namespace
}  // namespace epollcr
