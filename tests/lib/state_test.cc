// The state model and the Boost backend: structure survives save -> load, output is deterministic, policy
// violations and hand-made wait cycles are refused with a message that says where, corrupt archives never load.
#include <gtest/gtest.h>

#include <boost/archive/text_oarchive.hpp>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "epollcr/boost_world.h"
#include "epollcr/crc32c.h"
#include "epollcr/epollcr.h"
#include "event_poll_internal.h"
#include "archive/bounded_archives.h"
#include "archive/fields.h"
#include "state/visitors.h"
#include "archive/world_archive.h"
#include "world_fixtures.h"

namespace epollcr {
namespace {

using testing::BuildWorld;
using testing::Describe;
using testing::Envelope;

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
    Result<std::string> bytes = SaveWorld(a, format);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message;
    World b;
    Status s = LoadWorld(bytes.value(), &b);
    ASSERT_TRUE(s.ok()) << ArchiveFormatName(format) << ": " << s.message;
    EXPECT_EQ(Describe(b), before) << ArchiveFormatName(format);
    // Deterministic: save, load, save again gives the same bytes.
    Result<std::string> again = SaveWorld(b, format);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again.value(), bytes.value()) << ArchiveFormatName(format);
  }
}

TEST(StateTest, RestoredWorldBehavesLikeTheOriginal) {
  for (ArchiveFormat format : kFormats) {
    World a, b;
    BuildWorld(a);
    Result<std::string> bytes = SaveWorld(a, format);
    ASSERT_TRUE(bytes.ok());
    ASSERT_TRUE(LoadWorld(bytes.value(), &b).ok());
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

// A load puts the entries of its small polls in blocks they share (EntryChunks) and a large poll's in a block of its
// own. A block outlives the polls that let it go first: the last poll of a shared block still works once the others
// are closed (AddressSanitizer would see an entry in a freed block), and so does the large poll.
TEST(StateTest, PollsOfALoadShareEntryBlocksThatLiveWhileOneOfThemDoes) {
  for (ArchiveFormat format : kFormats) {
    World a;
    const int efd = sys::EventFd(a.fds, 0, false).value();
    std::vector<int> small;
    for (int i = 0; i < 200; ++i) {
      small.push_back(sys::EpollCreate1(a.fds, 0).value());
      Event e{kEventIn, {}};
      e.SetData(static_cast<std::uint64_t>(i));
      ASSERT_FALSE(sys::EpollCtl(a.fds, small.back(), sys::kEpollCtlAdd, efd, &e));
    }
    const int large = sys::EpollCreate1(a.fds, 0).value();
    for (int i = 0; i < 100; ++i) {
      Event e{kEventIn, {}};
      ASSERT_FALSE(sys::EpollCtl(a.fds, large, sys::kEpollCtlAdd, small[i], &e));
    }
    Result<std::string> bytes = SaveWorld(a, format);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message;
    World b;
    ASSERT_TRUE(LoadWorld(bytes.value(), &b).ok()) << ArchiveFormatName(format);

    auto blocks = [&](int fd) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {  // nothing else uses the world
      std::vector<const EntryBlock*> out;
      for (const EntryBlock::Ref& r : b.fds.Get(fd)->AsEventPoll()->impl()->pooled_) out.push_back(r.get());
      return out;
    };
    ASSERT_EQ(blocks(small[0]).size(), 1u) << ArchiveFormatName(format);
    EXPECT_EQ(blocks(small[1]), blocks(small[0])) << ArchiveFormatName(format);
    ASSERT_EQ(blocks(large).size(), 1u) << ArchiveFormatName(format);
    EXPECT_NE(blocks(large), blocks(small[0])) << ArchiveFormatName(format);

    // Every small poll but the last goes, and its entry with it; the large poll's entries of those polls go too.
    for (std::size_t i = 0; i + 1 < small.size(); ++i) ASSERT_FALSE(sys::Close(b.fds, small[i]));
    const std::uint64_t one = 1;
    ASSERT_TRUE(sys::Write(b.fds, efd, std::as_bytes(std::span(&one, 1))).ok());
    Event got[4];
    ASSERT_EQ(sys::EpollWait(b.fds, small.back(), got, 4, 0).value(), 1) << ArchiveFormatName(format);
    EXPECT_EQ(got[0].Data(), small.size() - 1);
    EXPECT_EQ(b.fds.Get(large)->AsEventPoll()->EntryCount(), 0u);
    Event e{kEventIn, {}};
    e.SetData(7);
    ASSERT_FALSE(sys::EpollCtl(b.fds, large, sys::kEpollCtlAdd, small.back(), &e));
    ASSERT_EQ(sys::EpollWait(b.fds, large, got, 4, 0).value(), 1) << ArchiveFormatName(format);
    EXPECT_EQ(got[0].Data(), 7u);
    ASSERT_FALSE(sys::EpollCtl(b.fds, small.back(), sys::kEpollCtlDel, efd, nullptr));
    EXPECT_EQ(sys::EpollWait(b.fds, small.back(), got, 4, 0).value(), 0);
  }
}

TEST(StateTest, SaveReportsHowLongItHeldTheCut) {
  for (ArchiveFormat format : kFormats) {
    World a;
    BuildWorld(a);
    SavePause pause;
    pause.locks_held = std::chrono::nanoseconds(-1);
    const auto start = std::chrono::steady_clock::now();
    Result<std::string> bytes = SaveWorld(a, format, &pause);
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(bytes.ok()) << bytes.status().message;
    EXPECT_GT(pause.locks_held.count(), 0) << ArchiveFormatName(format);
    EXPECT_LE(pause.locks_held, took) << ArchiveFormatName(format);
  }
}

// The cut takes its files' mutation locks without waiting, in file order, and falls back to taking them in address
// order, waiting, when one is busy: a lock held by a writer that is changing its file (the save waits for it, and
// sees the change whole), and one lock shared by two files that are not side by side (a pipe's ends at fds 1 and 9:
// taken once, not twice, which would never return).
TEST(StateTest, ASaveWaitsForABusyFileAndTakesASharedLockOnce) {
  for (ArchiveFormat format : kFormats) {
    World a;
    PipeEnds pipe = NewPipe();
    ASSERT_FALSE(a.fds.InstallAt(1, pipe.read));
    auto counter = EventFd::Create(5);
    ASSERT_FALSE(a.fds.InstallAt(4, counter));
    ASSERT_FALSE(a.fds.InstallAt(9, pipe.write));
    auto poll = EventPoll::Create();
    ASSERT_FALSE(a.fds.InstallAt(12, poll));
    ASSERT_FALSE(poll->AddEntry({counter.get(), 4}, EntryFlags::kNone, kEventIn, 4));
    ASSERT_FALSE(poll->AddEntry({pipe.read.get(), 1}, EntryFlags::kNone, kEventIn, 1));

    Mutex* busy = counter->MutationLock();
    ASSERT_NE(busy, nullptr);
    busy->lock();  // as a write to the eventfd holds it, from its change to the end of its wake-up
    std::atomic<bool> saved{false};
    Result<std::string> bytes = Status::Error(EINVAL, "not saved");
    std::thread saver([&] {
      bytes = SaveWorld(a, format);
      saved = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(saved.load()) << ArchiveFormatName(format) << ": the save did not wait for the busy file";
    busy->unlock();
    saver.join();
    ASSERT_TRUE(bytes.ok()) << ArchiveFormatName(format) << ": " << bytes.status().message;
    World b;
    Status s = LoadWorld(bytes.value(), &b);
    ASSERT_TRUE(s.ok()) << ArchiveFormatName(format) << ": " << s.message;
    EXPECT_EQ(Describe(b), Describe(a)) << ArchiveFormatName(format);
    // Uncontended, with the pipe's shared lock at fds 1 and 9: no wait at all.
    Result<std::string> again = SaveWorld(a, format);
    ASSERT_TRUE(again.ok()) << ArchiveFormatName(format) << ": " << again.status().message;
    EXPECT_EQ(again.value(), bytes.value()) << ArchiveFormatName(format);
  }
}

// The cut finds a poll's entries by walking its files' wait queues; a poll whose waiters are not in their queues
// (UnregisterEpollWaiters) has its entries read from its map instead, and loses none.
TEST(StateTest, APollWhoseWaitersAreUnregisteredIsSavedWhole) {
  for (ArchiveFormat format : kFormats) {
    World a;
    BuildWorld(a);
    const std::string before = Describe(a);
    auto outer = std::dynamic_pointer_cast<EventPoll>(a.fds.Get(0));
    ASSERT_NE(outer, nullptr);
    outer->UnregisterEpollWaiters();
    Result<std::string> bytes = SaveWorld(a, format);
    outer->RegisterEpollWaiters();
    ASSERT_TRUE(bytes.ok()) << bytes.status().message;
    World b;
    ASSERT_TRUE(LoadWorld(bytes.value(), &b).ok()) << ArchiveFormatName(format);
    EXPECT_EQ(Describe(b), before) << ArchiveFormatName(format);
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
  Result<std::string> bytes = SaveWorld(w, ArchiveFormat::kBoostText);
  EXPECT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status().message.find("eventpoll#1 field waiters"), std::string::npos) << bytes.status().message;
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
  Result<std::string> bytes = SaveWorld(w, ArchiveFormat::kBoostXml);
  EXPECT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status().message.find("not in the world"), std::string::npos) << bytes.status().message;
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
    Status s = archive::LoadWorldFrom(ar, &w);
    ASSERT_FALSE(s.ok()) << c.fds << " / " << c.lists;
    EXPECT_NE(s.message.find(c.message), std::string::npos) << s.message;
    EXPECT_EQ(File::LiveFiles(), live_before);
  }
}

// Layout 6 keeps every poll's section as world-wide columns: a hand-made archive whose counts do not fit its columns
// is refused naming the column or the poll, and leaves nothing behind; a good one loads.
TEST(StateTest, BadLayout6PollColumnsAreLoadErrors) {
  struct Case {
    const char* counts;
    const char* fds;
    const char* ready_counts;
    const char* ready_order;
    const char* message;  // empty: the archive loads
  };
  for (const Case& c : {Case{"2", "3 4", "1", "0", ""},
                        Case{"2 0", "3 4", "1", "0", "column poll_entries: more than 1 numbers"},
                        Case{"3", "3 4", "1", "0", "column entry.fd: 2 numbers for 3"},
                        Case{"1", "3 4", "1", "0", "column entry.fd: more than 1 numbers"},
                        Case{"2", "3 4", "3", "0 1 1", "eventpoll#1: a ready order of 3 for 2 entries"},
                        Case{"2", "3 4", "1", "0 1", "column ready_order: more than 1 numbers"},
                        Case{"2", "3 4", "1", "1", "the ready order lists entry 1 that is not a ready entry"},
                        Case{"99999999999", "3 4", "1", "0", "beyond the limit"}}) {
    std::ostringstream os;
    {
      boost::archive::text_oarchive ar(os);
      std::uint32_t layout = 6;
      std::uint64_t zero = 0, two = 2;
      ar << layout << zero << two;  // no shared objects; two files: a poll and an eventfd
      std::string ids = "1 2", poll = "eventpoll", efd = "eventfd", kinds = "0 1";
      ar << ids << two << poll << efd << kinds;
      ar << std::string("0") << std::string("0");  // the eventfd's columns: count, semaphore
      ar << std::string(c.counts) << std::string(c.fds) << std::string("2 2") << std::string("25 25")
         << std::string("7 8") << std::string("0 1") << std::string("0 1");  // entry columns (lists: 0 ready), ranks
      ar << std::string(c.ready_counts) << std::string(c.ready_order);
      ar << zero << std::string() << std::string() << zero;  // no fds, no roots
    }
    const long live_before = File::LiveFiles();
    std::istringstream is(os.str());
    boost::archive::text_iarchive ar(is);
    World w;
    Status s = archive::LoadWorldFrom(ar, &w);
    if (std::string(c.message).empty()) {
      EXPECT_TRUE(s.ok()) << s.message;
      continue;
    }
    ASSERT_FALSE(s.ok()) << c.counts << " / " << c.ready_counts;
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
  Status s = archive::LoadWorldFrom(ar, &w);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message.find("wait cycle"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("eventpoll#1"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("eventpoll#2"), std::string::npos) << s.message;
  EXPECT_EQ(File::LiveFiles(), live_before);
}

// ---- archives of earlier layouts still load ----

// The world of the layout fixtures: BuildWorld's (every file type, dup'd fds, nested polls, entries on all three
// lists, a pipe and a socket pair holding bytes) with a root.
void BuildFixtureWorld(World& w) {
  BuildWorld(w);
  w.roots["inner poll"] = w.fds.Get(1);
}

// Writes the Boost xml archive (without LoadWorld's envelope) of the fixture world in the layout this build writes,
// to the file EPOLLCR_WRITE_XML_FIXTURE names, as a C++ raw string literal. How tests/lib/fixtures/*.inc were made:
// layout 2 at commit 720e905 with
//   EPOLLCR_WRITE_XML_FIXTURE=tests/lib/fixtures/world_layout2.xml.inc build/tests/lib/test_lib_state
//   --gtest_filter=StateTest.WriteXmlFixture
TEST(StateTest, WriteXmlFixture) {
  const char* path = std::getenv("EPOLLCR_WRITE_XML_FIXTURE");
  if (path == nullptr) GTEST_SKIP() << "EPOLLCR_WRITE_XML_FIXTURE is not set";
  World w;
  BuildFixtureWorld(w);
  Result<std::string> bytes = SaveWorld(w, ArchiveFormat::kBoostXml);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message;
  std::ofstream out(path, std::ios::binary);
  out << "R\"xml(" << bytes.value().substr(24) << ")xml\"\n";
  ASSERT_TRUE(out.good()) << path;
}

// Writes the Boost binary archive (without LoadWorld's envelope) of the fixture world, as this build writes it, to the
// file EPOLLCR_WRITE_BINARY_FIXTURE names, as a C++ string literal of hex digits (a binary archive is for the same
// architecture and Boost version only: x86_64, Boost 1.74, as this project's machines). How
// tests/lib/fixtures/world_layout5.bin.inc was made: layout 5 at commit 26b9770, with this test added, with
//   EPOLLCR_WRITE_BINARY_FIXTURE=tests/lib/fixtures/world_layout5.bin.inc build/tests/test_lib_state
//   --gtest_filter=StateTest.WriteBinaryFixture
TEST(StateTest, WriteBinaryFixture) {
  const char* path = std::getenv("EPOLLCR_WRITE_BINARY_FIXTURE");
  if (path == nullptr) GTEST_SKIP() << "EPOLLCR_WRITE_BINARY_FIXTURE is not set";
  World w;
  BuildFixtureWorld(w);
  Result<std::string> bytes = SaveWorld(w, ArchiveFormat::kBoostBinary);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message;
  std::ofstream out(path, std::ios::binary);
  out << "\"";
  static constexpr char kHex[] = "0123456789abcdef";
  std::size_t column = 0;
  for (unsigned char c : bytes.value().substr(24)) {
    if (column == 112) {
      out << "\"\n\"";
      column = 0;
    }
    out << kHex[c >> 4] << kHex[c & 15];
    column += 2;
  }
  out << "\"\n";
  ASSERT_TRUE(out.good()) << path;
}

// The xml archive of the fixture world as layout 2 wrote it (commit 720e905, before layout 3).
constexpr std::string_view kLayout2Xml =
#include "fixtures/world_layout2.xml.inc"
    ;

// An archive written by the previous layout loads into the same world, through LoadWorld and through Boost's own
// xml_iarchive; saved again it is what this build writes for that world.
TEST(StateTest, Layout2XmlArchiveStillLoads) {
  ASSERT_NE(kLayout2Xml.find("<layout>2</layout>"), std::string_view::npos);
  World original;
  BuildFixtureWorld(original);
  const std::string expected = Describe(original);
  World a;
  const Status s = LoadWorld(Envelope(kLayout2Xml, ArchiveFormat::kBoostXml), &a);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(Describe(a), expected);
  ASSERT_EQ(a.roots.size(), 1u);
  EXPECT_EQ(a.roots.at("inner poll"), a.fds.Get(1));
  EXPECT_EQ(SaveWorld(a, ArchiveFormat::kBoostXml).value(), SaveWorld(original, ArchiveFormat::kBoostXml).value());

  World b;
  {
    std::istringstream is{std::string(kLayout2Xml)};
    boost::archive::xml_iarchive ar(is);
    LoadWorldFromArchive(ar, b);
  }
  EXPECT_EQ(Describe(b), expected);
}

// The binary archive of the fixture world as layout 5 wrote it (commit 26b9770, before layout 6), in hex.
constexpr std::string_view kLayout5BinaryHex =
#include "fixtures/world_layout5.bin.inc"
    ;

// Layout 6 writes a binary archive's columns as arrays of numbers; a layout-5 binary archive, whose columns are text,
// still loads into the same world, and saved again it is what this build writes for that world.
TEST(StateTest, Layout5BinaryArchiveStillLoads) {
  std::string archive;
  for (std::size_t i = 0; i + 1 < kLayout5BinaryHex.size(); i += 2) {
    archive.push_back(static_cast<char>(std::stoi(std::string(kLayout5BinaryHex.substr(i, 2)), nullptr, 16)));
  }
  World original;
  BuildFixtureWorld(original);
  World a;
  const Status s = LoadWorld(Envelope(archive, ArchiveFormat::kBoostBinary), &a);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(Describe(a), Describe(original));
  EXPECT_EQ(a.roots.at("inner poll"), a.fds.Get(1));
  const std::string resaved = SaveWorld(a, ArchiveFormat::kBoostBinary).value();
  EXPECT_EQ(resaved, SaveWorld(original, ArchiveFormat::kBoostBinary).value());
  EXPECT_NE(resaved.substr(24), archive);  // the layouts differ: this build wrote layout 6
}

// What LoadWorld writes in xml, Boost's own xml_iarchive reads, to the same world.
TEST(StateTest, BoostsXmlArchiveReadsWhatSaveWorldWrites) {
  World original;
  BuildFixtureWorld(original);
  const std::string saved = SaveWorld(original, ArchiveFormat::kBoostXml).value();
  ASSERT_NE(saved.find("<layout>6</layout>"), std::string::npos);
  World b;
  {
    std::istringstream is(saved.substr(24));
    boost::archive::xml_iarchive ar(is);
    LoadWorldFromArchive(ar, b);
  }
  EXPECT_EQ(Describe(b), Describe(original));
  EXPECT_EQ(b.roots.at("inner poll"), b.fds.Get(1));
  EXPECT_EQ(SaveWorld(b, ArchiveFormat::kBoostXml).value(), saved);
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
      Result<std::string> saved = SaveWorld(w, format);
      ASSERT_TRUE(saved.ok());
      bytes = saved.value();
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

// ---- the bounded archives LoadWorld reads through (archive/bounded_archives.h) ----

// Reads one value named "v" from `bytes` with archive Iar: "" if it loads, else what the archive threw.
template <typename Iar, typename T>
std::string ReadOne(const std::string& bytes, T& value) {
  try {
    std::istringstream is(bytes);
    Iar ar(is);
    ar >> boost::serialization::make_nvp("v", value);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Writes `value` as "v" with Boost's archive Oar.
template <typename Oar, typename T>
std::string WriteOne(const T& value) {
  std::ostringstream os;
  {
    Oar ar(os);
    ar << boost::serialization::make_nvp("v", value);
  }
  return std::move(os).str();
}

// What Boost writes, the bounded archives read: strings (empty too) and collections, in every format.
template <typename Oar, typename Iar>
void ExpectReadsWhatBoostWrites() {
  for (const std::string& text : {std::string(), std::string("eventpoll"), std::string(3000, 'x')}) {
    std::string got = "not loaded";
    EXPECT_EQ(ReadOne<Iar>(WriteOne<Oar>(text), got), "");
    EXPECT_EQ(got, text);
  }
  for (const std::vector<std::uint32_t>& numbers : {std::vector<std::uint32_t>{}, std::vector<std::uint32_t>{7, 8, 9}}) {
    std::vector<std::uint32_t> got{1};
    EXPECT_EQ(ReadOne<Iar>(WriteOne<Oar>(numbers), got), "");
    EXPECT_EQ(got, numbers);
  }
}

TEST(BoundedArchives, ReadWhatBoostWrites) {
  ExpectReadsWhatBoostWrites<boost::archive::text_oarchive, archive::BoundedTextIArchive>();
  ExpectReadsWhatBoostWrites<boost::archive::xml_oarchive, archive::BoundedXmlIArchive>();
  ExpectReadsWhatBoostWrites<boost::archive::binary_oarchive, archive::BoundedBinaryIArchive>();
}

// A text string is "LENGTH BYTES": a length up to the bytes left loads, one more is refused before anything is
// allocated for it (Boost alone resizes the string to the declared length first: 10 GB for this archive).
TEST(BoundedArchives, TextStringCannotBeLongerThanTheRest) {
  const std::string header = "22 serialization::archive 18";  // what text_oarchive writes before the first value
  std::string got;
  EXPECT_EQ(ReadOne<archive::BoundedTextIArchive>(header + " 5 hello", got), "");
  EXPECT_EQ(got, "hello");
  EXPECT_EQ(ReadOne<archive::BoundedTextIArchive>(header + " 6 hello", got),
            "the archive declares 6 string bytes where 5 bytes are left (corrupted?)");
  EXPECT_EQ(ReadOne<archive::BoundedTextIArchive>(header + " 10073741824 hello", got),
            "the archive declares 10073741824 string bytes where 5 bytes are left (corrupted?)");
  // The signature in the header is a string too.
  EXPECT_NE(ReadOne<archive::BoundedTextIArchive>("4000000000 serialization::archive 18 5 hello", got)
                .find("declares 4000000000 string bytes"),
            std::string::npos);
}

// A number in a text or xml archive read from a ViewBuffer (as LoadWorld reads) is read in place (ReadDecimal);
// whatever the characters, the value or the failure is Boost's own archive's over an istringstream. The archive is
// what Boost writes for the value 12345, with `number` in place of "12345".
template <typename Oar, typename BoostIar, typename Iar, typename T>
void ExpectNumberAsBoostReadsIt(const std::string& number) {
  std::string bytes = WriteOne<Oar>(T{12345});
  bytes.replace(bytes.rfind("12345"), 5, number);
  T boosts{}, ours{};
  const std::string boost_error = ReadOne<BoostIar>(bytes, boosts);
  std::string our_error;
  try {
    archive::ViewBuffer buffer(bytes);
    std::istream is(&buffer);
    Iar ar(is);
    ar >> boost::serialization::make_nvp("v", ours);
  } catch (const std::exception& e) {
    our_error = e.what();
  }
  EXPECT_EQ(our_error, boost_error) << "'" << number << "' as " << sizeof(T) << " bytes in " << bytes;
  if (boost_error.empty()) {
    EXPECT_EQ(ours, boosts) << "'" << number << "' in " << bytes;
  }
}

template <typename Oar, typename BoostIar, typename Iar>
void ExpectNumbersAsBoostReadsThem() {
  for (const std::string number : {"5", "0", "\n\t\v\f\r 17", "4294967295", "4294967296", "18446744073709551615",
                                   "18446744073709551616", "-1", "-2147483648", "-2147483649", "+5", "12abc", "", " ",
                                   "x", "-", "007", "1 2", "65535", "65536"}) {
    ExpectNumberAsBoostReadsIt<Oar, BoostIar, Iar, std::uint32_t>(number);
    ExpectNumberAsBoostReadsIt<Oar, BoostIar, Iar, std::int32_t>(number);
    ExpectNumberAsBoostReadsIt<Oar, BoostIar, Iar, std::uint64_t>(number);
    ExpectNumberAsBoostReadsIt<Oar, BoostIar, Iar, std::int64_t>(number);
    ExpectNumberAsBoostReadsIt<Oar, BoostIar, Iar, std::uint16_t>(number);
  }
}

TEST(BoundedArchives, NumbersReadAsBoostReadsThem) {
  ExpectNumbersAsBoostReadsThem<boost::archive::text_oarchive, boost::archive::text_iarchive,
                                archive::BoundedTextIArchive>();
  ExpectNumbersAsBoostReadsThem<boost::archive::xml_oarchive, boost::archive::xml_iarchive,
                                archive::BoundedXmlIArchive>();
}

// A collection's count is bounded the same way: no item takes less than a byte.
TEST(BoundedArchives, TextCollectionCannotHaveMoreItemsThanBytesLeft) {
  const std::string header = "22 serialization::archive 18";
  std::vector<std::uint32_t> got;
  EXPECT_EQ(ReadOne<archive::BoundedTextIArchive>(header + " 2 0 7 8", got), "");
  EXPECT_EQ(got, (std::vector<std::uint32_t>{7, 8}));
  EXPECT_EQ(ReadOne<archive::BoundedTextIArchive>(header + " 1000000000000 0 7 8", got),
            "the archive declares 1000000000000 collection items where 6 bytes are left (corrupted?)");
}

// Binary: a marker is written first, so that the length or count after it can be found and changed.
constexpr std::uint64_t kMarker = 0x1122334455667788;

template <typename T>
std::string BinaryAfterMarker(const T& value) {
  std::ostringstream os;
  {
    boost::archive::binary_oarchive ar(os);
    ar << kMarker << value;
  }
  return std::move(os).str();
}
// Replaces the 8 bytes after the marker (a string's length or a collection's count: a native std::size_t).
std::string SetSizeAfterMarker(std::string bytes, std::uint64_t size) {
  const std::string marker(reinterpret_cast<const char*>(&kMarker), sizeof kMarker);
  const std::size_t at = bytes.find(marker);
  EXPECT_NE(at, std::string::npos);
  if (at != std::string::npos) std::memcpy(bytes.data() + at + sizeof kMarker, &size, sizeof size);
  return bytes;
}
template <typename T>
std::string ReadBinaryAfterMarker(const std::string& bytes, T& value) {
  try {
    std::istringstream is(bytes);
    archive::BoundedBinaryIArchive ar(is);
    std::uint64_t marker = 0;
    ar >> marker >> value;
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST(BoundedArchives, BinaryLengthsAndCountsCannotExceedTheRest) {
  const std::string hello = BinaryAfterMarker(std::string("hello"));
  std::string got;
  EXPECT_EQ(ReadBinaryAfterMarker(hello, got), "");
  EXPECT_EQ(got, "hello");
  EXPECT_EQ(ReadBinaryAfterMarker(SetSizeAfterMarker(hello, 6), got),
            "the archive declares 6 string bytes where 5 bytes are left (corrupted?)");
  EXPECT_EQ(ReadBinaryAfterMarker(SetSizeAfterMarker(hello + "!", 6), got), "");
  EXPECT_EQ(got, "hello!");
  EXPECT_NE(ReadBinaryAfterMarker(SetSizeAfterMarker(hello, std::uint64_t{1} << 62), got).find("string bytes where 5"),
            std::string::npos);

  const std::string numbers = BinaryAfterMarker(std::vector<std::uint32_t>{7, 8});
  std::vector<std::uint32_t> items;
  EXPECT_EQ(ReadBinaryAfterMarker(numbers, items), "");
  EXPECT_EQ(items, (std::vector<std::uint32_t>{7, 8}));
  EXPECT_NE(ReadBinaryAfterMarker(SetSizeAfterMarker(numbers, std::uint64_t{1} << 40), items)
                .find("declares 1099511627776 collection items"),
            std::string::npos);
}

// An archive may claim an old Boost library version; below 8 Boost reads class ids, versions and counts in other
// widths (basic_binary_iarchive.hpp), and the xml archive narrows any number to 16 bits unchecked. A library version
// outside 9 .. BOOST_ARCHIVE_VERSION() is refused in every format before anything else is read.
TEST(BoundedArchives, LibraryVersionsOutsideTheRangeAreRefused) {
  const std::string newest = std::to_string(boost::archive::BOOST_ARCHIVE_VERSION());
  std::vector<std::uint32_t> items;
  {
    std::ostringstream os;
    { boost::archive::binary_oarchive ar(os); }
    std::string bytes = std::move(os).str();
    const std::string signature = "serialization::archive";
    const std::size_t at = bytes.find(signature);
    ASSERT_NE(at, std::string::npos);
    // The library version follows the signature: 18 as a byte and a zero byte today; 5 is one byte alone.
    ASSERT_EQ(bytes.substr(at + signature.size(), 2), std::string("\x12\x00", 2));
    const std::string two_items("\x02\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x08\x00\x00\x00", 16);
    EXPECT_EQ(ReadOne<archive::BoundedBinaryIArchive>(bytes + two_items, items), "");
    EXPECT_EQ(items, (std::vector<std::uint32_t>{7, 8}));
    bytes.replace(at + signature.size(), 2, "\x05");
    EXPECT_EQ(ReadOne<archive::BoundedBinaryIArchive>(bytes + two_items, items),
              "the archive's Boost library version 5 is not one this build reads (9.." + newest + ")");
  }
  auto text_with_version = [](const std::string& version) {
    return "22 serialization::archive " + version + " 7";
  };
  std::uint32_t item = 0;
  EXPECT_EQ(ReadOne<archive::BoundedTextIArchive>(text_with_version("18"), item), "");
  EXPECT_EQ(item, 7u);
  EXPECT_EQ(ReadOne<archive::BoundedTextIArchive>(text_with_version("3"), item),
            "the archive's Boost library version 3 is not one this build reads (9.." + newest + ")");
  auto xml_with_version = [](const std::string& version) {
    return "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\" ?>\n<!DOCTYPE boost_serialization>\n"
           "<boost_serialization signature=\"serialization::archive\" version=\"" + version + "\">\n"
           "<v>7</v>\n</boost_serialization>\n";
  };
  item = 0;
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(xml_with_version("18"), item), "");
  EXPECT_EQ(item, 7u);
  // Boost's own xml archive aborts on this one in a build with assertions (library_version_type.hpp).
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(xml_with_version("1800000000"), item),
            "the archive's Boost library version 1800000000 is not one this build reads (9.." + newest + ")");
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(xml_with_version("2"), item),
            "the archive's Boost library version 2 is not one this build reads (9.." + newest + ")");
}

// Xml end tags are still checked against the expected name, and one longer than it is a mismatch, not a read past
// the name (Boost alone reads name[length of the end tag]: AddressSanitizer reports it). As in Boost, the end tag of
// a top-level element is not compared.
TEST(BoundedArchives, XmlEndTagsAreComparedSafely) {
  const std::string xml = WriteOne<boost::archive::xml_oarchive>(std::vector<std::uint32_t>{7});
  auto with = [&xml](const std::string& from, const std::string& to) {
    std::string changed = xml;
    const std::size_t at = changed.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? changed : changed.replace(at, from.size(), to);
  };
  std::vector<std::uint32_t> got;
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(xml, got), "");
  EXPECT_EQ(got, std::vector<std::uint32_t>{7});
  const std::string mismatch = "XML start/end tag mismatch - count";
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(with("</count>", "</count_and_much_more_than_count>"), got), mismatch);
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(with("</count>", "</coun>"), got), mismatch);
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(with("</count>", "</cOunt>"), got), mismatch);
  EXPECT_EQ(ReadOne<archive::BoundedXmlIArchive>(with("</v>", "</vector_of_a_longer_name>"), got), "");
}

// The xml archive reads tags and strings itself in the common case (bounded_archives.h): what it reads and what it
// refuses stays what Boost's own xml_iarchive does, over an istringstream and over the ViewBuffer LoadWorld uses.
// Reads one value named "v" with the xml archive Iar from an istringstream, or from a ViewBuffer (LoadWorld's):
// "" if it loads, else what the archive threw. The stream is failed before the archive's destructor, which would
// otherwise read the closing tag and throw out of the destructor if the value took it (as LoadWorld does too).
template <typename Iar, typename T>
std::string ReadXml(const std::string& bytes, T& value, bool view) {
  std::istringstream string_stream(bytes);
  archive::ViewBuffer buffer(bytes);
  std::istream view_stream(&buffer);
  std::istream& is = view ? view_stream : string_stream;
  try {
    Iar ar(is);
    try {
      ar >> boost::serialization::make_nvp("v", value);
    } catch (const std::exception& e) {
      is.setstate(std::ios::failbit);
      return e.what();
    }
    is.setstate(std::ios::failbit);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST(BoundedArchives, XmlTagsAndStringsReadAsBoostReadsThem) {
  const std::string head =
      "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\" ?>\n<!DOCTYPE boost_serialization>\n"
      "<boost_serialization signature=\"serialization::archive\" version=\"18\">\n";
  const std::string tail = "</boost_serialization>\n";
  const std::vector<std::string> strings = {
      "<v>plain text</v>",
      "<v></v>",
      "<v>a&amp;b&lt;c&gt;d&quot;e&apos;f&#65;&#x42;</v>",
      "<v>a & b</v>",
      "<v>a &bogus; b</v>",
      "<v>&#;</v>",
      "\n\t <v  >x</v \t>",
      "<v attribute=\"1\">x</v>",
      "<v tracking_level=\"0\" version=\"3\">x</v>",
      "< v>x</v>",
      "<v>x< /v>",
      "<v>x</ v>",
      "<1v>x</1v>",
      "<\xe9t\xe9>x</\xe9t\xe9>",
      "<v.a-b_c:d>x</v.a-b_c:d>",
      "<v>x",
      "<v>x</v",
      "<v",
      "",
  };
  for (const std::string& body : strings) {
    const std::string xml = head + body + "\n" + tail;
    std::string boost_got = "-", got = "-", view_got = "-";
    const std::string boost_error = ReadXml<boost::archive::xml_iarchive>(xml, boost_got, false);
    EXPECT_EQ(ReadXml<archive::BoundedXmlIArchive>(xml, got, false), boost_error) << body;
    EXPECT_EQ(ReadXml<archive::BoundedXmlIArchive>(xml, view_got, true), boost_error) << body;
    EXPECT_EQ(got, boost_got) << body;
    EXPECT_EQ(view_got, boost_got) << body;
  }
  // Nested elements (an end tag is compared below the top level), strings with every character Boost escapes.
  const std::vector<std::string> texts = {"a&b", "<tag>", "q\"'", "", "  spaced  ", "\xc3\xa9"};
  const std::string saved = WriteOne<boost::archive::xml_oarchive>(texts);
  for (const std::string& xml : {saved, std::string(saved).replace(saved.find("</item>"), 7, "</itemx>")}) {
    std::vector<std::string> boost_got, got, view_got;
    const std::string boost_error = ReadXml<boost::archive::xml_iarchive>(xml, boost_got, false);
    EXPECT_EQ(ReadXml<archive::BoundedXmlIArchive>(xml, got, false), boost_error);
    EXPECT_EQ(ReadXml<archive::BoundedXmlIArchive>(xml, view_got, true), boost_error);
    EXPECT_EQ(got, boost_got);
    EXPECT_EQ(view_got, boost_got);
  }
  std::vector<std::string> got;
  EXPECT_EQ(ReadXml<archive::BoundedXmlIArchive>(saved, got, true), "");
  EXPECT_EQ(got, texts);
}

// Through LoadWorld: an archive whose kind string declares 10 GB is refused with the reason, and nothing is left.
TEST(BoundedArchives, LoadWorldRefusesAStringLongerThanTheArchive) {
  const long live_before = File::LiveFiles();
  std::string saved;
  {
    World w;
    BuildWorld(w);
    saved = SaveWorld(w, ArchiveFormat::kBoostText).value();
  }
  std::string payload = saved.substr(24);
  const std::size_t at = payload.find(" 9 eventpoll");
  ASSERT_NE(at, std::string::npos);
  payload.replace(at, 2, " 10073741824");
  // A correct envelope around the changed archive (archive/world_api.cc): the length and the CRC32C follow it.
  std::string bytes = saved.substr(0, 24) + payload;
  for (int i = 0; i < 8; ++i) bytes[16 + i] = static_cast<char>((std::uint64_t{payload.size()} >> (8 * i)) & 0xff);
  for (int i = 0; i < 4; ++i) bytes[12 + i] = static_cast<char>((Crc32c(payload) >> (8 * i)) & 0xff);
  World w;
  const Status s = LoadWorld(bytes, &w);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message.find("declares 10073741824 string bytes where"), std::string::npos) << s.message;
  EXPECT_EQ(w.fds.Count(), 0);
  EXPECT_EQ(File::LiveFiles(), live_before);
}

}  // namespace
}  // namespace epollcr
